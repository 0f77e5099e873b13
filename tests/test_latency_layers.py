"""Latency table: every layer of a functional network is timed, folded or
priced in the fixed remainder; `untimed=` for the layers it cannot time."""

import json

import keras
import numpy as np
import pytest

import keras_evosynth as ke
from keras_evosynth import genetics, latency
from keras_evosynth._converter import convert
from keras_evosynth.export import export_litert, list_operators
from keras_evosynth.latency import LatencyTable
from keras_evosynth.latency.calibration import _anchor_model, _Measurer, _Plain
from keras_evosynth.latency.timing import interpreter, null_flatbuffer, time_interleaved

L = keras.layers
# The smallest table `measure` can make: each grid axis holds the op's own
# channel counts and one channel, no refinement, one timing round.
QUICK = {"step": 4096, "coarse": 2, "dense_below": 0, "refine": 1e9, "rounds": 1,
         "space_to_depth_below": 0, "verbose": 0}


@keras.saving.register_keras_serializable(package="test_latency_layers")
class Doubling(L.Layer):
    """A custom layer: compaction keeps it whole, so its size never changes."""

    def call(self, x):
        return 2.0 * x


@keras.saving.register_keras_serializable(package="test_latency_layers")
def halved(t):
    """A custom activation: the table has no micro-model for it."""
    return 0.5 * t


def _zoo():
    """A functional model with the layer kinds of keras.applications networks."""
    x = keras.Input((16, 16, 3), name="image")
    y = L.Rescaling(1 / 255.0, name="rescale")(x)
    y = L.Normalization(mean=[0.4, 0.5, 0.6], variance=[0.1, 0.2, 0.3], name="norm")(y)
    y = L.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(y)
    y = L.BatchNormalization(name="stem_bn")(y)
    y = L.Activation("swish", name="stem_swish")(y)
    y = L.ZeroPadding2D(((0, 1), (0, 1)), name="dw_pad")(y)  # "same" of the stride-2 dw
    y = L.DepthwiseConv2D(3, 2, name="dw")(y)
    y = L.ReLU(6.0, name="dw_relu")(y)
    s = L.GlobalAveragePooling2D(name="se_gap")(y)  # squeeze-excite
    s = L.Reshape((1, 1, 16), name="se_reshape")(s)
    s = L.Conv2D(4, 1, activation="relu", name="se_reduce")(s)
    s = L.Conv2D(16, 1, activation="sigmoid", name="se_expand")(s)
    y = L.Multiply(name="se_mul")([y, s])
    y = L.Dropout(0.2, name="drop")(y)
    z = L.Conv2D(16, 1, name="branch")(y)
    y = L.Add(name="add")([y, z])
    y = L.Subtract(name="sub")([y, z])
    y = L.BatchNormalization(name="post_bn")(y)
    y = L.ZeroPadding2D(1, name="pool_pad")(y)  # before pooling: stays a PAD
    y = L.MaxPooling2D(2, name="pool")(y)
    y = L.UpSampling2D(2, name="up")(y)
    y = L.GlobalMaxPooling2D(name="gmp")(y)
    y = L.Dense(10, name="logits")(y)
    y = L.LayerNormalization(name="ln")(y)
    y = Doubling(name="custom")(y)
    return keras.Model(x, L.Softmax(name="softmax")(y), name="zoo")


ZOO_PRICING = {
    "rescale": "timed", "norm": "remainder", "stem": "timed", "stem_bn": "folded",
    "stem_swish": "timed", "dw_pad": "folded", "dw": "timed", "dw_relu": "folded",
    "se_gap": "timed", "se_reshape": "folded", "se_reduce": "timed", "se_expand": "timed",
    "se_mul": "timed", "drop": "folded", "branch": "timed", "add": "timed", "sub": "timed",
    "post_bn": "timed", "pool_pad": "timed", "pool": "timed", "up": "timed", "gmp": "timed",
    "logits": "timed", "ln": "remainder", "custom": "remainder",
    "softmax": "remainder",  # compaction keeps it whole (`_channels`): one fixed cost
}


def test_every_layer_of_a_functional_model_is_timed_folded_or_a_fixed_cost():
    model = ke.evolvable(_zoo())
    ops = latency.model_ops(model)
    assert ops.pricing == ZOO_PRICING
    assert [op.name for op in ops] == [k for k, v in ZOO_PRICING.items() if v == "timed"]
    assert ops.priced("remainder") == ["norm", "ln", "custom", "softmax"]
    assert [e["remainder"] for e in ops.remainder] == [
        "Normalization", "LayerNormalization", "Doubling", "Softmax"]
    # the fixed-cost layers are part of the architecture's key
    assert latency.fingerprint(ops) != latency.fingerprint(list(ops))
    ops_of_compacted = latency.model_ops(ke.compact(model))
    assert latency.fingerprint(ops_of_compacted) == latency.fingerprint(ops)
    assert latency.pricing_summary(ops).endswith(
        "4 in the fixed remainder (norm, ln, custom, softmax), 0 untimed")


