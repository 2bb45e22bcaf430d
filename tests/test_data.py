"""Data: digits, IDX files and the book's mnist.pkl.gz made here (valid, gzipped, truncated, corrupt)."""

import gzip
import io
import json
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest

import fbp
from fbp import data as fdata
from fbp import train as ftrain

from training_helpers import fbp_here


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


def test_cli_trains_on_idx_and_reports_corrupt_files(tmp_path, capsys):
    write_set(tmp_path, n_train=60, n_test=20, gz=True, rows=2, cols=3)
    ok = fbp_here(capsys, "train", "--data", "idx", "--data-dir", str(tmp_path),
                  "--validation", "10", "--epochs", "2", "--quiet", "--sizes", "6,5,10")
    assert ok.returncode == 0, ok.stderr
    # Without --validation the default (MNIST's 10,000) is what leaves no training data, and the error says so;
    # the test split is the same whatever the validation split, so evaluating on it needs no flag.
    net = str(tmp_path / "net.npz")  # a network of other data: on idx it gets idx's defaults
    fbp.save_params(net, fbp.init_mlp(jax.random.key(0), [6, 5, 10]), dict(data_flag="digits"))
    tested = fbp_here(capsys, "evaluate", net, "--data", "idx", "--data-dir", str(tmp_path))
    assert tested.returncode == 0 and "test (20 examples)" in tested.stdout, tested.stdout + tested.stderr
    for command in (["train"], ["evaluate", net, "--split", "validation"]):
        small = fbp_here(capsys, *command, "--data", "idx", "--data-dir", str(tmp_path))
        assert small.returncode == 2 and "Traceback" not in small.stderr, small.stderr
        assert small.stderr.strip().splitlines()[-1].endswith(
            "error: --validation: the default of 10000 validation examples (MNIST's 50,000/10,000 split) leaves no "
            "training data from the 60 training examples here; give --validation N below 60 (0 for none)")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5))
    bad = fbp_here(capsys, "train", "--data", "idx", "--data-dir", str(tmp_path), "--validation", "10")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "train-images-idx3-ubyte.gz" in bad.stderr and "truncated header" in bad.stderr


