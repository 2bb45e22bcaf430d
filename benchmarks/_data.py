"""Data shared by the benchmark scripts (run as `python benchmarks/NAME.py`)."""

import numpy as np

from fbp import data as fdata


def fashion_mnist_or_random(directory=None):
    """(name, X, Y): Fashion-MNIST's 60,000 training images and one-hot
    labels when installed (``directory``, or where Debian's package puts
    them), else random byte images of the same shape, scaled as fbp.data
    scales bytes, with random labels."""
    try:
        ds = fdata.fashion_mnist(directory, n_validation=0)
        return "Fashion-MNIST", ds.train.X, ds.train.Y
    except fdata.DataError:
        rng = np.random.default_rng(0)
        X = rng.integers(0, 256, size=(60_000, 784), dtype=np.uint8).astype(np.float32) / 255.0  # as image bytes
        return "random (Fashion-MNIST not installed)", X, np.eye(10, dtype=np.float32)[rng.integers(0, 10, 60_000)]