@pytest.mark.parametrize("size, pad, conv, folded", [
    (16, ((0, 1), (0, 1)), L.DepthwiseConv2D(3, 2), True),  # MobileNetV2's correct_pad
    (16, ((1, 2), (1, 2)), L.DepthwiseConv2D(5, 2), True),  # EfficientNet's
    (16, 1, L.Conv2D(4, 3), True),
    (15, ((0, 1), (0, 1)), L.DepthwiseConv2D(3, 2), False),  # "same" would pad (1, 1)
    (16, 1, L.DepthwiseConv2D(3, 2), False),
    (32, 3, L.Conv2D(4, 7, 2), False),  # ResNet's stem
    (16, 1, L.Conv2D(4, 3, padding="same"), False),
])
def test_zero_padding_folds_where_the_converter_folds_it(size, pad, conv, folded):
    # Each case as the int8 converter treats it (checked with list_operators:
    # a PAD operator is left exactly where `folded` is False).
    x = keras.Input((size, size, 4))
    y = L.ZeroPadding2D(pad, name="pad")(L.Conv2D(4, 1, name="c")(x))
    model = ke.evolvable(keras.Model(x, conv(y)))
    assert latency.model_ops(model).pricing["pad"] == ("folded" if folded else "timed")


def test_folded_layers_leave_no_operator_and_fixed_ones_keep_their_size():
    # What the converter does with the zoo (the pricing above relies on it).
    model = _zoo()
    data = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    names = [op.name for op in list_operators(
        export_litert(model, data, allow_float_ops=True).flatbuffer)]
    assert names.count("PAD") == 1  # pool_pad; dw_pad went into the depthwise conv
    assert names.count("SUB") == 2  # the Normalization's mean, and the Subtract
    assert names.count("CONV_2D") == 4  # stem_bn went into the stem
    dw = names.index("DEPTHWISE_CONV_2D")  # its ReLU6 fused, the SE's reshape gone:
    assert names[dw + 1:dw + 3] == ["MEAN", "CONV_2D"]
    # A cut reaches every timed op downstream (the channel ops too) but not
    # the layers compaction keeps whole: the logits keep their 10 outputs.
    evo = ke.evolvable(model)
    for name in ("stem", "dw", "se_expand", "branch"):
        evo.get_layer(name).set_masks(cluster_mask=np.arange(16) < 4)
    ops, live = latency.kept_channels(evo)
    live = dict(zip((op.name for op in ops), live, strict=True))
    assert live["stem"] == (3, 4) and live["rescale"] == (3, 3)
    assert all(live[name] == (4, 4) for name in ("stem_swish", "se_mul", "add", "up", "gmp"))
    assert live["logits"] == (4, 10) and "softmax" not in live


def test_layers_without_micro_model_follow_compaction():
    # A Normalization or custom layer after a cut convolution is kept whole
    # by compaction (a fixed cost); a convolution with a custom activation
    # reading a cut layer gets cheaper when that layer loses filters: untimed.
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(8, 3, name="a")(x)
    y = L.Normalization(axis=-1, mean=0.0, variance=1.0, name="norm")(y)
    y = L.Conv2D(8, 1, name="b")(y)
    y = L.Conv2D(8, 1, activation=halved, name="odd")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    model = ke.evolvable(keras.Model(x, Doubling(name="custom")(y)))
    pricing = latency.model_ops(model, untimed="ignore").pricing
    assert pricing == {"a": "timed", "norm": "remainder", "b": "timed", "odd": "untimed",
                       "gap": "timed", "custom": "remainder"}
    with pytest.raises(ValueError) as error:
        latency.model_ops(model)
    message = str(error.value)
    assert "cannot time layer 'odd' (EvoConv2D)" in message and "custom activation" in message
    assert "untimed='ignore'" in message
    # a plain (never cut) model prices the same convolution as a fixed cost
    plain_pricing = latency.model_ops(ke.compact(model)).pricing
    assert plain_pricing["odd"] == "remainder"
    with pytest.raises(ValueError, match="untimed must be one of"):
        latency.model_ops(model, untimed="skip")


class _Backend:
    """Op costs without conversion: `0.001 * cin * cout` ms per micro-model
    (whole models 1 ms)."""

    cpu, runtime, threads = "fake", "fake runtime", 1

    def op_costs(self, flatbuffers):
        return [0.001 * cin * cout for _, cin, cout in flatbuffers]

    def invoke_ms(self, flatbuffers):
        return [1.0 for _ in flatbuffers]


