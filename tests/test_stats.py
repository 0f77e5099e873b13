import json

import keras
import numpy as np
import pytest

from keras_evosynth import evolvable, summary


def _model():
    inputs = keras.Input((10, 10, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)  # 8x8 out, 72 weights
    x = keras.layers.BatchNormalization(name="bn")(x)  # 4 x 4 floats
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)  # 6x6, 72 weights
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="head")(x)  # 24 weights
    return keras.Model(inputs, outputs)


def test_plain_model_counts_every_weight_at_32_bits():
    stats = summary(_model(), print_fn=None)
    rows = {row.name: row for row in stats.layers}
    assert [r.name for r in stats.layers] == ["conv", "dw", "head"]
    assert (rows["conv"].synapses, rows["conv"].macs, rows["conv"].bits) == (72, 72 * 64, 32)
    assert (rows["dw"].synapses, rows["dw"].clusters, rows["dw"].macs) == (72, 8, 72 * 36)
    assert (rows["head"].synapses, rows["head"].macs) == (24, 24)
    assert rows["conv"].bytes == 72 * 4 + 4 * 4
    assert stats.synapses == 168 and stats.clusters == 15
    assert stats.macs == 72 * 64 + 72 * 36 + 24
    assert stats.other_bytes == 16 * 4
    assert stats.bytes == (168 + 15) * 4 + 64


def test_masked_int4_model_exact_totals_and_outputs():
    evo = evolvable(_model(), precision="int4")
    conv, dw, head = (evo.get_layer(n) for n in ("conv", "dw", "head"))
    # Values chosen so no live weight rounds to zero at 4 bits.
    conv.kernel.assign(np.full((3, 3, 2, 4), 0.5, "float32"))
    conv.set_masks(cluster_mask=[1, 0, 0, 1])
    dw.set_masks(synapse_mask=np.arange(72).reshape(3, 3, 4, 2) % 2 == 0)
    dw.kernel.assign(np.full((3, 3, 4, 2), -0.25, "float32") * dw.synapse_mask.numpy())
    head.kernel.assign(np.linspace(0.5, 1.0, 24, dtype="float32").reshape(8, 3))
    stats = summary(evo, print_fn=None)
    rows = {row.name: row for row in stats.layers}
    assert (rows["conv"].synapses, rows["conv"].clusters) == (36, 2)
    assert rows["conv"].bytes == 36 * 4 // 8 + 2 * 4
    assert (rows["dw"].synapses, rows["dw"].macs) == (36, 36 * 36)
    assert stats.synapses == 36 + 36 + 24 and stats.total_synapses == 168
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["synapses"] == 96 and data["layers"][0]["bits"] == 4


def test_table_is_printed_and_has_a_total_row():
    lines = []
    stats = summary(evolvable(_model(), "int8"), print_fn=lines.append)
    table = lines[0]
    assert table == str(stats)
    assert "EvoConv2D" in table and table.splitlines()[-1].startswith("total")
    assert f"{stats.synapses}/168" in table and stats.synapses >= 160


def test_unknown_spatial_size_gives_none_macs():
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    stats = summary(evolvable(model), print_fn=None)
    assert stats.layers[0].macs is None and stats.macs is None
    assert "?" in stats.table()


def test_bad_input():
    with pytest.raises(TypeError, match="keras.Model"):
        summary("model")
    with pytest.raises(ValueError, match="not built"):
        summary(keras.Sequential([keras.layers.Dense(2)]))
