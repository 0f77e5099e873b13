import inspect

import keras
import numpy as np
import pytest
from conftest import roundtrip_layer, roundtrip_model

from keras_evosynth import quantizers
from keras_evosynth.layers import (
    EvoConv2D,
    EvoDense,
    EvoDepthwiseConv2D,
    FakeQuantActivation,
)

# (evo class, plain class, constructor kwargs, input shape)
CASES = [
    (EvoConv2D, keras.layers.Conv2D, dict(filters=5, kernel_size=3), (2, 9, 9, 3)),
    (
        EvoConv2D,
        keras.layers.Conv2D,
        dict(filters=4, kernel_size=(3, 1), strides=2, padding="same", activation="relu"),
        (2, 10, 8, 3),
    ),
    (
        EvoConv2D,
        keras.layers.Conv2D,
        dict(filters=6, kernel_size=3, dilation_rate=2, groups=2, use_bias=False),
        (2, 11, 11, 4),
    ),
    (EvoDepthwiseConv2D, keras.layers.DepthwiseConv2D, dict(kernel_size=3), (2, 8, 8, 3)),
    (
        EvoDepthwiseConv2D,
        keras.layers.DepthwiseConv2D,
        dict(kernel_size=3, depth_multiplier=2, strides=2, padding="same"),
        (2, 8, 8, 3),
    ),
    (EvoDense, keras.layers.Dense, dict(units=7, activation="tanh"), (4, 6)),
    (EvoDense, keras.layers.Dense, dict(units=3), (2, 5, 6)),
]
IDS = [f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)]


def _make(evo_cls, kwargs, shape, precision="float32"):
    layer = evo_cls(precision=precision, **kwargs)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    layer(x)
    return layer, x


@pytest.mark.parametrize("evo_cls, plain_cls, kwargs, shape", CASES, ids=IDS)
def test_unmasked_float32_equals_keras_layer_bit_for_bit(evo_cls, plain_cls, kwargs, shape):
    layer, x = _make(evo_cls, kwargs, shape)
    plain = plain_cls(**kwargs)
    plain(x)
    bias = [] if layer.bias is None else [layer.bias.numpy()]
    plain.set_weights([layer.kernel.numpy()] + bias)
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(plain(x)))


@pytest.mark.parametrize("evo_cls, plain_cls, kwargs, shape", CASES, ids=IDS)
def test_masked_quantized_forward_equals_plain_layer_with_effective_weights(
    evo_cls, plain_cls, kwargs, shape
):
    layer, x = _make(evo_cls, kwargs, shape, precision="int4")
    rng = np.random.default_rng(1)
    synapse, cluster = layer.get_masks()
    layer.set_masks(
        synapse_mask=rng.random(synapse.shape) < 0.7,
        cluster_mask=np.arange(cluster.size) % 3 != 1,
    )
    kernel = np.asarray(layer.effective_kernel())
    plain = plain_cls(**kwargs)
    plain(x)
    weights = [kernel]
    if layer.bias is not None:
        weights.append(np.asarray(layer.effective_bias()))
    plain.set_weights(weights)
    np.testing.assert_allclose(np.asarray(layer(x)), np.asarray(plain(x)), atol=1e-5)
    # Dead clusters contribute nothing: their kernel columns and bias are zero.
    dead = ~layer.get_masks()[1]
    flat = kernel.reshape(-1, dead.size)
    assert np.all(flat[:, dead] == 0)
    if layer.bias is not None:
        assert np.all(layer.bias.numpy()[dead] == 0)
    # Effective kernel is on the 4-bit grid of each channel.
    scale = quantizers.get("int4").scales(kernel, layer._channel_axes)
    steps = flat / np.where(scale > 0, scale, 1)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    assert np.abs(steps).max() <= 7 + 1e-4


def test_counting_exact_values():
    conv, _ = _make(EvoConv2D, dict(filters=4, kernel_size=3, padding="same"), (1, 6, 5, 2))
    assert (conv.count_synapses(), conv.count_clusters(), conv.count_macs()) == (72, 4, 72 * 30)
    synapse = np.ones((3, 3, 2, 4), bool)
    synapse[0, 0, 0, :] = False
    conv.set_masks(synapse_mask=synapse, cluster_mask=[1, 1, 0, 1])
    assert conv.count_synapses() == 3 * (18 - 1)
    assert conv.count_clusters() == 3
    assert conv.count_macs() == 51 * 30

    depthwise, _ = _make(EvoDepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2), (1, 7, 7, 3))
    assert depthwise.count_macs() == 9 * 6 * 25
    dense, _ = _make(EvoDense, dict(units=3), (2, 5, 4))
    assert dense.count_macs() == 12 * 5