def test_measure_untimed_raise_or_ignore_records_the_layers(monkeypatch, tmp_path):
    monkeypatch.setattr(_Measurer, "flatbuffer",
                        lambda self, op, cin, cout=None: (op.name, cin, cout or cin))
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(8, 3, name="a")(x)
    y = L.Conv2D(8, 1, activation=halved, name="odd")(y)
    y = L.GlobalAveragePooling2D(name="gap")(y)
    model = ke.evolvable(keras.Model(x, L.Dense(2, name="head")(y), name="odd_one"))
    with pytest.raises(ValueError, match=r"cannot time layer 'odd' \(EvoConv2D\).*"
                                         r"untimed='ignore'"):
        LatencyTable.measure(model, backend=_Backend(), verbose=0)
    with pytest.raises(ValueError, match="untimed must be one of"):
        LatencyTable.measure(model, backend=_Backend(), verbose=0, untimed=False)
    table = LatencyTable.measure(model, backend=_Backend(), verbose=0, untimed="ignore",
                                 cache_dir=str(tmp_path))
    (record,) = table.models.values()
    assert record["untimed"] == ["odd"] and record["remainder_layers"] == []
    assert table.untimed_layers() == {"odd_one": ["odd"]}
    assert "untimed=['odd']" in repr(table)
    with open(table.path) as f:
        assert json.load(f)["models"][latency.fingerprint(
            latency.model_ops(model, untimed="ignore"))]["untimed"] == ["odd"]
    assert "untimed=['odd']" in repr(LatencyTable.load(table.path))
    assert set(table.op_costs(model)) == {"a", "gap", "head"}
    model.get_layer("a").set_masks(cluster_mask=np.arange(8) < 4)
    assert table.predict(model) == pytest.approx(table.predict(ke.compact(model)))
    genomes = genetics.genomes_from_model(model)[0]
    assert table.expectation(model, genomes).current == pytest.approx(table.predict(model))
    # an architecture that differs only in a fixed-cost layer is another one
    other = keras.Model(x, L.Dense(2, name="head2")(L.LayerNormalization()(y)))
    with pytest.raises(ValueError, match="was not measured.*untimed='ignore'"):
        table.predict(ke.evolvable(other))


def test_measure_prices_the_zoo_and_predicts_its_anchor():
    model = ke.evolvable(_zoo())
    table = LatencyTable.measure(model, **QUICK)
    (record,) = table.models.values()
    assert record["remainder_layers"] == ["norm", "ln", "custom", "softmax"]
    assert record["untimed"] == []
    assert repr(table).endswith("threads=1)")  # nothing untimed
    costs = table.op_costs(model)
    assert set(costs) == {k for k, v in ZOO_PRICING.items() if v == "timed"}
    assert all(ms >= 0.0 for ms in costs.values())
    full = record["anchors"][0]
    assert full["keep"] == 1.0 and full["grid_ms"] == pytest.approx(sum(costs.values()))
    predicted = table.predict(model)
    if record["scale"] == 1.0:  # the fit fell back to the line
        expected = full["grid_ms"] + record["remainder_ms"]
    else:  # the curve through the anchors, raised to every anchor below it
        expected = max(a["whole_ms"] for a in record["anchors"]
                       if a["grid_ms"] <= full["grid_ms"])
    assert predicted == pytest.approx(max(expected, record["floor_ms"]))
    assert table.predict(ke.compact(model)) == pytest.approx(predicted)


def test_anchor_models_keep_the_operators_of_preprocessing():
    # Neutral weights make the calibration data harmless but keep what the
    # converter emits: a Normalization with a mean stays a SUB and a MUL
    # (an adapted one too), and the user's model keeps its statistics.
    rng = np.random.default_rng(0)
    adapted = L.Normalization(name="norm")
    adapted.adapt(rng.uniform(0, 255, (8, 4, 4, 3)).astype("float32"))
    for norm in (adapted, L.Normalization(mean=[100.0, 110, 120], variance=[900.0, 800, 700])):
        x = keras.Input((8, 8, 3))
        y = L.Conv2D(4, 3, activation="relu", name="c")(norm(x))
        model = keras.Model(x, L.GlobalAveragePooling2D(name="gap")(y))
        statistics = [keras.ops.convert_to_numpy(w) for w in (norm.mean, norm.variance)]
        table = LatencyTable(cpu="test", runtime="test")
        for op in latency.model_ops(model):
            axes = [[op.cin], [op.cout]] if op.two_d else [[op.cin]]
            table.entries[op.key] = latency.Entry(op.signature, axes,
                                                  [[0.1]] if op.two_d else [0.1])
        cut, _ = _anchor_model(table, _Plain(model, [(1, 8, 8, 3)], frozenset({id(norm)})),
                               1.0, rng)
        data = [rng.uniform(0, 1, (4, 8, 8, 3)).astype("float32")]
        names = [op.name for op in list_operators(convert(cut, data, "int8", False, True))]
        assert "SUB" in names and "MUL" in names
        assert all(np.array_equal(a, keras.ops.convert_to_numpy(b))
                   for a, b in zip(statistics, (norm.mean, norm.variance), strict=True))


