"""DetectNet post-processing: grid boxes -> clustered detections.

As in DIGITS' `clustering.py`: every grid cell whose coverage is >=
`threshold` (0.6) proposes the box its bbox head predicts (corners plus the
cell's top-left corner); proposals are clustered with OpenCV's
`groupRectangles(rects, 3, 0.02)`; a cluster of n proposals becomes one
detection with confidence log(n); detections lower than `min_height` (22 px)
are dropped.

`group_rectangles` re-implements OpenCV's algorithm in numpy (no OpenCV
dependency). By default it works on float rectangles; OpenCV rounds the
averaged rectangles and the inclusion margins to whole pixels, which
`integer=True` reproduces (then the output equals OpenCV 4's, checked
against `cv2.groupRectangles` on thousands of random cases).

DIGITS hands OpenCV corner boxes `(x1, y1, x2, y2)` where OpenCV expects
`(x, y, w, h)`. OpenCV's similarity tolerance, `eps * (min w + min h) / 2`,
then becomes `eps * (min x2 + min y2) / 2`: it grows with the position in
the image (about 8 px on KITTI's 1248x384 images, 3 px at 384x128) instead
of being 2 % of the box size (under 1 px for a 40-px car, which trained
networks rarely meet: they then find almost nothing). DetectNet's
`eps = 0.02` was tuned with that behaviour, so `cluster` reproduces DIGITS'
call by default (`digits_corners=True`); `digits_corners=False` clusters
true `(x, y, w, h)` rectangles, which needs a larger `eps` (e.g. 0.2).
"""

import numpy as np


def _similar(rects, eps):
    """OpenCV's SimilarRects predicate for all pairs of (x, y, w, h) rects."""
    x, y, w, h = (rects[:, i] for i in range(4))
    delta = eps * 0.5 * (np.minimum.outer(w, w) + np.minimum.outer(h, h))
    close = np.abs(np.subtract.outer(x, x)) <= delta
    close &= np.abs(np.subtract.outer(y, y)) <= delta
    close &= np.abs(np.subtract.outer(x + w, x + w)) <= delta
    close &= np.abs(np.subtract.outer(y + h, y + h)) <= delta
    return close


def _partition(adjacent):
    """Labels of the connected components, numbered by first member."""
    count = len(adjacent)
    labels = np.full(count, -1)
    classes = 0
    for start in range(count):
        if labels[start] >= 0:
            continue
        labels[start] = classes
        stack = [start]
        while stack:
            node = stack.pop()
            for other in np.flatnonzero(adjacent[node] & (labels < 0)):
                labels[other] = classes
                stack.append(other)
        classes += 1
    return labels, classes


def group_rectangles(rects, group_threshold=3, eps=0.02, integer=False):
    """OpenCV's `cv2.groupRectangles` in numpy, on (x, y, w, h) rectangles.

    Rectangles are partitioned into classes of similar rectangles (two are
    similar when all four edges differ by at most
    `eps * (min(w1, w2) + min(h1, h2)) / 2`, closed transitively); each class
    is averaged; classes of `group_threshold` or fewer rectangles are
    dropped, as are classes lying inside a bigger-voted class (OpenCV's
    "small rectangles inside large ones" filter).

    Args:
        rects: (N, 4) array of `x, y, w, h`.
        group_threshold: A class needs more than this many rectangles.
            <= 0 returns the rectangles unchanged with weight 1.
        eps: Relative tolerance.
        integer: Round the averaged rectangles and the inclusion margins to
            whole pixels (half to even) as OpenCV does; with integer input
            rectangles the result is then exactly OpenCV's.

    Returns:
        `(rects, weights)`: (M, 4) float averaged rectangles and (M,) int
        class sizes, in the order of each class's first rectangle.

    Example:

    >>> rects = [(10, 10, 20, 20)] * 4 + [(100, 10, 20, 20)] * 2
    >>> grouped, weights = group_rectangles(rects, 3, 0.02)
    >>> grouped.tolist(), weights.tolist()
    ([[10.0, 10.0, 20.0, 20.0]], [4])
    """
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    if group_threshold <= 0 or not len(rects):
        return rects.copy(), np.ones(len(rects), int)
    labels, classes = _partition(_similar(rects, eps))
    weights = np.bincount(labels, minlength=classes)
    means = np.zeros((classes, 4))
    np.add.at(means, labels, rects)
    means /= weights[:, None]
    if integer:
        means = np.rint(means)
    keep = []
    for i in range(classes):
        n1 = weights[i]
        if n1 <= group_threshold:
            continue
        x1, y1, w1, h1 = means[i]
        inside_bigger = False
        for j in range(classes):
            n2 = weights[j]
            if j == i or n2 <= group_threshold:
                continue
            x2, y2, w2, h2 = means[j]
            dx, dy = w2 * eps, h2 * eps
            if integer:
                dx, dy = np.rint(dx), np.rint(dy)
            if (
                x1 >= x2 - dx
                and y1 >= y2 - dy
                and x1 + w1 <= x2 + w2 + dx
                and y1 + h1 <= y2 + h2 + dy
                and (n2 > max(3, n1) or n1 < 3)
            ):
                inside_bigger = True
                break
        if not inside_bigger:
            keep.append(i)
    return means[keep], weights[keep]