def test_quantized_zero_weights_are_not_counted_as_synapses():
    layer, _ = _make(EvoDense, dict(units=1), (1, 4), precision="int2")
    layer.kernel.assign(np.array([[1.0], [0.2], [-0.6], [0.0]], "float32"))
    # int2 keeps {-1, 0, 1} x max: 0.2 rounds to 0, -0.6 to -1.
    np.testing.assert_array_equal(np.asarray(layer.effective_kernel()).ravel(), [1, 0, -1, 0])
    assert layer.count_synapses() == 2


def test_masked_weights_stay_exactly_zero_through_training_with_momentum():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            EvoConv2D(4, 3, precision="int8"),
            keras.layers.Flatten(),
            EvoDense(3),
        ]
    )
    model.compile(keras.optimizers.AdamW(0.05, weight_decay=0.1), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 6, 6, 2)), rng.normal(size=(16, 3))
    model.fit(x, y, epochs=2, verbose=0)  # build up Adam moments first
    conv, dense = model.layers[0], model.layers[2]
    synapse = rng.random(conv.synapse_mask.shape) < 0.5
    conv.set_masks(synapse_mask=synapse, cluster_mask=[1, 0, 1, 1])
    dense.set_masks(cluster_mask=[0, 1, 1])
    model.fit(x, y, epochs=3, verbose=0)
    kernel = conv.kernel.numpy()
    assert np.all(kernel[~synapse] == 0) and np.all(kernel[..., 1] == 0)
    assert conv.bias.numpy()[1] == 0
    assert np.all(dense.kernel.numpy()[:, 0] == 0) and dense.bias.numpy()[0] == 0
    # Live weights did train.
    assert np.count_nonzero(kernel) == np.count_nonzero(synapse[..., [0, 2, 3]])


@pytest.mark.parametrize("evo_cls, plain_cls, kwargs, shape", CASES, ids=IDS)
def test_config_round_trip(evo_cls, plain_cls, kwargs, shape):
    layer, _ = _make(evo_cls, kwargs, shape, precision="int4")
    clone = roundtrip_layer(layer)
    assert clone.precision == layer.precision == quantizers.get("int4")


@pytest.mark.parametrize("bits", [2, 4, 8, 32])
def test_keras_file_round_trip_preserves_masks_bits_and_outputs(tmp_path, bits):
    inputs = keras.Input((8, 8, 3))
    x = EvoConv2D(6, 3, padding="same", activation="relu", precision=bits)(inputs)
    x = EvoDepthwiseConv2D(3, depth_multiplier=2, precision=bits)(x)
    x = FakeQuantActivation(8)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = EvoDense(4, precision=bits)(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(bits)
    for layer in model.layers:
        if hasattr(layer, "set_masks"):
            synapse, cluster = layer.get_masks()
            cluster = rng.random(cluster.shape) < 0.6
            cluster[0] = True
            layer.set_masks(synapse_mask=rng.random(synapse.shape) < 0.8, cluster_mask=cluster)
    x = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    model(x, training=True)  # sets the activation range
    loaded = roundtrip_model(model, tmp_path)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(model(x)))
    for old, new in zip(model.layers, loaded.layers, strict=True):
        assert type(old) is type(new)
        for a, b in zip(old.weights, new.weights, strict=True):
            assert a.path == b.path
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        if hasattr(old, "precision"):
            assert new.precision.bits == bits


def test_bad_masks_raise_clear_errors():
    layer, _ = _make(EvoConv2D, dict(filters=4, kernel_size=3, name="convA"), (1, 6, 6, 2))
    with pytest.raises(ValueError, match=r"convA.*cluster_mask.*\(4,\).*\(3,\)"):
        layer.set_masks(cluster_mask=[1, 1, 1])
    with pytest.raises(ValueError, match="convA.*synapse_mask.*shape"):
        layer.set_masks(synapse_mask=np.ones((3, 3, 2, 5)))
    with pytest.raises(ValueError, match="convA.*only hold 0 and 1.*2"):
        layer.set_masks(cluster_mask=[1, 2, 1, 1])
    with pytest.raises(TypeError, match="convA.*dtype"):
        layer.set_masks(cluster_mask=np.array(["a", "b", "c", "d"]))
    unbuilt = EvoDense(3, name="denseB")
    with pytest.raises(ValueError, match="denseB.*not built"):
        unbuilt.set_masks(cluster_mask=[1, 1, 1])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="9"):
        EvoConv2D(4, 3, precision=9)
    with pytest.raises(ValueError, match="LoRA"):
        EvoDense(4, lora_rank=2)
    layer, _ = _make(EvoDense, dict(units=2, name="d"), (1, 3))
    with pytest.raises(NotImplementedError, match="precision"):
        layer.quantize("int8")