@pytest.mark.slow
def test_efficientnet_is_measured_and_predicted():
    import time

    model = ke.evolvable(keras.applications.EfficientNetB0(
        weights=None, input_shape=(32, 32, 3), classes=10))
    start = time.perf_counter()
    table = LatencyTable.measure(model, **QUICK)
    seconds = time.perf_counter() - start
    (record,) = table.models.values()
    assert record["remainder_layers"] == ["normalization"] and record["untimed"] == []
    predicted = table.predict(model)
    data = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    flatbuffer = export_litert(model, data).flatbuffer
    null, whole = time_interleaved(
        [interpreter(null_flatbuffer(), 1),
         interpreter(flatbuffer, 1)], rounds=7)
    print(f"EfficientNetB0 32x32: measure {seconds:.0f}s, predicted {predicted:.3f} ms, "
          f"measured {whole:.3f} ms (empty model {null:.4f} ms)")
    # the uncut model is an anchor (timed with neutral weights, minutes ago):
    # close, up to the host's drift
    assert predicted == pytest.approx(whole, rel=0.3)


# keras.applications' network with the most layer kinds (14: Rescaling,
# Normalization, ZeroPadding2D, Conv2D, DepthwiseConv2D, BatchNormalization,
# Activation, GlobalAveragePooling2D, Reshape, Multiply, Dropout, Add, Dense,
# InputLayer), at its smallest input. Its measurement is the slow test above;
# here the pricing of each kind, what the converter leaves of it, and the
# channels a cut keeps against the compacted network.
EFFICIENTNET_PRICING = {
    "Activation": "timed", "Add": "timed", "BatchNormalization": "folded", "Dropout": "folded",
    "EvoConv2D": "timed", "EvoDense": "timed", "EvoDepthwiseConv2D": "timed",
    "Multiply": "timed", "Normalization": "remainder",
    "Rescaling": "timed", "Reshape": "folded", "ZeroPadding2D": "folded",
}


def test_a_zoo_network_is_priced_kind_by_kind_as_the_converter_builds_it():
    base = keras.applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=10)
    model = ke.evolvable(base)
    ops = latency.model_ops(model)
    kinds = {}
    for name, how in ops.pricing.items():
        kinds.setdefault(type(model.get_layer(name)).__name__, set()).add(how)
    # the squeeze-excite pooling of the five blocks at 1x1 (a Reshape reads
    # it) is a no-op the converter removes; the other eleven and the head's
    # (Dropout and Dense read it) are timed
    assert kinds.pop("GlobalAveragePooling2D") == {"timed", "folded"}
    assert kinds == {kind: {how} for kind, how in EFFICIENTNET_PRICING.items()}
    assert ops.priced("remainder") == ["normalization"] and ops.priced("untimed") == []
    count = {kind: sum(type(model.get_layer(op.name)).__name__ == kind for op in ops)
             for kind in ("EvoConv2D", "EvoDepthwiseConv2D", "EvoDense", "GlobalAveragePooling2D")}

    data = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    names = [op.name for op in list_operators(export_litert(model, data).flatbuffer)]
    assert names.count("CONV_2D") == count["EvoConv2D"] == 65  # every BN folded into one
    assert names.count("DEPTHWISE_CONV_2D") == count["EvoDepthwiseConv2D"] == 16
    assert names.count("FULLY_CONNECTED") == count["EvoDense"] == 1
    assert names.count("MEAN") == count["GlobalAveragePooling2D"] == 12
    assert "PAD" not in names  # the five ZeroPadding2D went into their depthwise convolutions

    # A random cut: the channels the table prices are the compacted network's.
    rng = np.random.default_rng(1)
    genomes, layers = genetics.genomes_from_model(model)
    for genome, layer in zip(genomes, layers, strict=True):
        if not genome.protected:
            n = genome.cluster_mask.size
            layer.set_masks(cluster_mask=rng.random(n) < 0.6)
    ops, live = latency.kept_channels(model)
    small = ke.compact(model)
    for op, (cin, cout) in zip(ops, live, strict=True):
        layer = small.get_layer(op.name)
        if op.kind in ("conv2d", "dense"):
            assert tuple(layer.kernel.shape[-2:]) == (cin, cout), op.name
        elif op.kind == "depthwise":
            assert layer.kernel.shape[-2] == cout, op.name