def test_cli_evaluate_names_fashion_mnists_classes(tmp_path, capsys):
    write_set(tmp_path, n_train=60, n_test=20, rows=2, cols=3)
    net = str(tmp_path / "net.npz")
    fbp.save_params(net, fbp.init_mlp(jax.random.key(0), [6, 5, 10]), dict(data_flag="fashion-mnist"))
    for data, named in (("fashion-mnist", True), ("idx", False)):
        proc = fbp_here(capsys, "evaluate", net, "--data", data, "--data-dir", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
        line = ("classes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, "
                "8 Bag, 9 Ankle boot")
        assert (line in proc.stdout.splitlines()) == named, proc.stdout


# --- the book's mnist.pkl.gz ------------------------------------------------
class _Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 and NumPy 1 wrote the book's file: text and
    bytes as Python 2 str (BINSTRING), arrays rebuilt by
    numpy.core.multiarray._reconstruct."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _py2_str(self, raw, memo=True):
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        if memo:
            self.memoize(raw)

    dispatch[bytes] = _py2_str
    dispatch[str] = lambda self, text: self._py2_str(text.encode("latin1"), memo=False)

    def _numpy1_global(self, obj, name=None):
        if getattr(obj, "__module__", "").startswith("numpy._core"):
            self.write(pickle.GLOBAL + obj.__module__.replace("_core", "core").encode() + b"\n"
                       + obj.__name__.encode() + b"\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)

    dispatch[type(np.empty(0).__reduce__()[0])] = _numpy1_global


def book_parts(n=(50, 10, 10), pixels=12, seed=0):
    rng = np.random.default_rng(seed)
    return tuple((rng.integers(0, 256, (k, pixels)).astype(np.float32) / 256, rng.integers(0, 10, k).astype(np.int64))
                 for k in n)


def write_book_pickle(path, parts):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(parts)
    raw = buf.getvalue()
    ops = {op.name for op, _, _ in pickletools.genops(raw)}  # as in the book's file: Python 2 str, no unicode
    assert {"BINSTRING", "SHORT_BINSTRING"} <= ops and "BINUNICODE" not in ops
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    with (gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb")) as f:
        f.write(raw)


def test_the_books_mnist_pickle_loads_with_the_books_split(tmp_path):
    parts = book_parts()
    write_book_pickle(tmp_path / "mnist.pkl.gz", parts)
    for path in (tmp_path, tmp_path / "mnist.pkl.gz"):  # the directory (the book's data/) or the file
        ds = fdata.mnist_pkl(str(path), n_validation=10)
        assert ds.name == "mnist" and (len(ds.train), len(ds.validation), len(ds.test)) == (50, 10, 10)
        for split, (X, y) in zip((ds.train, ds.validation, ds.test), parts):  # the book's own split, in order
            np.testing.assert_array_equal(split.X, X)
            np.testing.assert_array_equal(split.Y, np.eye(10, dtype=np.float32)[y])
    assert ftrain.compact_inputs(ds.train.X).dtype == np.int8  # k/256: fit trains on the bytes
    moved = fdata.mnist_pkl(str(tmp_path), n_validation=4)  # another size splits the same 60 anew
    np.testing.assert_array_equal(moved.validation.X, parts[1][0][6:])
    np.testing.assert_array_equal(moved.train.X[50:], parts[1][0][:6])
    for protocol in (2, 4, 5):  # a copy written again by Python 3, plain
        (tmp_path / "again.pkl").write_bytes(pickle.dumps(parts, protocol=protocol))
        np.testing.assert_array_equal(fdata.mnist_pkl(str(tmp_path / "again.pkl"), 10).test.X, parts[2][0])
    assert fdata.load("mnist-pkl", str(tmp_path), 10).n_in == 12
    with pytest.raises(fdata.DataError, match=r"load\('mnist-pkl'\) needs data_dir, the book's mnist.pkl.gz"):
        fdata.load("mnist-pkl")
    with pytest.raises(fdata.DataError, match=r"read no directory, but data_dir was given \(/some/mnist\); .* load 'idx'"):
        fdata.load("digits", "/some/mnist")


class _Trap:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling it would create a directory
        return (os.mkdir, (self.path,))


def test_a_pickle_is_read_for_arrays_only_and_bad_files_are_named(tmp_path):
    trap = tmp_path / "created-by-unpickling"
    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(((np.zeros((2, 3)), np.zeros(2, int)), _Trap(str(trap)), None), protocol=2))
    with pytest.raises(fdata.DataError, match=r"evil.pkl: it holds a pickled posix.mkdir, which fbp does not load"):
        fdata.mnist_pkl(str(bad))
    assert not trap.exists()  # refused, not run

    cases = {
        "two-parts.pkl": book_parts(n=(5, 5)),
        "bytes.pkl": tuple((np.zeros((5, 4), np.uint8), np.zeros(5, np.int64)) for _ in range(3)),
        "short-labels.pkl": tuple((np.zeros((5, 4), np.float32), np.zeros(4, np.int64)) for _ in range(3)),
        "float-labels.pkl": tuple((np.zeros((5, 4), np.float32), np.zeros(5)) for _ in range(3)),
    }
    needles = {"two-parts.pkl": "not the book's MNIST layout", "bytes.pkl": r"floats in \[0, 1\]",
               "short-labels.pkl": "as many labels as images", "float-labels.pkl": "integer classes"}
    for name, obj in cases.items():
        (tmp_path / name).write_bytes(pickle.dumps(obj, protocol=2))
        with pytest.raises(fdata.DataError, match=f"{name}: .*{needles[name]}"):
            fdata.mnist_pkl(str(tmp_path / name), 1)

    write_book_pickle(tmp_path / "whole.pkl.gz", book_parts())
    (tmp_path / "cut.pkl.gz").write_bytes((tmp_path / "whole.pkl.gz").read_bytes()[:200])
    (tmp_path / "cut.pkl").write_bytes(gzip.decompress((tmp_path / "whole.pkl.gz").read_bytes())[:500])
    for name in ("cut.pkl.gz", "cut.pkl"):
        with pytest.raises(fdata.DataError, match=f"{name}: .*truncated or corrupt"):
            fdata.mnist_pkl(str(tmp_path / name), 10)
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(fdata.DataError, match="no mnist.pkl.gz in this directory.*mnielsen"):
        fdata.mnist_pkl(str(tmp_path / "empty-dir"))
    with pytest.raises(fdata.DataError, match="no such file or directory"):
        fdata.mnist_pkl(str(tmp_path / "nothing-here.pkl.gz"))


def test_cli_trains_and_evaluates_on_the_books_pickle(tmp_path, capsys):
    write_book_pickle(tmp_path / "mnist.pkl.gz", book_parts(n=(200, 40, 40)))
    net = str(tmp_path / "net.npz")
    proc = fbp_here(capsys, "train", "--data", "mnist-pkl", "--data-dir", str(tmp_path),
                    "--validation", "40", "--epochs", "2", "--quiet", "--save-params", net)
    assert proc.returncode == 0, proc.stderr
    assert "mnist (200 train / 40 validation / 40 test), sizes=12,100,10" in proc.stdout
    proc = fbp_here(capsys, "evaluate", net)
    assert proc.returncode == 0 and "on mnist test (40 examples)" in proc.stdout, proc.stderr
    proc = fbp_here(capsys, "train", "--data", "mnist-pkl")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "needs --data-dir" in proc.stderr


# --- one .npz file (Keras's mnist.npz, or np.savez of any data) -------------
def npz_arrays(n_train=40, n_test=12, shape=(4, 5), n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return dict(x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                y_train=rng.integers(0, n_classes, n_train).astype(np.uint8),  # Keras's mnist.npz: uint8 labels
                x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                y_test=rng.integers(0, n_classes, n_test).astype(np.uint8))


def test_npz_reads_kerass_layout_as_idx_reads_the_same_bytes(tmp_path):
    arrays = npz_arrays()
    np.savez_compressed(tmp_path / "mnist.npz", **arrays)
    ds = fdata.npz(str(tmp_path), n_validation=8)  # the directory holding mnist.npz, as ~/.keras/datasets
    assert (ds.name, len(ds.train), len(ds.validation), len(ds.test), ds.n_in) == ("mnist", 32, 8, 12, 20)
    # The same bytes as IDX files give bitwise the same splits: one scaling, and fit keeps them as bytes.
    for key, stem in (("x_train", "train-images-idx3-ubyte"), ("y_train", "train-labels-idx1-ubyte"),
                      ("x_test", "t10k-images-idx3-ubyte"), ("y_test", "t10k-labels-idx1-ubyte")):
        fdata.write_idx(str(tmp_path / stem), arrays[key])
    same = fdata.idx(str(tmp_path), n_validation=8)
    n_classes = 1 + int(max(arrays["y_train"].max(), arrays["y_test"].max()))
    assert ds.n_classes == same.n_classes == n_classes
    for a, b in zip(ds[1:], same[1:]):
        np.testing.assert_array_equal(a.X, b.X)
        np.testing.assert_array_equal(a.Y, b.Y)
    assert ftrain.byte_codes(ds.train.X) is not None
    np.testing.assert_array_equal(ds.test.Y.argmax(1), arrays["y_test"])
    # Through load (fbp train --data npz): the default validation is MNIST's 10,000, too many here.
    np.testing.assert_array_equal(fdata.load("npz", str(tmp_path / "mnist.npz"), 8).validation.X, ds.validation.X)
    with pytest.raises(fdata.ValidationSizeError):
        fdata.load("npz", str(tmp_path / "mnist.npz"))
    with pytest.raises(fdata.DataError, match="needs data_dir"):
        fdata.load("npz")


def test_npz_takes_floats_in_0_1_and_one_hot_labels(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((30, 6)).astype(np.float64)
    labels = rng.integers(0, 3, 30)
    np.savez(tmp_path / "mine.npz", x_train=x[:20], y_train=np.eye(4)[labels[:20]], x_test=x[20:],
             y_test=np.eye(4, dtype=np.int32)[labels[20:]])
    ds = fdata.npz(str(tmp_path / "mine.npz"))
    assert ds.name == "mine" and ds.n_classes == 4  # the one-hot width, though class 3 never occurs
    np.testing.assert_array_equal(ds.train.X, x[:20].astype(np.float32))
    np.testing.assert_array_equal(ds.test.Y.argmax(1), labels[20:])
    assert len(ds.validation) == 0
    np.savez(tmp_path / "column.npz", x_train=x[:20], y_train=labels[:20, None], x_test=x[20:],
             y_test=labels[20:, None])  # a column of class numbers, as some tools save labels
    column = fdata.npz(str(tmp_path / "column.npz"))
    np.testing.assert_array_equal(column.train.Y.argmax(1), labels[:20])
    assert column.n_classes == max(2, 1 + labels.max())


def test_a_bad_npz_is_named_with_what_is_wrong(tmp_path):
    good = npz_arrays()

    def refused(match, **changes):
        path = tmp_path / "bad.npz"
        np.savez(path, **{**good, **changes})
        with pytest.raises(fdata.DataError, match=match) as e:
            fdata.npz(str(path))
        assert str(path) in str(e.value)

    path = tmp_path / "two.npz"
    np.savez(path, x_train=good["x_train"], y_train=good["y_train"])
    with pytest.raises(fdata.DataError, match=r"no x_test, y_test in it \(it holds x_train, y_train\)"):
        fdata.npz(str(path))
    refused(r"floats in \[-1.0, 2.0\], not in \[0, 1\].*x / x.max\(\)",
            x_train=np.linspace(-1, 2, 40 * 20).reshape(40, 20))
    refused("NaN or infinite", x_test=np.full((12, 20), np.nan))
    refused("x_train holds int64 values.*uint8", x_train=good["x_train"].astype(np.int64))
    refused(r"x_test is \(12,\); expected \(n, pixels\)", x_test=np.zeros(12, np.uint8))
    refused("training images have 20 pixels but test images 6", x_test=np.zeros((12, 6), np.uint8))
    refused("40 images but 39 labels in y_train; wrong count", y_train=good["y_train"][:39])
    refused("y_test is float64 .*non-negative integer class labels", y_test=good["y_test"] / 2)
    refused("y_train is int64 .*non-negative integer", y_train=-good["y_train"].astype(np.int64) - 1)
    refused("one-hot over 4 and 5 classes", y_train=np.eye(4)[good["y_train"] % 4], y_test=np.eye(5)[good["y_test"] % 5])
    refused("no training or no test images", x_test=np.zeros((0, 4, 5), np.uint8), y_test=np.zeros(0, np.uint8))
    np.savez(tmp_path / "obj.npz", **{**good, "y_train": np.array([1, "a"], dtype=object)})
    with pytest.raises(fdata.DataError, match="pickled objects, which fbp does not load"):
        fdata.npz(str(tmp_path / "obj.npz"))
    np.save(tmp_path / "one.npy", good["x_train"])
    with pytest.raises(fdata.DataError, match=r"one .npy array, not a .npz.*np.savez"):
        fdata.npz(str(tmp_path / "one.npy"))
    (tmp_path / "text.npz").write_text("x_train,y_train\n")
    with pytest.raises(fdata.DataError, match="not a .npz file"):
        fdata.npz(str(tmp_path / "text.npz"))
    np.savez(tmp_path / "whole.npz", **good)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:500])
    with pytest.raises(fdata.DataError, match="cannot be read .*truncated or corrupt"):
        fdata.npz(str(tmp_path / "cut.npz"))
    with pytest.raises(fdata.DataError, match="no such file or directory"):
        fdata.npz(str(tmp_path / "absent.npz"))
    with pytest.raises(fdata.DataError, match="no mnist.npz in this directory"):
        fdata.npz(str(tmp_path))


def test_cli_trains_and_evaluates_on_an_npz(tmp_path, capsys, monkeypatch):
    np.savez(tmp_path / "mnist.npz", **npz_arrays(n_train=120, n_test=30, shape=(3, 4)))
    net, run = str(tmp_path / "net.npz"), str(tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # --data-dir given relative to here
    proc = fbp_here(capsys, "train", "--data", "npz", "--data-dir", "mnist.npz", "--validation", "20", "--epochs",
                    "2", "--quiet", "--save-params", net, "--checkpoint-dir", run)
    assert proc.returncode == 0, proc.stderr
    assert "mnist (100 train / 20 validation / 30 test), sizes=12,100,10" in proc.stdout
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for trained in (net, run):  # each finds the data it was trained on from another directory, as its absolute path
        proc = fbp_here(capsys, "evaluate", trained)
        assert proc.returncode == 0 and "on mnist test (30 examples)" in proc.stdout, proc.stderr
    assert fbp.checkpoint.load_params(run, with_meta=True)[1]["notes"]["--data-dir"] == str(tmp_path / "mnist.npz")
    proc = fbp_here(capsys, "evaluate", net, "--worst", "2", "--worst-images",
                    str(tmp_path / "w.png"))  # 3×4 images: not square
    assert proc.returncode == 2 and proc.stderr.strip() == ("fbp evaluate: error: --worst-images: an example of "
                                                             "mnist is 12 numbers, not a square image to draw; drop "
                                                             "--worst-images (--worst lists the examples)")
    proc = fbp_here(capsys, "evaluate", net, "--explain", "0", "--explain-images", str(tmp_path / "w.png"))
    assert proc.returncode == 2 and proc.stderr.strip() == ("fbp evaluate: error: --explain-images: an example of "
                                                             "mnist is 12 numbers, not a square image to draw; drop "
                                                             "--explain-images (--explain lists the examples)")
    proc = fbp_here(capsys, "evaluate", net, "--weights-image", str(tmp_path / "w.png"))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "fbp evaluate: error: --weights-image: the first layer takes 12 inputs, not a square image; each unit's "
        "weights can be drawn only as an image of a square input; drop --weights-image")
    for flags, message in ((["--data", "npz"], "error: --data npz needs --data-dir, the .npz file"),
                           (["--data", "npz", "--data-dir", net, "--validation", "20"],
                            "error: --data-dir: " + net + ": no x_train")):
        proc = fbp_here(capsys, "train", *flags)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


def test_an_npz_may_name_its_classes_and_the_commands_show_the_names(tmp_path, capsys):
    """An .npz's optional class_names (one string a class) become
    Dataset.classes, kept with the saved network and the checkpoints, and
    fbp evaluate and fbp predict show them; a wrong class_names is named."""
    names = ["ring", "square", "star", "heart", "moon", "sun", "cloud", "drop", "leaf", "key"]
    np.savez(tmp_path / "shapes.npz", **npz_arrays(n_train=120, n_test=30, shape=(4, 4)), class_names=np.array(names))
    ds = fdata.npz(str(tmp_path / "shapes.npz"))
    assert ds.classes == tuple(names) and fdata.npz(str(tmp_path / "shapes.npz"), n_validation=10).classes == ds.classes
    name, train, validation, test = ds  # still the 4-tuple it was, the names beside it
    assert name == "shapes" and len(ds) == 4 and ds._replace(train=validation).classes == ds.classes
    assert fdata.fashion_mnist.__doc__ and fdata.CLASS_NAMES["fashion-mnist"][9] == "Ankle boot"
    net, run = str(tmp_path / "net.npz"), str(tmp_path / "run")
    proc = fbp_here(capsys, "train", "--data", "npz", "--data-dir", str(tmp_path / "shapes.npz"), "--validation", "20",
                    "--epochs", "1", "--quiet", "--save-params", net, "--checkpoint-dir", run)
    assert proc.returncode == 0, proc.stderr
    proc = fbp_here(capsys, "evaluate", net)
    assert proc.returncode == 0 and "classes: 0 ring, 1 square, 2 star, 3 heart" in proc.stdout, proc.stderr
    np.save(tmp_path / "x.npy", ds.test.X[:1])
    for trained in (net, run):  # the saved network's meta, and the checkpoint's notes, keep the names
        record = json.loads(fbp_here(capsys, "predict", trained, str(tmp_path / "x.npy"), "--json", "-").stdout)
        p = record["predictions"][0]
        assert p["name"] == names[p["predicted"]], record
    for bad, says in ((np.array(names[:3]), "class_names is <U6 (3,); it names the classes, 10 strings"),
                      (np.arange(10), "class_names is int64 (10,)")):
        np.savez(tmp_path / "bad.npz", **npz_arrays(), class_names=bad)
        with pytest.raises(fdata.DataError, match=re.escape(says)):
            fdata.npz(str(tmp_path / "bad.npz"))


def _shifted_by_roll(image, rows, cols):
    """An image shifted by np.roll, the rows and columns that wrapped around set to 0 (as the book's expand_mnist)."""
    out = np.roll(image, (rows, cols), axis=(0, 1))
    if rows > 0:
        out[:rows] = 0
    elif rows < 0:
        out[rows:] = 0
    if cols > 0:
        out[:, :cols] = 0
    elif cols < 0:
        out[:, cols:] = 0
    return out


@pytest.mark.parametrize("pixels", [1, 2])
def test_expand_adds_each_images_shifts_up_down_left_and_right_and_keeps_the_bytes(pixels):
    rng = np.random.default_rng(0)
    X = (rng.integers(0, 256, (7, 25)).astype(np.float32) / np.float32(255))
    Y = fdata.one_hot(rng.integers(0, 3, 7), 3)
    big = fdata.expand(fdata.Split(X, Y), pixels)
    assert big.X.shape == (35, 25) and big.Y.shape == (35, 3) and big.X.dtype == np.float32
    for n in range(7):
        image = X[n].reshape(5, 5)
        copies = big.X[5 * n:5 * n + 5].reshape(5, 5, 5)
        np.testing.assert_array_equal(copies[0], image)
        for copy, (rows, cols) in zip(copies[1:], [(-pixels, 0), (pixels, 0), (0, -pixels), (0, pixels)]):
            np.testing.assert_array_equal(copy, _shifted_by_roll(image, rows, cols))  # up, down, left, right
        assert (big.Y[5 * n:5 * n + 5] == Y[n]).all()
    assert ftrain.byte_codes(big.X) is not None  # still bytes scaled: fit keeps them as bytes on the device


def test_expand_refuses_what_it_cannot_shift():
    with pytest.raises(fdata.DataError, match=r"needs square images wider than the shift.*\(4, 6\)"):
        fdata.expand(fdata.Split(np.zeros((4, 6), np.float32), np.eye(4, dtype=np.float32)))
    with pytest.raises(fdata.DataError, match="wider than the shift"):
        fdata.expand(fdata.Split(np.zeros((4, 4), np.float32), np.eye(4, dtype=np.float32)), pixels=2)
    with pytest.raises(ValueError, match="pixels must be a positive int"):
        fdata.expand(fdata.Split(np.zeros((4, 9), np.float32), np.eye(4, dtype=np.float32)), pixels=0)


def test_cli_expand_trains_on_five_times_the_images_and_is_kept_with_the_checkpoint(tmp_path, capsys):
    run, out = str(tmp_path / "run"), tmp_path / "m.jsonl"
    flags = ["train", "--sizes", "64,20,10", "--quiet", "--checkpoint-dir", run, "--metrics-out", str(out)]
    proc = fbp_here(capsys, *flags, "--expand", "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("fbp train: digits (6285 train (expanded ×5) / 180 validation / 360 test)")
    assert json.loads(out.read_text().splitlines()[-1])["settings"]["--expand"] is True
    proc = fbp_here(capsys, *flags, "--epochs", "2", "--resume")
    assert proc.returncode == 2 and "--expand: saved True, now None" in proc.stderr.strip().splitlines()[-1]
    write_set(tmp_path, n_train=60, n_test=20, rows=2, cols=3)  # 2×3 images: no square to shift
    proc = fbp_here(capsys, "train", "--data", "idx", "--data-dir", str(tmp_path), "--validation", "10", "--expand")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "fbp train: error: --expand: expanding by shifts needs square images wider than the shift (1 pixel), one a "
        "row; got inputs of shape (50, 6)")
