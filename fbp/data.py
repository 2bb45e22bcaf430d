"""Data sets as NumPy arrays, ready to be put on the device.

Inputs are float32 in [0, 1], shape (n, n_in); targets are one-hot float32,
shape (n, n_classes). Every loader returns a ``Dataset`` of train, validation
and test ``Split``s.

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, no
  download), the embedded default.
- ``idx``: the IDX format of MNIST and Fashion-MNIST, gzipped or not.
- ``fashion_mnist``: the IDX files Debian's ``dataset-fashion-mnist`` installs.
- ``mnist_pkl``: the book's own ``mnist.pkl.gz`` (its repository's data/),
  with the book's 50,000 / 10,000 / 10,000 split.
- ``npz``: one NumPy ``.npz`` of ``x_train, y_train, x_test, y_test``: the
  one-file MNIST that Keras downloads (``mnist.npz``), or any data saved so.

``expand`` makes the book's artificially expanded training set (ch. 3):
each square image and its shifts by a pixel up, down, left and right.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
from typing import NamedTuple, Optional

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DATASETS = ("digits", "fashion-mnist", "idx", "mnist-pkl", "npz")  # the names load() takes (fbp train --data)
MNIST_PKL = "mnist.pkl.gz"  # the book's file, in data/ of github.com/mnielsen/neural-networks-and-deep-learning
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")  # the arrays of Keras's mnist.npz, in np.savez's names
MNIST_NPZ = "mnist.npz"  # the file Keras's datasets.mnist.load_data() keeps in ~/.keras/datasets
# What the class numbers stand for, where a data set's are not its digits
# (Fashion-MNIST's, as its README at github.com/zalandoresearch/fashion-mnist lists them).
CLASS_NAMES = {"fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                 "Sneaker", "Bag", "Ankle boot")}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX type codes (third byte of the magic number) -> big-endian NumPy dtype
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A data set that is missing, truncated or malformed."""


class ValidationSizeError(ValueError):
    """A validation split that would leave no training data (``--validation``).
    ``n_train`` and ``n_validation`` are the sizes asked for."""

    def __init__(self, message: str, n_train: int, n_validation: int):
        super().__init__(message)
        self.n_train, self.n_validation = n_train, n_validation


class Split(NamedTuple):
    X: np.ndarray  # (n, n_in) float32 in [0, 1]
    Y: np.ndarray  # (n, n_classes) float32 one-hot

    def __len__(self) -> int:
        return len(self.X)


class _DatasetFields(NamedTuple):
    name: str
    train: Split
    validation: Split  # may be empty (0 rows)
    test: Split


class Dataset(_DatasetFields):
    """A data set's name and its three splits, the 4-tuple (name, train,
    validation, test), with its classes' names beside it where it has them
    (``classes``: Fashion-MNIST's, an ``.npz``'s ``class_names``; None
    otherwise). ``classes`` is not one of the tuple's fields, so a Dataset
    still unpacks into four names."""

    classes: Optional[tuple]

    def __new__(cls, name: str, train: Split, validation: Split, test: Split, classes=None):
        self = super().__new__(cls, name, train, validation, test)
        self.classes = None if classes is None else tuple(classes)
        return self

    def _replace(self, **changes) -> "Dataset":
        classes = changes.pop("classes", self.classes)
        return Dataset(*_DatasetFields._replace(self, **changes), classes=classes)

    def __getnewargs__(self):  # pickling and copying keep the names
        return (*self, self.classes)

    @property
    def n_in(self) -> int:
        return self.train.X.shape[1]

    @property
    def n_classes(self) -> int:
        return self.train.Y.shape[1]


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"labels must lie in [0, {n_classes}), got range [{labels.min()}, {labels.max()}].")
    return np.eye(n_classes, dtype=np.float32)[labels]


