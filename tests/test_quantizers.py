import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_evosynth import quantizers
from keras_evosynth.quantizers import SUPPORTED_BITS, SynapticPrecision


def _random_kernel(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "bits, expected",
    [
        # Channel max 1.0: step 1/qmax. Inputs avoid exact half-steps.
        (2, [-1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
        (4, [-1.0, -2 / 7, 0.0, 1 / 7, 4 / 7, 1.0]),
        (8, [-1.0, -38 / 127, -3 / 127, 13 / 127, 70 / 127, 1.0]),
    ],
)
def test_golden_grid(bits, expected):
    values = np.array([-1.0, -0.3, -0.02, 0.1, 0.55, 1.0], "float32")
    # One column = one output channel.
    out = np.asarray(SynapticPrecision(bits)(values[:, None]))[:, 0]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_exact_number_of_levels_and_symmetry(bits):
    q = SynapticPrecision(bits)
    values = np.linspace(-2.0, 2.0, 4001, dtype="float32")[:, None]
    out = np.asarray(q(values))[:, 0]
    levels = np.unique(out)
    assert len(levels) == 2**bits - 1 == q.levels
    np.testing.assert_allclose(levels, -levels[::-1], atol=1e-6)
    # Integer multiples of the scale, zero exactly representable.
    np.testing.assert_allclose(levels / (2.0 / q.qmax), np.arange(-q.qmax, q.qmax + 1), atol=1e-4)
    assert 0.0 in levels


@pytest.mark.parametrize("bits", SUPPORTED_BITS)
def test_per_channel_scales_match_numpy_reference(bits):
    q = SynapticPrecision(bits)
    kernel = _random_kernel((3, 3, 4, 6))
    kernel[..., 2] *= 100.0  # channels with very different ranges
    out = np.asarray(q(kernel))
    reference = q.quantize_numpy(kernel)
    # Same grid step everywhere; values equal up to float32 rounding of the
    # dequantization (steps * scale + nudged_min) relative to the range.
    tolerance = 1e-6 * np.abs(kernel).max(axis=(0, 1, 2))
    assert np.all(np.abs(out - reference) <= tolerance)
    if not q.is_float:
        scale = q.scales(kernel)
        np.testing.assert_array_equal(np.round(out / scale), np.round(reference / scale))
    # Each channel's extreme weight is kept exactly.
    for c in range(6):
        i = np.abs(kernel[..., c]).argmax()
        np.testing.assert_allclose(out[..., c].ravel()[i], kernel[..., c].ravel()[i], rtol=1e-6)


def test_depthwise_channel_axes_quantize_each_in_times_multiplier_channel():
    q = SynapticPrecision(4)
    kernel = _random_kernel((3, 3, 2, 3))
    kernel[:, :, 1, 2] *= 50.0
    out = np.asarray(q(kernel, channel_axes=2))
    for i in range(2):
        for m in range(3):
            step = np.abs(kernel[:, :, i, m]).max() / 7
            ratio = out[:, :, i, m] / step
            np.testing.assert_allclose(ratio, np.round(ratio), atol=1e-4)


def test_float32_is_identity_and_zero_channel_stays_zero():
    kernel = _random_kernel((5, 3))
    np.testing.assert_array_equal(np.asarray(SynapticPrecision(32)(kernel)), kernel)
    kernel[:, 1] = 0.0
    out = np.asarray(SynapticPrecision(4)(kernel))
    assert np.all(out[:, 1] == 0.0) and np.all(np.isfinite(out))


def test_straight_through_gradient():
    kernel = tf.Variable(_random_kernel((4, 3)))
    weights = tf.constant(_random_kernel((4, 3), seed=1))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(SynapticPrecision(4)(kernel) * weights)
    grad = tape.gradient(loss, kernel)
    # d/dw of fake_quant is 1 inside the range, which spans every weight.
    np.testing.assert_allclose(grad.numpy(), weights.numpy(), rtol=0, atol=0)


@pytest.mark.parametrize(
    "alias, bits", [("int8", 8), ("int4", 4), ("int2", 2), ("float32", 32), (6, 6), (None, 32)]
)
def test_aliases_and_serialization(alias, bits):
    q = quantizers.get(alias)
    assert q.bits == bits
    config = quantizers.serialize(q)
    assert quantizers.deserialize(config) == q
    assert quantizers.get(config) == q
    assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(q)) == q


@pytest.mark.parametrize("bad", [1, 9, 0, 64, -4, "int9", "int1", "uint8"])
def test_unsupported_bits_raise_value_error_naming_value(bad):
    with pytest.raises(ValueError, match=str(bad)):
        quantizers.get(bad)


@pytest.mark.parametrize("bad", [True, 4.0, [8], object()])
def test_wrong_types_raise_type_error(bad):
    with pytest.raises(TypeError):
        quantizers.get(bad)
