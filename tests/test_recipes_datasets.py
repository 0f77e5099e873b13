import gzip
import os

import numpy as np
import pytest

from recipes import datasets


def _write_idx(path, array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_read_idx_exact_values(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = str(tmp_path / "x-idx3-ubyte.gz")
    _write_idx(path, images)
    np.testing.assert_array_equal(datasets.read_idx(path), images)
    ints = np.array([-5, 7, 100000], ">i4")
    _write_idx(path, ints, code=0x0C)
    np.testing.assert_array_equal(datasets.read_idx(path), [-5, 7, 100000])


def test_read_idx_rejects_corrupt_files(tmp_path):
    path = str(tmp_path / "bad.gz")
    with gzip.open(path, "wb") as f:
        f.write(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="bad.gz.*magic"):
        datasets.read_idx(path)
    _write_idx(path, np.zeros((4, 2), np.uint8))
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-3])
    with pytest.raises(ValueError, match="promises 8 bytes.*found 5"):
        datasets.read_idx(path)


def test_fashion_mnist_from_a_fake_root(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 3)):
        _write_idx(
            str(tmp_path / f"{prefix}-images-idx3-ubyte.gz"),
            rng.integers(0, 256, (n, 28, 28), np.uint8),
        )
        _write_idx(str(tmp_path / f"{prefix}-labels-idx1-ubyte.gz"), np.arange(n, dtype=np.uint8))
    data = datasets.load_fashion_mnist(str(tmp_path))
    assert data.x_train.shape == (6, 28, 28, 1) and data.x_test.shape == (3, 28, 28, 1)
    assert data.x_train.dtype == np.float32 and 0 <= data.x_train.min() and data.x_train.max() <= 1
    np.testing.assert_array_equal(data.y_test, [0, 1, 2])
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        datasets.load_fashion_mnist(str(tmp_path / "nowhere"))


@pytest.mark.skipif(
    not os.path.isdir(datasets.FASHION_MNIST_ROOT), reason="dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_shapes():
    data = datasets.load_classification("fashion_mnist", limit_train=100, limit_test=50)
    assert data.x_train.shape == (100, 28, 28, 1) and data.y_test.shape == (50,)
    assert set(np.unique(data.y_train)) <= set(range(10))


def test_digits_split_and_bad_arguments():
    data = datasets.load_classification("digits")
    assert len(data.x_train) + len(data.x_test) == 1797
    assert data.x_train.shape[1:] == (8, 8, 1) and data.x_train.max() == 1.0
    with pytest.raises(ValueError, match="cifar"):
        datasets.load_classification("cifar")
    with pytest.raises(ValueError, match="positive"):
        datasets.load_classification("digits", limit_train=0)
