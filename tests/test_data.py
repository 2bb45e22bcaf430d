"""Data: digits, and IDX files made here (valid, gzipped, truncated, corrupt)."""

import gzip
import subprocess
import sys

import jax
import numpy as np
import pytest

import fbp
from fbp import data as fdata


def write_set(directory, n_train=30, n_test=10, gz=False, rows=4, cols=5):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, rows, cols)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, rows, cols)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        fdata.write_idx(str(directory / (name + ext)), arr)
    return arrays


def test_digits():
    ds = fdata.digits()
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (1257, 180, 360)
    assert ds.train.X.dtype == np.float32 and 0 <= ds.train.X.min() and ds.train.X.max() <= 1
    np.testing.assert_array_equal(ds.train.Y.sum(1), 1)
    assert ds.n_in == 64 and ds.n_classes == 10


def test_digits_are_scikit_learns_without_importing_it(tmp_path, monkeypatch):
    """fbp reads the CSV that scikit-learn ships (its import took most of a
    short run's start-up); what it reads must be load_digits' arrays exactly,
    and where the file is not found, load_digits itself answers."""
    import importlib.util

    from sklearn.datasets import load_digits

    ref = load_digits()
    pixels, labels = fdata._sklearn_digits()
    assert pixels.dtype == ref.data.dtype and labels.dtype == ref.target.dtype
    np.testing.assert_array_equal(pixels, ref.data)
    np.testing.assert_array_equal(labels, ref.target)
    code = "import sys, fbp.data; fbp.data.digits(); print('sklearn' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
    # scikit-learn laid out otherwise: no CSV where fbp looks
    real = importlib.util.find_spec

    def elsewhere(name, *args):
        spec = real(name, *args)
        if name == "sklearn":
            spec = importlib.util.spec_from_file_location("sklearn", str(tmp_path / "__init__.py"))
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", elsewhere)
    again = fdata._sklearn_digits()
    np.testing.assert_array_equal(again[0], ref.data)
    np.testing.assert_array_equal(again[1], ref.target)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, gz):
    arrays = write_set(tmp_path, gz=gz)
    ds = fdata.idx(str(tmp_path), n_validation=5)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (25, 5, 10)
    np.testing.assert_allclose(ds.train.X * 255, arrays["train-images-idx3-ubyte"][:25].reshape(25, 20), atol=1e-4)
    np.testing.assert_array_equal(ds.validation.Y.argmax(1), arrays["train-labels-idx1-ubyte"][25:])


def test_idx_classes_follow_the_labels_and_images_must_be_bytes(tmp_path):
    write_set(tmp_path)
    fdata.write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.arange(30) % 26 + 1)  # EMNIST letters: 1..26
    ds = fdata.idx(str(tmp_path))
    assert ds.n_classes == 27 and ds.test.Y.shape == (10, 27)
    np.testing.assert_array_equal(ds.train.Y.argmax(1), np.arange(30) % 26 + 1)
    # float images (type code 0x0D) are not MNIST-style bytes: refused, not scaled wrongly
    floats = np.zeros((30, 4, 5), ">f4")
    header = bytes([0, 0, 0x0D, 3]) + b"".join(int(d).to_bytes(4, "big") for d in floats.shape)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(header + floats.tobytes())
    with pytest.raises(fdata.DataError, match="train_images holds float32 values"):
        fdata.idx(str(tmp_path))


def test_bad_magic(tmp_path):
    write_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 40)
    with pytest.raises(fdata.DataError, match=r"train-labels-idx1-ubyte: bad magic number 0x12340801"):
        fdata.idx(str(tmp_path))


def test_truncated_payload(tmp_path):
    write_set(tmp_path)
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(fdata.DataError, match=r"t10k-images-idx3-ubyte: wrong count: the header says 10 items.*truncated"):
        fdata.idx(str(tmp_path))


def test_truncated_gzip(tmp_path):
    write_set(tmp_path, gz=True)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises(fdata.DataError, match=r"train-images-idx3-ubyte.gz: cannot be read.*truncated or corrupt"):
        fdata.idx(str(tmp_path))


