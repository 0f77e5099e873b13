"""Space-to-depth rewrite of strided convolutions: plans, kernels, exactness
through compact / export_litert, and the latency table's choice."""

import keras
import numpy as np
import pytest

import keras_evosynth as ke
from keras_evosynth import latency
from keras_evosynth.latency import Entry
from keras_evosynth.latency.grid import _axis_candidates
from keras_evosynth.rewrites import (
    DepthToSpace,
    SpaceToDepth,
    apply_space_to_depth,
    space_to_depth_kernel,
    space_to_depth_plan,
    space_to_depth_weights,
)

CASES = [
    # kernel, stride, padding, (height, width)
    (7, 2, "same", (16, 24)),  # GoogLeNet's conv1, even input
    (7, 2, "same", (15, 21)),  # odd input: the image is padded to a block multiple
    (4, 2, "same", (8, 8)),  # top padding 1: kernel shifted by one row
    (3, 2, "same", (9, 12)),  # MobileNet's stem
    (3, 2, "valid", (9, 9)),
    (5, 3, "same", (10, 11)),
    (5, 3, "valid", (13, 8)),  # unused bottom rows: cropped in block space
    (2, 2, "valid", (8, 6)),
    (1, 2, "valid", (7, 9)),  # strided 1x1 (ResNet's projection)
    (3, 4, "same", (16, 12)),  # kernel smaller than the stride
]


def _rewritten(conv, input_shape, outputs_per_block=1):
    plan, why = space_to_depth_plan(conv.kernel_size, conv.strides, conv.padding,
                                    input_shape[:2], outputs_per_block=outputs_per_block)
    assert plan is not None, why
    x = keras.Input(input_shape)
    y, new = apply_space_to_depth(x, plan, conv.get_config(), "rewritten")
    new.set_weights(space_to_depth_weights(*conv.get_weights(), plan))
    return keras.Model(x, y), plan


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize(("k", "s", "padding", "size"), CASES)
def test_rewrite_computes_the_original_convolution(k, s, padding, size, m):
    rng = np.random.default_rng(k * 10 + s)
    x = rng.normal(size=(2, *size, 3)).astype("float32")
    conv = keras.layers.Conv2D(5, k, s, padding, activation="relu")
    expected = keras.ops.convert_to_numpy(conv(x))
    model, plan = _rewritten(conv, (*size, 3), m)
    got = keras.ops.convert_to_numpy(model(x))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # exact: no weight changed, only zeros added (each weight once per sub-output)
    blocks = model.get_layer("rewritten").get_weights()[0]
    assert np.count_nonzero(blocks) == m * m * np.count_nonzero(conv.get_weights()[0])
    assert blocks.shape == (*plan.kernel_size, plan.block**2 * 3, m * m * 5)


def test_plan_golden_values():
    plan, _ = space_to_depth_plan((7, 7), (2, 2), "same", (128, 384))
    assert (plan.block, plan.shift, plan.kernel_size, plan.block_pad, plan.padding) == (
        2, (0, 0), (4, 4), ((1, 2), (1, 2)), "same")  # pixels (2, 3) + 1 zero row of the kernel
    plan, _ = space_to_depth_plan((4, 4), (2, 2), "same", (8, 8))
    # pad 1 on top is rounded to 2 (one block), the kernel gets one zero row on top
    assert (plan.shift, plan.kernel_size, plan.block_pad) == ((1, 1), (3, 3), ((1, 1), (1, 1)))
    plan, _ = space_to_depth_plan((5, 5), (3, 3), "valid", (13, 8))
    assert plan.block_pad == ((0, -1), (0, 0)) and plan.image_pad == (2, 1)


def test_plan_golden_values_with_two_outputs_per_block():
    plan, _ = space_to_depth_plan((7, 7), (2, 2), "same", (128, 384), outputs_per_block=2)
    # blocks of 4: pad 2 rounded up to 4 (shift 2); outputs 2b, 2b+1 read rows 4b-2 .. 4b+6
    assert (plan.block, plan.shift, plan.kernel_size, plan.block_pad, plan.padding,
            plan.output_crop) == (4, (2, 2), (3, 3), ((1, 1), (1, 1)), "same", (0, 0))
    plan, _ = space_to_depth_plan((3, 3), (2, 2), "same", (10, 12), outputs_per_block=2)
    # 5 output rows: 3 blocks of 2, one extra row cropped; 10 rows padded to 12
    assert plan.output_crop == (1, 0) and plan.image_pad == (2, 0)


