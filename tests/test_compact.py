import keras
import numpy as np
import pytest
from conftest import roundtrip_model

from keras_evosynth import EvoLayer, FakeQuantActivation, evolvable
from keras_evosynth.compact import compact, strip_evolvable

L = keras.layers


def _randomize(model, seed=0):
    """Non-trivial BatchNorm statistics and biases, so that dead filters
    become non-zero constants downstream (the hard case for compaction)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        new = []
        for w in layer.weights:
            name = w.path.split("/")[-1]
            if name in ("gamma", "moving_variance"):
                new.append(rng.uniform(0.5, 1.5, w.shape))
            elif name in ("beta", "moving_mean", "bias"):
                new.append(rng.normal(0.0, 0.5, w.shape))
            else:
                new.append(keras.ops.convert_to_numpy(w))
        layer.set_weights(new)


def _mask(model, sparsity, seed=0, keep=()):
    """Random cluster masks (and a few random synapse masks)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, EvoLayer) and layer.name not in keep:
            synapses, clusters = layer.get_masks()
            layer.set_masks(
                synapse_mask=rng.random(synapses.shape) >= sparsity / 4,
                cluster_mask=rng.random(clusters.shape) >= sparsity,
            )


def _assert_same(model, small, x, rtol=1e-5):
    expected, got = keras.tree.flatten(model(x)), keras.tree.flatten(small(x))
    for e, g in zip(expected, got, strict=True):
        e, g = np.asarray(e), np.asarray(g)
        assert e.shape == g.shape
        np.testing.assert_allclose(g, e, atol=rtol * max(1.0, np.abs(e).max()), rtol=0)


def _types(model):
    return {type(layer).__name__ for layer in model.layers}


def _inception(x, f1, f3r, f3, f5r, f5, fp, name, bn=False):
    def conv(t, filters, size, suffix):
        t = L.Conv2D(filters, size, padding="same", name=f"{name}_{suffix}")(t)
        if bn:
            t = L.BatchNormalization(name=f"{name}_{suffix}_bn")(t)
        return L.ReLU()(t)

    b1 = conv(x, f1, 1, "1x1")
    b3 = conv(conv(x, f3r, 1, "3x3r"), f3, 3, "3x3")
    b5 = conv(conv(x, f5r, 1, "5x5r"), f5, 5, "5x5")
    bp = conv(L.MaxPooling2D(3, 1, padding="same")(x), fp, 1, "pool")
    return L.Concatenate(name=f"{name}_concat")([b1, b3, b5, bp])


def googlenet_style(bn=False, shape=(32, 32, 3)):
    """A small GoogLeNet-like trunk: stem, two inception modules, head."""
    inputs = keras.Input(shape)
    x = L.Conv2D(16, 7, strides=2, padding="same", activation="relu", name="conv1")(
        inputs
    )
    x = L.MaxPooling2D(3, 2, padding="same")(x)
    x = L.Conv2D(16, 1, activation="relu", name="conv2r")(x)
    x = L.Conv2D(24, 3, padding="same", activation="relu", name="conv2")(x)
    x = _inception(x, 8, 8, 12, 4, 6, 6, "in3a", bn)
    x = _inception(x, 12, 8, 16, 4, 8, 8, "in3b", bn)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.4)(x)
    return keras.Model(inputs, L.Dense(10, name="head")(x))


