"""Tests for recipes.detectnet.augment: boxes follow the pixels through every
transform, DontCare is kept, truncation is updated."""

import colorsys

import numpy as np
import pytest
import tensorflow as tf

from recipes.detectnet import data
from recipes.detectnet.augment import Augmentation

SIZE = (96, 160)
NONE = dict(shift_x=0, shift_y=0, flip_prob=0, scale_prob=0, hue_rotation_prob=0,
            desaturation_prob=0)  # fmt: skip
TRANSFORMS = {
    "shift": dict(NONE, shift_x=48, shift_y=32),
    "flip": dict(NONE, flip_prob=0.5),
    "scale": dict(NONE, scale_prob=1.0),
    "colour": dict(NONE, hue_rotation_prob=1.0, desaturation_prob=1.0),
    "all (DIGITS)": {},
}


def _scene(box, colour=(220, 60, 40)):
    image = np.zeros((*SIZE, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = colour
    return image


def _run(params, image, boxes, codes, truncated, draws, seed=0):
    example = {"images": image, "boxes": np.asarray(boxes, np.float32),
               "labels": np.asarray(codes, np.float32),
               "truncated": np.asarray(truncated, np.float32)}  # fmt: skip
    ds = tf.data.Dataset.from_tensors(example).repeat(draws)
    return [{k: v.numpy() for k, v in e.items()}
            for e in ds.map(Augmentation(**params).build(SIZE, seed))]  # fmt: skip


def _extent(image):
    ys, xs = np.nonzero(image.max(axis=-1) > 60)
    return None if not len(xs) else np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_box_encloses_its_object_after_every_transform(name):
    box = (100, 30, 150, 70)  # near the right edge: shifts and zooms clip it
    dontcare = (60, 40, 80, 60)  # stays inside under every shift
    outputs = _run(TRANSFORMS[name], _scene(box), [box, dontcare, (0, 0, 0, 0)],
                   [data.TARGET, data.DONTCARE, data.PADDING], [0.0, -1.0, 0.0], draws=24)
    moved = 0
    for out in outputs:
        assert out["images"].shape == (*SIZE, 3) and out["images"].dtype == np.float32
        assert out["labels"][2] == data.PADDING and out["labels"][1] == data.DONTCARE
        assert out["truncated"][1] == -1.0  # DontCare keeps its -1
        extent = _extent(out["images"])
        if out["labels"][0] == data.PADDING:  # moved out of the image
            assert extent is None or (extent[2] - extent[0]) * (extent[3] - extent[1]) <= 4
            continue
        # the object's pixels and its box agree to interpolation's pixel
        np.testing.assert_allclose(out["boxes"][0], extent, atol=1.5)
        moved += not np.allclose(out["boxes"][0], box)
    assert moved == 0 if name == "colour" else moved > len(outputs) // 4


def test_truncation_is_the_visible_fraction():
    box, inner = (120, 30, 160, 70), (60, 40, 80, 60)  # at the right edge, and inside
    outputs = _run(dict(NONE, shift_x=40, scale_prob=1.0), _scene(box), [box, inner],
                   [data.TARGET, data.TARGET], [0.25, 0.0], draws=24)
    for out in outputs:
        scale = (out["boxes"][1][2] - out["boxes"][1][0]) / 20.0  # the zoom, from the inner box
        b = out["boxes"][0]
        visible = (b[2] - b[0]) * (b[3] - b[1]) / (40 * 40 * scale * scale)
        if out["labels"][0] == data.PADDING:
            assert out["truncated"][0] == pytest.approx(1.0)
        else:
            assert out["truncated"][0] == pytest.approx(1 - 0.75 * visible, abs=0.02)
        assert out["truncated"][1] == pytest.approx(0.0, abs=0.02)
    assert len({round(float(out["truncated"][0]), 2) for out in outputs}) > 5


def test_slivers_cut_by_the_border_become_dontcare():
    box = (130, 30, 160, 70)  # 30 px wide at the right edge: shifts cut it to slivers
    outputs = _run(dict(NONE, shift_x=40), _scene(box), [box], [data.TARGET], [0.0], draws=60)
    kinds = set()
    for out in outputs:
        x1, y1, x2, y2 = out["boxes"][0]
        if out["labels"][0] == data.PADDING:
            continue
        expected = data.DONTCARE if min(x2 - x1, y2 - y1) < 8 else data.TARGET
        assert out["labels"][0] == expected, out["boxes"][0]
        kinds.add(expected)
    assert kinds == {data.TARGET, data.DONTCARE}


def test_probabilities_and_colour_ranges():
    outputs = _run(dict(NONE, flip_prob=0.5, hue_rotation_prob=0.8, desaturation_prob=0.8),
                   _scene((10, 10, 30, 30)), [(10, 10, 30, 30)], [data.TARGET], [0.0],
                   draws=400)  # fmt: skip
    flipped = np.mean([out["boxes"][0][0] > 80 for out in outputs])
    assert 0.4 < flipped < 0.6
    hsv = [colorsys.rgb_to_hsv(*(out["images"][20, 20 if out["boxes"][0][0] < 80 else 139] / 255))
           for out in outputs]  # fmt: skip
    h0, s0, _ = colorsys.rgb_to_hsv(220 / 255, 60 / 255, 40 / 255)
    turn = [min(abs(h - h0), 1 - abs(h - h0)) * 360 for h, _, _ in hsv]
    ratio = [s / s0 for _, s, _ in hsv]
    assert max(turn) <= 31 and 0.1 < np.mean(np.array(turn) > 0.5) < 0.95
    assert min(ratio) >= 0.18 and max(ratio) <= 1.01 and np.mean(np.array(ratio) < 0.99) > 0.6


def test_bad_parameters():
    for bad, message in [({"flip_prob": 0.7}, "flip_prob must be in"),
                         ({"hue_rotation": 200}, "hue_rotation must be in"),
                         ({"shift_x": -1}, "shifts must be"),
                         ({"desaturation_prob": 2}, "desaturation_prob must be in"),
                         ({"min_side": -1}, "min_side must be >= 0")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            Augmentation(**bad)


def test_pipeline_with_augmentation_encodes_moved_boxes():
    from recipes.detectnet import targets

    image = _scene((40, 20, 90, 60))
    source = (np.stack([image] * 4), [[_car((40, 20, 90, 60))]] * 4)
    ds = data.dataset(source, SIZE, 4, augmentation=Augmentation(**TRANSFORMS["shift"]), seed=3)
    images, grids = next(iter(ds))
    for x, grid in zip(images.numpy(), grids["coverage"].numpy(), strict=True):
        gy, gx = np.argwhere(grid[..., 0] == 1)[0]  # the box the grid holds, in pixels
        box = grid[gy, gx, 1:5] + np.array([gx, gy, gx, gy]) * targets.STRIDE
        np.testing.assert_allclose(box, _extent(x), atol=1.5)  # moved with the pixels
        np.testing.assert_array_equal(grid, targets.encode([box], SIZE))


def _car(box):
    from recipes.detectnet.kitti import KittiObject

    return KittiObject("Car", 0.0, 0, 0.0, box)
