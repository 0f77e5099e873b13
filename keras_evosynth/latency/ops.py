"""The timed operations of a model (`model_ops`) and how every layer of its
graph is priced: the layer taxonomy of the latency table.

Each layer is timed (an `Op` with its own grid of micro-models), folded
into the op before it or removed by the converter (free), or priced in the
fixed remainder that the whole-model anchors measure (`OpList.pricing`).
A strided convolution on few input channels is also timed in its
space-to-depth forms (`space_to_depth_forms`). `fingerprint` keys an
architecture with channel counts left out.
"""

import dataclasses
import hashlib
import json

import keras

from keras_evosynth import _channels, rewrites, topology
from keras_evosynth._channels import IDENTITY_AT_INFERENCE
from keras_evosynth._graph import trace
from keras_evosynth.latency.folding import (
    fused_activation,
    fused_into,
    padding_folds,
    pooling_folds,
)
from keras_evosynth.layers import EvoLayer, FakeQuantActivation

#: The space-to-depth forms `measure` times besides the direct one: outputs
#: per block (`keras_evosynth.rewrites`; blocks of stride x m pixels).
OUTPUTS_PER_BLOCK = (1, 2)

_SYNAPTIC = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
# Free at inference (removed by the converter, or a reshape of a buffer).
_FREE = (
    *IDENTITY_AT_INFERENCE,
    keras.layers.InputLayer,
    keras.layers.Flatten,
    keras.layers.Reshape,
    FakeQuantActivation,
)
# `_channels.classify` kinds timed over their channel count (pooling, merges,
# activations, BatchNormalization, padding, cropping, up-sampling, Rescaling,
# PReLU ...); a layer compaction keeps whole (`"fixed"`, e.g. Softmax) has
# the same cost in every offspring and is priced in the fixed remainder
_CHANNEL_KINDS = ("channelwise", "concat", "merge")
#: How `model_ops` prices a layer (`OpList.pricing`): its own grid of
#: micro-models; folded into the op before it or removed by the converter
#: (free); in the fixed remainder that the whole-model anchors measure,
#: because no offspring changes its size; in the fixed remainder because
#: `untimed="ignore"` asked for it although its channels follow evolvable
#: layers (an approximation the table records).
PRICINGS = ("timed", "folded", "remainder", "untimed")
UNTIMED = ("raise", "ignore")
_CONFIG_NOISE = ("name", "trainable", "dtype", "dtype_policy", "autocast", "seed")


@dataclasses.dataclass
class Op:
    """One timed operation of a model.

    Attributes:
        name: The layer's name.
        kind: `"conv2d"`, `"dense"` (2-D grid: live inputs x live filters),
            `"depthwise"` or `"channel"` (1-D grid over live channels).
        signature: JSON-able description without channel counts (the table
            key): layer kind, configuration, input size.
        cin: Input channels in this model (for channel ops: the channels
            the grid runs over).
        cout: Output channels (filters) for conv2d/dense; else equal to cin.
        evo_index: Index of the Evo layer among the model's Evo layers
            (`genetics.genomes_from_model` order), or None.
        sources: `topology.Sources` of the channels the grid's first axis
            counts: the input channels of synaptic ops, the output channels
            of channel ops.
        in_tid, out_tid: The op's (first) input and output tensor in the
            traced graph.
    """

    name: str
    kind: str
    signature: dict
    cin: int
    cout: int
    evo_index: int | None = None
    sources: topology.Sources | None = None
    in_tid: int | None = None
    out_tid: int | None = None

    @property
    def key(self):
        return json.dumps(self.signature, sort_keys=True)

    @property
    def two_d(self):
        return self.kind in ("conv2d", "dense")


def _clean_config(layer):
    config = dict(layer.get_config())
    for name in _CONFIG_NOISE:
        config.pop(name, None)
    return json.loads(json.dumps(config, default=str))


def _spatial(spec, layer):
    shape = tuple(spec.shape[1:-1])
    if any(d is None for d in shape):
        raise ValueError(
            f"LatencyTable: layer '{layer.name}' has an unknown input size "
            f"{tuple(spec.shape)}; latency depends on it. Build the model with a "
            "fixed input shape, e.g. keras.Input((128, 384, 3))."
        )
    return [int(d) for d in shape]