def test_fake_quant_activation_moving_average_and_inference_range():
    layer = FakeQuantActivation(bits=8, momentum=0.5)
    layer(np.array([-1.0, 3.0], "float32"), training=True)
    np.testing.assert_allclose(layer.range.numpy(), [-1.0, 3.0])
    layer(np.array([1.0, 5.0], "float32"), training=True)  # batch range [0, 5]
    np.testing.assert_allclose(layer.range.numpy(), [-0.5, 4.0])
    # Inference leaves the range alone and clips to it on the 8-bit grid.
    out = np.asarray(layer(np.array([-3.0, 0.0, 1.01, 9.0], "float32")))
    np.testing.assert_allclose(layer.range.numpy(), [-0.5, 4.0])
    # TF nudges [-0.5, 4.0] so that 0 is on the grid: zero point round(28.33).
    step = 4.5 / 255
    expected = [-28 * step, 0.0, round(1.01 / step) * step, 227 * step]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    clone = roundtrip_layer(layer)
    assert (clone.bits, clone.momentum) == (8, 0.5)
    with pytest.raises(ValueError, match="momentum"):
        FakeQuantActivation(momentum=1.0)


def test_positional_arguments_follow_the_keras_base_and_precision_is_keyword_only():
    conv = EvoConv2D(6, [5, 5], 2, "same", precision="int8")
    assert (conv.filters, conv.kernel_size, conv.strides, conv.padding) == (6, (5, 5), (2, 2),
                                                                             "same")
    depthwise = EvoDepthwiseConv2D(3, 2, "valid", 2)
    assert (depthwise.strides, depthwise.depth_multiplier) == ((2, 2), 2)
    dense = EvoDense(4, "relu", False)
    assert dense.activation is keras.activations.relu and dense.use_bias is False
    assert conv.precision.bits == 8
    for cls in (EvoConv2D, EvoDepthwiseConv2D, EvoDense):
        parameter = inspect.signature(cls.__init__).parameters["precision"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("evo_cls, plain_cls, kwargs, shape", CASES, ids=IDS)
def test_weights_move_between_plain_and_evolvable_layers(evo_cls, plain_cls, kwargs, shape):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    plain = plain_cls(**kwargs)
    plain(x)
    evo = evo_cls(**kwargs)
    evo(x)
    cluster = np.ones(evo.cluster_mask.shape, bool)
    cluster[0] = False
    evo.set_masks(cluster_mask=cluster)
    evo.set_weights(plain.get_weights())  # kernel (and bias) only: the masks stay
    assert np.array_equal(evo.get_masks()[1], cluster)
    masked = plain.get_weights()
    masked[0] = masked[0] * evo._kernel_mask().numpy()
    if len(masked) > 1:
        masked[1] = masked[1] * cluster
    assert all(np.array_equal(a, b) for a, b in zip(evo.get_weights(), masked, strict=False))
    full = evo.get_weights()
    twin = evo_cls(**kwargs)
    twin(x)
    twin.set_weights(full)  # the full list round-trips, masks included
    assert all(np.array_equal(a, b) for a, b in zip(twin.get_weights(), full, strict=True))
    with pytest.raises(ValueError):
        evo.set_weights(full[:1] + full)  # neither list


def test_user_constraint_stays_visible_and_works_with_the_masks():
    layer = EvoConv2D(3, 2, kernel_constraint="non_neg", bias_constraint="non_neg")
    layer(np.ones((1, 4, 4, 2), "float32"))
    assert isinstance(layer.kernel.constraint, keras.constraints.NonNeg)
    assert isinstance(layer.bias.constraint, keras.constraints.NonNeg)
    assert isinstance(layer.kernel_constraint, keras.constraints.NonNeg)
    layer.set_masks(cluster_mask=[1, 0, 1])
    value = layer.kernel.constraint(-np.ones(layer.kernel.shape, "float32") + 2 * (
        np.arange(np.prod(layer.kernel.shape)).reshape(layer.kernel.shape) % 2))
    value = np.asarray(value)
    assert value.min() >= 0.0 and np.all(value[..., 1] == 0)  # NonNeg, then the mask
    assert np.count_nonzero(value[..., [0, 2]]) == value[..., [0, 2]].size // 2
    bias = np.asarray(layer.bias.constraint(np.array([-1.0, 2.0, 3.0], "float32")))
    assert bias.tolist() == [0.0, 0.0, 3.0]
    plain = EvoDense(2)
    plain.build((None, 3))
    assert isinstance(plain.kernel.constraint, keras.constraints.Constraint)
    assert type(plain.kernel.constraint).__name__ == "Constraint"
