"""Tests for recipes.detectnet.data (the tf.data pipeline and `scan`'s checks)."""

import os

import numpy as np
import pytest
from PIL import Image

from recipes.detectnet import data, kitti, scenes, targets

SIZE = (64, 96)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("kitti"))
    scenes.write_dataset(path, 5, seed=3, image_size=SIZE)
    return path


def test_stream_equals_in_memory_encoding(root):
    images, labels, _ = kitti.load_split(root, pad_to=(64, 112))
    examples = data.scan(root, (64, 112))
    assert data.labels_of(examples) == labels
    batches = list(data.dataset(examples, (64, 112), 2))
    assert [len(x) for x, _ in batches] == [2, 2, 1]
    streamed = np.concatenate([x.numpy() for x, _ in batches])
    np.testing.assert_array_equal(streamed, images.astype(np.float32))  # padded with zeros
    grids = np.concatenate([y["coverage"].numpy() for _, y in batches])
    np.testing.assert_array_equal(grids, targets.encode_batch(labels, (64, 112)))
    only = np.concatenate([x.numpy() for x in data.dataset(examples, (64, 112), 3, targets=False)])
    np.testing.assert_array_equal(only, streamed)
    np.testing.assert_array_equal(data.images_of(examples, (64, 112), 4), images[:4])


def test_in_memory_source_shuffle_and_cache(root, tmp_path):
    images, labels, _ = kitti.load_split(root)
    source = (images, labels)
    plain = np.concatenate([x.numpy() for x, _ in data.dataset(source, SIZE, 5)])
    np.testing.assert_array_equal(plain, images)
    examples = data.scan(root, SIZE)
    for cache in (None, "", str(tmp_path / "cache")):
        ds = data.dataset(examples, SIZE, 5, shuffle=True, seed=1, cache=cache)
        epochs = [next(iter(ds))[0].numpy() for _ in range(3)]
        for epoch in epochs:  # every epoch holds every image once
            assert sorted(map(bytes, epoch)) == sorted(map(bytes, plain))
        assert any(not np.array_equal(epochs[0], e) for e in epochs[1:])  # reshuffled


def test_resize_scales_boxes(root):
    examples = data.scan(root, (32, 48), fit="resize")
    original = data.scan(root, SIZE)
    np.testing.assert_allclose(kitti.boxes(examples[0].objects),
                               kitti.boxes(original[0].objects) / 2)  # fmt: skip
    x = next(iter(data.dataset(examples, (32, 48), 1, targets=False, fit="resize")))
    assert x.shape == (1, 32, 48, 3)


def _copy(root, tmp_path):
    import shutil

    target = str(tmp_path / "copy")
    shutil.copytree(root, target)
    return target, os.path.join(target, "training", "image_2"), os.path.join(
        target, "training", "label_2")


def test_scan_errors_name_the_file(root, tmp_path):
    copy, images, labels = _copy(root, tmp_path)
    with pytest.raises(ValueError, match="larger than the input 48x32"):
        data.scan(copy, (32, 48))
    with pytest.raises(ValueError, match=r"000000.png' is 96x64, not the input size 112x64"):
        data.scan(copy, (64, 112), fit="none")
    with pytest.raises(ValueError, match="fit must be one of"):
        data.scan(copy, SIZE, fit="crop")
    os.remove(os.path.join(images, "000004.png"))  # a label without an image
    with pytest.raises(FileNotFoundError, match="000004.txt' has no image"):
        data.scan(copy, SIZE)
    os.remove(os.path.join(labels, "000004.txt"))
    os.remove(os.path.join(labels, "000003.txt"))  # an image without a label
    with pytest.raises(FileNotFoundError, match="000003.png' has no label file"):
        data.scan(copy, SIZE)
    os.remove(os.path.join(images, "000003.png"))
    path = os.path.join(images, "000002.png")
    blob = open(path, "rb").read()
    with open(path, "wb") as handle:  # truncated
        handle.write(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="000002.png' is unreadable or truncated"):
        data.scan(copy, SIZE)
    assert len(data.scan(copy, SIZE, verify=False)) == 3  # header only
    with open(path, "wb") as handle:
        handle.write(b"not an image")
    with pytest.raises(ValueError, match="000002.png' is unreadable"):
        data.scan(copy, SIZE, verify=False)
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(path)
    with open(os.path.join(labels, "000001.txt"), "a") as handle:
        handle.write("\nCar 0.00 0 0.00 80.00 10.00 120.00 30.00 1 1 1 1 1 1 0\n")
    lines = sum(1 for line in open(os.path.join(labels, "000001.txt")) if line.strip())
    with pytest.raises(ValueError, match=rf"000001.txt:{lines + 1}: box .* outside its 96x64"):
        data.scan(copy, SIZE)
    with open(os.path.join(labels, "000001.txt"), "a") as handle:
        handle.write("Car 0.00 0 0.00 80.00\n")
    with pytest.raises(ValueError, match="000001.txt:.*15 fields"):
        data.scan(copy, SIZE)


def test_source_errors():
    with pytest.raises(TypeError, match="list of Example"):
        data.dataset("images/", SIZE, 1)
    with pytest.raises(ValueError, match="uint8"):
        data.dataset((np.zeros((1, 64, 96, 3), np.float32), [[]]), SIZE, 1)
    with pytest.raises(ValueError, match="not the input size"):
        data.dataset((np.zeros((1, 32, 96, 3), np.uint8), [[]]), SIZE, 1)
    with pytest.raises(ValueError, match="no examples"):
        data.dataset([], SIZE, 1)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.dataset((np.zeros((1, 64, 96, 3), np.uint8), [[]]), SIZE, 0)
