"""Tests for recipes.detectnet.metrics (DIGITS "mAP", hand-checked)."""

import numpy as np
import pytest

from recipes.detectnet import metrics
from recipes.detectnet.metrics import digits_map, iou, match


def test_iou_golden_values():
    a = [(0, 0, 10, 10), (0, 0, 0, 10)]
    b = [(0, 0, 10, 10), (5, 5, 15, 15), (10, 0, 20, 10), (0, 0, 10, 7)]
    expected = [[1.0, 25 / 175, 0.0, 0.7], [0.0, 0.0, 0.0, 0.0]]
    np.testing.assert_allclose(iou(a, b), expected)
    assert iou([], b).shape == (0, 4) and iou(a, []).shape == (2, 0)


def test_match_is_inclusive_at_threshold():
    gt_matched, det_matched = match([(0, 0, 10, 10)], [(0, 0, 10, 7, 0.5)])
    assert gt_matched.tolist() == [True] and det_matched.tolist() == [True]
    gt_matched, _ = match([(0, 0, 10, 10)], [(0, 0, 10, 6.9)])
    assert gt_matched.tolist() == [False]


def test_match_takes_the_first_free_detection_not_the_best():
    gt = [(0, 0, 10, 10), (0, 0, 10, 9)]
    det = [(0, 0, 10, 9), (0, 0, 10, 10)]
    # gt 0 takes det 0 (IoU 0.9, first in order), gt 1 then takes det 1.
    gt_matched, det_matched = match(gt, det)
    assert gt_matched.tolist() == [True, True] and det_matched.tolist() == [True, True]
    # One detection can match only one ground-truth box.
    gt_matched, det_matched = match(gt, det[:1])
    assert gt_matched.tolist() == [True, False] and det_matched.tolist() == [True]


def test_digits_map_hand_checked():
    ground_truth = [
        np.array([(0, 0, 100, 50), (200, 0, 300, 50), (400, 0, 450, 40)]),
        np.array([(0, 0, 60, 30)]),
        np.zeros((0, 4)),
    ]
    detections = [
        np.array([(0, 0, 100, 50, 2.0), (205, 0, 300, 50, 1.5), (400, 0, 430, 40, 1.4)]),
        np.array([(0, 0, 60, 30, 1.4), (0, 0, 60, 31, 1.4)]),  # duplicate: FP
        np.array([(10, 10, 40, 40, 1.4)]),
    ]
    # TP: img0 gt0 (IoU 1), gt1 (0.95); img1 gt0. FP: img0 det2 (IoU 0.6),
    # img1 det1, img2 det0. FN: img0 gt2.
    score = digits_map(ground_truth, detections)
    assert (score.true_positives, score.false_positives, score.false_negatives) == (3, 3, 1)
    assert score.precision == pytest.approx(50.0)
    assert score.recall == pytest.approx(75.0)
    assert score.mAP == pytest.approx(37.5)
    assert score.to_dict()["mAP"] == pytest.approx(37.5)


def test_digits_map_zero_denominators():
    empty = digits_map([np.zeros((0, 4))], [np.zeros((0, 5))])
    assert (empty.precision, empty.recall, empty.mAP) == (0.0, 0.0, 0.0)
    missed = digits_map([[(0, 0, 10, 10)]], [[]])
    assert (missed.false_negatives, missed.precision, missed.recall) == (1, 0.0, 0.0)


def test_digits_map_perfect_and_threshold_argument():
    gt = [[(0, 0, 10, 10)], [(5, 5, 25, 25)]]
    assert digits_map(gt, [[(0, 0, 10, 10, 1)], [(5, 5, 25, 25, 1)]]).mAP == 100.0
    loose = digits_map(gt, [[(0, 0, 10, 6, 1)], [(5, 5, 25, 25, 1)]], threshold=0.5)
    assert loose.mAP == 100.0


def test_digits_map_length_mismatch():
    with pytest.raises(ValueError, match="2 ground-truth images but 1 detection"):
        digits_map([[], []], [[]])


def test_image_counts_sum_to_the_digits_score():
    gt = [[(0, 0, 10, 10), (20, 0, 30, 10)], [], [(0, 0, 10, 10)]]
    det = [[(0, 0, 10, 10, 1.0)], [(50, 50, 60, 60, 1.0)], [(0, 0, 10, 10, 1.0)]]
    counts = metrics.image_counts(gt, det)
    assert counts.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert metrics.counts_score(counts) == metrics.digits_map(gt, det)


def test_bootstrap_spread_matches_the_delta_method_and_shrinks_with_more_images():
    # p = precision = recall = share of right images; mAP = 100 p^2, so
    # sd(mAP) ~ 200 p sd(p) = 200 p sqrt(p (1 - p) / n)
    for n in (100, 400):
        counts = np.array([[1, 0, 0]] * (n // 4) + [[0, 1, 1]] * (3 * n // 4))
        spread = metrics.digits_map_spread(counts, samples=2000)
        p = 0.25
        assert spread == pytest.approx(200 * p * np.sqrt(p * (1 - p) / n), rel=0.12)
    assert metrics.digits_map_spread(counts, seed=3) == metrics.digits_map_spread(counts, seed=3)
