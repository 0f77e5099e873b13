"""Offline classification data for the recipes: Fashion-MNIST, digits.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package
(`/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz`); scikit-learn's digits
(8x8) ship with scikit-learn. Nothing is downloaded.

Example:

>>> from recipes.datasets import load_classification
>>> data = load_classification("digits")
>>> data.x_train.shape[1:], data.num_classes
((8, 8, 1), 10)
"""

import dataclasses
import gzip
import os

import numpy as np

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclasses.dataclass
class Dataset:
    """Images in [0, 1] as float32 NHWC, integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def read_idx(path):
    """Reads an IDX file (gzipped or not) into a numpy array.

    Raises:
        ValueError: The file is not a valid IDX file (bad magic, truncated).
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic {data[:4]!r}).")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX header promises {expected} bytes of data for shape {shape}, "
            f"found {len(data) - header}."
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def load_fashion_mnist(root=FASHION_MNIST_ROOT):
    """Fashion-MNIST (60k/10k, 28x28x1) from the Debian package's files."""
    paths = {
        key: os.path.join(root, f"{prefix}-{kind}-idx{n}-ubyte.gz")
        for key, prefix, kind, n in [
            ("x_train", "train", "images", 3),
            ("y_train", "train", "labels", 1),
            ("x_test", "t10k", "images", 3),
            ("y_test", "t10k", "labels", 1),
        ]
    }
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files missing: {missing}. Install the Debian package "
            "`dataset-fashion-mnist` (scripts/install.sh does) or use the digits data."
        )
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for key in ("x_train", "x_test"):
        arrays[key] = (arrays[key].astype("float32") / 255.0)[..., None]
    for key in ("y_train", "y_test"):
        arrays[key] = arrays[key].astype("int32")
    return Dataset("fashion_mnist", num_classes=10, **arrays)


def load_digits(test_fraction=0.2, seed=0):
    """scikit-learn's digits (1797 images, 8x8x1), a seeded train/test split."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int32")
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(round(len(x) * (1 - test_fraction)))
    train, test = order[:split], order[split:]
    return Dataset("digits", x[train], y[train], x[test], y[test], num_classes=10)


def load_classification(name="fashion_mnist", limit_train=None, limit_test=None):
    """Loads `name` ("fashion_mnist" or "digits"); Fashion-MNIST falls back to
    digits, with a message, when the Debian package is not installed.

    Args:
        name: Data set name.
        limit_train: Keep only the first N training examples (None = all).
        limit_test: Keep only the first N test examples.
    """
    if name not in ("fashion_mnist", "digits"):
        raise ValueError(f"Unknown data set {name!r}; use 'fashion_mnist' or 'digits'.")
    if name == "fashion_mnist":
        try:
            data = load_fashion_mnist()
        except FileNotFoundError as error:
            print(f"{error}\nFalling back to scikit-learn digits.")
            data = load_digits()
    else:
        data = load_digits()
    for limit, keys in ((limit_train, ("x_train", "y_train")), (limit_test, ("x_test", "y_test"))):
        if limit is not None:
            if limit <= 0:
                raise ValueError(f"limits must be positive, got {limit}.")
            for key in keys:
                setattr(data, key, getattr(data, key)[:limit])
    return data
