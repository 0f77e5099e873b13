"""Tests for recipes.detectnet.targets (hand-checked label grids)."""

import numpy as np
import pytest

from recipes.detectnet.kitti import KittiObject
from recipes.detectnet.targets import (
    CHANNELS,
    coverage_region,
    encode,
    encode_batch,
    encode_objects,
    grid_size,
)


@pytest.mark.parametrize(
    "box, region",
    [
        ((0, 0, 100, 200), (30.0, 60.0, 70.0, 140.0)),  # 0.4 x size
        ((10, 10, 50, 30), (20.0, 10.0, 40.0, 30.0)),  # 16 -> 20 px; 8 -> 20 -> 20 (box)
        ((0, 0, 12, 8), (0.0, 0.0, 12.0, 8.0)),  # min 20 px but never above the box
    ],
)
def test_coverage_region(box, region):
    assert coverage_region(box) == region


def test_encode_hand_checked_cells():
    # Box 40 x 20 at (10, 10): region (20, 10)-(40, 30), area 400 -> obj_norm
    # 256 / 400; it overlaps cells x in {1, 2}, y in {0, 1} (stride 16).
    label = encode([(10, 10, 50, 30)], (64, 64))
    assert label.shape == (4, 4, len(CHANNELS)) and label.dtype == np.float32
    positive = np.zeros((4, 4), bool)
    positive[0:2, 1:3] = True
    np.testing.assert_array_equal(label[..., 0], positive.astype(np.float32))
    for gy, gx in zip(*np.nonzero(positive), strict=True):
        cell_x, cell_y = 16 * gx, 16 * gy
        np.testing.assert_allclose(
            label[gy, gx],
            [1, 10 - cell_x, 10 - cell_y, 50 - cell_x, 30 - cell_y, 1 / 40, 1 / 20, 0.64, 1],
            rtol=1e-6,
        )
    assert label[1, 2, 1:5].tolist() == [-22.0, -6.0, 18.0, 14.0]
    # Negative cells: all zero, weight 1.
    assert np.all(label[~positive][:, :8] == 0)
    assert np.all(label[..., 8] == 1)


def test_region_edges_on_cell_borders():
    # Box (2, 0)-(42, 64): region x = 12..32 exactly (20 px), so cells 0 and 1
    # only; y = 19.2..44.8 (0.4 x 64 = 25.6 px), rows 1 and 2.
    label = encode([(2, 0, 42, 64)], (64, 64))
    assert label[..., 0].sum(axis=0).tolist() == [2.0, 2.0, 0.0, 0.0]
    assert label[:, 0, 0].tolist() == [0.0, 1.0, 1.0, 0.0]
    np.testing.assert_allclose(label[1, 0, 7], 256 / (20 * 25.6), rtol=1e-6)


def test_later_object_wins_overlaps():
    first, second = (0, 0, 64, 64), (16, 16, 48, 48)
    label = encode([first, second], (64, 64))
    # Second box: region 20 x 20 at (22, 22): cells (1..2, 1..2), all shared
    # with the first box's region (19.2..44.8).
    np.testing.assert_allclose(label[1, 1, 1:5], [0, 0, 32, 32])
    np.testing.assert_allclose(label[1, 1, 5:7], [1 / 32, 1 / 32])
    swapped = encode([second, first], (64, 64))
    np.testing.assert_allclose(swapped[1, 1, 1:5], [-16, -16, 48, 48])


def test_dontcare_cells_get_zero_weight_unless_positive():
    label = encode([(10, 10, 50, 30)], (64, 64), dontcare=[(0, 0, 64, 40)])
    # DontCare covers cell centres with y in {8, 24} (rows 0 and 1).
    expected = np.ones((4, 4), np.float32)
    expected[0:2] = 0.0
    expected[0:2, 1:3] = 1.0  # positive cells are always penalised
    np.testing.assert_array_equal(label[..., 8], expected)
    # The rest of a DontCare cell stays zero.
    assert np.all(label[0, 0] == 0)


def test_boxes_outside_the_grid_are_clipped_and_empty_boxes_skipped():
    # Region -10..10 on both axes: only cell (0, 0) is on the grid.
    label = encode([(-20, -20, 20, 20), (5, 5, 5, 25)], (32, 32))
    assert label[..., 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    np.testing.assert_allclose(label[0, 0, 1:5], [-20, -20, 20, 20])


def test_stride_and_scale_arguments():
    label = encode([(0, 0, 32, 32)], (32, 32), stride=8, scale=0.25, min_size=4)
    # Region 8 x 8 at (12, 12): cells 1..2 of a 4 x 4 grid.
    assert label[..., 0].sum() == 4 and label[1:3, 1:3, 0].all()
    np.testing.assert_allclose(label[1, 1, 7], 1.0)  # 8*8 / (8*8)


def test_encode_objects_filters_classes():
    objects = [
        KittiObject("Car", 0.0, 0, 0.0, (10, 10, 50, 30)),
        KittiObject("Van", 0.0, 0, 0.0, (0, 40, 60, 64)),
        KittiObject("DontCare", -1, -1, -10, (48, 48, 64, 64)),
    ]
    label = encode_objects(objects, (64, 64))
    np.testing.assert_array_equal(label, encode([(10, 10, 50, 30)], (64, 64), [(48, 48, 64, 64)]))
    assert label[3, 3, 8] == 0.0 and label[3, 0, 8] == 1.0
    vans = encode_objects(objects, (64, 64), classes="Van")
    assert vans[..., 0].sum() > 0 and vans[0, 1, 0] == 0.0
    batch = encode_batch([objects, []], (64, 64))
    assert batch.shape == (2, 4, 4, 9)
    np.testing.assert_array_equal(batch[0], label)
    assert batch[1, ..., :8].sum() == 0


def test_grid_size_and_errors():
    assert grid_size((384, 1248)) == (24, 78)
    with pytest.raises(ValueError, match="multiples of the stride 16"):
        encode([], (100, 64))
    with pytest.raises(ValueError, match=r"boxes\[1\].*x2 < x1"):
        encode([(0, 0, 5, 5), (10, 0, 5, 5)], (32, 32))
    with pytest.raises(ValueError, match="non-finite"):
        encode([(0, 0, np.nan, 5)], (32, 32))