def grid_boxes(coverage, bboxes, stride=16, threshold=0.6):
    """The boxes proposed by the grid cells with coverage >= `threshold`.

    Args:
        coverage: (rows, cols) or (rows, cols, 1) coverage map of one image.
        bboxes: (rows, cols, 4) corners relative to each cell's top-left.
        stride: Cell size in pixels.
        threshold: Coverage threshold (DIGITS: 0.6).

    Returns:
        `(boxes, scores)`: (K, 4) absolute `x1, y1, x2, y2` and their (K,)
        coverage values, in row-major cell order.

    Example:

    >>> import numpy as np
    >>> cov = np.array([[0.2, 0.9]])
    >>> box = np.tile([-6.0, 2.0, 30.0, 12.0], (1, 2, 1))
    >>> grid_boxes(cov, box)[0].tolist()
    [[10.0, 2.0, 46.0, 12.0]]
    """
    coverage = np.asarray(coverage, dtype=np.float64)
    if coverage.ndim == 3:
        coverage = coverage[..., 0]
    bboxes = np.asarray(bboxes, dtype=np.float64)
    if coverage.ndim != 2 or bboxes.shape != coverage.shape + (4,):
        raise ValueError(
            f"grid_boxes: expected coverage (rows, cols[, 1]) and bboxes "
            f"(rows, cols, 4), got {np.shape(coverage)} and {bboxes.shape}."
        )
    rows, cols = np.nonzero(coverage >= threshold)
    offsets = np.stack([cols, rows, cols, rows], axis=1) * float(stride)
    return bboxes[rows, cols] + offsets, coverage[rows, cols]


def cluster(
    coverage,
    bboxes,
    stride=16,
    threshold=0.6,
    group_threshold=3,
    eps=0.02,
    min_height=22.0,
    integer=False,
    digits_corners=True,
):
    """DetectNet detections of one image.

    Args:
        coverage: (rows, cols[, 1]) coverage map.
        bboxes: (rows, cols, 4) bbox head output.
        stride: Cell size in pixels.
        threshold: Coverage threshold (0.6).
        group_threshold: `groupRectangles` threshold (3: a detection needs
            at least 4 agreeing cells).
        eps: `groupRectangles` tolerance (0.02).
        min_height: Drop detections lower than this many pixels (22).
        integer: Round clusters to whole pixels as OpenCV does (see
            `group_rectangles`).
        digits_corners: Pass corners `(x1, y1, x2, y2)` where OpenCV
            expects `(x, y, w, h)`, exactly as DIGITS does (see the module
            docstring); False converts to `(x, y, w, h)` first.

    Returns:
        (M, 5) array `x1, y1, x2, y2, confidence`, confidence = log(number
        of clustered proposals), sorted by decreasing confidence (stable).

    Example:

    >>> import numpy as np
    >>> cov = np.zeros((4, 4)); cov[1:3, 1:3] = 1.0
    >>> box = np.zeros((4, 4, 4))
    >>> for gy in range(4):
    ...     for gx in range(4):
    ...         box[gy, gx] = [10 - 16 * gx, 8 - 16 * gy, 50 - 16 * gx, 40 - 16 * gy]
    >>> cluster(cov, box).round(3).tolist()
    [[10.0, 8.0, 50.0, 40.0, 1.386]]
    """
    boxes, _ = grid_boxes(coverage, bboxes, stride, threshold)
    if digits_corners:
        corners, weights = group_rectangles(boxes, group_threshold, eps, integer)
    else:
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        grouped, weights = group_rectangles(xywh, group_threshold, eps, integer)
        corners = np.concatenate([grouped[:, :2], grouped[:, :2] + grouped[:, 2:]], axis=1)
    detections = np.concatenate([corners, np.log(weights)[:, None]], axis=1).reshape(-1, 5)
    detections = detections[detections[:, 3] - detections[:, 1] >= min_height]
    return detections[np.argsort(-detections[:, 4], kind="stable")]


def cluster_batch(outputs, **kwargs):
    """`cluster` over a batch of model outputs.

    Args:
        outputs: The model's output dict, `{"coverage": (N, rows, cols, 1),
            "bboxes": (N, rows, cols, 4)}` (numpy or tensors).
        **kwargs: Passed to `cluster`.

    Returns:
        A list of N (M_i, 5) detection arrays.

    Example:

    >>> import numpy as np
    >>> out = {"coverage": np.zeros((2, 3, 3, 1)), "bboxes": np.zeros((2, 3, 3, 4))}
    >>> [d.shape for d in cluster_batch(out)]
    [(0, 5), (0, 5)]
    """
    coverage = np.asarray(outputs["coverage"])
    bboxes = np.asarray(outputs["bboxes"])
    return [cluster(c, b, **kwargs) for c, b in zip(coverage, bboxes, strict=True)]
