import keras
import numpy as np
import pytest

from keras_evosynth import EvoLayer, evolvable
from keras_evosynth.layers import EvoConv2D, EvoDense, EvoDepthwiseConv2D

APPLICATIONS = [
    ("MobileNetV2", dict(alpha=0.35), (32, 32, 3)),
    ("ResNet50", {}, (32, 32, 3)),
    ("InceptionV3", {}, (75, 75, 3)),
    ("EfficientNetB0", {}, (32, 32, 3)),
]


def _count_types(model):
    counts = {}
    for layer in model.layers:
        counts[type(layer).__name__] = counts.get(type(layer).__name__, 0) + 1
    return counts


@pytest.mark.parametrize("name, kwargs, shape", APPLICATIONS, ids=[a[0] for a in APPLICATIONS])
def test_keras_applications_convert_with_identical_outputs(name, kwargs, shape):
    base = getattr(keras.applications, name)(weights=None, input_shape=shape, classes=10, **kwargs)
    evo = evolvable(base)
    before, after = _count_types(base), _count_types(evo)
    assert after.get("EvoConv2D", 0) == before.get("Conv2D", 0) > 0
    assert after.get("EvoDepthwiseConv2D", 0) == before.get("DepthwiseConv2D", 0)
    assert after.get("EvoDense", 0) == before.get("Dense", 0) > 0
    assert [layer.name for layer in evo.layers] == [layer.name for layer in base.layers]
    x = np.random.default_rng(0).uniform(0, 255, size=(2,) + shape).astype("float32")
    np.testing.assert_array_equal(np.asarray(evo(x)), np.asarray(base(x)))


def _small_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def test_sequential_nested_precision_and_layer_selection():
    inner = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="inner_dense")], name="inner"
    )
    outer = keras.Sequential([keras.Input((5,)), inner, keras.layers.Dense(2, name="top")])
    evo = evolvable(outer, precision="int4", layers=["inner_dense"])
    assert isinstance(evo.layers[0].layers[0], EvoDense)
    assert evo.layers[0].layers[0].precision.bits == 4
    assert type(evo.layers[1]) is keras.layers.Dense
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    inner_dense, top = evo.layers[0].layers[0], evo.layers[1]
    np.testing.assert_array_equal(inner_dense.kernel.numpy(), inner.layers[0].kernel.numpy())
    hidden = x @ np.asarray(inner_dense.effective_kernel()) + inner_dense.bias.numpy()
    expected = hidden @ top.kernel.numpy() + top.bias.numpy()
    np.testing.assert_allclose(np.asarray(evo(x)), expected, rtol=1e-5, atol=1e-5)

    model = _small_model()
    evo = evolvable(model, layers=lambda layer: layer.name != "head")
    assert [type(evo.get_layer(n)) for n in ("conv", "dw", "head")] == [
        EvoConv2D,
        EvoDepthwiseConv2D,
        keras.layers.Dense,
    ]
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(evo(x)), np.asarray(model(x)))
    # The original is untouched and shares no variables with the clone.
    assert not any(isinstance(layer, EvoLayer) for layer in model.layers)
    evo.get_layer("conv").set_masks(cluster_mask=[0, 1, 1, 1])
    assert np.count_nonzero(model.get_layer("conv").kernel.numpy()[..., 0]) > 0