def test_kernel_golden_values():
    kernel = np.arange(1, 5, dtype="float32").reshape(2, 2, 1, 1)  # [[1, 2], [3, 4]]
    plan, _ = space_to_depth_plan((2, 2), (2, 2), "valid", (4, 4))
    blocks = space_to_depth_kernel(kernel, plan)
    assert blocks.shape == (1, 1, 4, 1)
    assert blocks[0, 0, :, 0].tolist() == [1, 2, 3, 4]  # channel (dy * 2 + dx)
    # two outputs per 4-pixel block and axis: sub-output dx = 1 reads pixels 2, 3
    plan, _ = space_to_depth_plan((2, 2), (2, 2), "valid", (4, 4), outputs_per_block=2)
    blocks = space_to_depth_kernel(kernel, plan)
    assert blocks.shape == (1, 1, 16, 4)
    # sub-output (0, 1) (channel 1) holds the kernel at pixels (0..1, 2..3) of the block
    rows = {int(i): float(v) for i, v in enumerate(blocks[0, 0, :, 1]) if v}
    assert rows == {2: 1.0, 3: 2.0, 6: 3.0, 7: 4.0}  # channel ry * 4 + rx


@pytest.mark.parametrize(("args", "reason"), [
    (((3, 3), (1, 1), "same", (8, 8)), "stride 1"),
    (((3, 3), (2, 1), "same", (8, 8)), "unequal strides (2, 1)"),
    (((3, 3), (2, 2), "same", (8, 8), (2, 2)), "dilation (2, 2)"),
    (((3, 3), (2, 2), "same", (None, 8)), "unknown input size"),
    (((9, 9), (2, 2), "valid", (8, 8)), "kernel larger than the input"),
])
def test_plan_refuses_what_it_cannot_rewrite(args, reason):
    assert space_to_depth_plan(*args) == (None, reason)


def test_plan_checks_outputs_per_block():
    with pytest.raises(ValueError, match="outputs_per_block must be an int >= 1"):
        space_to_depth_plan((3, 3), (2, 2), "same", (8, 8), outputs_per_block=0)