def split_validation(train: Split, n_validation: int) -> tuple:
    """Take the last ``n_validation`` training examples as a validation set
    (the book's 50,000/10,000 split of MNIST's 60,000)."""
    n = len(train)
    if not 0 <= n_validation < n:
        raise ValidationSizeError(f"validation size must be in [0, {n}) for {n} training examples, "
                                  f"got {n_validation}.", n, n_validation)
    cut = n - n_validation
    return Split(train.X[:cut], train.Y[:cut]), Split(train.X[cut:], train.Y[cut:])


# --- the book's expanded training data (ch. 3) ------------------------------
SHIFTS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # (rows, columns): up, down, left, right


def expand(train: Split, pixels: int = 1) -> Split:
    """The training set artificially expanded as the book does it (ch. 3;
    its ``expand_mnist.py``): each k×k image, followed by its copies shifted
    ``pixels`` up, down, left and right, the rows or columns the shift
    uncovers set to 0 (the background), so 5× the examples, each copy with
    its image's label. Expand the training split alone, after the
    validation split is taken (``fbp train --expand`` does), or shifted
    copies of validation images would be trained on. Inputs that are bytes
    scaled (k/255 or k/256) stay so: ``fit`` still keeps them as bytes."""
    X, Y = np.asarray(train.X), np.asarray(train.Y)
    if isinstance(pixels, bool) or not isinstance(pixels, (int, np.integer)) or pixels < 1:
        raise ValueError(f"pixels must be a positive int (the shift), got {pixels!r}.")
    side = math.isqrt(X.shape[1]) if X.ndim == 2 else 0
    if X.ndim != 2 or side * side != X.shape[1] or side <= pixels:
        raise DataError(f"expanding by shifts needs square images wider than the shift ({pixels} pixel"
                        f"{'s' if pixels > 1 else ''}), one a row; got inputs of shape {X.shape}")
    images = X.reshape(len(X), side, side)
    out = np.zeros((len(X), 1 + len(SHIFTS), side, side), X.dtype)  # image n, then its four shifts
    out[:, 0] = images
    for k, (rows, cols) in enumerate(SHIFTS, 1):
        dst_r, src_r = _shifted_range(rows * pixels, side)
        dst_c, src_c = _shifted_range(cols * pixels, side)
        out[:, k, dst_r, dst_c] = images[:, src_r, src_c]
    return Split(out.reshape(-1, side * side), np.repeat(Y, 1 + len(SHIFTS), axis=0))


def _shifted_range(d: int, n: int) -> tuple:
    """(destination, source) slices of an axis of n shifted by d (d < 0: toward 0)."""
    return (slice(0, n + d), slice(-d, n)) if d < 0 else (slice(d, n), slice(0, n - d))


