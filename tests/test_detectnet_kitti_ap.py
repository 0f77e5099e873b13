"""Tests for recipes.detectnet.kitti_ap (KITTI devkit rules, hand-checked)."""

import math

import numpy as np
import pytest

from recipes.detectnet.kitti import KittiObject
from recipes.detectnet.kitti_ap import DIFFICULTIES, Difficulty, average_precision, kitti_ap

CAR = (100, 100, 200, 150)  # 50 px high: counts at every difficulty
FAR = (500, 100, 600, 150)  # where false positives go


def car(box=CAR, kind="Car", occluded=0, truncated=0.0):
    return KittiObject(kind, truncated, occluded, 0.0, box)


def det(box, score=1.0):
    return (*box, score)


def test_perfect_detector():
    gt = [[car()] for _ in range(41)]
    dets = [[det(CAR)] for _ in range(41)]
    assert average_precision(gt, dets) == pytest.approx(100.0)
    assert average_precision(gt, dets, recall_points=11) == pytest.approx(100.0)


def test_devkit_recall_sampling_with_few_boxes():
    # 40 boxes: 40 thresholds fill precision[0..39]; R40 averages [1..40].
    gt = [[car()] for _ in range(40)]
    dets = [[det(CAR)] for _ in range(40)]
    assert average_precision(gt, dets) == pytest.approx(97.5)


def test_missed_cars_and_low_scored_false_positives():
    # 30 of 40 cars found (score 1); 10 false positives at score 0.5 never
    # pass a threshold: precision 1 at the 30 thresholds, 0 beyond.
    gt = [[car()] for _ in range(40)]
    dets = [[det(CAR)] if i < 30 else [det(FAR, 0.5)] for i in range(40)]
    assert average_precision(gt, dets) == pytest.approx(29 / 40 * 100)
    assert average_precision(gt, dets, recall_points=11) == pytest.approx(8 / 11 * 100)


def test_high_scored_false_positives_halve_precision():
    gt = [[car()] for _ in range(41)]
    dets = [[det(CAR, 0.9), det(FAR, 0.95)] for _ in range(41)]
    assert average_precision(gt, dets) == pytest.approx(50.0)


def test_interpolated_precision_hand_checked():
    # 20 TPs at 0.9, then 20 FPs at 0.8, then 21 TPs at 0.7 (41 cars):
    # precision 1 at the 20 thresholds of 0.9, 41/61 at the 21 of 0.7.
    gt = [[car()] for _ in range(41)]
    dets = [
        [det(CAR, 0.9 if i < 20 else 0.7)] + ([det(FAR, 0.8)] if i < 20 else []) for i in range(41)
    ]
    expected = (19 * 1.0 + 21 * 41 / 61) / 40 * 100
    assert average_precision(gt, dets) == pytest.approx(expected)
    # 11 points: indices 0, 4, ..., 40: five at precision 1 (0..16), six at 41/61.
    expected_11 = (5 + 6 * 41 / 61) / 11 * 100
    assert average_precision(gt, dets, recall_points=11) == pytest.approx(expected_11)


def test_overlap_must_exceed_threshold():
    # IoU exactly 0.7: no match (KITTI uses a strict >).
    gt = [[car()] for _ in range(41)]
    dets = [[det((100, 100, 200, 135))] for _ in range(41)]  # 35/50 = 0.7
    assert average_precision(gt, dets) == 0.0
    dets = [[det((100, 100, 200, 136))] for _ in range(41)]  # 0.72
    assert average_precision(gt, dets) == pytest.approx(100.0)


def test_difficulties_ignore_hard_boxes_and_their_detections():
    small = (300, 100, 400, 130)  # 30 px: moderate, not easy
    gt = [[car(), car(small, occluded=1)] for _ in range(41)]
    dets = [[det(CAR), det(small)] for _ in range(41)]
    ap = kitti_ap(gt, dets)
    assert ap == {"easy": pytest.approx(100.0), "moderate": pytest.approx(100.0),
                  "hard": pytest.approx(100.0)}  # fmt: skip
    # Easy counts 41 cars; the small ones are ignored, not false positives.
    truncated = [[car(truncated=0.4)] for _ in range(41)]
    ap = kitti_ap(truncated, [[det(CAR)] for _ in range(41)])
    assert math.isnan(ap["easy"]) and math.isnan(ap["moderate"])
    assert ap["hard"] == pytest.approx(100.0)


def test_small_detections_are_ignored():
    gt = [[car()] for _ in range(41)]
    dets = [[det(CAR), det((500, 100, 600, 130), 2.0)] for _ in range(41)]  # 30 px FPs
    assert average_precision(gt, dets, difficulty=DIFFICULTIES["easy"]) == pytest.approx(100.0)
    assert average_precision(gt, dets, difficulty=DIFFICULTIES["moderate"]) == pytest.approx(50.0)


@pytest.mark.parametrize("other, expected", [("Van", 100.0), ("Truck", 50.0)])
def test_neighbouring_class_is_ignored(other, expected):
    gt = [[car(), car(FAR, kind=other)] for _ in range(41)]
    dets = [[det(CAR, 0.9), det(FAR, 0.95)] for _ in range(41)]
    assert average_precision(gt, dets) == pytest.approx(expected)


def test_detections_in_dontcare_regions_are_not_false_positives():
    dontcare = KittiObject("DontCare", -1, -1, -10, (490, 90, 620, 160))
    dets = [[det(CAR, 0.9), det(FAR, 0.95)] for _ in range(41)]
    with_dc = [[car(), dontcare] for _ in range(41)]
    assert average_precision(with_dc, dets) == pytest.approx(100.0)
    without = [[car()] for _ in range(41)]
    assert average_precision(without, dets) == pytest.approx(50.0)


def test_custom_difficulties_and_errors():
    tiny = Difficulty(min_height=10, max_occlusion=0, max_truncation=0.15)
    gt = [[car((0, 0, 30, 20))] for _ in range(41)]
    dets = [[det((0, 0, 30, 20))] for _ in range(41)]
    assert kitti_ap(gt, dets, difficulties={"tiny": tiny}) == {"tiny": pytest.approx(100.0)}
    with pytest.raises(ValueError, match="recall_points must be 11 or 40"):
        average_precision(gt, dets, recall_points=20)
    with pytest.raises(ValueError, match="41 ground-truth images but 1"):
        average_precision(gt, dets[:1])
    assert np.isnan(average_precision([[]], [[]]))
