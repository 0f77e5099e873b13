"""Tests for recipes.detectnet.postprocess (clustering golden values)."""

import math

import numpy as np
import pytest

from recipes.detectnet.postprocess import cluster, cluster_batch, grid_boxes, group_rectangles
from recipes.detectnet.targets import encode


def test_group_needs_more_than_threshold_rectangles():
    four = [(10, 10, 20, 20)] * 4
    rects, weights = group_rectangles(four + [(100, 10, 20, 20)] * 3, 3, 0.02)
    assert rects.tolist() == [[10, 10, 20, 20]] and weights.tolist() == [4]
    rects, weights = group_rectangles(four, 4, 0.02)
    assert len(rects) == 0 and weights.shape == (0,)


def test_group_averages_members():
    rects = [(100, 50, 100, 40), (101, 50, 100, 40), (100, 51, 101, 40), (99, 49, 102, 42)]
    # Edges differ by <= 2 px; delta >= 0.05 * (100 + 40) / 2 = 3.5: one class.
    grouped, weights = group_rectangles(rects, 3, 0.05)
    np.testing.assert_allclose(grouped, [[100.0, 50.0, 100.75, 40.5]])
    assert weights.tolist() == [4]
    # With eps 0.005 (delta 0.35) no two rectangles are similar.
    assert len(group_rectangles(rects, 3, 0.005)[0]) == 0
    assert group_rectangles(rects, 0, 0.005)[1].tolist() == [1, 1, 1, 1]


def test_similarity_tolerance_is_inclusive():
    # delta = 0.02 * (100 + 100) / 2 = 2: edges 2 px apart are similar...
    base = [(0, 0, 100, 100)] * 2
    _, weights = group_rectangles(base + [(2, 0, 100, 100)] * 2, 3, 0.02)
    assert weights.tolist() == [4]
    # ... 2.5 px apart are not (two classes of 2, both dropped).
    grouped, _ = group_rectangles(base + [(2.5, 0, 100, 100)] * 2, 3, 0.02)
    assert len(grouped) == 0


def test_similarity_is_transitive():
    chain = [(0, 0, 100, 100), (2, 0, 100, 100), (4, 0, 100, 100), (6, 0, 100, 100)]
    grouped, weights = group_rectangles(chain, 3, 0.02)  # 0 ~ 2 ~ 4 ~ 6, not 0 ~ 6
    assert weights.tolist() == [4]
    np.testing.assert_allclose(grouped, [[3, 0, 100, 100]])


def test_small_class_inside_a_stronger_one_is_dropped():
    big = [(0, 0, 100, 100)] * 6
    small = [(10, 10, 50, 50)] * 4
    grouped, weights = group_rectangles(big + small, 3, 0.02)
    assert grouped.tolist() == [[0, 0, 100, 100]] and weights.tolist() == [6]
    # Equal votes (4 vs 4 <= max(3, 4)): both kept.
    _, weights = group_rectangles(big[:4] + small, 3, 0.02)
    assert weights.tolist() == [4, 4]


def test_threshold_zero_returns_input():
    rects, weights = group_rectangles([(1, 2, 3, 4), (1, 2, 3, 4)], 0, 0.2)
    assert rects.tolist() == [[1, 2, 3, 4]] * 2 and weights.tolist() == [1, 1]


def test_integer_mode_equals_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for _ in range(300):
        rects = []
        for _ in range(rng.integers(1, 6)):
            base = np.concatenate([rng.integers(0, 200, 2), rng.integers(20, 120, 2)])
            rects += [base + rng.integers(-2, 3, 4) for _ in range(rng.integers(1, 9))]
        rects = np.array(rects)
        eps, threshold = float(rng.choice([0.02, 0.1, 0.2])), int(rng.integers(0, 4))
        expected, expected_weights = cv2.groupRectangles(rects.tolist(), threshold, eps)
        grouped, weights = group_rectangles(rects, threshold, eps, integer=True)
        np.testing.assert_array_equal(grouped.astype(int), np.reshape(expected, (-1, 4)))
        np.testing.assert_array_equal(weights, np.reshape(expected_weights, -1))


def test_grid_boxes_adds_cell_offsets():
    coverage = np.array([[0.59, 0.6], [0.9, 0.0]])
    bboxes = np.zeros((2, 2, 4))
    bboxes[0, 1] = [-10, 1, 20, 11]
    bboxes[1, 0] = [2, -3, 4, 5]
    boxes, scores = grid_boxes(coverage, bboxes, stride=16)
    assert boxes.tolist() == [[6, 1, 36, 11], [2, 13, 4, 21]]
    assert scores.tolist() == [0.6, 0.9]
    with pytest.raises(ValueError, match="grid_boxes"):
        grid_boxes(coverage, bboxes[..., :3])