def small_resnet(shape=(16, 16, 3)):
    """Conv-BN-ReLU residual blocks, one with a projection shortcut, and a
    squeeze-excite gate (GlobalPooling, Reshape, Multiply)."""
    inputs = keras.Input(shape)
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = L.ReLU()(L.BatchNormalization(name="stem_bn")(x))
    for i, (filters, stride) in enumerate([(16, 1), (24, 2)]):
        y = L.Conv2D(filters, 1, use_bias=False, name=f"b{i}_c1")(x)
        y = L.ReLU()(L.BatchNormalization(name=f"b{i}_bn1")(y))
        y = L.Conv2D(filters, 3, strides=stride, padding="same", name=f"b{i}_c2")(y)
        y = L.BatchNormalization(name=f"b{i}_bn2")(y)
        s = L.GlobalAveragePooling2D()(y)
        s = L.Reshape((1, 1, filters))(s)
        s = L.Conv2D(4, 1, activation="swish", name=f"b{i}_se1")(s)
        s = L.Conv2D(filters, 1, activation="sigmoid", name=f"b{i}_se2")(s)
        y = L.Multiply()([y, s])
        if stride != 1 or x.shape[-1] != filters:
            x = L.Conv2D(filters, 1, strides=stride, name=f"b{i}_proj")(x)
            x = L.BatchNormalization(name=f"b{i}_proj_bn")(x)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.Conv2D(12, 3, name="last")(x)
    x = L.Flatten()(L.ELU()(x))
    return keras.Model(inputs, L.Dense(5, name="head")(x))


@pytest.mark.parametrize("bn", [False, True], ids=["relu", "bn"])
@pytest.mark.parametrize("sparsity", [0.3, 0.7])
def test_googlenet_style_compacts_exactly(bn, sparsity):
    base = googlenet_style(bn)
    _randomize(base)
    evo = evolvable(base, precision="int8")
    _mask(evo, sparsity, keep=("head",))
    small, report = compact(evo, return_report=True)
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype("float32")
    _assert_same(evo, small, x)
    assert not any(isinstance(layer, EvoLayer) for layer in small.layers)
    assert report.params_after == small.count_params() < report.params_before
    for layer in evo.layers:
        if isinstance(layer, EvoLayer) and not bn:
            # Without BatchNorm a dead filter outputs relu(0) = 0: exactly
            # the live filters remain.
            kept, total = report.channels[layer.name]
            assert total == len(layer.get_masks()[1])
            assert kept <= layer.count_clusters() or layer.name == "head"
    assert report.channels["head"] == (10, 10)
    assert report.intact == []


@pytest.mark.parametrize("sparsity", [0.3, 0.6, 0.9])
def test_residual_squeeze_excite_net_compacts_exactly(sparsity):
    base = small_resnet()
    _randomize(base, seed=2)
    evo = evolvable(base, precision="int4")
    _mask(evo, sparsity, seed=3)
    small, report = compact(evo, return_report=True)
    x = np.random.default_rng(1).normal(size=(4, 16, 16, 3)).astype("float32")
    _assert_same(evo, small, x)
    assert report.params_after < report.params_before
    # Residual groups keep one channel set: Add inputs have equal widths.
    for layer in small.layers:
        if isinstance(layer, L.Add):
            widths = {t.shape[-1] for t in layer.input}
            assert len(widths) == 1


def test_mobilenet_v2_compacts_exactly():
    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10,
        classifier_activation=None,
    )
    _randomize(base, seed=4)
    evo = evolvable(base)
    x = np.random.default_rng(1).uniform(-1, 1, size=(2, 32, 32, 3)).astype("float32")
    previous = None
    for sparsity in (0.3, 0.7):
        _mask(evo, sparsity, seed=5, keep=("predictions",))
        small, report = compact(evo, return_report=True)
        _assert_same(evo, small, x)
        assert report.intact == []
        assert report.params_after < (previous or report.params_before)
        previous = report.params_after


# EfficientNetB0 runs in the default suite (~9 s): it has the most layer kinds
# (depthwise convs, squeeze-excite Multiply with a broadcast gate, Rescaling and
# Normalization, swish); ResNet50 (Add merges) and InceptionV3 (Concatenate)
# add size more than kinds, which the MobileNetV2 and concat tests cover: slow.
APPLICATIONS = [
    pytest.param("ResNet50", (32, 32, 3), marks=pytest.mark.slow, id="ResNet50"),
    pytest.param("InceptionV3", (75, 75, 3), marks=pytest.mark.slow, id="InceptionV3"),
    pytest.param("EfficientNetB0", (32, 32, 3), id="EfficientNetB0"),
]


