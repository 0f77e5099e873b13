"""The DetectNet loss: L2 on coverage + 2 x L1 on masked, normalised boxes.

DIGITS' DetectNet trains with two Caffe losses:

- coverage: `EuclideanLoss(coverage, coverage_label)` = sum of squared
  differences / (2 N), N the batch size. Here each cell's squared error is
  multiplied by the label's weight channel (0 in DontCare regions).
- bbox: `L1Loss` with loss weight 2 on
  `bboxes * coverage_label * size * obj_norm` against
  `bbox_label * size * obj_norm`, where `size` = (1/w, 1/h, 1/w, 1/h):
  predictions count only in positive cells, errors are relative to the box
  size, and every object weighs the same whatever its number of cells.
  Caffe's L1Loss is the sum of absolute differences / N.

Both losses take the full 9-channel label of `targets.encode` as `y_true`,
so a model with outputs `{"coverage", "bboxes"}` trains with::

    model.compile(optimizer, loss=losses(), loss_weights=LOSS_WEIGHTS)
    model.fit(images, {"coverage": labels, "bboxes": labels})

Keras' default reduction (mean over the batch) supplies the 1/N.
"""

import keras
from keras import ops

from recipes.detectnet.targets import STRIDE

LOSS_WEIGHTS = {"coverage": 1.0, "bboxes": 2.0}


def coverage_loss(y_true, y_pred):
    """Per-example DetectNet coverage loss: 0.5 * sum(weight * (p - t)^2).

    Args:
        y_true: (batch, rows, cols, 9) labels from `targets.encode`.
        y_pred: (batch, rows, cols, 1) predicted coverage.

    Returns:
        (batch,) losses; their mean over the batch is Caffe's EuclideanLoss.

    Example:

    >>> import numpy as np
    >>> t = np.zeros((1, 1, 2, 9), "float32"); t[..., 8] = 1; t[0, 0, 0, 0] = 1
    >>> float(coverage_loss(t, np.full((1, 1, 2, 1), 0.5, "float32"))[0])
    0.25
    """
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred, dtype=y_true.dtype)
    error = y_pred - y_true[..., 0:1]
    return 0.5 * ops.sum(y_true[..., 8:9] * ops.square(error), axis=(1, 2, 3))


def bbox_loss(y_true, y_pred):
    """Per-example DetectNet bbox loss (before its loss weight 2).

    `sum |(pred * coverage - label) * (1/w, 1/h, 1/w, 1/h) * obj_norm|`.

    Args:
        y_true: (batch, rows, cols, 9) labels from `targets.encode`.
        y_pred: (batch, rows, cols, 4) predicted corners x1, y1, x2, y2.

    Returns:
        (batch,) losses; their mean over the batch is Caffe's L1Loss.

    Example:

    >>> import numpy as np
    >>> t = np.zeros((1, 1, 1, 9), "float32")
    >>> t[0, 0, 0] = [1, -5, -5, 15, 5, 0.05, 0.1, 0.5, 1]
    >>> p = np.array([[[[-5, -5, 17, 6]]]], "float32")
    >>> round(float(bbox_loss(t, p)[0]), 6)
    0.1
    """
    y_true = ops.convert_to_tensor(y_true)
    y_pred = ops.convert_to_tensor(y_pred, dtype=y_true.dtype)
    covered = y_true[..., 0:1]
    size = ops.concatenate([y_true[..., 5:7], y_true[..., 5:7]], axis=-1)
    scale = size * y_true[..., 7:8]
    error = (y_pred - y_true[..., 1:5]) * covered * scale
    return ops.sum(ops.abs(error), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="recipes.detectnet")
class CoverageLoss(keras.losses.Loss):
    """Keras loss for the `"coverage"` output (see `coverage_loss`).

    Example:

    >>> import numpy as np
    >>> t = np.zeros((2, 1, 2, 9), "float32"); t[..., 8] = 1; t[:, 0, 0, 0] = 1
    >>> float(CoverageLoss()(t, np.full((2, 1, 2, 1), 0.5, "float32")))
    0.25
    """

    def __init__(self, name="coverage_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return coverage_loss(y_true, y_pred)


@keras.saving.register_keras_serializable(package="recipes.detectnet")
class BboxLoss(keras.losses.Loss):
    """Keras loss for the `"bboxes"` output (see `bbox_loss`); weight it 2.

    Example:

    >>> import numpy as np
    >>> t = np.zeros((1, 1, 1, 9), "float32")
    >>> t[0, 0, 0] = [1, -5, -5, 15, 5, 0.05, 0.1, 0.5, 1]
    >>> round(float(BboxLoss()(t, np.zeros((1, 1, 1, 4), "float32"))), 6)
    1.0
    """

    def __init__(self, name="bbox_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return bbox_loss(y_true, y_pred)


def losses():
    """`{"coverage": CoverageLoss(), "bboxes": BboxLoss()}` for `compile`.

    Use with `loss_weights=LOSS_WEIGHTS` (coverage 1, bboxes 2).

    Example:

    >>> sorted(losses())
    ['bboxes', 'coverage']
    """
    return {"coverage": CoverageLoss(), "bboxes": BboxLoss()}


@keras.saving.register_keras_serializable(package="recipes.detectnet")
def coverage_distillation(teacher, student):
    """Per-example distillation loss of the coverage map: the coverage loss's
    own form, `0.5 * sum((student - teacher)^2)` over the grid, with the
    parent's map as the soft target (`keras_evosynth.ParentDistiller`).

    Example:

    >>> import numpy as np
    >>> t, s = np.zeros((1, 2, 2, 1), "float32"), np.full((1, 2, 2, 1), 0.5, "float32")
    >>> float(coverage_distillation(t, s)[0])
    0.5
    """
    error = ops.convert_to_tensor(student) - ops.convert_to_tensor(teacher)
    return 0.5 * ops.sum(ops.square(error), axis=(1, 2, 3))


@keras.saving.register_keras_serializable(package="recipes.detectnet")
def bbox_distillation(teacher, student):
    """Per-example distillation loss of the bbox map: mean over grid cells of
    the L1 distance between the corners, in cells (pixels / `STRIDE`).

    Example:

    >>> import numpy as np
    >>> t, s = np.zeros((1, 1, 2, 4), "float32"), np.full((1, 1, 2, 4), 4.0, "float32")
    >>> float(bbox_distillation(t, s)[0])   # 4 corners x 4 px / 16
    1.0
    """
    error = ops.convert_to_tensor(student) - ops.convert_to_tensor(teacher)
    return ops.mean(ops.sum(ops.abs(error), axis=-1), axis=(1, 2)) / STRIDE


DISTILLATION_LOSSES = {"coverage": coverage_distillation, "bboxes": bbox_distillation}