# --- digits ---------------------------------------------------------------
def _sklearn_digits():
    """(pixels (1797, 64), labels (1797,)) as ``sklearn.datasets.load_digits``
    gives them, read from the ``digits.csv.gz`` that scikit-learn ships,
    found without importing scikit-learn. The import (which pulls in SciPy)
    was about 0.8 s of the 4.5 s that `fbp train --epochs 2` took, where the
    file reads in 0.05 s. Where the file is not where scikit-learn keeps it
    (``sklearn/datasets/data/``, as ``load_digits`` reads it), or does not
    hold 1,797 rows of 64 pixels and a label, ``load_digits`` is called."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")
    try:
        with gzip.open(path, "rt") as fh:
            data = np.loadtxt(fh, delimiter=",")
    except (OSError, ValueError):
        data = None
    if data is None or data.shape != (1797, 65):
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.data, d.target
    return data[:, :-1], data[:, -1].astype(int)


def digits(n_validation: int = 180, n_test: int = 360, seed: int = 0) -> Dataset:
    """scikit-learn's 8×8 digits: 1,797 images of 64 pixels (0..16, scaled to [0, 1]).

    A fixed shuffle (``seed``) splits them into train / validation / test
    (default 1,257 / 180 / 360).
    """
    pixels, labels = _sklearn_digits()
    X = (pixels / 16.0).astype(np.float32)  # (1797, 64)
    Y = one_hot(labels, 10)
    order = np.random.default_rng(seed).permutation(len(X))
    X, Y = X[order], Y[order]
    if not 0 <= n_test < len(X):  # split_validation checks n_validation against what is left
        raise ValueError(f"n_test must be in [0, {len(X)}) for {len(X)} examples, got {n_test}.")
    test = Split(X[:n_test], Y[:n_test])
    train, validation = split_validation(Split(X[n_test:], Y[n_test:]), n_validation)
    return Dataset("digits", train, validation, test)


# --- IDX --------------------------------------------------------------------
def _open(path: str):
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (gzipped or not) into an array, checking its header.

    Raises ``DataError`` naming the file for a bad magic number, an unknown
    type code, or a payload shorter or longer than the header's dimensions.
    """
    try:
        with _open(path) as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, EOFError) as e:  # a truncated or corrupt gzip stream
        raise DataError(f"{path}: cannot be read ({e}); the file is truncated or corrupt") from None
    if len(raw) < 4:
        raise DataError(f"{path}: only {len(raw)} bytes, too short for an IDX header")
    zero, type_code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or type_code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{path}: bad magic number 0x{raw[:4].hex()} (expected 0x000008 then the number of "
            f"dimensions, e.g. 0x00000803 for images, 0x00000801 for labels); not an IDX file"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes, need {header} for {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        raise DataError(
            f"{path}: wrong count: the header says {dims[0]} items of shape {dims[1:]} "
            f"({expected} bytes) but the file holds {got} bytes; it is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def _find(directory: str, stem: str) -> str:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise DataError(f"{directory}: no {stem} (or {stem}.gz) in this directory")


def _not_a_dir(path: str) -> str:
    """What is wrong with a path that is not a directory."""
    return "a file, not a directory" if os.path.exists(path) else "no such directory"


def idx(directory: str, n_validation: int = 0, name: Optional[str] = None) -> Dataset:
    """MNIST-format data from a directory holding the four IDX files.

    Images (unsigned bytes) are scaled from 0..255 to [0, 1] and flattened;
    labels are one-hot over 1 + the largest label in the training and test
    files (10 for MNIST and Fashion-MNIST; 27 for EMNIST letters, labelled
    1..26). ``n_validation`` examples are taken from the end of the training
    set (10,000 gives the book's 50,000/10,000 split).
    """
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: {_not_a_dir(directory)}; give the one that holds the four IDX files")
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in IDX_FILES.items()}
    for key in ("train_images", "test_images"):
        if arrays[key].dtype != np.uint8:
            raise DataError(f"{directory}: {key} holds {arrays[key].dtype.name} values; fbp reads MNIST-style "
                            f"images of unsigned bytes (0..255), which it scales to [0, 1]")
    for key in ("train_labels", "test_labels"):
        if arrays[key].dtype.kind not in "iu" or (arrays[key].size and arrays[key].min() < 0):
            raise DataError(f"{directory}: {key} must hold non-negative integer class labels")
    for key in ("train_images", "test_images"):
        if len(arrays[key]) == 0:  # else NumPy's "cannot reshape array of size 0" further on
            raise DataError(f"{directory}: {IDX_FILES[key]} holds no images; fbp needs at least one to train "
                            f"on and one to test on")
    n_classes = 1 + max(int(arrays[k].max()) if arrays[k].size else 0 for k in ("train_labels", "test_labels"))
    if n_classes < 2:
        raise DataError(f"{directory}: every label is 0, so there is one class only; a classifier needs two or "
                        f"more")

    def split(images_key, labels_key):
        images, labels = arrays[images_key], arrays[labels_key]
        if images.ndim < 2 or labels.ndim != 1:
            raise DataError(f"{directory}: {images_key} must be (n, rows, cols) and {labels_key} (n,), "
                            f"got {images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise DataError(f"{directory}: {len(images)} {images_key} but {len(labels)} {labels_key}; wrong count")
        X = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return Split(X, one_hot(labels.astype(np.int64), n_classes))

    train, test = split("train_images", "train_labels"), split("test_images", "test_labels")
    if train.X.shape[1] != test.X.shape[1]:
        raise DataError(f"{directory}: train images have {train.X.shape[1]} pixels but test images {test.X.shape[1]}")
    train, validation = split_validation(train, n_validation)
    return Dataset(name or os.path.basename(os.path.normpath(directory)), train, validation, test)


def fashion_mnist(directory: Optional[str] = None, n_validation: int = 10_000) -> Dataset:
    """Fashion-MNIST (60,000 + 10,000 images of 28×28), from Debian's package by default."""
    if directory and not os.path.isdir(directory):  # given, so not a matter of installing the package
        raise DataError(f"{directory}: {_not_a_dir(directory)}; give the one that holds Fashion-MNIST's four IDX files "
                        f"(Debian's dataset-fashion-mnist puts them in {FASHION_MNIST_DIR})")
    directory = directory or FASHION_MNIST_DIR
    if not os.path.isdir(directory):
        raise DataError(
            f"{directory}: Fashion-MNIST is not installed. On Debian: "
            f"`sudo apt-get install dataset-fashion-mnist` (then `dpkg -L dataset-fashion-mnist` "
            f"shows its files), or give the directory that holds its four IDX files elsewhere (fbp train "
            f"--data-dir, fbp.data.fashion_mnist(directory))."
        )
    return idx(directory, n_validation, name="fashion-mnist")._replace(classes=CLASS_NAMES["fashion-mnist"])


def write_idx(path: str, array: np.ndarray, compress: Optional[bool] = None) -> None:
    """Write an unsigned-byte IDX file (gzipped when the name ends in .gz): for tests and tools."""
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    compress = path.endswith(".gz") if compress is None else compress
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(payload)


# --- the book's mnist.pkl.gz ---------------------------------------------
class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds NumPy arrays and nothing else. Unpickling may
    call any function a file names, so a file from elsewhere is read with
    only what pickled arrays need: ndarray, dtype, the functions that rebuild
    an array (``numpy.core.multiarray._reconstruct`` in files written with
    NumPy 1, as the book's was, ``numpy._core`` since NumPy 2;
    ``_frombuffer`` for protocol 5), and ``_codecs.encode`` (Python 3's
    protocol-2 pickles store bytes through it)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (f"numpy{core}.{module}", name) for core in (".core", "._core")
        for module, name in (("multiarray", "_reconstruct"), ("numeric", "_frombuffer"))}

    def __init__(self, raw: bytes, path: str):
        super().__init__(io.BytesIO(raw), encoding="latin1")  # the book's file was written by Python 2
        self.path = path  # for the errors

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"{self.path}: it holds a pickled {module}.{name}, which fbp does not load (unpickling "
                            f"can run code, so only NumPy arrays are read); it is not the book's mnist.pkl.gz")
        if name == "_reconstruct":  # where this NumPy keeps them, whatever the file names
            return np.empty(0).__reduce__()[0]
        if name == "_frombuffer":
            return np.empty(1).__reduce_ex__(5)[0]
        if module == "_codecs":
            import codecs

            return codecs.encode
        return getattr(np, name)


def mnist_pkl(path: str, n_validation: int = 10_000) -> Dataset:
    """The book's ``mnist.pkl.gz``: a gzipped pickle of (training, validation,
    test), each (images (n, 784) floats in [0, 1], labels (n,) ints), 50,000 /
    10,000 / 10,000 (``mnist_loader.load_data`` of the book's code reads it).
    Its images are float32 k/256 for the bytes k of MNIST; they are returned
    as they are, and ``fit`` keeps them as those bytes on the device
    (``fbp.train.byte_codes``).

    ``path`` is the file or the directory holding it (the book repository's
    ``data/``). Training and validation are joined in order and the last
    ``n_validation`` taken as validation again, so the default 10,000 is the
    book's split and other sizes split the same 60,000. Only NumPy arrays
    are unpickled (``_ArraysOnly``); any other object in the file is a
    ``DataError``, as are a missing or damaged file and a layout other than
    the book's, each naming the file.
    """
    if os.path.isdir(path):
        for name in (MNIST_PKL, "mnist.pkl"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise DataError(f"{path}: no {MNIST_PKL} in this directory; it is in data/ of the book's repository "
                            f"(github.com/mnielsen/neural-networks-and-deep-learning), or give the file itself")
    try:
        with _open(path) as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or directory") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read ({e}); the file is truncated or corrupt") from None
    unpickler = _ArraysOnly(raw, path)
    try:
        parts = unpickler.load()
    except DataError:
        raise
    except Exception as e:  # a cut-short or foreign pickle fails in many ways
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e}); the file is truncated or "
                        f"corrupt") from None

    layout = "a pickle of (training, validation, test), each (images (n, pixels), labels (n,))"
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(isinstance(p, tuple) and len(p) == 2 and all(
            isinstance(a, np.ndarray) for a in p) for p in parts)):
        raise DataError(f"{path}: not the book's MNIST layout; expected {layout}")
    for (images, labels), which in zip(parts, ("training", "validation", "test")):
        if images.ndim != 2 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{path}: the {which} images are {images.shape} and labels {labels.shape}; expected "
                            f"{layout}, as many labels as images")
        if images.dtype.kind != "f" or (images.size and not (images.min() >= 0 and images.max() <= 1)):
            raise DataError(f"{path}: the {which} images must be floats in [0, 1] (the book's scaling), got "
                            f"{images.dtype.name}" + (f" in [{images.min()}, {images.max()}]" if images.size else ""))
        if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
            raise DataError(f"{path}: the {which} labels must be non-negative integer classes")
    if len({p[0].shape[1] for p in parts}) != 1:
        raise DataError(f"{path}: the images of its three parts differ in size ({[p[0].shape[1] for p in parts]})")
    if len(parts[0][0]) + len(parts[1][0]) == 0 or len(parts[2][0]) == 0:
        raise DataError(f"{path}: it holds no training or no test images")
    n_classes = max(2, 1 + max(int(p[1].max()) for p in parts if p[1].size))
    X = np.concatenate([parts[0][0], parts[1][0]]).astype(np.float32)
    Y = one_hot(np.concatenate([parts[0][1], parts[1][1]]).astype(np.int64), n_classes)
    train, validation = split_validation(Split(X, Y), n_validation)
    test = Split(parts[2][0].astype(np.float32), one_hot(parts[2][1].astype(np.int64), n_classes))
    return Dataset("mnist", train, validation, test)


