"""Channel sources through the functional graph (keras_evosynth.topology)."""

import keras
import numpy as np

from keras_evosynth import evolvable
from keras_evosynth.genetics import genomes_from_model, sample_masks
from keras_evosynth.topology import NONE, UNKNOWN, channel_sources

L = keras.layers


def graph_of(inputs, outputs):
    return channel_sources(evolvable(keras.Model(inputs, outputs)))


def index(graph, name):
    return [layer.name for layer in graph.evo_layers].index(name)


def sources(graph, name):
    src = graph.inputs[index(graph, name)]
    return src.producer.tolist(), src.cluster.tolist()


def test_concatenate_offsets_and_channel_preserving_chain():
    x = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 3, padding="same", name="a")(x)
    a = L.BatchNormalization()(a)
    a = L.Activation("relu")(a)
    a = L.MaxPooling2D()(a)
    b = L.Conv2D(2, 1, strides=2, name="b")(x)
    b = L.Dropout(0.1)(b)
    c = L.Concatenate()([a, b])
    out = L.Conv2D(5, 1, name="head")(L.ZeroPadding2D()(c))
    g = graph_of(x, out)
    ia, ib = index(g, "a"), index(g, "b")
    assert sources(g, "head") == ([[ia] * 4 + [ib] * 2], [[0, 1, 2, 3, 0, 1]])
    assert sources(g, "a")[0] == [[UNKNOWN] * 3]  # the model input
    assert g.output_producers == {index(g, "head")}


def test_flatten_maps_each_channel_to_its_positions():
    x = keras.Input((3, 2, 1))
    h = L.Conv2D(2, 1, name="conv")(x)
    out = L.Dense(3, name="dense")(L.Flatten()(h))
    g = graph_of(x, out)
    producer, cluster = sources(g, "dense")
    assert producer == [[index(g, "conv")] * 12]
    assert cluster == [[0, 1] * 6]


def test_add_is_dead_only_when_every_input_is_dead():
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(3, 1, name="a")(x)
    b = L.Conv2D(3, 1, name="b")(x)
    out = L.Conv2D(2, 1, name="c")(L.Add()([a, b]))
    g = graph_of(x, out)
    producer, cluster = sources(g, "c")
    assert producer == [[index(g, "a")] * 3, [index(g, "b")] * 3]
    assert cluster == [[0, 1, 2], [0, 1, 2]]


def test_concatenate_of_merge_pads_with_none():
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(2, 1, name="a")(x)
    b = L.Conv2D(2, 1, name="b")(x)
    c = L.Conv2D(1, 1, name="c")(x)
    merged = L.Concatenate()([L.Add()([a, b]), c])
    g = graph_of(x, L.Conv2D(2, 1, name="d")(merged))
    producer, _ = sources(g, "d")
    assert producer == [
        [index(g, "a")] * 2 + [index(g, "c")],
        [index(g, "b")] * 2 + [NONE],
    ]


def test_unknown_layers_are_conservative():
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(4, 1, name="a")(x)
    r = L.Reshape((4, 16))(a)  # a new last axis
    kept = L.Reshape((2, 8, 4))(a)  # the last axis kept: channel c stays c
    s = L.Softmax()(a)  # mixes channels
    b = L.Dense(2, name="b")(r)
    c = L.Conv2D(2, 1, name="c")(s)
    k = L.Conv2D(2, 1, name="k")(kept)
    g = graph_of(x, [b, c, k])
    assert sources(g, "b")[0] == [[UNKNOWN] * 16]
    assert sources(g, "c")[0] == [[UNKNOWN] * 4]
    assert sources(g, "k") == ([[index(g, "a")] * 4], [[0, 1, 2, 3]])
    assert g.output_producers == {index(g, "b"), index(g, "c"), index(g, "k")}


def test_depthwise_and_channels_first_and_concat_on_spatial_axis():
    x = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 1, name="a")(x)
    dw = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(a)
    pw = L.Conv2D(2, 1, name="pw")(dw)
    cf = L.Conv2D(2, 1, data_format="channels_first", name="cf")(a)
    sp = L.Concatenate(axis=1)([a, a])
    z = L.Conv2D(1, 1, name="z")(sp)
    g = graph_of(x, [pw, cf, z])
    assert sources(g, "dw") == ([[index(g, "a")] * 3], [[0, 1, 2]])
    assert sources(g, "pw") == ([[index(g, "dw")] * 6], [list(range(6))])
    # channels_first reads axis 1: the analysis describes the last axis only.
    assert g.inputs[index(g, "cf")] is None
    assert g.output_producers >= {index(g, "pw"), index(g, "z")}
    assert index(g, "cf") not in g.output_producers
    assert sources(g, "z")[0] == [[UNKNOWN] * 3]