@pytest.mark.parametrize("name, shape", APPLICATIONS)
def test_keras_applications_compact_exactly(name, shape):
    base = getattr(keras.applications, name)(
        weights=None, input_shape=shape, classes=10, classifier_activation=None
    )
    _randomize(base, seed=6)
    evo = evolvable(base)
    x = np.random.default_rng(1).uniform(0, 255, size=(2,) + shape).astype("float32")
    previous = None
    for sparsity in (0.3, 0.7):
        _mask(evo, sparsity, seed=7, keep=("predictions",))
        small, report = compact(evo, return_report=True)
        _assert_same(evo, small, x)
        assert report.params_after < (previous or report.params_before)
        previous = report.params_after
        assert {n for n, _ in report.intact} <= {"normalization", "rescaling"}


def test_dead_filters_before_same_conv_fold_into_one_carrier():
    """conv -> BN -> ReLU -> 3x3 'same' conv: dead filters become non-zero
    constants that border padding makes non-uniform; all but one fold into
    a single kept carrier channel."""
    inputs = keras.Input((9, 9, 2))
    x = L.Conv2D(8, 1, use_bias=False, name="c1")(inputs)
    x = L.BatchNormalization(name="bn", beta_initializer="ones")(x)
    x = L.ReLU()(x)
    outputs = L.Conv2D(3, 3, padding="same", name="c2")(x)
    evo = evolvable(keras.Model(inputs, outputs))
    evo.get_layer("c1").set_masks(cluster_mask=[1, 0, 0, 1, 0, 0, 0, 0])
    small, report = compact(evo, return_report=True)
    assert report.channels["c1"] == (3, 8)  # 2 live + 1 carrier
    assert report.folded == ["c2"]
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 2)).astype("float32")
    _assert_same(evo, small, x)


def test_constants_fold_into_dense_after_pooling_and_bias_is_added():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(6, 3, name="conv", use_bias=False)(inputs)
    x = L.BatchNormalization(name="bn", beta_initializer="ones")(x)
    x = L.GlobalMaxPooling2D()(x)
    outputs = L.Dense(3, use_bias=False, name="head")(x)
    evo = evolvable(keras.Model(inputs, outputs))
    evo.get_layer("conv").set_masks(cluster_mask=[0, 1, 0, 1, 1, 0])
    small, report = compact(evo, return_report=True)
    assert small.get_layer("conv").filters == 3
    assert small.get_layer("head").use_bias  # the constants went somewhere
    assert report.folded == ["head"]
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    _assert_same(evo, small, x)


def test_dead_units_and_dead_branches_disappear_but_outputs_stay():
    inputs = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(inputs)
    b = L.Conv2D(4, 1, activation="relu", name="b")(inputs)
    x = L.Concatenate()([a, b])
    x = L.Flatten()(x)
    x = L.Dense(6, activation="relu", name="hidden")(x)
    outputs = L.Dense(3, name="head")(x)
    evo = evolvable(keras.Model(inputs, outputs))
    _randomize(evo)
    evo.get_layer("b").set_masks(cluster_mask=[0, 0, 0, 0])  # whole branch
    evo.get_layer("hidden").set_masks(cluster_mask=[1, 0, 1, 1, 0, 1])
    evo.get_layer("head").set_masks(cluster_mask=[1, 0, 1])  # an output unit
    small, report = compact(evo, return_report=True)
    assert "b" in report.dropped and "Concatenate" not in _types(small)
    assert small.get_layer("hidden").units == 4
    assert small.output.shape == (None, 3)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    _assert_same(evo, small, x)
    assert np.asarray(small(x))[:, 1].tolist() == [0.0, 0.0]