def test_cluster_min_height_confidence_and_order():
    coverage = np.zeros((6, 6))
    bboxes = np.zeros((6, 6, 4))
    cells = {  # absolute box -> cells that propose it
        (10, 8, 50, 40): [(0, 0), (0, 1), (1, 0), (1, 1)],  # 4 votes, 32 px
        (60, 10, 90, 31): [(0, 4), (0, 5), (1, 4), (1, 5), (2, 4)],  # 21 px: dropped
        (8, 50, 60, 90): [(3, 0), (3, 1), (4, 0), (4, 1), (5, 0), (5, 1)],  # 6 votes
    }
    for box, positions in cells.items():
        for gy, gx in positions:
            coverage[gy, gx] = 0.8
            bboxes[gy, gx] = np.subtract(box, [16 * gx, 16 * gy] * 2)
    detections = cluster(coverage, bboxes)
    np.testing.assert_allclose(
        detections,
        [[8, 50, 60, 90, math.log(6)], [10, 8, 50, 40, math.log(4)]],
    )
    kept = cluster(coverage, bboxes, min_height=20)
    assert len(kept) == 3
    assert cluster(coverage, bboxes, threshold=0.9).shape == (0, 5)


def test_encoded_labels_decode_to_the_boxes():
    # A label grid read as a perfect network output clusters back to the boxes.
    cars = [(10, 20, 90, 70), (200, 30, 260, 60), (300, 40, 320, 55)]
    label = encode(cars, (128, 384))
    proposals = cluster(label[..., 0], label[..., 1:5], group_threshold=0, min_height=0)
    votes = {box: int(np.all(proposals[:, :4] == box, axis=1).sum()) for box in cars}
    assert votes == {cars[0]: 6, cars[1]: 6, cars[2]: 4}
    detections = cluster(label[..., 0], label[..., 1:5])
    # The third car is 15 px high (< 22): dropped.
    np.testing.assert_array_equal(detections, [[*cars[0], math.log(6)], [*cars[1], math.log(6)]])


def test_cluster_batch():
    outputs = {"coverage": np.zeros((3, 2, 2, 1)), "bboxes": np.zeros((3, 2, 2, 4))}
    outputs["coverage"][1] = 1.0
    outputs["bboxes"][1] = [
        [[0, 0, 30, 30], [-16, 0, 14, 30]],
        [[0, -16, 30, 14], [-16, -16, 14, 14]],
    ]
    detections = cluster_batch(outputs)
    assert [len(d) for d in detections] == [0, 1, 0]
    np.testing.assert_allclose(detections[1], [[0, 0, 30, 30, math.log(4)]])


def _grid(absolute_boxes, rows=2, cols=2, stride=16):
    coverage, bboxes = np.zeros((rows, cols)), np.zeros((rows, cols, 4))
    for (gy, gx), box in absolute_boxes.items():
        coverage[gy, gx] = 1.0
        bboxes[gy, gx] = np.subtract(box, [stride * gx, stride * gy] * 2)
    return coverage, bboxes


def test_digits_corner_quirk_sets_the_tolerance():
    # Four 30 x 25 proposals 1 px apart. DIGITS passes corners as (x, y, w, h):
    # tolerance 0.02 * (330 + 85) / 2 = 4.15 px, and x1 + x2 differ by <= 2:
    # one detection. As true (x, y, w, h) the tolerance is 0.02 * (30 + 25) / 2
    # = 0.55 px: no two proposals agree.
    boxes = {(0, 0): (300, 60, 330, 85), (0, 1): (301, 60, 331, 85),
             (1, 0): (300, 61, 330, 86), (1, 1): (301, 61, 331, 86)}  # fmt: skip
    coverage, bboxes = _grid(boxes)
    np.testing.assert_allclose(cluster(coverage, bboxes), [[300.5, 60.5, 330.5, 85.5, math.log(4)]])
    assert cluster(coverage, bboxes, digits_corners=False).shape == (0, 5)
    np.testing.assert_allclose(
        cluster(coverage, bboxes, digits_corners=False, eps=0.2),
        [[300.5, 60.5, 330.5, 85.5, math.log(4)]],
    )