def test_grouped_convolution_inputs_are_unknown_and_its_filters_are_its_own():
    # ConvNeXt's "depthwise" is Conv2D(groups=channels): its kernel's input
    # axis has channels / groups entries, so per-input-channel sources do
    # not describe it (drawing an offspring used to raise on the mismatch).
    x = keras.Input((6, 6, 4))
    a = L.Conv2D(4, 1, name="a")(x)
    grouped = L.Conv2D(4, 3, groups=4, padding="same", name="grouped")(a)
    z = L.Conv2D(2, 1, name="z")(grouped)
    model = evolvable(keras.Model(x, z))
    g = channel_sources(model)
    assert g.inputs[index(g, "grouped")] is None
    assert sources(g, "z") == ([[index(g, "grouped")] * 4], [[0, 1, 2, 3]])
    genomes, _ = genomes_from_model(model)
    masks = sample_masks(genomes, cluster_factor=0.5, seed=0)
    assert [m[0].shape for m in masks] == [(1, 1, 4, 4), (3, 3, 1, 4), (1, 1, 4, 2)]


def test_shared_layer_collects_alternatives():
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(2, 1, name="a")(x)
    b = L.Conv2D(2, 1, name="b")(x)
    shared = L.Conv2D(3, 1, name="shared")
    out = L.Add()([shared(a), shared(b)])
    g = graph_of(x, out)
    producer, _ = sources(g, "shared")
    assert sorted(map(tuple, producer)) == [
        (index(g, "a"),) * 2,
        (index(g, "b"),) * 2,
    ]


def test_nested_models_are_inlined_as_compaction_sees_them():
    inner_in = keras.Input((4, 4, 2))
    inner_out = L.Conv2D(3, 1, name="inner_conv")(inner_in)
    inner = keras.Model(inner_in, inner_out, name="inner")
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(2, 1, name="a")(x)
    h = inner(a)
    out = L.Conv2D(2, 1, name="after")(h)
    g = graph_of(x, [out])
    assert sources(g, "inner_conv") == ([[index(g, "a")] * 2], [[0, 1]])
    assert sources(g, "after") == ([[index(g, "inner_conv")] * 3], [[0, 1, 2]])


def test_sequential_and_global_pooling():
    model = evolvable(
        keras.Sequential(
            [
                keras.Input((5, 5, 1)),
                L.Conv2D(4, 3, name="c1"),
                L.GlobalAveragePooling2D(),
                L.Dense(3, name="d1"),
                L.Dense(2, activation="softmax", name="d2"),
            ]
        )
    )
    g = channel_sources(model)
    assert g.inputs[1].producer.tolist() == [[0] * 4]
    assert g.inputs[2].producer.tolist() == [[1] * 3]
    assert g.output_producers == {2}
    assert np.array_equal(g.inputs[1].cluster, [[0, 1, 2, 3]])


def test_dict_outputs_two_heads_are_both_output_producers():
    x = keras.Input((8, 8, 3))
    trunk = L.Conv2D(4, 3, padding="same", name="trunk")(x)
    outputs = {
        "coverage": L.Conv2D(1, 1, name="coverage")(trunk),
        "bboxes": L.Conv2D(4, 1, name="bboxes")(trunk),
    }
    g = graph_of(x, outputs)
    assert g.output_producers == {index(g, "coverage"), index(g, "bboxes")}
    assert sources(g, "bboxes") == ([[index(g, "trunk")] * 4], [[0, 1, 2, 3]])


def test_rules_are_the_compaction_table():
    """One table (`_channels.classify`) for dead-channel tracing and
    compaction: a softmax mixes channels (unknown), a scalar Rescaling is
    value-wise (traced), a 1-channel gate broadcasts in a Multiply."""
    x = keras.Input((4, 4, 2))
    a = L.Conv2D(3, 1, name="a")(x)
    gate = L.Conv2D(1, 1, name="gate")(x)
    soft = L.Activation("softmax")(a)
    se = L.Multiply()([L.Rescaling(0.5, offset=1.0)(a), gate])
    g = graph_of(x, [L.Conv2D(2, 1, name="after_softmax")(soft),
                     L.Conv2D(2, 1, name="after_se")(se)])  # fmt: skip
    assert sources(g, "after_softmax")[0] == [[UNKNOWN] * 3]
    assert sources(g, "after_se") == ([[index(g, "a")] * 3, [index(g, "gate")] * 3],
                                      [[0, 1, 2], [0, 0, 0]])  # fmt: skip


def test_a_model_is_traced_once_until_its_layers_change():
    import gc

    from keras_evosynth import _graph

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="a")])
    graph = _graph.trace(model)
    evo = evolvable(model)
    evo.get_layer("a").set_masks(cluster_mask=[True, False, True])  # masks leave the graph
    assert _graph.trace(model) is graph and _graph.trace(evo) is _graph.trace(evo)
    model.add(keras.layers.Dense(2, name="b"))  # a Sequential that grew is traced again
    grown = _graph.trace(model)
    assert grown is not graph and [n.layer.name for n in grown.nodes] == ["a", "b"]
    before = len(_graph._TRACES)
    del model, evo, graph, grown
    gc.collect()
    assert len(_graph._TRACES) == before - 2  # the cache does not keep models alive