# --- one .npz file ----------------------------------------------------------
def _npz_images(path: str, key: str, images: np.ndarray) -> np.ndarray:
    """``images`` (n, ...) as float32 rows in [0, 1]: bytes scaled from
    0..255 (as ``idx`` scales them, so ``fit`` keeps them as bytes on the
    device), floats taken as they are once checked."""
    if images.ndim < 2:
        raise DataError(f"{path}: {key} is {images.shape}; expected (n, pixels) or (n, rows, cols), one image a row")
    rows = images.reshape(len(images), int(np.prod(images.shape[1:])))  # not -1: there may be no images
    if images.dtype == np.uint8:
        return rows.astype(np.float32) / 255.0
    if images.dtype.kind == "f":
        X = rows.astype(np.float32)
        if X.size and not np.isfinite(X).all():
            raise DataError(f"{path}: {key} holds NaN or infinite values; fbp reads inputs in [0, 1]")
        if X.size and not (X.min() >= 0 and X.max() <= 1):
            raise DataError(f"{path}: {key} holds floats in [{X.min()}, {X.max()}], not in [0, 1]; fbp reads inputs "
                            f"scaled to [0, 1]: save x / x.max(), or the raw bytes as uint8")
        return X
    raise DataError(f"{path}: {key} holds {images.dtype.name} values; fbp reads images of unsigned bytes (uint8, "
                    f"0..255, which it scales to [0, 1]) or floats already in [0, 1]")