class OpList(list):
    """The timed ops of a model (a list of `Op`, what `model_ops` returns),
    with how every layer of its graph is priced.

    Attributes:
        pricing: `{layer name: how}`, `how` one of `PRICINGS`: `"timed"`
            (an op of the list), `"folded"` (free: removed by the converter
            or fused into the op before it), `"remainder"` (a fixed cost,
            measured by the whole-model anchors: no offspring changes its
            size) or `"untimed"` (priced in the fixed remainder by
            `untimed="ignore"` although its channels follow evolvable
            layers).
        remainder: JSON-able descriptions (class, spatial sizes) of the
            layers priced in the fixed remainder, part of the
            architecture's `fingerprint`.
        sources: `{tensor id: its channels' sources}`
            (`topology.tensor_sources`) of the graph the ops were read
            from, or None: the channel analysis `model_ops` did, handed on
            so that the expectation does not trace it again.
    """

    def __init__(self, ops=(), pricing=None, remainder=(), sources=None):
        super().__init__(ops)
        self.pricing = dict(pricing or {})
        self.remainder = list(remainder)
        self.sources = sources

    def priced(self, how):
        """Names of the layers priced `how` (one of `PRICINGS`)."""
        return [name for name, h in self.pricing.items() if h == how]


def pricing_summary(ops, names=6):
    """One line saying how an `OpList`'s layers are priced.

    >>> ops = OpList(pricing={"c": "timed", "d": "folded", "n": "remainder"})
    >>> pricing_summary(ops)
    '1 timed, 1 folded, 1 in the fixed remainder (n), 0 untimed'
    """
    def listed(how):
        found = ops.priced(how)
        if not found:
            return ""
        more = f", ... {len(found) - names} more" if len(found) > names else ""
        return f" ({', '.join(found[:names])}{more})"

    counts = {how: len(ops.priced(how)) for how in PRICINGS}
    return (f"{counts['timed']} timed, {counts['folded']} folded, "
            f"{counts['remainder']} in the fixed remainder{listed('remainder')}, "
            f"{counts['untimed']} untimed{listed('untimed')}")


class _Untimeable(Exception):
    """A layer the table has no micro-model for (the reason)."""


def _remainder_entry(node, graph):
    """What the fingerprint keeps of a layer priced in the fixed remainder:
    its (plain) class and spatial sizes, not its channels (a masked model
    and its compacted version share it)."""
    layer = node.layer
    cls = _channels.PLAIN_CLASS.get(type(layer), type(layer))

    def sizes(tids):
        return [[None if d is None else int(d) for d in graph.specs[t].shape[1:-1]]
                for t in tids]

    return {"remainder": cls.__name__, "inputs": sizes(node.inputs),
            "outputs": sizes(node.outputs)}


def _follows_evolution(node, sources, kind):
    """Whether an offspring can change the channels `node` computes on:
    compaction keeps every channel of a `"fixed"` node (so its cost is the
    same in every offspring), and channels that trace to no evolvable
    layer never change."""
    if kind == "fixed":
        return False
    tids = list(node.inputs)
    if kind not in ("synaptic", "depthwise") or _channels.is_elementwise(
            node.layer.activation):  # else compaction keeps every filter
        tids += node.outputs
    for tid in tids:
        found = sources.get(tid)
        if found is not None and (found.producer >= 0).any():
            return True
    return False


