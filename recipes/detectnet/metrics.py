"""DIGITS' DetectNet "mAP": precision x recall / 100 at IoU 0.7.

This is the number DIGITS plots as "mAP" for DetectNet; it is *not* a
PASCAL/KITTI average precision (see `kitti_ap` for that). Per image, each
ground-truth box in turn takes the first not yet matched detection (in the
order given) whose IoU with it is >= 0.7; matched detections are true
positives, the other detections false positives, unmatched ground truth
false negatives. Then, in percent::

    precision = 100 * TP / (TP + FP)
    recall    = 100 * TP / (TP + FN)
    mAP       = precision * recall / 100

DIGITS computes this per validation batch and averages over batches; here
TP/FP/FN are summed over the whole set (the same when batches are equal in
content, and independent of the batch size). Ratios with a zero denominator
are 0, as in DIGITS.
"""

import dataclasses

import numpy as np


def iou(boxes_a, boxes_b):
    """Intersection over union of every pair of `x1, y1, x2, y2` boxes.

    Args:
        boxes_a: (A, 4) boxes.
        boxes_b: (B, 4) boxes.

    Returns:
        (A, B) array of IoU values; pairs that do not overlap (or have no
        area) get 0.

    Example:

    >>> iou([(0, 0, 10, 10)], [(5, 0, 15, 10), (20, 20, 30, 30)]).round(4).tolist()
    [[0.3333, 0.0]]
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    overlap_w = np.minimum.outer(a[:, 2], b[:, 2]) - np.maximum.outer(a[:, 0], b[:, 0])
    overlap_h = np.minimum.outer(a[:, 3], b[:, 3]) - np.maximum.outer(a[:, 1], b[:, 1])
    inter = np.clip(overlap_w, 0, None) * np.clip(overlap_h, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = np.add.outer(area_a, area_b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def match(ground_truth, detections, threshold=0.7):
    """DIGITS' greedy matching of one image.

    Args:
        ground_truth: (G, 4) boxes.
        detections: (D, 4+) boxes (extra columns such as a score ignored),
            in the order they should be tried.
        threshold: Minimum IoU (inclusive).

    Returns:
        `(gt_matched, det_matched)`: boolean arrays of length G and D.

    Example:

    >>> gt = [(0, 0, 10, 10)]
    >>> det = [(0, 0, 10, 9), (0, 0, 10, 10)]
    >>> [m.tolist() for m in match(gt, det)]
    [[True], [True, False]]
    """
    gt = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 4)
    det = np.asarray(detections, dtype=np.float64)
    det = det.reshape(-1, det.shape[-1] if det.size else 4)[:, :4]
    overlaps = iou(gt, det)
    gt_matched = np.zeros(len(gt), bool)
    det_matched = np.zeros(len(det), bool)
    for i in range(len(gt)):
        candidates = np.flatnonzero((overlaps[i] >= threshold) & ~det_matched)
        if len(candidates):
            gt_matched[i] = det_matched[candidates[0]] = True
    return gt_matched, det_matched


@dataclasses.dataclass
class DigitsScore:
    """DIGITS' DetectNet scores.

    Attributes:
        true_positives: Matched detections.
        false_positives: Unmatched detections.
        false_negatives: Unmatched ground truth (DIGITS calls them "true
            negatives").
        precision: Percent.
        recall: Percent.
        mAP: `precision * recall / 100`, percent.

    Example:

    >>> DigitsScore(3, 1, 1, 75.0, 75.0, 56.25).to_dict()["mAP"]
    56.25
    """

    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    mAP: float

    def to_dict(self):
        """A JSON-ready dict of the fields."""
        return dataclasses.asdict(self)


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else 0.0


def digits_map(ground_truth, detections, threshold=0.7):
    """DIGITS' DetectNet precision, recall and "mAP" over a set of images.

    Args:
        ground_truth: Per image, a (G_i, 4) array of boxes of the detected
            class (no DontCare).
        detections: Per image, a (D_i, 4+) array, e.g. the output of
            `postprocess.cluster`.
        threshold: IoU needed for a match (0.7).

    Returns:
        A `DigitsScore`.

    Example:

    >>> gt = [[(0, 0, 10, 10), (20, 0, 30, 10)], []]
    >>> det = [[(0, 0, 10, 10, 1.4)], [(50, 50, 60, 60, 1.4)]]
    >>> s = digits_map(gt, det)
    >>> s.precision, s.recall, s.mAP
    (50.0, 50.0, 25.0)
    """
    return counts_score(image_counts(ground_truth, detections, threshold))


def counts_score(counts):
    """The `DigitsScore` of per-image `image_counts` (summed over images)."""
    tp, fp, fn = (int(n) for n in np.asarray(counts, np.int64).reshape(-1, 3).sum(axis=0))
    precision = 100.0 * _ratio(tp, tp + fp)
    recall = 100.0 * _ratio(tp, tp + fn)
    return DigitsScore(tp, fp, fn, precision, recall, precision * recall / 100.0)


def image_counts(ground_truth, detections, threshold=0.7):
    """`(N, 3)` int array: true positives, false positives and false
    negatives of each image (DIGITS' greedy matching)."""
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"digits_map: {len(ground_truth)} ground-truth images but "
            f"{len(detections)} detection images."
        )
    counts = np.zeros((len(ground_truth), 3), np.int64)
    for i, (gt, det) in enumerate(zip(ground_truth, detections, strict=True)):
        gt_matched, det_matched = match(gt, det, threshold)
        counts[i] = det_matched.sum(), (~det_matched).sum(), (~gt_matched).sum()
    return counts


def digits_map_spread(counts, samples=200, seed=0):
    """Standard deviation of DIGITS mAP over bootstrap resamples of the images.

    How much the score of *one* model moves when the validation images are
    drawn again from the same distribution: a rollback tolerance below it
    rejects offspring for the luck of the draw.

    Args:
        counts: `image_counts(...)` of the model's detections.
        samples: Bootstrap resamples (images drawn with replacement).
        seed: Seed of the resampling.

    Returns:
        The standard deviation in mAP points (0 for fewer than 2 images).

    Example:

    >>> counts = np.array([[1, 0, 0], [0, 1, 1]] * 50)   # half the images right
    >>> round(digits_map_spread(counts), 1)
    5.0
    >>> digits_map_spread(np.array([[1, 0, 0]] * 20))    # always right
    0.0
    """
    counts = np.asarray(counts, np.int64).reshape(-1, 3)
    if len(counts) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(counts), size=(samples, len(counts)))
    maps = [counts_score(counts[draw]).mAP for draw in draws]
    return float(np.std(maps))