def _npz_labels(path: str, key: str, labels: np.ndarray, n: int) -> np.ndarray:
    """``labels`` as integer classes: given so, (n,) or a column (n, 1), or one-hot (n, classes)."""
    if labels.ndim == 2 and labels.shape[1] == 1 and labels.dtype.kind in "iu":
        labels = labels[:, 0]
    if labels.ndim == 2 and labels.size and np.isin(labels, (0, 1)).all() and (labels.sum(axis=1) == 1).all():
        labels = labels.argmax(axis=1)
    elif labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise DataError(f"{path}: {key} is {labels.dtype.name} {labels.shape}; expected non-negative integer class "
                        f"labels (n,) or one-hot rows (n, classes)")
    if len(labels) != n:
        raise DataError(f"{path}: {n} images but {len(labels)} labels in {key}; wrong count")
    return labels.astype(np.int64)


def npz(path: str, n_validation: int = 0, name: Optional[str] = None) -> Dataset:
    """Data from one NumPy ``.npz`` file holding ``x_train, y_train, x_test,
    y_test``: the names of Keras's one-file MNIST (``mnist.npz``, which
    ``keras.datasets.mnist.load_data()`` keeps in ``~/.keras/datasets``), and
    what ``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)``
    writes from any data.

    ``path`` is the file, or a directory holding ``mnist.npz``. Images are
    (n, ...) unsigned bytes, scaled from 0..255 to [0, 1] as ``idx`` does, or
    floats already in [0, 1]; each is flattened. Labels are integer classes
    (n,) or one-hot rows (n, classes); there are 1 + the largest label
    classes (at least 2), or the one-hot width. The last ``n_validation``
    training examples are the validation set. An optional array
    ``class_names`` of strings, one per class, names them (``Dataset.classes``,
    which ``fbp evaluate`` and ``fbp predict`` show). Nothing pickled is loaded
    (``allow_pickle=False``): a file of object arrays is a ``DataError``, as
    are a missing or damaged file, a missing array and a bad shape or type,
    each naming the file.
    """
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, MNIST_NPZ)):
            raise DataError(f"{path}: no {MNIST_NPZ} in this directory; give the .npz file itself")
        path = os.path.join(path, MNIST_NPZ)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if head == b"\x93NUMPY":
            raise DataError(f"{path}: one .npy array, not a .npz of the arrays {', '.join(NPZ_KEYS)}; write those "
                            f"with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)")
        if head[:2] != b"PK":  # a .npz is a zip archive of .npy files
            raise DataError(f"{path}: not a .npz file (not a zip archive of NumPy arrays); fbp reads the arrays "
                            f"{', '.join(NPZ_KEYS)} from one, as np.savez writes it")
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise DataError(f"{path}: no {', '.join(missing)} in it (it holds {', '.join(f.files) or 'nothing'}); "
                                f"fbp reads the arrays {', '.join(NPZ_KEYS)}, as np.savez(path, x_train=..., "
                                f"y_train=..., x_test=..., y_test=...) names them")
            arrays = {k: f[k] for k in NPZ_KEYS}
            names = f["class_names"] if "class_names" in f.files else None
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: no such file or directory") from None
    except ValueError as e:  # object arrays, which np.load reads only by unpickling
        if "allow_pickle" in str(e):
            raise DataError(f"{path}: it holds pickled objects, which fbp does not load (unpickling can run code); "
                            f"save plain numeric arrays") from None
        raise DataError(f"{path}: cannot be read ({e}); it is not a .npz file, or it is truncated or corrupt") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, ...: a damaged or foreign file
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); it is not a .npz file, or it is "
                        f"truncated or corrupt") from None
    X_train = _npz_images(path, "x_train", arrays["x_train"])
    X_test = _npz_images(path, "x_test", arrays["x_test"])
    if len(X_train) == 0 or len(X_test) == 0:
        raise DataError(f"{path}: it holds no training or no test images; fbp needs at least one of each")
    if X_train.shape[1] != X_test.shape[1]:
        raise DataError(f"{path}: training images have {X_train.shape[1]} pixels but test images {X_test.shape[1]}")
    labels = {k: arrays[k] for k in ("y_train", "y_test")}
    widths = {v.shape[1] for v in labels.values() if v.ndim == 2}
    y_train = _npz_labels(path, "y_train", labels["y_train"], len(X_train))
    y_test = _npz_labels(path, "y_test", labels["y_test"], len(X_test))
    if len(widths) > 1:
        raise DataError(f"{path}: y_train and y_test are one-hot over {' and '.join(map(str, sorted(widths)))} "
                        f"classes; they must agree")
    n_classes = max(2, 1 + int(max(y_train.max(), y_test.max())), *widths)
    classes = None
    if names is not None:
        if names.dtype.kind != "U" or names.shape != (n_classes,):
            raise DataError(f"{path}: class_names is {names.dtype} {names.shape}; it names the classes, {n_classes} "
                            f"strings, as np.savez(path, ..., class_names=np.array(['a', 'b', ...])) writes them")
        classes = tuple(str(v) for v in names)
    train, validation = split_validation(Split(X_train, one_hot(y_train, n_classes)), n_validation)
    name = name or os.path.splitext(os.path.basename(path))[0]
    return Dataset(name, train, validation, Split(X_test, one_hot(y_test, n_classes)), classes)