def model_ops(model, graph=None, untimed="raise"):
    """The timed operations of `model`, in graph order, and how every other
    layer is priced (`OpList.pricing`).

    Each layer is either **timed** (an `Op` with its own grid of
    micro-models: Conv2D/DepthwiseConv2D/Dense, plain or Evo, and the layers
    whose cost scales with their channels: pooling, merges, activations,
    padding, cropping, up-sampling, Rescaling, ...), **folded** (free at
    inference: Dropout and other training-only layers, Flatten, Reshape,
    `FakeQuantActivation`; a BatchNormalization or ReLU/ReLU6 right after a
    convolution and read only by it is fused into it; a ZeroPadding2D equal
    to the `"same"` padding of the convolutions reading it; a global pooling
    over a single position that only reshapes read), or priced in the
    **fixed remainder** that the whole-model anchors measure: any other
    layer whose size no offspring can change (compaction keeps every
    channel of a layer it cannot see through, e.g. `Normalization`,
    `LayerNormalization`, `SeparableConv2D`, custom layers, `keras.ops`
    calls; or its channels trace to no evolvable layer), so its cost is
    the same in every offspring. A layer the table cannot time whose
    channels follow evolvable layers (e.g. a convolution with a custom
    activation reading a cut layer) would make a fixed price wrong once
    they are cut: `untimed="raise"` refuses it, `"ignore"` prices it in the
    fixed remainder as well and records it (`"untimed"`).

    Args:
        model: A built functional or Sequential Keras model (Evo layers or
            plain ones; nested models are inlined), channels last.
        graph: Its `_graph.trace` (traced here when None).
        untimed: `"raise"` or `"ignore"` (see above).

    Returns:
        An `OpList` of `Op`.

    Raises:
        ValueError: A layer that cannot be timed and whose channels follow
            evolvable layers (named, with `untimed="raise"`), or an unknown
            spatial input size.

    Example:

    >>> import keras
    >>> x = keras.Input((8, 8, 3))
    >>> y = keras.layers.Normalization(mean=0.5, variance=0.25, name="norm")(x)
    >>> y = keras.layers.Conv2D(4, 3, name="conv")(y)
    >>> y = keras.layers.BatchNormalization(name="bn")(y)
    >>> y = keras.layers.Dropout(0.5, name="drop")(y)
    >>> ops = model_ops(keras.Model(x, y))
    >>> [op.name for op in ops], ops.pricing
    (['conv'], {'norm': 'remainder', 'conv': 'timed', 'bn': 'folded', 'drop': 'folded'})
    """
    if untimed not in UNTIMED:
        raise ValueError(f"untimed must be one of {UNTIMED}, got {untimed!r}.")
    graph = trace(model) if graph is None else graph
    channel_graph, sources = topology.tensor_sources(model, graph)
    index_of = {id(layer): i for i, layer in enumerate(channel_graph.evo_layers)}
    consumers = graph.consumers()
    calls = {}
    for node in graph.nodes:
        calls[id(node.layer)] = calls.get(id(node.layer), 0) + 1
    synaptic_out, ops = {}, OpList(sources=sources)
    for node in graph.nodes:
        layer = node.layer
        in_specs = [graph.specs[t] for t in node.inputs]
        in_sources = [sources[t] for t in node.inputs]
        out_spec = graph.specs[node.outputs[0]] if node.outputs else None
        kind, reason = _channels.classify(node, graph.specs, calls[id(layer)] > 1)
        try:
            if getattr(layer, "data_format", "channels_last") != "channels_last":
                raise _Untimeable("channels_first data (only channels_last is timed)")
            if isinstance(layer, _SYNAPTIC):
                if kind == "fixed":  # grouped, or called on several tensors
                    raise _Untimeable(reason)
                op = _synaptic_op(layer, in_specs[0], out_spec, in_sources[0], index_of)
                op.in_tid, op.out_tid = node.inputs[0], node.outputs[0]
                ops.append(op)
                ops.pricing[layer.name] = "timed"
                for tid in node.outputs:
                    synaptic_out[tid] = op
                continue
        except _Untimeable as error:
            _price_untimeable(ops, node, graph, sources, kind, str(error), untimed)
            continue
        if isinstance(layer, _FREE):
            ops.pricing[layer.name] = "folded"
            if len(node.inputs) == 1 and node.inputs[0] in synaptic_out and len(
                    consumers[node.inputs[0]]) == 1:
                for tid in node.outputs:  # conv -> dropout -> relu still fuses
                    synaptic_out[tid] = synaptic_out[node.inputs[0]]
            continue
        if fused_into(node, synaptic_out, consumers):
            producer = synaptic_out[node.inputs[0]]
            if producer.signature["activation"] == "linear":
                producer.signature["activation"] = fused_activation(layer)
            for tid in node.outputs:
                synaptic_out[tid] = producer
            ops.pricing[layer.name] = "folded"
            continue
        if padding_folds(node, graph, consumers) or pooling_folds(node, graph, consumers):
            ops.pricing[layer.name] = "folded"
            continue
        if kind in _CHANNEL_KINDS:  # its cost scales with channels an offspring can cut
            out = sources[node.outputs[0]]
            ops.append(_channel_op(layer, in_specs, out_spec, in_sources, out))
            ops[-1].in_tid, ops[-1].out_tid = node.inputs[0], node.outputs[0]
            ops.pricing[layer.name] = "timed"
            continue
        why = f"{type(layer).__name__} has no micro-model"
        _price_untimeable(ops, node, graph, sources, kind, why, untimed)
    return ops


def _price_untimeable(ops, node, graph, sources, kind, reason, untimed):
    """Prices a layer without a micro-model in the fixed remainder: as a
    fixed cost where no offspring changes its size, else (its channels
    follow evolvable layers) only with `untimed="ignore"`."""
    layer = node.layer
    if not _follows_evolution(node, sources, kind):
        how = "remainder"
    elif untimed == "ignore":
        how = "untimed"
    else:
        raise ValueError(
            f"LatencyTable: cannot time layer '{layer.name}' ({type(layer).__name__}): "
            f"{reason}, and its channels follow evolvable layers, so a fixed price "
            "would be wrong once they are cut. Pass LatencyTable.measure(..., "
            "untimed='ignore') to price it in the fixed remainder that the whole-model "
            "anchors measure (the table records it), or replace the layer. Timed: "
            "Conv2D, DepthwiseConv2D, Dense (plain or Evo), pooling, Concatenate, "
            "Add/Multiply/..., BatchNormalization, activations, padding, cropping, "
            "up-sampling, Rescaling; free: Dropout, Flatten, Reshape."
        )
    ops.pricing[layer.name] = how
    ops.remainder.append(_remainder_entry(node, graph))


