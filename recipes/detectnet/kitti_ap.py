"""A true average precision, KITTI object benchmark style (2D boxes).

Follows the KITTI devkit's `evaluate_object.cpp` for 2D detection:

- Difficulties (min box height px, max occlusion, max truncation):
  Easy (40, 0, 0.15), Moderate (25, 1, 0.30), Hard (25, 2, 0.50). A
  ground-truth box of the class outside the difficulty (height <= min,
  occlusion or truncation above max), or of the neighbouring class (Van for
  Car, Person_sitting for Pedestrian), is *ignored*: a detection matching it
  is neither a true nor a false positive. Detections lower than the min
  height are ignored likewise. Detections mostly inside a DontCare region
  (intersection / detection area > the overlap threshold) are not false
  positives.
- A detection matches a ground-truth box when IoU > 0.7 (Car; strictly
  greater, as in the devkit).
- Score thresholds are chosen at up to 41 recall positions from the true
  positives' scores; precision is made monotone (max over higher recalls)
  and averaged over 40 recall points (`recall_points=40`, KITTI's metric
  since 2019) or 11 points (`recall_points=11`, the original).

Results are percentages. A difficulty with no ground-truth box gets NaN (the
devkit would print 0). As in the devkit, the k-th chosen threshold stands for
recall k/40, so a set with fewer than 41 counted ground-truth boxes cannot
reach 100 (a perfect detector on 40 boxes scores 97.5 with 40 points):
evaluate on enough images.
"""

import dataclasses

import numpy as np

from recipes.detectnet.metrics import iou

_SAMPLE_POINTS = 41
_NO_DETECTION = -np.inf
NEIGHBOURS = {"Car": "Van", "Pedestrian": "Person_sitting"}


@dataclasses.dataclass(frozen=True)
class Difficulty:
    """A KITTI difficulty level.

    Attributes:
        min_height: Boxes must be taller than this (pixels).
        max_occlusion: Largest KITTI occlusion level (0, 1, 2).
        max_truncation: Largest truncation (0..1).

    Example:

    >>> Difficulty(min_height=25, max_occlusion=1, max_truncation=0.3) == DIFFICULTIES["moderate"]
    True
    """

    min_height: float
    max_occlusion: int
    max_truncation: float


DIFFICULTIES = {
    "easy": Difficulty(40, 0, 0.15),
    "moderate": Difficulty(25, 1, 0.30),
    "hard": Difficulty(25, 2, 0.50),
}