def load(name: str, data_dir: Optional[str] = None, n_validation: Optional[int] = None) -> Dataset:
    """Load a data set by name: ``digits``, ``fashion-mnist``, ``idx``, ``mnist-pkl`` or ``npz`` (the last three
    need data_dir).

    The loader behind ``fbp train --data NAME --data-dir DIR`` and ``fbp
    evaluate``, which check those flags themselves first; so its own errors
    name its arguments."""
    if name == "digits":
        if data_dir is not None:  # most likely a forgotten --data idx: do not train on digits instead
            raise DataError(f"digits are bundled with scikit-learn and read no directory, but data_dir was given "
                            f"({data_dir}); for the IDX files there load 'idx' (or 'fashion-mnist')")
        return digits() if n_validation is None else digits(n_validation=n_validation)
    if name in ("fashion-mnist", "fashion_mnist"):
        return fashion_mnist(data_dir, 10_000 if n_validation is None else n_validation)
    if name in ("idx", "mnist"):
        if data_dir is None:
            raise DataError(f"load({name!r}) needs data_dir, the directory holding the four IDX files")
        return idx(data_dir, 10_000 if n_validation is None else n_validation)
    if name in ("mnist-pkl", "mnist_pkl"):
        if data_dir is None:
            raise DataError(f"load({name!r}) needs data_dir, the book's {MNIST_PKL} or the directory holding it")
        return mnist_pkl(data_dir, 10_000 if n_validation is None else n_validation)
    if name == "npz":
        if data_dir is None:
            raise DataError(f"load('npz') needs data_dir, the .npz file of {', '.join(NPZ_KEYS)}")
        return npz(data_dir, 10_000 if n_validation is None else n_validation)
    raise DataError(f"unknown data set {name!r}; choose {', '.join(DATASETS[:-1])} or {DATASETS[-1]}")
