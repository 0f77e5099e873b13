"""Tests for recipes.detectnet.losses (hand-checked values, Keras integration)."""

import keras
import numpy as np
import pytest

from recipes.detectnet.losses import (
    LOSS_WEIGHTS,
    BboxLoss,
    CoverageLoss,
    bbox_loss,
    coverage_loss,
    losses,
)
from recipes.detectnet.model import detectnet
from recipes.detectnet.targets import encode


def _label():
    """One image, a 1 x 2 grid: cell 0 positive (box 20 x 10, obj_norm 0.5)."""
    t = np.zeros((1, 1, 2, 9), np.float32)
    t[0, 0, 0] = [1, -5, -5, 15, 5, 1 / 20, 1 / 10, 0.5, 1]
    t[0, 0, 1, 8] = 1
    return t


def test_coverage_loss_hand_checked():
    t = _label()
    p = np.array([[[[0.75], [0.5]]]], np.float32)
    # 0.5 * ((0.75 - 1)^2 + (0.5 - 0)^2) = 0.5 * (0.0625 + 0.25)
    np.testing.assert_allclose(coverage_loss(t, p), [0.15625])


def test_coverage_loss_ignores_dontcare_cells():
    t = _label()
    t[0, 0, 1, 8] = 0.0  # DontCare cell
    p = np.array([[[[0.75], [0.5]]]], np.float32)
    np.testing.assert_allclose(coverage_loss(t, p), [0.03125])


def test_bbox_loss_hand_checked_and_masked():
    t = _label()
    # Cell 0 error (+2, -1, +4, 0) px; normalised by (1/20, 1/10) and 0.5:
    # 0.5 * (2/20 + 1/10 + 4/20 + 0) = 0.2. Cell 1 is negative: ignored.
    p = np.array([[[[-3, -6, 19, 5], [100, 100, 100, 100]]]], np.float32)
    np.testing.assert_allclose(bbox_loss(t, p), [0.2], rtol=1e-6)
    perfect = np.array([[[[-5, -5, 15, 5], [7, 7, 7, 7]]]], np.float32)
    np.testing.assert_allclose(bbox_loss(t, perfect), [0.0])


def test_keras_losses_average_over_the_batch():
    t = np.concatenate([_label(), _label()])
    t[1, 0, 0, 0] = 0  # second image: nothing
    t[1, 0, 0, 1:8] = 0
    p = np.array([[[[0.75], [0.5]]], [[[0.5], [0.5]]]], np.float32)
    # Image 0: 0.15625; image 1: 0.5 * (0.25 + 0.25) = 0.25; Caffe's sum / 2N.
    assert float(CoverageLoss()(t, p)) == pytest.approx((0.15625 + 0.25) / 2)
    boxes = np.zeros((2, 1, 2, 4), np.float32)
    # Image 0: 0.5 * (5/20 + 5/10 + 15/20 + 5/10) = 1.0; image 1: 0.
    assert float(BboxLoss()(t, boxes)) == pytest.approx(0.5)


def test_loss_configs_round_trip():
    for loss in losses().values():
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()
    assert LOSS_WEIGHTS == {"coverage": 1.0, "bboxes": 2.0}


def test_compiled_model_loss_equals_numpy_formula():
    keras.utils.set_random_seed(0)
    model = detectnet(input_size=(32, 64), width=0.0625, dropout=0.0)
    model.compile(optimizer="adam", loss=losses(), loss_weights=LOSS_WEIGHTS)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 32, 64, 3)).astype(np.float32)
    labels = np.stack(
        [
            encode([(4, 2, 44, 30)], (32, 64)),
            encode([(30, 0, 64, 32)], (32, 64), dontcare=[(0, 0, 16, 32)]),
            encode([], (32, 64)),
        ]
    )
    pred = model.predict(images, verbose=0)
    cov, box = pred["coverage"], pred["bboxes"]
    size = np.concatenate([labels[..., 5:7]] * 2, axis=-1) * labels[..., 7:8]
    expected = (
        0.5 * np.sum(labels[..., 8:9] * (cov - labels[..., 0:1]) ** 2) / 3
        + 2 * np.sum(np.abs((box * labels[..., 0:1] - labels[..., 1:5]) * size)) / 3
    )
    result = model.evaluate(
        images, {"coverage": labels, "bboxes": labels}, batch_size=3, verbose=0, return_dict=True
    )
    assert result["loss"] == pytest.approx(expected, rel=1e-4)
    history = model.fit(
        images, {"coverage": labels, "bboxes": labels}, batch_size=3, epochs=1, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