def test_sequential_nested_and_multi_output_models():
    inner = keras.Sequential(
        [keras.Input((8, 8, 4)), L.Conv2D(6, 3, name="inner_conv"), L.ReLU()],
        name="inner",
    )
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="outer_conv")(inputs)
    y = inner(x)
    out1 = L.Dense(2, name="head1")(L.GlobalAveragePooling2D()(y))
    out2 = L.Conv2D(1, 1, name="head2")(x)
    model = evolvable(keras.Model(inputs, {"cls": out1, "map": out2}))
    _randomize(model)
    model.get_layer("outer_conv").set_masks(cluster_mask=[1, 0, 1, 1])
    model.get_layer("inner").get_layer("inner_conv").set_masks(
        cluster_mask=[0, 1, 1, 0, 1, 1]
    )
    small = compact(model)
    assert set(small.output) == {"cls", "map"}
    assert small.get_layer("inner_conv").filters == 4
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    _assert_same(model, small, x)

    seq = evolvable(
        keras.Sequential(
            [keras.Input((6, 6, 1)), L.Conv2D(5, 3, name="c"), L.Flatten(), L.Dense(2)]
        )
    )
    seq.get_layer("c").set_masks(cluster_mask=[0, 1, 0, 1, 1])
    small = compact(seq)
    assert small.get_layer("c").filters == 3
    _assert_same(seq, small, x[:, :6, :6, :1])


@keras.saving.register_keras_serializable(package="test_compact")
class _Swap(L.Layer):
    """A custom layer compaction knows nothing about (reverses channels)."""

    def call(self, x):
        return x[..., ::-1]


def test_unknown_layers_and_softmax_stay_whole_and_are_reported():
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 1, name="c1")(inputs)
    x = _Swap(name="swap")(x)
    x = L.Conv2D(4, 1, name="c2")(x)
    x = L.Activation("softmax", name="soft")(x)
    outputs = L.Conv2D(2, 1, name="c3")(x)
    evo = evolvable(keras.Model(inputs, outputs))
    _randomize(evo)
    for name in ("c1", "c2"):
        evo.get_layer(name).set_masks(cluster_mask=[1, 0, 1, 0])
    small, report = compact(evo, return_report=True)
    assert dict(report.intact) == {
        "swap": "unsupported layer type _Swap",
        "soft": "activation 'softmax'",
    }
    assert report.channels["c1"] == (4, 4) and report.channels["c2"] == (4, 4)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype("float32")
    _assert_same(evo, small, x)


def test_strip_evolvable_keeps_every_channel_and_drops_fake_quant(tmp_path):
    inputs = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = FakeQuantActivation(8, name="fq")(x)
    outputs = L.Dense(2, name="head")(L.Flatten()(x))
    evo = evolvable(keras.Model(inputs, outputs), precision="int4")
    evo.get_layer("conv").set_masks(cluster_mask=[1, 0, 1, 1])
    data = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    evo(data, training=True)  # calibrates the activation range
    plain = strip_evolvable(evo)
    assert _types(plain) == {"InputLayer", "Conv2D", "Flatten", "Dense"}
    assert plain.get_layer("conv").filters == 4
    np.testing.assert_array_equal(
        plain.get_layer("conv").kernel.numpy(),
        evo.get_layer("conv").effective_kernel().numpy(),
    )
    small = compact(evo)
    assert small.get_layer("conv").filters == 3
    evo.get_layer("fq").bits = 32  # the reference: activations unquantized
    _assert_same(evo, plain, data)
    _assert_same(evo, small, data)
    # A plain Keras model: saves and loads without keras_evosynth objects.
    _assert_same(small, roundtrip_model(small, tmp_path), data, rtol=0)