def _overlap_det_area(det, regions):
    """(D, R) intersection / detection area (the devkit's criterion 0)."""
    det = np.asarray(det, dtype=np.float64).reshape(-1, 4)
    regions = np.asarray(regions, dtype=np.float64).reshape(-1, 4)
    w = np.minimum.outer(det[:, 2], regions[:, 2]) - np.maximum.outer(det[:, 0], regions[:, 0])
    h = np.minimum.outer(det[:, 3], regions[:, 3]) - np.maximum.outer(det[:, 1], regions[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area = ((det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1]))[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=inter > 0)


@dataclasses.dataclass
class _Image:
    """One image prepared for one class and difficulty."""

    ignored_gt: np.ndarray  # per gt: 0 counted, 1 ignored, -1 not considered
    scores: np.ndarray
    ignored_det: np.ndarray  # per det: 0 counted, 1 ignored
    overlaps: np.ndarray  # (G, D) IoU
    dontcare: np.ndarray  # (D, C) intersection / detection area


def _prepare(objects, detections, class_name, difficulty):
    neighbour = NEIGHBOURS.get(class_name)
    ignored_gt, gt_boxes, dc_boxes = [], [], []
    for obj in objects:
        if obj.type == "DontCare":
            dc_boxes.append(obj.bbox)
        hard = (
            obj.occluded > difficulty.max_occlusion
            or obj.truncated > difficulty.max_truncation
            or obj.height <= difficulty.min_height
        )
        if obj.type == class_name and not hard:
            ignored_gt.append(0)
        elif obj.type == class_name or obj.type == neighbour:
            ignored_gt.append(1)
        else:
            ignored_gt.append(-1)
        gt_boxes.append(obj.bbox)
    det = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
    heights = det[:, 3] - det[:, 1]
    return _Image(
        ignored_gt=np.asarray(ignored_gt, int),
        scores=det[:, 4],
        ignored_det=(heights < difficulty.min_height).astype(int),
        overlaps=iou(gt_boxes, det[:, :4]),
        dontcare=_overlap_det_area(det[:, :4], dc_boxes),
    )


def _statistics(image, min_overlap, compute_fp, threshold=_NO_DETECTION):
    """The devkit's compute_statistics: (tp, fp, fn, true-positive scores)."""
    assigned = np.zeros(len(image.scores), bool)
    below = image.scores < threshold if compute_fp else np.zeros_like(assigned)
    tp = fp = fn = 0
    tp_scores = []
    for i, ignored in enumerate(image.ignored_gt):
        if ignored == -1:
            continue
        best, best_value, max_iou, assigned_ignored = -1, _NO_DETECTION, 0.0, False
        for j, score in enumerate(image.scores):
            overlap = image.overlaps[i, j]
            if assigned[j] or below[j] or overlap <= min_overlap:
                continue
            if not compute_fp:
                if score > best_value:
                    best, best_value = j, score
            elif (overlap > max_iou or assigned_ignored) and image.ignored_det[j] == 0:
                best, best_value, max_iou, assigned_ignored = j, 1.0, overlap, False
            elif best_value == _NO_DETECTION and image.ignored_det[j] == 1:
                best, best_value, assigned_ignored = j, 1.0, True
        if best < 0:
            fn += ignored == 0
        elif ignored == 1 or image.ignored_det[best] == 1:
            assigned[best] = True
        else:
            tp += 1
            tp_scores.append(image.scores[best])
            assigned[best] = True
    if compute_fp:
        free = ~assigned & (image.ignored_det == 0) & ~below
        fp = int(free.sum())
        for c in range(image.dontcare.shape[1]):
            inside = free & (image.dontcare[:, c] > min_overlap)
            fp -= int(inside.sum())
            free &= ~inside
    return tp, fp, fn, tp_scores


def _thresholds(scores, num_gt):
    """The devkit's getThresholds: scores at up to 41 recall positions."""
    scores = sorted(scores, reverse=True)
    chosen, current = [], 0.0
    for i, score in enumerate(scores):
        left = (i + 1) / num_gt
        last = i == len(scores) - 1
        right = left if last else (i + 2) / num_gt
        if not last and (right - current) < (current - left):
            continue
        chosen.append(score)
        current += 1.0 / (_SAMPLE_POINTS - 1)
    return chosen


def average_precision(
    ground_truth,
    detections,
    class_name="Car",
    difficulty=DIFFICULTIES["moderate"],
    min_overlap=0.7,
    recall_points=40,
):
    """KITTI average precision for one class and difficulty.

    Args:
        ground_truth: Per image, a list of `kitti.KittiObject` (all types,
            DontCare included).
        detections: Per image, a (D_i, 5) array `x1, y1, x2, y2, score` of
            detections of `class_name`.
        class_name: KITTI type to evaluate.
        difficulty: A `Difficulty`.
        min_overlap: IoU a match must exceed (0.7 for Car).
        recall_points: 40 (KITTI since 2019) or 11 (original).

    Returns:
        The AP in percent (NaN if no ground truth counts at this difficulty).

    Example:

    >>> from recipes.detectnet.kitti import KittiObject
    >>> gt = [[KittiObject("Car", 0.0, 0, 0.0, (0, 0, 100, 50))]] * 41
    >>> average_precision(gt, [[(0, 0, 100, 50, 1.0)]] * 41)
    100.0
    """
    if recall_points not in (11, 40):
        raise ValueError(f"recall_points must be 11 or 40, got {recall_points!r}.")
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"average_precision: {len(ground_truth)} ground-truth images but "
            f"{len(detections)} detection images."
        )
    images = [
        _prepare(objects, det, class_name, difficulty)
        for objects, det in zip(ground_truth, detections, strict=True)
    ]
    num_gt = sum(int((image.ignored_gt == 0).sum()) for image in images)
    if num_gt == 0:
        return float("nan")
    scores = []
    for image in images:
        scores += _statistics(image, min_overlap, compute_fp=False)[3]
    thresholds = _thresholds(scores, num_gt)
    precision = np.zeros(_SAMPLE_POINTS)
    for k, threshold in enumerate(thresholds):
        tp = fp = 0
        for image in images:
            image_tp, image_fp, _, _ = _statistics(image, min_overlap, True, threshold)
            tp, fp = tp + image_tp, fp + image_fp
        precision[k] = tp / (tp + fp) if tp + fp else 0.0
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    if recall_points == 40:
        return float(precision[1:].sum() / 40 * 100)
    return float(precision[::4].sum() / 11 * 100)


def kitti_ap(ground_truth, detections, class_name="Car", difficulties=None, **kwargs):
    """KITTI AP at every difficulty: `{"easy": .., "moderate": .., "hard": ..}`.

    Args:
        ground_truth: See `average_precision`.
        detections: See `average_precision`.
        class_name: KITTI type to evaluate.
        difficulties: Dict name -> `Difficulty`; KITTI's `DIFFICULTIES` by
            default (use scaled heights for images smaller than KITTI's).
        **kwargs: `min_overlap`, `recall_points`.

    Example:

    >>> from recipes.detectnet.kitti import KittiObject
    >>> gt = [[KittiObject("Car", 0.0, 1, 0.0, (0, 0, 100, 30))]] * 41
    >>> kitti_ap(gt, [[(0, 0, 100, 30, 1.0)]] * 41)
    {'easy': nan, 'moderate': 100.0, 'hard': 100.0}
    """
    difficulties = DIFFICULTIES if difficulties is None else difficulties
    return {
        name: average_precision(ground_truth, detections, class_name, level, **kwargs)
        for name, level in difficulties.items()
    }
