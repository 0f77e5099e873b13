"""Tests for recipes.detectnet.evaluate (scoring raw outputs)."""

import math

import pytest

from recipes.detectnet import targets
from recipes.detectnet.evaluate import kitti_scale, scaled_difficulties, score
from recipes.detectnet.kitti import KittiObject

SIZE = (64, 96)
BIG = KittiObject("Car", 0.0, 0, 0.0, (8, 4, 56, 60))  # 56 px high, 4 cells
SMALL = KittiObject("Car", 0.0, 0, 0.0, (64, 40, 90, 60))  # 20 px high


def _perfect(labels):
    grid = targets.encode_batch(labels, SIZE)
    return {"coverage": grid[..., :1], "bboxes": grid[..., 1:5]}


def test_perfect_outputs_score_100():
    labels = [[BIG]] * 41
    result = score(_perfect(labels), labels)
    assert (result["mAP"], result["precision"], result["recall"]) == (100.0, 100.0, 100.0)
    assert result["ap_easy"] == result["ap_moderate"] == result["ap_hard"] == 100.0
    assert result["detections"] == 41


def test_small_boxes_and_scaling():
    labels = [[BIG, SMALL]] * 41
    outputs = _perfect(labels)
    # At KITTI scale the 20-px car is below the 22-px detection minimum: it is
    # left out of the DIGITS score, and ignored by the KITTI AP (<= 25 px).
    result = score(outputs, labels)
    assert (result["true_positives"], result["false_negatives"]) == (41, 0)
    assert result["ap_moderate"] == 100.0
    unfiltered = score(outputs, labels, filter_ground_truth=False)
    assert unfiltered["false_negatives"] == 41 and unfiltered["recall"] == 50.0
    # Scaled to 128-px images (22 -> 7.5 px) the small car is detected too.
    scaled = score(outputs, labels, scale=kitti_scale(128))
    assert (scaled["true_positives"], scaled["detections"]) == (82, 82)
    assert scaled["ap_moderate"] == 100.0


def test_missing_cars_are_reported():
    labels = [[BIG]] * 41
    outputs = _perfect([[]] * 41)
    result = score(outputs, labels)
    assert (result["mAP"], result["false_negatives"], result["detections"]) == (0.0, 41, 0)
    assert result["ap_easy"] == 0.0


def test_scale_helpers_and_errors():
    assert kitti_scale(375) == 1.0
    assert kitti_scale(128) == pytest.approx(0.34133, abs=1e-5)
    levels = scaled_difficulties(0.5)
    assert [levels[k].min_height for k in ("easy", "moderate", "hard")] == [20, 12.5, 12.5]
    assert levels["hard"].max_truncation == 0.5
    with pytest.raises(ValueError, match="image_height must be > 0"):
        kitti_scale(0)
    with pytest.raises(ValueError, match="2 coverage maps and 2 bbox maps for 3 label lists"):
        score(_perfect([[BIG]] * 2), [[BIG]] * 3)
    empty = score(_perfect([[]]), [[]])
    assert math.isnan(empty["ap_easy"]) and empty["mAP"] == 0.0


def test_cluster_arguments_pass_through():
    labels = [[BIG]] * 41
    outputs = _perfect(labels)
    outputs["coverage"] = outputs["coverage"] * 0.5  # below the 0.6 threshold
    assert score(outputs, labels)["detections"] == 0
    assert score(outputs, labels, threshold=0.4)["detections"] == 41
    tall_only = score(outputs, labels, threshold=0.4, min_height=60)  # BIG is 56 px
    assert (tall_only["detections"], tall_only["false_negatives"]) == (0, 0)