@pytest.mark.parametrize(("layer", "shape", "inverse", "bad_shape", "match"), [
    (SpaceToDepth, (4, 6, 2), DepthToSpace, (5, 6, 2),
     "height 5 is not a multiple of block_size 2"),
    (DepthToSpace, (2, 3, 8), SpaceToDepth, (2, 2, 6), "6 input channels are not a multiple"),
])
def test_block_layers_round_trip_invert_each_other_and_check_input(
        layer, shape, inverse, bad_shape, match, tmp_path):
    x = keras.Input(shape)
    model = keras.Model(x, layer(2, name="blocks")(x))
    data = np.random.default_rng(0).normal(size=(1, *shape)).astype("float32")
    path = str(tmp_path / "blocks.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(again(data), model(data))
    assert again.get_layer("blocks").get_config()["block_size"] == 2
    np.testing.assert_array_equal(inverse(2)(model(data)), data)
    with pytest.raises(ValueError, match="block_size must be an int >= 2"):
        layer(1)
    with pytest.raises(ValueError, match=match):
        layer(2)(keras.Input(bad_shape))


def _stem_model():
    x = keras.Input((16, 24, 3))
    y = keras.layers.Rescaling(1.0, offset=-0.5)(x)
    y = keras.layers.Conv2D(8, 7, 2, "same", use_bias=False, name="stem")(y)
    y = keras.layers.BatchNormalization(name="stem_bn")(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(8, 3, 2, "same", activation="relu", name="down")(y)
    y = keras.layers.Conv2D(4, 3, padding="same", name="body")(y)
    return keras.Model(x, y, name="stem_model")


def test_compact_rewrites_a_masked_model_exactly_and_saves(tmp_path):
    model = ke.evolvable(_stem_model(), precision="int8")
    model.get_layer("stem").set_masks(cluster_mask=np.arange(8) % 3 != 0)
    x = np.random.default_rng(1).uniform(0, 1, (3, 16, 24, 3)).astype("float32")
    plain, report = ke.compact(model, return_report=True)
    fast, fast_report = ke.compact(model, return_report=True, space_to_depth=True)
    assert fast_report.space_to_depth == ["stem", "down"]
    assert fast.get_layer("stem").filters == plain.get_layer("stem").filters == 5
    assert any(isinstance(layer, SpaceToDepth) for layer in fast.layers)
    np.testing.assert_allclose(fast(x), plain(x), atol=1e-5)
    only, only_report = ke.compact(model, return_report=True, space_to_depth=["down"])
    assert only_report.space_to_depth == ["down"]
    assert only.get_layer("stem").strides == (2, 2)
    path = str(tmp_path / "fast.keras")
    fast.save(path)
    np.testing.assert_allclose(keras.saving.load_model(path)(x), fast(x), atol=1e-6)


@pytest.mark.parametrize(("selection", "error", "match"), [
    (["body"], ValueError, "'body' \\(Conv2D\\) cannot be rewritten: stride 1"),
    (["stem_bn"], ValueError, "'stem_bn' \\(BatchNormalization\\) cannot be rewritten"),
    (["nope"], ValueError, "no layer named \\['nope'\\]"),
    ([3], TypeError, "list of layer names, a dict"),
    ({"stem": 0}, ValueError, "outputs_per_block must be an int >= 1"),
])
def test_compact_names_a_layer_it_cannot_rewrite(selection, error, match):
    with pytest.raises(error, match=match):
        ke.compact(_stem_model(), space_to_depth=selection)


def test_int8_export_of_the_rewrite_agrees_with_keras_and_the_direct_export():
    model = ke.evolvable(_stem_model(), precision="int8")
    rng = np.random.default_rng(2)
    data = rng.uniform(0, 1, (16, 16, 24, 3)).astype("float32")
    direct = ke.export_litert(model, data)
    fast = ke.export_litert(model, data, space_to_depth=["stem"])
    assert fast.operators["SPACE_TO_DEPTH"] == 1 and "SPACE_TO_DEPTH" not in direct.operators
    assert fast.compaction.space_to_depth == ["stem"]
    assert fast.float_ops == []
    reference = np.abs(model.predict(data, verbose=0)).max()
    assert fast.max_abs_error < 0.05 * reference
    assert abs(fast.max_abs_error - direct.max_abs_error) < 0.05 * reference
    wide = ke.export_litert(model, data, space_to_depth={"stem": 2})
    assert wide.operators["DEPTH_TO_SPACE"] == 1 and wide.float_ops == []
    assert abs(wide.max_abs_error - direct.max_abs_error) < 0.05 * reference


def _synthetic(model, rewritten_ms, wide_ms=None):
    """A table with direct costs `1 + 0.01 * channels` ms per op, the
    space-to-depth form of every eligible op at `rewritten_ms` and its form
    with two outputs per block at `wide_ms` (default: `rewritten_ms + 1`)."""
    table = latency.LatencyTable(threads=1, cpu="test cpu", runtime="test runtime")
    ops = latency.model_ops(model)
    forms = [f for op in ops for f in latency.space_to_depth_forms(op, 16)]
    for op in ops + forms:
        axes = [_axis_candidates(op.cin, 8)]
        if op.two_d:
            axes.append(_axis_candidates(op.cout, 8))
        ms = 1.0 + 0.01 * np.add.outer(*axes) if op.two_d else 1.0 + 0.01 * np.array(axes[0])
        if op.signature.get("rewrite") == "space_to_depth":
            wide = op.signature.get("outputs_per_block", 1) == 2
            cost = (rewritten_ms + 1 if wide_ms is None else wide_ms) if wide else rewritten_ms
            ms = np.full_like(ms, cost)
        table.entries[op.key] = Entry(op.signature, axes, ms.tolist())
    table.models[latency.fingerprint(ops)] = {"remainder_ms": 0.0, "scale": 1.0}
    return table


def test_table_predicts_the_faster_form_and_names_the_layers_to_rewrite():
    model = _stem_model()
    slow = _synthetic(model, rewritten_ms=5.0)
    fast = _synthetic(model, rewritten_ms=0.25)
    assert slow.space_to_depth_layers(model) == {}
    assert fast.space_to_depth_layers(model) == {"stem": 1, "down": 1}
    direct = slow.op_costs(model)
    rewritten = fast.op_costs(model)
    assert rewritten["stem"] == pytest.approx(0.25) and direct["stem"] > 1.0
    assert fast.predict(model) == pytest.approx(
        slow.predict(model) - direct["stem"] - direct["down"] + 0.5)
    assert ke.compact(model, return_report=True, space_to_depth=fast)[1].space_to_depth == [
        "stem", "down"]


def test_table_chooses_two_outputs_per_block_where_that_form_is_fastest():
    model = _stem_model()
    table = _synthetic(model, rewritten_ms=0.5, wide_ms=0.125)
    assert table.space_to_depth_layers(model) == {"stem": 2, "down": 2}
    assert table.op_costs(model)["stem"] == pytest.approx(0.125)
    fast, report = ke.compact(model, return_report=True, space_to_depth=table)
    assert report.space_to_depth == ["stem", "down"]
    assert sum(isinstance(layer, DepthToSpace) for layer in fast.layers) == 2
    x = np.random.default_rng(3).uniform(0, 1, (2, 16, 24, 3)).astype("float32")
    np.testing.assert_allclose(fast(x), ke.compact(model)(x), atol=1e-5)


def test_measure_times_the_space_to_depth_form_of_strided_stems(tmp_path):
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(8, 5, 2, "same", activation="relu", name="stem")(x)
    model = keras.Model(x, keras.layers.GlobalAveragePooling2D()(y))
    table = ke.LatencyTable.measure(model, verbose=0, coarse=2)
    forms = [e.signature for e in table.entries.values() if e.signature.get("rewrite")]
    assert [f["op"] for f in forms] == ["conv2d", "conv2d"] and forms[0]["kernel"] == [5, 5]
    assert sorted(f.get("outputs_per_block", 1) for f in forms) == [1, 2]
    assert table.predict(model) > 0
    assert set(table.space_to_depth_layers(model)) <= {"stem"}
    without = ke.LatencyTable.measure(model, verbose=0, coarse=2, space_to_depth_below=0)
    assert not any(e.signature.get("rewrite") for e in without.entries.values())
