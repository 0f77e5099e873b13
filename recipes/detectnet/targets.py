"""The DetectNet ground-truth encoder (DIGITS' rectangular coverage).

For each object box the encoder marks a *coverage region*: a rectangle at
the box centre, `scale` (0.4) times the box size, each side clamped to
[`min_size` (20 px), box side] (DIGITS' GRIDBOX_MIN). Every grid cell (one
per `stride` x `stride` pixels) that the region overlaps becomes positive and
holds, channels last:

====  ==========  ===========================================================
 ch   name        value in a positive cell (0 elsewhere)
====  ==========  ===========================================================
 0    coverage    1
 1-4  x1 y1 x2 y2 box corners minus the cell's top-left corner, in pixels
 5    inv_w       1 / box width
 6    inv_h       1 / box height
 7    obj_norm    stride^2 / coverage-region area (about 1 / #cells), so
                  every object weighs the same in the bbox loss
 8    weight      coverage-loss weight: 1, or 0 in negative cells whose
                  centre lies in a DontCare box
====  ==========  ===========================================================

Channels 0-7 are DIGITS' label; the weight channel is this project's way of
not penalising DontCare regions (DIGITS simply drops DontCare boxes, so their
cells are plain background). Where regions overlap, the object listed later
wins, as in DIGITS. Boxes are used as given (DIGITS' `crop_bboxes: false`).
"""

import math

import numpy as np

STRIDE = 16
CHANNELS = ("coverage", "x1", "y1", "x2", "y2", "inv_w", "inv_h", "obj_norm", "weight")
NUM_CHANNELS = len(CHANNELS)


def coverage_region(box, scale=0.4, min_size=20.0):
    """The coverage rectangle of one box.

    Args:
        box: `(x1, y1, x2, y2)` in pixels.
        scale: Region size as a fraction of the box size.
        min_size: Smallest region side in pixels (never larger than the box).

    Returns:
        `(x1, y1, x2, y2)` of the region, centred on the box.

    Example:

    >>> coverage_region((10, 10, 110, 30))
    (40.0, 10.0, 80.0, 30.0)
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = x2 - x1, y2 - y1
    region_w = min(width, max(min_size, scale * width))
    region_h = min(height, max(min_size, scale * height))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return (cx - region_w / 2, cy - region_h / 2, cx + region_w / 2, cy + region_h / 2)


def grid_size(image_size, stride=STRIDE):
    """`(rows, cols)` of the output grid for an `(height, width)` image.

    Example:

    >>> grid_size((384, 1248))
    (24, 78)
    """
    height, width = (int(v) for v in image_size)
    if height % stride or width % stride or height < stride or width < stride:
        raise ValueError(
            f"image_size {image_size!r} must be positive multiples of the stride {stride}."
        )
    return height // stride, width // stride


def _as_boxes(boxes, name):
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"encode: {name} contain non-finite values.")
    bad = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
    if bad.any():
        raise ValueError(
            f"encode: {name}[{int(np.argmax(bad))}] = {array[bad][0].tolist()} has "
            f"x2 < x1 or y2 < y1."
        )
    return array


def encode(boxes, image_size, dontcare=(), stride=STRIDE, scale=0.4, min_size=20.0):
    """Encodes one image's boxes as the DetectNet label grid.

    Args:
        boxes: (K, 4) object boxes `x1, y1, x2, y2` in pixels.
        image_size: `(height, width)`, multiples of `stride`.
        dontcare: (D, 4) DontCare boxes.
        stride: Grid cell size in pixels (16 for DetectNet).
        scale: Coverage-region size as a fraction of the box size.
        min_size: Smallest coverage-region side in pixels.

    Returns:
        float32 array (height/stride, width/stride, 9), channels `CHANNELS`.

    Example:

    >>> label = encode([(10, 10, 50, 30)], (64, 64))
    >>> label[..., 0].astype(int).tolist()
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    >>> label[0, 1, 1:8].tolist()
    [-6.0, 10.0, 34.0, 30.0, 0.02500000037252903, 0.05000000074505806, 0.6399999856948853]
    """
    rows, cols = grid_size(image_size, stride)
    boxes = _as_boxes(boxes, "boxes")
    dontcare = _as_boxes(dontcare, "dontcare")
    label = np.zeros((rows, cols, NUM_CHANNELS), np.float32)
    label[..., 8] = 1.0
    centres_y = (np.arange(rows) + 0.5) * stride
    centres_x = (np.arange(cols) + 0.5) * stride
    for x1, y1, x2, y2 in dontcare:
        inside_y = (centres_y >= y1) & (centres_y < y2)
        inside_x = (centres_x >= x1) & (centres_x < x2)
        label[np.ix_(inside_y, inside_x)] = 0.0  # weight too; positives reset it
    for box in boxes:
        x1, y1, x2, y2 = box
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue  # empty boxes do not exist in the scene (DIGITS skips them)
        rx1, ry1, rx2, ry2 = coverage_region(box, scale, min_size)
        obj_norm = stride * stride / ((rx2 - rx1) * (ry2 - ry1))
        for gy in range(max(0, math.floor(ry1 / stride)), min(rows, math.ceil(ry2 / stride))):
            for gx in range(max(0, math.floor(rx1 / stride)), min(cols, math.ceil(rx2 / stride))):
                cell_x, cell_y = gx * stride, gy * stride
                overlap_w = min(rx2, cell_x + stride) - max(rx1, cell_x)
                overlap_h = min(ry2, cell_y + stride) - max(ry1, cell_y)
                if overlap_w <= 0 or overlap_h <= 0:
                    continue
                label[gy, gx] = (
                    1.0,
                    x1 - cell_x,
                    y1 - cell_y,
                    x2 - cell_x,
                    y2 - cell_y,
                    1.0 / (x2 - x1),
                    1.0 / (y2 - y1),
                    obj_norm,
                    1.0,
                )
    return label


def encode_objects(objects, image_size, classes=("Car",), **kwargs):
    """`encode` for KITTI objects: boxes of `classes`, DontCare boxes ignored.

    Args:
        objects: Iterable of `kitti.KittiObject` (anything with `.type` and
            `.bbox`).
        image_size: `(height, width)`.
        classes: Object types to detect; other types are background.
        **kwargs: Passed to `encode`.

    Example:

    >>> from recipes.detectnet.kitti import KittiObject
    >>> label = encode_objects([KittiObject("DontCare", -1, -1, -10, (0, 0, 64, 16))],
    ...                        (32, 64))
    >>> label[..., 8].tolist()
    [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    """
    if isinstance(classes, str):
        classes = (classes,)
    objects = list(objects)
    boxes = [obj.bbox for obj in objects if obj.type in classes]
    dontcare = [obj.bbox for obj in objects if obj.type == "DontCare"]
    return encode(boxes, image_size, dontcare, **kwargs)


def encode_batch(labels, image_size, classes=("Car",), **kwargs):
    """Stacks `encode_objects` over images: (N, rows, cols, 9) float32.

    Example:

    >>> encode_batch([[], []], (32, 48)).shape
    (2, 2, 3, 9)
    """
    if not len(labels):
        rows, cols = grid_size(image_size, kwargs.get("stride", STRIDE))
        return np.zeros((0, rows, cols, NUM_CHANNELS), np.float32)
    return np.stack([encode_objects(objects, image_size, classes, **kwargs) for objects in labels])
