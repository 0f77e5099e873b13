"""Tests for recipes.detectnet.kitti (labels, directory layout, loading)."""

import os

import numpy as np
import pytest
from PIL import Image

from recipes.detectnet.kitti import (
    KittiObject,
    boxes,
    find_examples,
    format_line,
    load_split,
    parse_line,
    read_labels,
    write_labels,
)

# Lines as they appear in KITTI's training/label_2/000008.txt.
CAR_LINE = "Car 0.88 3 -0.69 0.00 192.37 402.31 374.00 1.60 1.57 3.23 -2.70 1.74 3.68 -1.29"
DONTCARE_LINE = "DontCare -1 -1 -10 800.38 163.67 825.45 184.07 -1 -1 -1 -1000 -1000 -1000 -10"


def test_parse_car_line():
    obj = parse_line(CAR_LINE)
    assert obj == KittiObject(
        "Car", 0.88, 3, -0.69, (0.0, 192.37, 402.31, 374.0), (1.6, 1.57, 3.23),
        (-2.7, 1.74, 3.68), -1.29,
    )  # fmt: skip
    assert obj.score is None
    assert obj.height == pytest.approx(181.63)


def test_parse_dontcare_and_score():
    obj = parse_line(DONTCARE_LINE)
    assert (obj.type, obj.truncated, obj.occluded, obj.alpha) == ("DontCare", -1.0, -1, -10.0)
    assert parse_line(CAR_LINE + " 0.93").score == pytest.approx(0.93)


@pytest.mark.parametrize(
    "obj",
    [
        parse_line(CAR_LINE),
        parse_line(DONTCARE_LINE),
        parse_line(CAR_LINE + " 0.93"),
        KittiObject("Pedestrian", 0.125, 1, 1 / 3, (1.5, 2.25, 3.0, 40.0), (1.7, 0.6, 0.8)),
    ],
)
def test_format_parse_round_trip(obj):
    assert parse_line(format_line(obj)) == obj


def test_format_uses_kitti_two_decimals():
    assert format_line(parse_line(CAR_LINE)) == CAR_LINE
    assert format_line(parse_line(DONTCARE_LINE)).split()[:4] == [
        "DontCare",
        "-1.00",
        "-1",
        "-10.00",
    ]


def test_write_read_file_round_trip(tmp_path):
    objects = [parse_line(CAR_LINE), parse_line(DONTCARE_LINE),
               KittiObject("Van", 0.0, 0, 0.1234567, (10, 20, 30.5, 40))]  # fmt: skip
    path = str(tmp_path / "000000.txt")
    write_labels(path, objects)
    assert read_labels(path) == objects
    write_labels(path, [])
    assert read_labels(path) == []


@pytest.mark.parametrize(
    "line, message",
    [
        ("Car 0.0 0 0.0 1 2 3", "15 fields .* got 7"),
        (CAR_LINE.replace("192.37", "abc"), "field 6 is not a number: 'abc'"),
        (CAR_LINE.replace("1.57", "nan"), "field 10 is not a number"),
        (CAR_LINE.replace(" 3 -0.69", " 5 -0.69"), "occluded .* -1..3, got '5'"),
        (CAR_LINE.replace(" 3 -0.69", " 1.5 -0.69"), "occluded"),
        (CAR_LINE.replace("0.88", "1.5"), r"truncated .* \[-1, 1\]"),
        (CAR_LINE.replace("0.00 192.37 402.31", "500.00 192.37 402.31"), "right < left"),
    ],
)
def test_malformed_lines_report_file_and_line(tmp_path, line, message):
    path = str(tmp_path / "000042.txt")
    with open(path, "w") as handle:
        handle.write(DONTCARE_LINE + "\n\n" + line + "\n")
    with pytest.raises(ValueError, match=f"000042.txt:3: .*{message}"):
        read_labels(path)


def test_boxes_selects_types():
    objects = [parse_line(CAR_LINE), parse_line(DONTCARE_LINE)]
    np.testing.assert_allclose(boxes(objects), [[0.0, 192.37, 402.31, 374.0]])
    assert boxes(objects, "DontCare").shape == (1, 4)
    assert boxes([], ("Car",)).shape == (0, 4)


def _make_root(root, sizes, labels=None):
    for directory in ("image_2", "label_2"):
        os.makedirs(os.path.join(root, "training", directory), exist_ok=True)
    for index, (height, width) in enumerate(sizes):
        name = f"{index:06d}"
        pixels = np.full((height, width, 3), index + 1, np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, "training", "image_2", name + ".png"))
        objects = labels[index] if labels else [parse_line(CAR_LINE)]
        write_labels(os.path.join(root, "training", "label_2", name + ".txt"), objects)
    return root


def test_load_split(tmp_path):
    root = _make_root(str(tmp_path), [(20, 30), (20, 30), (20, 30)])
    images, labels, names = load_split(root)
    assert images.shape == (3, 20, 30, 3) and images.dtype == np.uint8
    assert [int(image[0, 0, 0]) for image in images] == [1, 2, 3]
    assert names == ["000000", "000001", "000002"]
    assert labels[0] == [parse_line(CAR_LINE)]
    images, _, names = load_split(root, limit=2)
    assert len(images) == 2 and names == ["000000", "000001"]


def test_inconsistent_image_sizes(tmp_path):
    root = _make_root(str(tmp_path), [(375, 1242), (370, 1224)])
    with pytest.raises(ValueError, match=r"inconsistent size: .*000001.png' is 1224x370 .* "
                       r"1242x375 .*pad_to"):  # fmt: skip
        load_split(root)
    images, _, _ = load_split(root, pad_to=(384, 1248))
    assert images.shape == (2, 384, 1248, 3)
    assert images[1, :370, :1224].min() == 2 and images[1, 370:].max() == 0
    with pytest.raises(ValueError, match="larger than pad_to 1230x384"):
        load_split(root, pad_to=(384, 1230))


def test_missing_directories_and_labels(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_examples(str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "training" / "image_2")
    with pytest.raises(FileNotFoundError, match="missing directory .*label_2"):
        find_examples(str(tmp_path))
    os.makedirs(tmp_path / "training" / "label_2")
    with pytest.raises(FileNotFoundError, match="No .png/.jpg images"):
        find_examples(str(tmp_path))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "training" / "image_2" / "7.png")
    with pytest.raises(FileNotFoundError, match="7.png' has no label file .*7.txt"):
        find_examples(str(tmp_path))


def test_malformed_label_is_reported_by_load_split(tmp_path):
    root = _make_root(str(tmp_path), [(8, 8)])
    with open(os.path.join(root, "training", "label_2", "000000.txt"), "a") as handle:
        handle.write("Car 0 0\n")
    with pytest.raises(ValueError, match="000000.txt:2: a KITTI label line has 15 fields"):
        load_split(root)