def _synaptic_op(layer, in_spec, out_spec, in_sources, index_of):
    evo_index = index_of.get(id(layer)) if isinstance(layer, EvoLayer) else None
    activation = getattr(layer.activation, "__name__", None)
    if activation is None or not hasattr(keras.activations, activation):
        raise _Untimeable(f"a custom activation {layer.activation!r} (the table times "
                          "Keras' own activations)")
    cin = int(in_spec.shape[-1])
    if isinstance(layer, keras.layers.Dense):
        lead = [int(d) for d in in_spec.shape[1:-1] if d is not None]
        if len(lead) != len(in_spec.shape) - 2:
            _spatial(in_spec, layer)
        signature = {"op": "dense", "activation": activation, "input": lead}
        return Op(layer.name, "dense", signature, cin, int(layer.units), evo_index, in_sources)
    common = {
        "kernel": [int(k) for k in layer.kernel_size],
        "strides": [int(s) for s in layer.strides],
        "padding": layer.padding,
        "dilation": [int(d) for d in layer.dilation_rate],
        "activation": activation,
        "input": _spatial(in_spec, layer),
    }
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        signature = {"op": "depthwise", "multiplier": int(layer.depth_multiplier), **common}
        return Op(layer.name, "depthwise", signature, cin, cin, evo_index, in_sources)
    if getattr(layer, "groups", 1) != 1:
        raise _Untimeable(f"a grouped convolution (groups={layer.groups})")
    signature = {"op": "conv2d", **common}
    return Op(layer.name, "conv2d", signature, cin, int(layer.filters), evo_index, in_sources)


def _channel_op(layer, in_specs, out_spec, in_sources, out_sources):
    channels = int(out_spec.shape[-1])
    inputs = []
    for spec in in_specs:
        spatial = _spatial(spec, layer) if len(spec.shape) > 2 else []
        width = int(spec.shape[-1])
        if isinstance(layer, keras.layers.Concatenate):
            inputs.append({"spatial": spatial})  # the grid's channels split evenly
        elif width == channels:
            inputs.append({"spatial": spatial, "width": None})  # scales with the grid
        else:
            inputs.append({"spatial": spatial, "width": width})  # e.g. a broadcast 1
    signature = {"op": type(layer).__name__, "config": _clean_config(layer), "inputs": inputs}
    source = (
        out_sources
        if out_sources is not None and out_sources.channels == channels
        else topology.Sources.unknown(channels)
    )
    return Op(layer.name, "channel", signature, channels, channels, None, source)


def space_to_depth_op(op, below, outputs_per_block=1):
    """The space-to-depth form of a strided conv2d `op` with at most `below`
    input channels (its signature gains `"rewrite": "space_to_depth"` and,
    for `outputs_per_block` > 1, `"outputs_per_block"`), or None when
    `keras_evosynth.rewrites` cannot rewrite it."""
    sig = op.signature
    if op.kind != "conv2d" or op.cin > below or sig.get("rewrite"):
        return None
    form = {**sig, "rewrite": "space_to_depth"}
    if outputs_per_block > 1:
        form["outputs_per_block"] = outputs_per_block
    if _plan(form) is None:
        return None
    return dataclasses.replace(op, signature=form)


def space_to_depth_forms(op, below):
    """Every form of `OUTPUTS_PER_BLOCK` that `space_to_depth_op` gives."""
    forms = (space_to_depth_op(op, below, m) for m in OUTPUTS_PER_BLOCK)
    return [f for f in forms if f is not None]


def _plan(signature):
    """The `rewrites.SpaceToDepthPlan` of a conv2d signature, or None."""
    return rewrites.space_to_depth_plan(
        signature["kernel"], signature["strides"], signature["padding"], signature["input"],
        signature["dilation"], outputs_per_block=signature.get("outputs_per_block", 1))[0]


def fingerprint(ops):
    """Architecture key of a model (channel counts left out), so that a
    masked model and its compacted version share their fixed remainder.
    The layers an `OpList` prices in the fixed remainder are part of it
    (two models that differ only there differ in their fixed cost)."""
    payload = [op.signature for op in ops]
    if getattr(ops, "remainder", None):
        payload = {"ops": payload, "remainder": ops.remainder}
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