def test_to_plain_is_a_deprecated_alias_that_warns_once(monkeypatch):
    import warnings

    from keras_evosynth import _deprecation
    from keras_evosynth.compact import to_plain

    monkeypatch.setattr(_deprecation, "_warned", set())
    evo = evolvable(keras.Sequential([keras.Input((4,)), L.Dense(3, name="d")]))
    evo.get_layer("d").set_masks(cluster_mask=[1, 0, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plains = [to_plain(evo), to_plain(evo)]
    (warning,) = caught
    assert warning.category is DeprecationWarning and warning.filename == __file__
    assert "use keras_evosynth.strip_evolvable" in str(warning.message)
    for plain in plains:
        assert _types(plain) == {"InputLayer", "Dense"}
        np.testing.assert_array_equal(plain.get_layer("d").kernel.numpy(),
                                      evo.get_layer("d").effective_kernel().numpy())


def _normalized_net(how):
    """Conv-BN-ReLU net behind a `Normalization` whose statistics are far
    from mean 0 / variance 1 (inputs in [0, 255]): adapted, or given to the
    constructor. Returns `(model, data)`."""
    data = np.random.default_rng(8).uniform(0, 255, (64, 12, 12, 3)).astype("float32")
    if how == "adapt":
        norm = L.Normalization(name="norm")
        norm.adapt(data)
    else:
        norm = L.Normalization(mean=[120.0, 130.0, 110.0], variance=[5000.0, 4000.0, 6000.0],
                               name="norm")
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, padding="same", name="conv1")(norm(inputs))
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))
    x = L.Conv2D(6, 3, strides=2, activation="relu", name="conv2")(x)
    outputs = L.Dense(4, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    _randomize(model, seed=9)
    normalized = np.asarray(model.get_layer("norm")(data))
    assert np.abs(normalized).max() < 3.0 < np.abs(data).max()  # it does normalize
    return model, data


@pytest.mark.parametrize("how", ["adapt", "constructor"])
def test_normalization_statistics_survive_evolvable_and_compaction(how):
    """The copies of a `Normalization` compute with the original's mean and
    variance (an adapted layer reads them through `finalize_state`, which a
    bare `set_weights` skips: the copy normalized with mean 0, variance 1)."""
    model, data = _normalized_net(how)
    _assert_same(model, compact(model), data)
    evo = evolvable(model)
    np.testing.assert_array_equal(np.asarray(evo(data)), np.asarray(model(data)))
    evo.get_layer("conv1").set_masks(cluster_mask=[1, 0, 1, 1, 0, 1, 1, 0])
    evo.get_layer("conv2").set_masks(cluster_mask=[1, 1, 0, 1, 0, 1])
    small, report = compact(evo, return_report=True)
    assert report.channels["conv2"][0] < 6
    _assert_same(evo, small, data)
    np.testing.assert_allclose(np.asarray(small.get_layer("norm")(data)),
                               np.asarray(model.get_layer("norm")(data)), rtol=1e-6)


@pytest.mark.parametrize("how", ["adapt", "constructor"])
def test_int8_export_with_a_normalization_agrees_with_keras(how):
    from keras_evosynth.export import export_litert

    model, data = _normalized_net(how)
    reference = np.abs(model.predict(data, verbose=0)).max()
    report = export_litert(model, data, mode="int8")
    assert report.max_abs_error < 0.05 * reference  # test_rewrites' int8 tolerance
    assert report.float_ops == []
    evo = evolvable(model, precision="int8")
    evo.get_layer("conv1").set_masks(cluster_mask=[1, 0, 1, 1, 0, 1, 1, 0])
    cut = export_litert(evo, data, mode="int8")
    assert cut.compaction.channels["conv1"][0] < 8
    assert cut.max_abs_error < 0.05 * np.abs(evo.predict(data, verbose=0)).max()


def test_bad_input():
    with pytest.raises(TypeError, match="keras.Model"):
        compact("model")
    with pytest.raises(ValueError, match="not built"):
        compact(keras.Sequential([L.Dense(2)]))
