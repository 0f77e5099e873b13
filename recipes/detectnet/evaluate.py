"""Scores DetectNet outputs: clustering + DIGITS "mAP" + KITTI AP in one call.

`score` takes raw network outputs (`{"coverage", "bboxes"}` arrays, from
Keras or from a LiteRT interpreter) and the KITTI labels of the same images,
so the ancestor and every exported generation are scored the same way.

KITTI's pixel thresholds (difficulty heights 40/25/25 px, DIGITS' 22 px
minimum detection height) are for 375-pixel-high images; `scale` multiplies
them, e.g. `scale = 128 / 375` for 384x128 generated scenes
(`kitti_scale(128)`). DIGITS scores its "mAP" against every ground-truth box;
with `filter_ground_truth=True` (default) boxes lower than the minimum
detection height are left out of the DIGITS score, since the clustering can
never report them (the KITTI AP has its own height rules and always sees
every box).
"""

import numpy as np

from recipes.detectnet import kitti, kitti_ap, metrics, postprocess

KITTI_IMAGE_HEIGHT = 375.0
MIN_DETECTION_HEIGHT = 22.0


def kitti_scale(image_height):
    """The factor that scales KITTI's pixel thresholds to `image_height`.

    Example:

    >>> round(kitti_scale(128), 4), kitti_scale(375)
    (0.3413, 1.0)
    """
    if image_height <= 0:
        raise ValueError(f"kitti_scale: image_height must be > 0, got {image_height!r}.")
    return float(image_height) / KITTI_IMAGE_HEIGHT


def scaled_difficulties(scale):
    """KITTI's Easy/Moderate/Hard with the minimum heights times `scale`.

    Example:

    >>> scaled_difficulties(0.5)["easy"].min_height
    20.0
    """
    return {
        name: kitti_ap.Difficulty(level.min_height * scale, level.max_occlusion,
                                  level.max_truncation)
        for name, level in kitti_ap.DIFFICULTIES.items()
    }  # fmt: skip


def score(outputs, labels, scale=1.0, class_name="Car", filter_ground_truth=True, **cluster_kwargs):
    """DIGITS mAP/precision/recall and KITTI AP of one set of outputs.

    Args:
        outputs: `{"coverage": (N, rows, cols, 1), "bboxes": (N, rows, cols, 4)}`.
        labels: N lists of `kitti.KittiObject` (all types, DontCare too).
        scale: Multiplies KITTI's pixel thresholds (see `kitti_scale`).
        class_name: The detected class.
        filter_ground_truth: Leave boxes lower than the minimum detection
            height out of the DIGITS score.
        **cluster_kwargs: Passed to `postprocess.cluster` (`threshold`,
            `eps`, `digits_corners`, ...); `min_height` defaults to
            `22 * scale`.

    Returns:
        A JSON-ready dict: `mAP`, `precision`, `recall` (DIGITS, percent),
        `mAP_spread` (its standard deviation over bootstrap resamples of the
        images, `metrics.digits_map_spread`), `true_positives`,
        `false_positives`, `false_negatives`, `ap_easy`,
        `ap_moderate`, `ap_hard` (KITTI, percent) and `detections` (total).

    Example:

    >>> import numpy as np
    >>> from recipes.detectnet import targets
    >>> from recipes.detectnet.kitti import KittiObject
    >>> labels = [[KittiObject("Car", 0.0, 0, 0.0, (8, 4, 56, 60))]] * 41
    >>> grid = targets.encode_batch(labels, (64, 96))
    >>> result = score({"coverage": grid[..., :1], "bboxes": grid[..., 1:5]}, labels)
    >>> result["mAP"], result["ap_easy"]
    (100.0, 100.0)
    """
    coverage, bboxes = np.asarray(outputs["coverage"]), np.asarray(outputs["bboxes"])
    if len(coverage) != len(labels) or len(bboxes) != len(labels):
        raise ValueError(
            f"score: {len(coverage)} coverage maps and {len(bboxes)} bbox maps for "
            f"{len(labels)} label lists."
        )
    min_height = cluster_kwargs.pop("min_height", MIN_DETECTION_HEIGHT * scale)
    detections = [
        postprocess.cluster(c, b, min_height=min_height, **cluster_kwargs)
        for c, b in zip(coverage, bboxes, strict=True)
    ]
    ground_truth = []
    for objects in labels:
        if filter_ground_truth:
            objects = [obj for obj in objects if obj.height >= min_height]
        ground_truth.append(kitti.boxes(objects, class_name))
    counts = metrics.image_counts(ground_truth, detections)
    digits = metrics.counts_score(counts)
    aps = kitti_ap.kitti_ap(labels, detections, class_name, scaled_difficulties(scale))
    return {
        **digits.to_dict(),
        "mAP_spread": metrics.digits_map_spread(counts),
        **{f"ap_{name}": value for name, value in aps.items()},
        "detections": int(sum(len(d) for d in detections)),
    }