def test_mismatched_counts(tmp_path):
    write_set(tmp_path)
    fdata.write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros(29))
    with pytest.raises(fdata.DataError, match=r"30 train_images but 29 train_labels"):
        fdata.idx(str(tmp_path))


def test_missing_directory_and_file(tmp_path):
    with pytest.raises(fdata.DataError, match="no such directory"):
        fdata.idx(str(tmp_path / "nope"))
    write_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(fdata.DataError, match=r"no t10k-labels-idx1-ubyte"):
        fdata.idx(str(tmp_path))
    with pytest.raises(fdata.DataError, match=f"absent: no such directory; .* puts them in {fdata.FASHION_MNIST_DIR}"):
        fdata.fashion_mnist(str(tmp_path / "absent"))  # a directory given: nothing to install
    for read in (fdata.idx, fdata.fashion_mnist):  # one of the files given for its directory
        with pytest.raises(fdata.DataError, match="train-images-idx3-ubyte: a file, not a directory; give the one"):
            read(str(tmp_path / "train-images-idx3-ubyte"))


def test_a_set_with_no_images_or_one_class_is_named(tmp_path):
    # Before: NumPy's "cannot reshape array of size 0", and a complaint about a
    # softmax over params[1] that a user of --data-dir never wrote.
    for n_train, n_test, stem in [(0, 10, "train-images-idx3-ubyte"), (30, 0, "t10k-images-idx3-ubyte")]:
        write_set(tmp_path, n_train=n_train, n_test=n_test)
        with pytest.raises(fdata.DataError, match=f"{stem} holds no images; fbp needs at least one"):
            fdata.idx(str(tmp_path))
    write_set(tmp_path)
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        fdata.write_idx(str(tmp_path / name), np.zeros(30 if name.startswith("train") else 10, np.uint8))
    with pytest.raises(fdata.DataError, match="every label is 0, so there is one class only"):
        fdata.idx(str(tmp_path))


def test_fashion_mnist_not_installed_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(fdata, "FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(fdata.DataError, match="not-installed: Fashion-MNIST is not installed. On Debian: "
                                              "`sudo apt-get install dataset-fashion-mnist`"):
        fdata.fashion_mnist()


def test_cli_trains_on_idx_and_reports_corrupt_files(tmp_path):
    write_set(tmp_path, n_train=60, n_test=20, gz=True, rows=2, cols=3)
    ok = subprocess.run([sys.executable, "-m", "fbp", "train", "--data", "idx", "--data-dir", str(tmp_path),
                         "--validation", "10", "--epochs", "2", "--quiet", "--sizes", "6,5,10"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    # Without --validation the default (MNIST's 10,000) is what leaves no training data, and the error says so;
    # the test split is the same whatever the validation split, so evaluating on it needs no flag.
    net = str(tmp_path / "net.npz")  # a network of other data: on idx it gets idx's defaults
    fbp.save_params(net, fbp.init_mlp(jax.random.key(0), [6, 5, 10]), dict(data_flag="digits"))
    tested = subprocess.run([sys.executable, "-m", "fbp", "evaluate", net, "--data", "idx", "--data-dir",
                             str(tmp_path)], capture_output=True, text=True)
    assert tested.returncode == 0 and "test (20 examples)" in tested.stdout, tested.stdout + tested.stderr
    for command in (["train"], ["evaluate", net, "--split", "validation"]):
        small = subprocess.run([sys.executable, "-m", "fbp", *command, "--data", "idx", "--data-dir", str(tmp_path)],
                               capture_output=True, text=True)
        assert small.returncode == 2 and "Traceback" not in small.stderr, small.stderr
        assert small.stderr.strip().splitlines()[-1].endswith(
            "error: --validation: the default of 10000 validation examples (MNIST's 50,000/10,000 split) leaves no "
            "training data from the 60 training examples here; give --validation N below 60 (0 for none)")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5))
    bad = subprocess.run([sys.executable, "-m", "fbp", "train", "--data", "idx", "--data-dir", str(tmp_path),
                          "--validation", "10"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "train-images-idx3-ubyte.gz" in bad.stderr and "truncated header" in bad.stderr