def test_layers_built_under_name_scopes_keep_their_weights():
    """keras.applications.NASNetMobile builds its cells under `name_scope`s:
    a layer's `path` then holds the scope ('cell/conv'), which the clone does
    not have; weights are matched by (nested model, layer) names instead (a
    path lookup raised `KeyError: 'reduction_conv_1_stem_1'` there)."""
    inputs = keras.Input((8, 8, 3))
    with keras.name_scope("cell"):
        x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
        x = keras.layers.BatchNormalization(name="bn")(x)
        x = keras.layers.SeparableConv2D(4, 3, name="sep")(x)
    inner = keras.Sequential([keras.Input((4, 4, 4)), keras.layers.Conv2D(3, 1, name="conv")],
                             name="inner")  # same layer name, another (nested) model
    x = keras.layers.Flatten()(inner(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    assert model.get_layer("conv").path == "cell/conv"
    rng = np.random.default_rng(0)
    for layer in model.get_layer("bn"), model.get_layer("sep"):  # not their initial values
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
    evo = evolvable(model, skip_unsupported=True)
    assert isinstance(evo.get_layer("conv"), EvoConv2D)
    assert isinstance(evo.get_layer("inner").get_layer("conv"), EvoConv2D)
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(evo(x)), np.asarray(model(x)))


@pytest.mark.slow
def test_nasnet_mobile_converts_with_identical_outputs():
    base = keras.applications.NASNetMobile(weights=None, input_shape=(32, 32, 3), classes=10)
    evo = evolvable(base, skip_unsupported=True)
    assert sum(isinstance(layer, EvoLayer) for layer in evo.layers) > 30
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(evo(x)), np.asarray(base(x)))


def test_adapted_normalization_keeps_its_statistics():
    """`set_weights` alone leaves an adapted `Normalization` computing with
    mean 0 and variance 1 (its `finalize_state` refreshes them)."""
    data = np.random.default_rng(0).uniform(0, 255, (32, 4, 4, 2)).astype("float32")
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(data)
    inner = keras.Sequential([keras.Input((4, 4, 2)), norm], name="inner")
    inputs = keras.Input((4, 4, 2))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inner(inputs)))
    evo = evolvable(model)
    np.testing.assert_array_equal(np.asarray(evo(data)), np.asarray(model(data)))
    assert np.abs(np.asarray(evo.get_layer("inner").get_layer("norm")(data))).max() < 3


def test_unsupported_layer_raises_or_is_skipped():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="'sep'.*SeparableConv2D.*skip_unsupported"):
        evolvable(model)
    evo = evolvable(model, skip_unsupported=True)
    assert type(evo.get_layer("sep")) is keras.layers.SeparableConv2D
    assert sum(isinstance(layer, EvoDense) for layer in evo.layers) == 1


def test_bad_input_errors():
    with pytest.raises(TypeError, match="keras.Model"):
        evolvable(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="not built"):
        evolvable(keras.Sequential([keras.layers.Dense(3)]))
    model = _small_model()
    kernel = model.get_layer("dw").kernel
    value = kernel.numpy()
    value[1, 2, 0, 0] = np.nan
    kernel.assign(value)
    with pytest.raises(ValueError, match=r"'dw'.*nan.*\(1, 2, 0, 0\)"):
        evolvable(model)
    with pytest.raises(ValueError, match="int3x"):
        evolvable(_small_model(), precision="int3x")


def test_subclassed_models_are_refused_up_front_by_every_entry_point():
    import keras_evosynth as ke

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")
            self.conv = keras.layers.Conv2D(4, 3)
            self.flat = keras.layers.Flatten()
            self.head = keras.layers.Dense(2)

        def call(self, x):
            return self.head(self.flat(self.conv(x)))

    net = Net()
    x = np.zeros((4, 8, 8, 1), "float32")
    net(x)
    message = r"evolvable\(\) needs a functional or Sequential .*'net' is a subclassed .*\(Net\)"
    with pytest.raises(TypeError, match=message):
        evolvable(net)
    with pytest.raises(TypeError, match=r"compact\(\) needs a functional"):
        ke.compact(net)
    net.compile("adam", "mse")
    with pytest.raises(TypeError, match="EvolutionCallback needs a functional"):
        net.fit(x, np.zeros((4, 2)), epochs=1, verbose=0,
                callbacks=[ke.EvolutionCallback(generations=1, monitor="loss")])
    # a functional model nested in a functional one keeps working
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3)], name="inner")
    inputs = keras.Input((8, 8, 1))
    outer = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inner(inputs))))
    assert type(ke.compact(evolvable(outer))).__name__ == "Functional"
