"""Measured LiteRT latency: a per-layer lookup table that predicts a model's
int8 latency on this host (or on a device), and the expectation the
latency-target environment solves against.

MACs are not latency (DESIGN.md §5b): a 7x7/2 convolution on 3 channels can
run 100x slower per MAC than a 64->64 3x3 one, and thin layers sit in a
per-pixel-overhead regime where cutting filters saves nothing. So the
environment sees *measured* costs, as NetAdapt, HALP and Once-for-All do:

- every timed operation of the model is an **op**: a Conv2D / Dense
  (evolvable or plain; cost over a 2-D grid of live input channels x live
  filters), a DepthwiseConv2D (1-D grid over live channels), or a layer whose
  cost scales with its channels (pooling, Concatenate, Add/Multiply,
  standalone BatchNormalization and activations, padding, ...; 1-D grid);
  BatchNormalization and ReLU/ReLU6 right after a convolution are folded
  into it (as the LiteRT converter does), and so is a ZeroPadding2D that
  equals the `"same"` padding of the convolutions reading it;
  Dropout/Flatten/Reshape are free;
- a layer without a micro-model whose size no offspring changes
  (compaction keeps it whole: Normalization, LayerNormalization, custom
  layers, `keras.ops` calls, ...) is a fixed cost, priced in the fixed
  remainder below; one whose channels follow evolvable layers is refused,
  or priced there too with `measure(..., untimed="ignore")` and recorded
  (`model_ops`);
- each op is timed as an int8 micro-model (int8 inputs and outputs, so no
  QUANTIZE op) at its real input size with the LiteRT interpreter, minus the
  cost of invoking an empty model, interleaved round by round with the
  other points of its grid;
- the grid starts coarse (a few multiples of `step` per axis, the maximum
  included) and is refined by bisection where neighbouring points differ by
  more than `refine` of the point's cost *and* matter for the model (more
  than `0.5 %` of the sum of all ops); costs are interpolated linearly
  between grid points, never assumed monotone or convex;
- the **fixed remainder** (input quantize, output dequantize, the
  interpreter's own overhead) and the **scale** of op costs inside one graph
  (ops run faster in a graph than alone, the more so the thinner they are)
  come from the whole model timed at `ANCHOR_KEEP` fractions of its filters
  (random cuts, interleaved), once per architecture: a model whose op costs
  sum to `g` is predicted by the piecewise-linear curve through the anchors'
  `(sum of op costs, whole)` points, and beyond the outermost anchors by the
  least-squares line's slope `scale` (`_whole`). The relation is not a line:
  thin ops cost less in a graph than alone far more than wide ones do
  (MobileNetV2 on a Sapphire Rapids host: the op sums at 100 / 40 / 10 % of
  the filters are 3.10 / 1.42 / 1.25 ms, the whole models 3.53 / 1.44 /
  0.65 ms).

Ops that share a signature (kind, configuration, input size) are measured
once. Tables are cached as JSON, one file per CPU, runtime version and
thread count; a second `measure` of the same model re-times nothing.

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((16, 16, 3)),
...     keras.layers.Conv2D(8, 3, name="c"), keras.layers.BatchNormalization(),
...     keras.layers.ReLU(), keras.layers.MaxPooling2D(name="p"),
...     keras.layers.Flatten(), keras.layers.Dense(4, name="d")])
>>> [(op.name, op.kind, op.cin, op.cout) for op in model_ops(model)]
[('c', 'conv2d', 3, 8), ('p', 'channel', 8, 8), ('d', 'dense', 392, 4)]
>>> model_ops(model)[0].signature["activation"]  # BN and ReLU fold into the conv
'relu'
"""

import dataclasses
import datetime
import hashlib
import importlib.metadata
import itertools
import json
import math
import os
import sys
import time
import warnings

import keras
import numpy as np

from keras_evosynth import _channels, genetics, rewrites, topology
from keras_evosynth._channels import IDENTITY_AT_INFERENCE
from keras_evosynth._graph import trace
from keras_evosynth._io import quiet_native_output, write_atomic
from keras_evosynth.environment import _bisect
from keras_evosynth.layers import EvoLayer, FakeQuantActivation

FORMAT = "keras_evosynth.latency/5"
# The smallest per-layer cluster factor a latency target sets in one generation.
MIN_LAYER_FACTOR = 0.5
# Refinement stops before a grid would hold more points than this (2-D grids
# of wide layers would otherwise grow by whole rows for minutes).
MAX_GRID_POINTS = 96
#: Fractions of the sampled filters at which the whole model is timed to fit
#: the fixed remainder and the in-graph scale of op costs.
ANCHOR_KEEP = (1.0, 0.7, 0.4, 0.2, 0.1)
# Models with removable branches (`genetics.branches`) are also timed with
# these fractions of their branches removed, every other filter kept: the
# op sums a branch-removing environment reaches lie far below the uniform
# cuts' (thin ops cost per op), where the curve would only extrapolate.
ANCHOR_BRANCHES = (1.0, 0.5)
#: Channel tile of XNNPACK's int8 kernels: `predict` rounds a live channel
#: count that is not a grid point up to a multiple of it.
TILE = 8
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
# Layers timed over their channel count (no weights, or per-channel ones).
_CHANNEL_OPS = (
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Concatenate,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.Softmax,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.UpSampling2D,
    keras.layers.Rescaling,
    keras.layers.PReLU,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding3D,
    keras.layers.Cropping1D,
    keras.layers.Cropping3D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling3D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling3D,
)
#: How `model_ops` prices a layer (`OpList.pricing`): its own grid of
#: micro-models; folded into the op before it or removed by the converter
#: (free); in the fixed remainder that the whole-model anchors measure,
#: because no offspring changes its size; in the fixed remainder because
#: `untimed="ignore"` asked for it although its channels follow evolvable
#: layers (an approximation the table records).
PRICINGS = ("timed", "folded", "remainder", "untimed")
UNTIMED = ("raise", "ignore")
_FUSED_ACTIVATIONS = ("relu", "relu6", "linear")
_CONFIG_NOISE = ("name", "trainable", "dtype", "dtype_policy", "autocast", "seed")


# ------------------------------------------------------------------ the ops
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


def _activation_name(fn):
    name = getattr(fn, "__name__", str(fn))
    return name if name in _FUSED_ACTIVATIONS else None


def _spatial(spec, layer):
    shape = tuple(spec.shape[1:-1])
    if any(d is None for d in shape):
        raise ValueError(
            f"LatencyTable: layer '{layer.name}' has an unknown input size "
            f"{tuple(spec.shape)}; latency depends on it. Build the model with a "
            "fixed input shape, e.g. keras.Input((128, 384, 3))."
        )
    return [int(d) for d in shape]


def _fused_into(node, synaptic_out, consumers):
    """True when `node` (a last-axis BatchNormalization or a ReLU-like
    activation) is folded by the converter into the synaptic op producing
    its only input, which it alone reads."""
    layer = node.layer
    if len(node.inputs) != 1 or node.inputs[0] not in synaptic_out:
        return False
    if len(consumers[node.inputs[0]]) != 1:
        return False
    if isinstance(layer, keras.layers.BatchNormalization):  # folds before an activation only
        linear = synaptic_out[node.inputs[0]].signature["activation"] == "linear"
        return linear and layer.axis in (-1, len(layer.input.shape) - 1)
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.activation) is not None
    if isinstance(layer, keras.layers.ReLU):
        return not layer.negative_slope and not layer.threshold and (
            layer.max_value in (None, 6.0))
    return False


def _fused_activation(layer):
    if isinstance(layer, keras.layers.Activation):
        return _activation_name(layer.activation)
    if isinstance(layer, keras.layers.ReLU):
        return "relu6" if layer.max_value else "relu"
    return "linear"


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
    """

    def __init__(self, ops=(), pricing=None, remainder=()):
        super().__init__(ops)
        self.pricing = dict(pricing or {})
        self.remainder = list(remainder)

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
    convolution and read only by it is fused into it), or priced in the
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
    synaptic_out, ops = {}, OpList()
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
        if _fused_into(node, synaptic_out, consumers):
            producer = synaptic_out[node.inputs[0]]
            if producer.signature["activation"] == "linear":
                producer.signature["activation"] = _fused_activation(layer)
            for tid in node.outputs:
                synaptic_out[tid] = producer
            ops.pricing[layer.name] = "folded"
            continue
        if _padding_folds(node, graph, consumers):
            ops.pricing[layer.name] = "folded"
            continue
        if type(layer) in _CHANNEL_OPS:
            out = sources[node.outputs[0]]
            ops.append(_channel_op(layer, in_specs, out_spec, in_sources, out))
            ops[-1].in_tid, ops[-1].out_tid = node.inputs[0], node.outputs[0]
            ops.pricing[layer.name] = "timed"
            continue
        why = f"{type(layer).__name__} has no micro-model"
        _price_untimeable(ops, node, graph, sources, kind, why, untimed)
    return ops


def _same_padding(size, kernel, stride, dilation):
    """`(before, after)` zeros that `padding="same"` adds to one spatial axis.

    >>> _same_padding(16, 3, 2, 1), _same_padding(15, 3, 2, 1), _same_padding(16, 5, 2, 1)
    ((0, 1), (1, 1), (1, 2))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _padding_folds(node, graph, consumers):
    """True when `node` is a ZeroPadding2D that the converter folds into
    the convolutions reading it: every reader is a `"valid"` Conv2D or
    DepthwiseConv2D for which the padding is exactly `"same"`'s (measured:
    MobileNetV2's and EfficientNet's `correct_pad` before a stride-2
    depthwise convolution leave no PAD operator; ResNet's 3-pixel pad before
    its 7x7/2 stem, or a pad before pooling, stay)."""
    if type(node.layer) is not keras.layers.ZeroPadding2D or len(node.inputs) != 1:
        return False
    tid = node.outputs[0]
    readers = consumers[tid]
    if not readers or tid in keras.tree.flatten(graph.outputs):
        return False
    size = graph.specs[node.inputs[0]].shape[1:3]
    pads = [tuple(int(p) for p in axis) for axis in node.layer.padding]
    for reader in readers:
        conv = reader.layer
        if (not isinstance(conv, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))
                or conv.padding != "valid" or reader.inputs != [tid]
                or getattr(conv, "data_format", "channels_last") != "channels_last"
                or None in size):
            return False
        for n, k, st, d, pad in zip(size, conv.kernel_size, conv.strides, conv.dilation_rate,
                                    pads, strict=True):
            if _same_padding(int(n), int(k), int(st), int(d)) != pad:
                return False
    return True


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


class _Fastest:
    """An op's measured forms (direct, space-to-depth) read as one: the
    cost of the fastest at each channel count."""

    def __init__(self, entries):
        self.entries = entries
        self.axes = entries[0].axes

    def cost(self, cin, cout=None, tile=None):
        return min(e.cost(cin, cout, tile=tile) for e in self.entries)

    def covers(self, cin, cout=None):
        return all(e.covers(cin, cout) for e in self.entries)


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


# ----------------------------------------------------------- micro-models
def _micro_model(signature, cin, cout):
    """A plain Keras model that computes one op at given channel counts."""
    kind = signature["op"]
    layers = keras.layers
    if signature.get("rewrite") == "space_to_depth":
        x = keras.Input(batch_shape=(1, *signature["input"], cin))
        config = {"filters": cout, "kernel_size": signature["kernel"],
                  "activation": signature["activation"]}
        return keras.Model(x, rewrites.apply_space_to_depth(x, _plan(signature), config,
                                                            "conv")[0])
    if kind in ("conv2d", "depthwise"):
        x = keras.Input(batch_shape=(1, *signature["input"], cin))
        common = {
            "strides": signature["strides"],
            "padding": signature["padding"],
            "dilation_rate": signature["dilation"],
            "activation": signature["activation"],
        }
        if kind == "conv2d":
            y = layers.Conv2D(cout, signature["kernel"], **common)(x)
        else:
            y = layers.DepthwiseConv2D(
                signature["kernel"], depth_multiplier=signature["multiplier"], **common
            )(x)
        return keras.Model(x, y)
    if kind == "dense":
        x = keras.Input(batch_shape=(1, *signature["input"], cin))
        return keras.Model(x, layers.Dense(cout, activation=signature["activation"])(x))
    cls = getattr(layers, kind)
    parts = signature["inputs"]
    if kind == "Concatenate":
        widths = [cin // len(parts) + (i < cin % len(parts)) for i in range(len(parts))]
        widths = [max(1, w) for w in widths]
    else:
        widths = [cin if p["width"] is None else p["width"] for p in parts]
    inputs = [keras.Input(batch_shape=(1, *p["spatial"], w))
              for p, w in zip(parts, widths, strict=True)]
    layer = cls.from_config(signature["config"])
    y = layer(inputs if len(inputs) > 1 else inputs[0])
    if isinstance(layer, layers.BatchNormalization):  # non-trivial statistics
        rng = np.random.default_rng(0)
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                           for w in layer.get_weights()])
    return keras.Model(inputs, y)


def _int8_flatbuffer(model, seed=0):
    """Full-integer int8 flatbuffer with int8 inputs and outputs, calibrated
    on random data (`export_litert`'s converter)."""
    from keras_evosynth.export import _convert

    rng = np.random.default_rng(seed)
    data = [rng.uniform(-1, 1, (4, *x.shape[1:])).astype("float32") for x in model.inputs]
    return _convert(model, data, "int8", int8_io=True, allow_float_ops=False)


def _null_flatbuffer():
    x = keras.Input(batch_shape=(1, 1, 1, 8))
    return _int8_flatbuffer(keras.Model(x, keras.layers.ReLU()(x)))


def _interpreter(flatbuffer, threads):
    from ai_edge_litert import interpreter as litert

    from tflite_bench.host import fill_inputs

    with quiet_native_output():  # "Created TensorFlow Lite XNNPACK delegate"
        interp = litert.Interpreter(model_content=flatbuffer, num_threads=int(threads))
        interp.allocate_tensors()
    fill_inputs(interp)
    return interp


def time_interleaved(interpreters, rounds=5, budget_ms=15.0, warmup=3, max_runs=200):
    """Median invoke time (ms) of each interpreter, timed round by round.

    Each round invokes every interpreter in turn about `budget_ms` worth of
    times (at least 3, at most `max_runs`), so that machine noise hits them
    alike; the figure is the median over all rounds.

    Example:

    >>> class Fake:
    ...     def invoke(self): pass
    >>> [t < 1.0 for t in time_interleaved([Fake(), Fake()], rounds=2)]
    [True, True]
    """
    clock = time.perf_counter
    runs = []
    for interp in interpreters:
        start = clock()
        for _ in range(warmup):
            interp.invoke()
        each = (clock() - start) * 1e3 / max(warmup, 1)
        runs.append(int(min(max_runs, max(3, budget_ms / max(each, 1e-3)))))
    times = [[] for _ in interpreters]
    for _ in range(rounds):
        for i, interp in enumerate(interpreters):
            for _ in range(runs[i]):
                start = clock()
                interp.invoke()
                times[i].append((clock() - start) * 1e3)
    return [float(np.median(t)) for t in times]


# ------------------------------------------------------------------ helpers
def _runtime():
    try:
        return f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "ai-edge-litert unknown"


def _cpu():
    from tflite_bench.bench import _cpu_model

    return _cpu_model() or "unknown CPU"


def _slug(text):
    keep = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(p for p in keep.split("-") if p)[:60]


def _axis_candidates(maximum, step):
    """Channel counts a grid axis may use: multiples of `step` up to the
    maximum, the maximum itself, and `min(step, maximum)` at the bottom."""
    points = set(range(step, maximum + 1, step)) | {maximum, min(step, maximum)}
    return sorted(points)


def _coarse(candidates, count):
    if len(candidates) <= count:
        return list(candidates)
    picks = np.linspace(0, len(candidates) - 1, count).round().astype(int)
    return sorted({candidates[i] for i in picks})


def _tiled(count, axis, tile):
    """`count` rounded up to a multiple of `tile` unless it is a grid point
    (at most the axis maximum).

    >>> _tiled(61, [8, 16, 61], 8), _tiled(13, [8, 16, 61], 8), _tiled(62, [8, 16, 64], 8)
    (61, 16, 64)
    """
    if count in axis:
        return count
    return min(math.ceil(count / tile) * tile, axis[-1])


def _interp_1d(axis, values, x):
    """Linear interpolation, flat outside the measured range."""
    return float(np.interp(x, axis, values))


@dataclasses.dataclass
class Entry:
    """The measured grid of one op signature.

    Attributes:
        signature: The op signature (see `Op.signature`).
        axes: `[cin points]` (1-D ops) or `[cin points, cout points]`.
        ms: Costs in ms at the grid points (a list, or a list of rows).
    """

    signature: dict
    axes: list
    ms: list

    def cost(self, cin, cout=None, tile=None):
        """Interpolated cost (ms) at `cin` (and `cout`) live channels.

        With `tile`, a count that is not a grid point is first rounded up
        to a multiple of `tile` (at most the axis maximum): int8 kernels
        work on tiles of channels, so 61 filters cost what 64 cost.
        """
        if tile:
            cin = _tiled(cin, self.axes[0], tile)
            if cout is not None and len(self.axes) > 1:
                cout = _tiled(cout, self.axes[1], tile)
        if len(self.axes) == 1:
            return _interp_1d(self.axes[0], self.ms, cin)
        rows = np.asarray(self.ms, dtype=np.float64)
        col = [_interp_1d(self.axes[1], row, cout) for row in rows]
        return _interp_1d(self.axes[0], col, cin)

    def covers(self, cin, cout=None):
        if cin > self.axes[0][-1] + 1e-9:
            return False
        return len(self.axes) == 1 or cout <= self.axes[1][-1] + 1e-9

    def to_dict(self):
        return {"signature": self.signature, "axes": self.axes, "ms": self.ms}


# ------------------------------------------------------------------ the table
class LatencyTable:
    """Per-op int8 LiteRT latency on one target, to predict models' latency.

    Build it with `LatencyTable.measure(model)` (times micro-models on this
    host), load one with `LatencyTable.load(path)`; `predict(model)` gives
    milliseconds for a masked Evo model (as if compacted) or a compacted
    plain one. A table belongs to one CPU, runtime version and thread
    count (its `cpu`, `runtime`, `threads`).

    Args:
        threads: Interpreter threads the costs were measured with.
        cpu: Processor name.
        runtime: LiteRT runtime name and version.
        entries: `{signature key: Entry}`.
        models: `{fingerprint: {"name", "anchors", "scale",
            "remainder_ms", "floor_ms", "remainder_layers", "untimed",
            "measured"}}`, one per measured architecture (`anchors`:
            `keep`, `grid_ms`, `whole_ms` of each timed whole model;
            `floor_ms`: the empty model's invoke; `remainder_layers` and
            `untimed`: the layers priced in the fixed remainder, see
            `model_ops`).
        path: The JSON file the table lives in (None: memory only).

    Example:

    >>> import keras, tempfile
    >>> model = keras.Sequential([keras.Input((8, 8, 3)),
    ...     keras.layers.Conv2D(8, 3), keras.layers.GlobalAveragePooling2D()])
    >>> folder = tempfile.mkdtemp()
    >>> table = LatencyTable.measure(model, cache_dir=folder, verbose=0)
    >>> table.predict(model) > 0
    True
    >>> again = LatencyTable.measure(model, cache_dir=folder, verbose=0)
    >>> again.timed_points  # nothing re-timed
    0
    """

    def __init__(self, threads=1, cpu=None, runtime=None, entries=None, models=None, path=None):
        self.threads = int(threads)
        self.cpu = cpu or _cpu()
        self.runtime = runtime or _runtime()
        self.entries = dict(entries or {})
        self.models = dict(models or {})
        self.path = path
        self.timed_points = 0

    # ------------------------------------------------------------ persistence
    def to_dict(self):
        return {
            "format": FORMAT,
            "cpu": self.cpu,
            "runtime": self.runtime,
            "threads": self.threads,
            "entries": {k: e.to_dict() for k, e in sorted(self.entries.items())},
            "models": self.models,
        }

    @classmethod
    def from_dict(cls, data, path=None):
        """Rebuilds a table from `to_dict()` output (checked)."""
        where = f" in {path}" if path else ""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ValueError(
                f"LatencyTable: not a latency table of this version{where} (format "
                f"{found!r}, expected {FORMAT!r})."
            )
        try:
            entries = {}
            for key, e in data["entries"].items():
                entry = Entry(e["signature"], e["axes"], e["ms"])
                shape = [len(a) for a in entry.axes]
                if np.asarray(entry.ms, dtype=np.float64).shape != tuple(shape):
                    raise ValueError(f"entry {key[:60]}... has {shape} axes but other costs")
                entries[key] = entry
            return cls(data["threads"], data["cpu"], data["runtime"], entries,
                       data.get("models", {}), path)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"LatencyTable: damaged table{where}: {error}") from None

    def save(self, path=None):
        """Writes the table as JSON (atomically) to `path` or `self.path`."""
        path = path or self.path
        if path is None:
            raise ValueError("LatencyTable.save: no path given and the table has none.")
        write_atomic(path, json.dumps(self.to_dict(), indent=1))
        self.path = path
        return path

    @classmethod
    def load(cls, path):
        """Reads a table written by `save` (or a device table).

        Raises:
            ValueError: The file is not valid JSON or not a latency table.
        """
        try:
            with open(path) as f:
                data = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"LatencyTable: {path} is not valid JSON ({error}); delete it to re-measure."
            ) from None
        return cls.from_dict(data, path)

    @staticmethod
    def cache_path(cache_dir, threads=1, cpu=None, runtime=None):
        """The cache file for a CPU, runtime (default: this host's) and
        `threads`."""
        name = (f"latency_{_slug(cpu or _cpu())}_{_slug(runtime or _runtime())}_"
                f"{int(threads)}t.json")
        return os.path.join(cache_dir, name)

    # ------------------------------------------------------------- measuring
    @classmethod
    def measure(cls, model, threads=1, cache_dir=None, step=8, coarse=3, refine=0.1,
                rounds=5, verbose=1, backend=None, dense_below=32, space_to_depth_below=16,
                untimed="raise"):
        """Times `model`'s ops on this host and returns the table.

        Args:
            model: A built Keras model with a fixed input size (masked Evo
                or plain); its ops are timed at their full channel counts
                and below.
            threads: LiteRT interpreter threads.
            cache_dir: Folder of the JSON cache (created); the table for
                this CPU/runtime/threads is read from it first and written
                back after every op, so a killed measurement loses nothing.
                None: memory only.
            step: Channel grid step (XNNPACK tiles are 8 wide).
            coarse: Grid points per axis before refinement.
            dense_below: Every multiple of `step` up to this channel count
                is a grid point from the start: thin int8 layers are not
                monotone in their channels (DESIGN.md §5b), so linear
                interpolation there needs every tile.
            refine: Relative cost change between grid neighbours above which
                the interval is bisected (down to `step`).
            space_to_depth_below: Strided convolutions with at most this many
                input channels (an RGB stem) are also timed in their exact
                space-to-depth form (`keras_evosynth.rewrites`); `predict`
                then costs the faster form, and `space_to_depth_layers`
                names the layers to deploy rewritten. 0: never.
            rounds: Interleaved timing rounds per batch of micro-models.
            verbose: 1 draws a progress bar on stderr, 0 is silent.
            backend: None times on this host with the LiteRT interpreter;
                an object with `cpu`, `runtime`, `threads`,
                `op_costs(flatbuffers) -> [ms or None]` (None: the runtime
                refused that micro-model) and `invoke_ms(flatbuffers)
                -> [ms]` times elsewhere, e.g. `tflite_bench.device.AdbOpTimer`
                on an Android device through `benchmark_model
                --enable_op_profiling` (then `threads` is the backend's).
            untimed: What to do with a layer the table cannot time whose
                channels follow evolvable layers (`model_ops`): `"raise"`
                (default) names it; `"ignore"` prices it in the fixed
                remainder the whole-model anchors measure, as if cutting
                its inputs saved nothing, and records it (the model's
                `untimed` in `models`, the table's repr). Layers whose size
                no offspring changes (`Normalization`, `LayerNormalization`,
                custom layers compaction keeps whole, ...) are priced in the
                fixed remainder either way (the model's `remainder_layers`).

        Returns:
            A `LatencyTable` (`timed_points` says how many grid points were
            timed now).

        Raises:
            ValueError: Bad arguments, or (with `untimed="raise"`) a layer
                that cannot be timed, named with its class.
        """
        for name, value, low in (("threads", threads, 1), ("step", step, 1),
                                 ("coarse", coarse, 2), ("rounds", rounds, 1),
                                 ("dense_below", dense_below, 0),
                                 ("space_to_depth_below", space_to_depth_below, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"LatencyTable.measure: {name} must be an int >= {low}, "
                                 f"got {value!r}.")
        if untimed not in UNTIMED:
            raise ValueError(f"LatencyTable.measure: untimed must be one of {UNTIMED}, "
                             f"got {untimed!r}.")
        ops = model_ops(model, untimed=untimed)
        cpu, runtime = (_cpu(), _runtime()) if backend is None else (backend.cpu, backend.runtime)
        threads = threads if backend is None else int(backend.threads)
        table = None
        if cache_dir is not None:
            os.makedirs(cache_dir, exist_ok=True)
            path = cls.cache_path(cache_dir, threads, cpu, runtime)
            if os.path.exists(path):
                try:
                    table = cls.load(path)
                except ValueError as error:
                    aside = path + ".damaged"
                    os.replace(path, aside)
                    warnings.warn(f"{error} Moved it to {aside}; re-measuring.", stacklevel=2)
                else:
                    if (table.cpu, table.runtime, table.threads) != (cpu, runtime, threads):
                        warnings.warn(
                            f"LatencyTable: {path} was measured on {table.cpu}, "
                            f"{table.runtime}, {table.threads} thread(s); re-measuring.",
                            stacklevel=2,
                        )
                        table = None
            if table is None:
                table = cls(threads, cpu, runtime, path=path)
            table.path = path
        else:
            table = cls(threads, cpu, runtime)
        table.timed_points = 0
        forms = [f for op in ops for f in space_to_depth_forms(op, space_to_depth_below)]
        _Measurer(table, ops, step, coarse, refine, rounds, verbose, backend,
                  dense_below, forms).run(model)
        if verbose:
            print(f"latency table of '{model.name}': {pricing_summary(ops)}", file=sys.stderr,
                  flush=True)
        return table

    # ------------------------------------------------------------ predicting
    def _entry(self, op):
        """The op's `Entry`, or the fastest of it and its measured
        space-to-depth forms (`_Fastest`) where there are any."""
        entry = self.entries.get(op.key)
        if entry is None:
            raise ValueError(
                f"LatencyTable: no measurement for layer '{op.name}' ({op.signature['op']}, "
                f"input {op.signature.get('input', op.signature.get('inputs'))}) in this "
                f"table ({self.cpu}, {self.threads} thread(s)); measure the model with "
                "LatencyTable.measure(model)."
            )
        others = [self.entries.get(f.key) for f in space_to_depth_forms(op, math.inf)]
        others = [e for e in others if e is not None]
        return _Fastest([entry, *others]) if others else entry

    def space_to_depth_layers(self, model):
        """`{layer name: outputs_per_block}` of `model`'s strided
        convolutions that this table measured faster as `SpaceToDepth` + a
        stride-1 convolution (+ `DepthToSpace` for `outputs_per_block` > 1),
        at the channels `compact` keeps, with the fastest form: what
        `compact(model, space_to_depth=table)` and `export_litert(...,
        space_to_depth=table)` rewrite, and what `predict` assumes.

        Example:

        >>> import keras
        >>> m = keras.Sequential([keras.Input((32, 32, 3)),
        ...     keras.layers.Conv2D(8, 3, name="plain"), keras.layers.Flatten()])
        >>> LatencyTable.measure(m, verbose=0).space_to_depth_layers(m)
        {}
        """
        return self._rewritten(*kept_channels(model))

    def _rewritten(self, ops, live):
        """`space_to_depth_layers` from `kept_channels` output."""
        chosen = {}
        for op, (cin, cout) in zip(ops, live, strict=True):
            entry = self._entry(op)
            if isinstance(entry, _Fastest) and cout:
                costs = [e.cost(cin, cout, tile=TILE) for e in entry.entries]
                best = int(np.argmin(costs))
                if best > 0:
                    chosen[op.name] = entry.entries[best].signature.get("outputs_per_block", 1)
        return chosen

    def _anchor(self, ops, model_name):
        """`(scale, remainder_ms, floor_ms, curve)` of the model's
        architecture (`curve`: `_curve` of its anchors)."""
        key = fingerprint(ops)
        if key not in self.models:
            untimed = ops.priced("untimed") if isinstance(ops, OpList) else []
            how = "LatencyTable.measure(model, untimed='ignore')" if untimed else (
                "LatencyTable.measure(model)")
            hint = f" (its layers {untimed} cannot be timed)" if untimed else ""
            raise ValueError(
                f"LatencyTable: the architecture of model '{model_name}' was not measured "
                f"in this table (its fixed remainder is unknown); call {how} on it or on "
                f"its ancestor{hint}."
            )
        record = self.models[key]
        scale = record.get("scale", 1.0)
        points = [(a["grid_ms"], a["whole_ms"]) for a in record.get("anchors", ())]
        return scale, record["remainder_ms"], record.get("floor_ms", 0.0), _curve(points, scale)

    def op_costs(self, model):
        """`{layer name: ms}` of every timed op at the channels the
        compacted model keeps."""
        ops, live = kept_channels(model)
        return {op.name: self._cost(op, *n) for op, n in zip(ops, live, strict=True)}

    def _cost(self, op, cin, cout):
        if not cout:  # compaction drops the op
            return 0.0
        entry = self._entry(op)
        if not entry.covers(cin, cout):
            raise ValueError(
                f"LatencyTable: layer '{op.name}' has {cin} input / {cout} output "
                f"channels, beyond the measured grid (up to {entry.axes[0][-1]}"
                + (f" / {entry.axes[1][-1]}" if len(entry.axes) > 1 else "")
                + "); measure this model."
            )
        return entry.cost(cin, cout if op.two_d else None, tile=TILE)

    def predict(self, model):
        """Predicted int8 latency (ms) of `model` compacted, on this table's
        target: the sum of its ops' interpolated costs at the channels
        `compact` keeps, read on its architecture's anchor curve (`_whole`),
        never below the empty model's invoke time. A strided convolution whose
        space-to-depth forms were measured costs the fastest of its forms:
        the model as `export_litert(..., space_to_depth=table)` deploys it.

        Raises:
            ValueError: A layer or architecture the table has not measured,
                or channel counts beyond the measured grid.
        """
        return self._predict(*kept_channels(model), model.name)

    def _predict(self, ops, live, model_name):
        total = sum(self._cost(op, *n) for op, n in zip(ops, live, strict=True))
        return _whole(self._anchor(ops, model_name), total)

    def expectation(self, model, genomes):
        """The expected predicted latency of an offspring of `model`.

        Args:
            model: The parent (built, with Evo layers).
            genomes: `genetics.genomes_from_model(model, ...)[0]`.

        Returns:
            A `LatencyExpectation`.
        """
        return LatencyExpectation(self, model, genomes)

    def untimed_layers(self):
        """`{model name: [layer names]}` of the measured architectures whose
        layers `measure(..., untimed="ignore")` priced in the fixed
        remainder although their channels follow evolvable layers."""
        found = {}
        for record in self.models.values():
            if record.get("untimed"):
                found.setdefault(record.get("name", "?"), []).extend(record["untimed"])
        return found

    def __repr__(self):
        untimed = sorted({n for names in self.untimed_layers().values() for n in names})
        return (f"LatencyTable({len(self.entries)} ops, {len(self.models)} models, "
                f"{self.cpu!r}, {self.runtime}, threads={self.threads}"
                + (f", untimed={untimed}" if untimed else "") + ")")


def _curve(points, scale):
    """The anchors' `(grid_ms, whole_ms)` points as `(grid, whole)` arrays
    sorted by `grid_ms`, each whole raised to the ones before it (so the
    curve never falls as the op sum grows and the environment's bisection on
    it stays monotone); None with fewer than two distinct `grid_ms`, or
    when the least-squares fit fell back to scale 1 (`_fit_anchors`: the
    anchors are noise), where `_whole` uses the line.

    Example:

    >>> grid, whole = _curve([(3.0, 3.5), (1.4, 1.4), (1.5, 1.3)], 1.3)
    >>> grid.tolist(), whole.tolist()
    ([1.4, 1.5, 3.0], [1.4, 1.4, 3.5])
    >>> _curve([(2.0, 2.1)], 1.3) is None
    True
    """
    grid = np.array([g for g, _ in points], np.float64)
    if scale == 1.0 or np.unique(grid).size < 2:
        return None
    order = np.argsort(grid, kind="stable")
    whole = np.array([w for _, w in points], np.float64)[order]
    return grid[order], np.maximum.accumulate(whole)


def _whole(anchor, total):
    """A model's predicted ms from its ops' summed costs `total`: on the
    anchors' piecewise-linear `curve` (`_curve`), continued beyond its
    outermost points with slope `scale`; the line `scale * total +
    remainder` without a curve; never below the empty model's `floor`.

    Example:

    >>> curve = _curve([(3.0, 3.5), (1.4, 1.4), (1.2, 0.6)], 1.3)
    >>> [round(_whole((1.3, -0.5, 0.01, curve), g), 4) for g in (3.0, 2.2, 1.3, 4.0, 1.0)]
    [3.5, 2.45, 1.0, 4.8, 0.34]
    >>> _whole((1.3, -0.5, 0.01, None), 2.0)
    2.1
    """
    scale, remainder, floor, curve = anchor
    if curve is None:
        return max(scale * total + remainder, floor)
    grid, whole = curve
    if total < grid[0]:
        value = whole[0] + scale * (total - grid[0])
    elif total > grid[-1]:
        value = whole[-1] + scale * (total - grid[-1])
    else:
        value = np.interp(total, grid, whole)
    return max(float(value), floor)


def kept_channels(model):
    """`(ops, [(cin, cout)])`: the ops of `model` and the channels its
    compacted version keeps for each (compaction's own analysis: dead
    filters, inputs that only dead consumers read, constants folded,
    channels coupled by Add/Multiply).

    Example:

    >>> import keras
    >>> from keras_evosynth import evolvable
    >>> m = evolvable(keras.Sequential([keras.Input((6, 6, 2)),
    ...     keras.layers.Conv2D(4, 3, name="c"), keras.layers.Flatten(),
    ...     keras.layers.Dense(2, name="d")]))
    >>> m.get_layer("c").set_masks(cluster_mask=[True, False, True, False])
    >>> [(op.name, n) for op, n in zip(*kept_channels(m))]
    [('c', (2, 2)), ('d', (32, 2))]
    """
    ops, live, _ = _kept_channels(model)
    return ops, live


def _kept_channels(model):
    """`kept_channels` plus the traced graph. An op whose output compaction
    drops altogether (a removed branch, a reduction only it read) keeps
    `(0, 0)`: it costs nothing."""
    from keras_evosynth.compact import _Compactor

    compactor = _Compactor(model, remove_channels=True)
    graph = compactor.graph
    ops = model_ops(model, graph=graph, untimed="ignore")  # measure() refused or recorded them
    gone = _unreached(graph, ops, {t for t, keep in compactor.keep.items() if not keep.any()})
    live = []
    for index, op in enumerate(ops):
        cin = int(compactor.keep[op.in_tid].sum())
        cout = int(compactor.keep[op.out_tid].sum())
        if index in gone:
            live.append((0, 0))
            continue
        if op.kind == "channel":
            cin = cout
        elif op.kind == "depthwise":
            cin = cout // op.signature["multiplier"]
        live.append((max(cin, 1), cout if op.two_d else max(cin, 1)))
    return ops, live, graph


def _vanished(graph, ops, dead):
    """Indices of `ops` that compaction drops once the Evo layers `dead`
    (genome indices) lose every filter: their outputs, what is computed
    from those alone by the layers between ops (batch norms, activations,
    pooling, a concatenation of removed parts only), and every op whose
    output only removed ops read (the reduction before a removed 3x3).

    Example: a dead layer `b` takes its reduction `a` with it; `c`, read
    by the output next to `b`, stays.

    >>> import keras
    >>> from keras_evosynth import evolvable
    >>> x = keras.Input((4, 4, 3))
    >>> a = keras.layers.Conv2D(2, 1, name="a")(x)
    >>> b = keras.layers.Conv2D(2, 3, padding="same", name="b")(a)
    >>> c = keras.layers.Conv2D(2, 1, name="c")(x)
    >>> y = keras.layers.Concatenate(name="cat")([b, c])
    >>> m = evolvable(keras.Model(x, keras.layers.Conv2D(2, 1, name="head")(y)))
    >>> ops, _, graph = _kept_channels(m)
    >>> sorted(ops[i].name for i in _vanished(graph, ops, {1}))
    ['a', 'b']
    """
    return _unreached(graph, ops, {op.out_tid for op in ops if op.evo_index in dead})


def _unreached(graph, ops, removed):
    """Indices of `ops` whose output is in `removed` (tensor ids), computed
    from removed tensors alone by non-synaptic layers, or read by no layer
    that leads to a model output (`_vanished`)."""
    synaptic = {op.out_tid for op in ops if op.kind != "channel"}
    removed = set(removed)
    for node in graph.nodes:
        if (node.inputs and node.outputs[0] not in synaptic
                and all(t in removed for t in node.inputs)):
            removed.update(node.outputs)
    needed = set(keras.tree.flatten(graph.outputs))
    for node in reversed(graph.nodes):
        if any(t in needed and t not in removed for t in node.outputs):
            needed.update(node.inputs)
    return {i for i, op in enumerate(ops) if op.out_tid in removed or op.out_tid not in needed}


def _channel_odds(op, alive):
    """`(cin, cout)` per-channel odds of being live (bool or probability
    vectors; None for fixed counts) given every Evo layer's cluster odds."""
    cin = None if op.sources is None else genetics._alive_probability(op.sources, alive)
    cout = None
    if op.evo_index is not None:
        cout = np.asarray(alive[op.evo_index], np.float64)
        if op.kind == "depthwise":  # a channel runs if its input and an output live
            out = cout.reshape(-1, op.signature["multiplier"])
            cin = (1.0 if cin is None else cin) * (1.0 - np.prod(1.0 - out, axis=1))
            cout = None
    return cin, cout


def _live_channels(op, alive):
    """`(cin, cout)` (expected) live channels of `op`, at least 1 each."""
    cin, cout = _channel_odds(op, alive)
    cin = op.cin if cin is None else float(np.sum(cin))
    if op.kind in ("channel", "depthwise"):
        cout = cin
    else:
        cout = op.cout if cout is None else float(np.sum(cout))
    return max(cin, 1.0), max(cout, 1.0)


class LatencyExpectation:
    """`f(cluster_factors, synapse_factor) -> expected predicted ms`.

    Live channel counts are replaced by their expectations under the
    offspring's cluster odds `min(1, R_l p_c)` (input channels through their
    producers' odds, like `genetics.expectation`; a filter read only by
    depthwise filters lives only if they do, as compaction removes it
    otherwise), and the table's costs are read there. The result is scaled
    so that the parent's expectation equals `table.predict(parent)` (the
    compaction-exact figure the lineage records), absorbing what this
    forward estimate cannot see. A sampled layer whose odds are all 0 (a
    branch the environment removes) is gone, with every op that compaction
    drops with it (`_vanished`): those cost nothing. `current` is the
    parent's predicted latency.

    Attributes:
        current: Predicted latency of the parent (ms).
        genomes: The parent's genomes.
        importance: Per-cluster accuracy importance of the parent's filters
            (`sensitivity.taylor_importance`), or None.
    """

    def __init__(self, table, model, genomes):
        self.table = table
        self.genomes = genomes
        self.ops, live, self._graph = _kept_channels(model)
        self._vanish = {}  # frozenset of removed genomes -> op indices
        self.anchor = table._anchor(self.ops, model.name)
        self.entries = [table._entry(op) for op in self.ops]
        self.p_c = [g.probabilities()[0] for g in genomes]
        self._readers = _depthwise_readers(self.ops, [p.size for p in self.p_c])
        self.importance = None  # per-cluster Taylor importance, set by the environment
        self.calibration = 1.0
        raw = self.at_odds([(p > 0).astype(np.float64) for p in self.p_c])
        self.current = table._predict(self.ops, live, model.name)
        self.calibration = self.current / raw if raw > 0 else 1.0

    def odds(self, cluster_factors):
        """Cluster odds `min(1, R_l p_c)` per genome (protected: as is)."""
        factors = np.broadcast_to(np.asarray(cluster_factors, np.float64), (len(self.genomes),))
        return [
            p if g.protected else np.minimum(1.0, r * p)
            for g, p, r in zip(self.genomes, self.p_c, factors, strict=True)
        ]

    def __call__(self, cluster_factors, synapse_factor=None):
        """Expected predicted ms at per-layer (or one) cluster factors."""
        return self.at_odds(self.odds(cluster_factors))

    def at_odds(self, odds):
        """Expected predicted ms at given per-genome cluster odds."""
        odds = list(odds)
        for producer, (depthwise, channels) in self._readers.items():
            odds[producer] = odds[producer] * np.where(
                channels >= 0, odds[depthwise][np.maximum(channels, 0)], 1.0)
        dead = frozenset(i for i, (g, o) in enumerate(zip(self.genomes, odds, strict=True))
                         if not g.protected and not np.any(o))
        if dead not in self._vanish:
            self._vanish[dead] = _vanished(self._graph, self.ops, dead) if dead else set()
        gone = self._vanish[dead]
        total = 0.0
        for index, (op, entry) in enumerate(zip(self.ops, self.entries, strict=True)):
            if index in gone:
                continue
            cin, cout = _live_channels(op, odds)
            total += entry.cost(cin, cout) if op.two_d else entry.cost(cin)
        return self.calibration * _whole(self.anchor, total)

    def kept_filters(self, cluster_factors):
        """Expected fraction of the parent's sampled (unprotected) filters
        the offspring keeps at these factors."""
        return self.kept_filters_at(self.odds(cluster_factors))

    def kept_filters_at(self, odds):
        """`kept_filters` at given per-genome cluster odds."""
        live = kept = 0.0
        for g, p, o in zip(self.genomes, self.p_c, odds, strict=True):
            if not g.protected:
                live += float((p > 0).sum())
                kept += float(o.sum())
        return kept / live if live else 1.0

    def savings(self, step=0.3):
        """Latency saved per filter removed, one value per genome (ms).

        Layer `l`'s saving is `(f(p) - f(p with layer l's odds scaled by
        1 - step)) / (step * live filters of l)` at the parent (all odds 1):
        a finite step, since costs move in tiles. Protected layers save 0.
        """
        base_odds = [(p > 0).astype(np.float64) for p in self.p_c]
        base = self.at_odds(base_odds)
        result = np.zeros(len(self.genomes))
        for index, g in enumerate(self.genomes):
            live = base_odds[index].sum()
            if g.protected or live < 1:
                continue
            cut = list(base_odds)
            cut[index] = base_odds[index] * (1.0 - step)
            result[index] = (base - self.at_odds(cut)) / (step * live)
        return result


def _depthwise_readers(ops, sizes):
    """`{producer: (depthwise, channel per producer cluster or -1)}` for
    Evo layers whose every synaptic reader is one multiplier-1 Evo
    depthwise convolution (MobileNet's expand -> depthwise)."""
    readers = {}
    for op in ops:
        if op.kind == "channel" or op.sources is None:
            continue
        for producer in np.unique(op.sources.producer):
            if producer >= 0:
                readers.setdefault(int(producer), []).append(op)
    result = {}
    for producer, consumers in readers.items():
        (op,) = consumers if len(consumers) == 1 else (None,)
        if (op is None or op.kind != "depthwise" or op.evo_index is None
                or op.signature["multiplier"] != 1 or op.sources.producer.shape[0] != 1):
            continue
        channels = np.full(sizes[producer], -1)
        here = op.sources.producer[0] == producer
        channels[op.sources.cluster[0][here]] = np.nonzero(here)[0]
        result[producer] = (op.evo_index, channels)
    return result


class _Measurer:
    """Fills a table's entries for a list of ops, then fits the model's
    remainder and scale."""

    def __init__(self, table, ops, step, coarse, refine, rounds, verbose, backend=None,
                 dense_below=0, forms=()):
        self.table, self.ops, self.backend = table, ops, backend
        self.forms = list(forms)  # alternative forms of ops (space-to-depth)
        self.dense_below = dense_below
        self.step, self.coarse, self.refine, self.rounds = step, coarse, refine, rounds
        self.verbose = verbose
        self._null = None
        self.refusals = ""

    def say(self, text):
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def run(self, model):
        from tflite_bench.progress import Progress

        groups = {}
        for op in self.ops + self.forms:
            groups.setdefault(op.key, []).append(op)
        todo = []
        for ops in groups.values():
            entry = self.table.entries.get(ops[0].key)
            if entry is None or not all(entry.covers(op.cin, op.cout) for op in ops):
                todo.append(_Grid(ops, self.step))
        key = fingerprint(self.ops)
        if not todo and key in self.table.models:
            return
        start = time.perf_counter()
        label = f"latency table of '{model.name}': {len(todo)} op signatures"
        with Progress(label, 2 * len(todo) + 1, enabled=bool(self.verbose)) as bar:
            for grid in todo:  # coarse grids first, so refinement knows the total
                grid.measure(self, [
                    sorted(set(_coarse(c, self.coarse)) | a
                           | {v for v in c if v <= self.dense_below})
                    for c, a in zip(grid.candidates, grid.anchors, strict=True)
                ])
                self.table.entries[grid.key] = grid.entry()
                bar(1)
            total = sum(self.table._cost(op, op.cin, op.cout) for op in self.ops)
            for grid in todo:
                self._refine(grid, total)
                self.table.entries[grid.key] = grid.entry()
                self._save()
                bar(1)
            self._calibrate(model, key)
            self._save()
            bar(1)
        self.say(f"latency table: {self.table.timed_points} grid points timed in "
                 f"{time.perf_counter() - start:.0f}s")

    def _save(self):
        if self.table.path is not None:
            self.table.save()

    def flatbuffer(self, op, cin, cout=None):
        """The int8 micro-model of `op` at `cin` (x `cout`) channels."""
        return _int8_flatbuffer(_micro_model(op.signature, cin, cout if op.two_d else cin))

    def null(self):
        if self._null is None:
            self._null = _null_flatbuffer()
        return self._null

    def time(self, flatbuffers):
        """Costs (ms) of micro-models, interleaved with the empty model (or
        from the backend); None for a micro-model the XNNPACK delegate
        refuses to prepare (its error message is in `self.refusals`)."""
        self.table.timed_points += len(flatbuffers)
        if self.backend is not None:
            return [None if t is None else float(t) for t in self.backend.op_costs(flatbuffers)]
        interps = [_interpreter(self.null(), self.table.threads)]
        ready = []
        for flatbuffer in flatbuffers:
            try:
                interps.append(_interpreter(flatbuffer, self.table.threads))
                ready.append(True)
            except RuntimeError as error:  # e.g. a requantization scale beyond 256
                self.refusals = str(error)[:200]
                ready.append(False)
        times = iter(time_interleaved(interps, rounds=self.rounds))
        null = next(times)
        return [max(next(times) - null, 0.0) if ok else None for ok in ready]

    def _refine(self, grid, total):
        """Bisects where the cost changes, largest changes first, until no
        interval needs it or the grid holds `MAX_GRID_POINTS` points."""
        floor = 0.005 * total
        for _ in range(12):
            added = grid.split_points(self.refine, floor, per_axis=2)
            if not any(added):
                return
            grown = math.prod(len(a) + len(n) for a, n in zip(grid.axes, added, strict=True))
            if grown > MAX_GRID_POINTS:
                return
            grid.measure(self, [sorted(set(a) | set(n)) for a, n in zip(grid.axes, added,
                                                                         strict=True)])

    def _calibrate(self, model, key):
        """Times the whole model at `ANCHOR_KEEP` fractions of its filters
        (and, with removable branches, at `ANCHOR_BRANCHES` of them removed)
        (interleaved with the empty model) and fits `whole = scale * grid sum
        + remainder` over them (least squares): the fixed remainder (input
        quantize, output dequantize, invoke overhead) and how op costs inside
        one graph differ from the same ops timed alone."""
        from keras_evosynth.compact import _Compactor
        from keras_evosynth.conversion import evolvable
        from keras_evosynth.export import _convert

        graph = trace(model)
        shapes = [(1, *graph.specs[t].shape[1:]) for t in keras.tree.flatten(graph.inputs)]
        plain = _Compactor(model, remove_channels=False).build(batch_shapes=shapes)
        # A layer compaction cannot re-create from its config is shared with
        # `model`: its weights are left alone.
        originals = {id(layer) for layer in model._flatten_layers(include_self=False)}
        rng = np.random.default_rng(0)
        data = [rng.uniform(0, 1, (4, *s[1:])).astype("float32") for s in shapes]
        anchors, flatbuffers, interps = [], [], [_interpreter(self.null(), self.table.threads)]
        plan = [{"keep": keep} for keep in ANCHOR_KEEP]
        # layers evolvable() does not know (SeparableConv2D, custom ones) stay
        # whole: fixed costs, priced in the remainder
        if genetics.branches(genetics.genomes_from_model(
                evolvable(plain, skip_unsupported=True))[0]):
            plan += [{"keep": 1.0, "branches": b} for b in ANCHOR_BRANCHES]
        for anchor in plan:
            cut, grid_ms = _anchor_model(self.table, plain, anchor["keep"], shapes, rng,
                                         anchor.get("branches", 0.0), originals)
            try:
                whole = _convert(cut, data, "int8", int8_io=False, allow_float_ops=True)
                interps.append(_interpreter(whole, self.table.threads))
            except RuntimeError as error:  # XNNPACK may refuse a cut model
                if anchor == plan[0]:
                    raise
                warnings.warn(f"LatencyTable: the anchor {anchor} of '{model.name}' "
                              f"did not convert ({str(error)[:200]}); fitting without it.",
                              stacklevel=3)
                continue
            anchors.append({**anchor, "grid_ms": grid_ms})
            flatbuffers.append(whole)
        if self.backend is not None:
            null_ms, wholes = 0.0, self.backend.invoke_ms(flatbuffers)
        else:
            null_ms, *wholes = time_interleaved(interps, rounds=max(self.rounds, 7))
        for anchor, whole_ms in zip(anchors, wholes, strict=True):
            anchor["whole_ms"] = float(whole_ms)
        scale, remainder = _fit_anchors(anchors)
        self.table.models[key] = {
            "name": model.name,
            "anchors": anchors,
            "scale": scale,
            "remainder_ms": remainder,
            "floor_ms": float(null_ms),
            "remainder_layers": self.ops.priced("remainder"),
            "untimed": self.ops.priced("untimed"),
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
        }
        self.table.timed_points += len(flatbuffers)


def _anchor_model(table, plain, keep, shapes, rng, branches=0.0, originals=()):
    """`(plain model, grid sum ms)`: `plain` with `keep` of each sampled
    layer's filters kept at random (at least one) and `branches` of its
    removable branches (`genetics.branches`, every `1 / branches`-th in
    graph order) removed, compacted, with neutral weights
    (`_neutral_weights`; layers whose id is in `originals` keep theirs)."""
    from keras_evosynth.compact import _Compactor
    from keras_evosynth.conversion import evolvable

    evo = evolvable(plain, skip_unsupported=True)
    if keep < 1.0 or branches > 0.0:
        genomes, layers = genetics.genomes_from_model(evo)
        members = list(genetics.branches(genomes).values())
        count = round(branches * len(members))
        removed = {m for i in range(count) for m in members[i * len(members) // count]}
        for index, (genome, layer) in enumerate(zip(genomes, layers, strict=True)):
            n = genome.cluster_mask.size
            if index in removed:
                layer.set_masks(cluster_mask=np.zeros(n, bool))
            elif not genome.protected and keep < 1.0:
                mask = np.zeros(n, bool)
                mask[rng.choice(n, size=max(1, round(keep * n)), replace=False)] = True
                layer.set_masks(cluster_mask=mask)
    ops, live = kept_channels(evo)
    grid_ms = sum(table._cost(op, *n) for op, n in zip(ops, live, strict=True))
    cut = _Compactor(evo, remove_channels=True).build(
        batch_shapes=shapes, space_to_depth=table._rewritten(ops, live))
    _neutral_weights(cut, rng, originals)
    return cut, grid_ms


_NEUTRAL = {"bias": 0.0, "beta": 0.0, "moving_mean": 0.0, "gamma": 1.0, "moving_variance": 1.0}


def _mirrored(values, identity, other):
    """`identity` where `values` is it, else `other` (same shape): a neutral
    setting that keeps the operators the converter emits (it folds a
    multiplication by 1 or an addition of 0 away, not others)."""
    values = np.asarray(keras.ops.convert_to_numpy(values), np.float64)
    return np.where(values == identity, identity, other).astype("float32")


def _neutral_preprocessing(layer):
    """`Rescaling` and `Normalization` made harmless for the calibration
    data (positive values stay positive: a mean subtraction would leave a
    ReLU nothing) with the same operators as the original: a scale or
    variance other than 1 stays a multiplication, an offset or mean other
    than 0 an addition (measured: an int8 `Normalization` with a mean costs
    a SUB and a MUL at full input resolution; with mean 0 and variance 1 the
    converter removes it)."""
    if isinstance(layer, keras.layers.Rescaling):
        layer.scale = _mirrored(layer.scale, 1.0, 0.5)
        layer.offset = _mirrored(layer.offset, 0.0, 0.5)
        if not np.ndim(layer.scale):
            layer.scale = float(layer.scale)
        if not np.ndim(layer.offset):
            layer.offset = float(layer.offset)
    elif isinstance(layer, keras.layers.Normalization) and layer.built:
        shift = 0.5 if layer.invert else -0.5  # (x + 0.5) / 2, or x * 2 + 0.5
        for name, identity, other in (("mean", 0.0, shift), ("variance", 1.0, 4.0)):
            # an adapted layer's statistics are its variables (its `mean`
            # tensor is only refreshed by `finalize_state`)
            adapted = getattr(layer, f"adapt_{name}", None) if layer.input_mean is None else None
            value = _mirrored(getattr(layer, name) if adapted is None else adapted,
                              identity, other)
            if adapted is not None:
                adapted.assign(value)
                value = value.reshape(layer._broadcast_shape)
            setattr(layer, name, keras.ops.convert_to_tensor(value))


def _neutral_weights(model, rng, originals=()):
    """Kernels uniform in `[0, 2 / fan-in]`, biases 0, batch norms identity,
    `Rescaling` and `Normalization` neutral (`_neutral_preprocessing`);
    layers whose id is in `originals` (shared with the user's model) are
    left alone.

    Positive inputs then stay positive and of the same mean through every
    layer: no output is constant on the calibration data (a cut can leave a
    layer a few filters, and a ReLU that is never positive gets an int8
    scale whose requantization XNNPACK refuses), and nothing overflows.
    Latency does not depend on the values, except where the converter
    folds a layer away (a multiplication by 1), so those keep their kind."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) in originals:
            continue
        _neutral_preprocessing(layer)
        for variable in layer.weights:
            shape = tuple(variable.shape)
            if variable.name == "kernel" and len(shape) >= 2:
                depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
                fan_in = max(1, math.prod(shape[:2] if depthwise else shape[:-1]))
                variable.assign(rng.uniform(0.0, 2.0 / fan_in, shape).astype(variable.dtype))
            elif variable.name in _NEUTRAL:
                variable.assign(np.full(shape, _NEUTRAL[variable.name], variable.dtype))


def _fit_anchors(anchors):
    """`(scale, remainder_ms)` of the least-squares line `whole = scale *
    grid + remainder` through the anchors; with one anchor, or a slope
    outside [0.25, 4] (noise on a model of a few microseconds), scale 1
    and the full model's difference.

    Example:

    >>> _fit_anchors([{"grid_ms": 2.0, "whole_ms": 2.1},
    ...               {"grid_ms": 1.0, "whole_ms": 0.9}])
    (1.2, -0.3)
    >>> _fit_anchors([{"grid_ms": 2.0, "whole_ms": 2.1}])
    (1.0, 0.1)
    """
    grid = np.array([a["grid_ms"] for a in anchors], np.float64)
    whole = np.array([a["whole_ms"] for a in anchors], np.float64)
    if len(anchors) >= 2 and np.ptp(grid) > 0:
        scale, remainder = np.polyfit(grid, whole, 1)
        if 0.25 <= scale <= 4.0:
            return round(float(scale), 12), round(float(remainder), 12)
    return 1.0, round(float(whole[0] - grid[0]), 12)


class _Grid:
    """The grid of one op signature while it is being measured: its domain
    covers every op of the model sharing the signature, and each of those
    ops' own channel counts (the anchors) is a grid point."""

    def __init__(self, ops, step):
        self.op = ops[0]
        self.key = self.op.key
        cin = max(op.cin for op in ops)
        # One channel is a regime of its own (XNNPACK runs a 1x1 int8
        # convolution with one filter 3-4x faster than with 2 to 16), and
        # heavily cut models keep exactly one in many layers: always timed.
        self.candidates = [_axis_candidates(cin, step)]
        self.own = [{op.cin for op in ops}]
        if self.op.two_d:
            self.candidates.append(_axis_candidates(max(op.cout for op in ops), step))
            self.own.append({op.cout for op in ops})
        self.anchors = [{1, *own} for own in self.own]
        self.candidates = [sorted(set(c) | a) for c, a in
                           zip(self.candidates, self.anchors, strict=True)]
        self.values = {}  # point tuple -> ms
        self.axes = [[] for _ in self.candidates]

    def measure(self, measurer, axes):
        """Times the points of `axes` not timed yet. The always-timed one
        channel is dropped from an axis where LiteRT refuses its micro-model
        (and is not an op's own count); any other refusal is an error."""
        axes = [list(a) for a in axes]
        points = [p for p in itertools.product(*axes) if p not in self.values]
        if points:
            flatbuffers = [measurer.flatbuffer(self.op, *p) for p in points]
            times = measurer.time(flatbuffers)
            for point, ms in zip(points, times, strict=True):
                if ms is not None:
                    self.values[point] = ms
                    continue
                axis = next((k for k, v in enumerate(point) if v == 1 and 1 not in self.own[k]),
                            None)
                if axis is None:
                    raise ValueError(
                        f"LatencyTable: LiteRT's XNNPACK delegate refuses the int8 "
                        f"micro-model of layer '{self.op.name}' at {point} channels "
                        f"({measurer.refusals}); this layer cannot be timed.")
                for values in (axes[axis], self.candidates[axis]):
                    if 1 in values:
                        values.remove(1)
        self.axes = axes

    def entry(self):
        if self.op.two_d:
            ms = [[self.values[(a, b)] for b in self.axes[1]] for a in self.axes[0]]
        else:
            ms = [self.values[(a,)] for a in self.axes[0]]
        return Entry(self.op.signature, [list(a) for a in self.axes], ms)

    def split_points(self, refine, floor, per_axis=None):
        """New axis points where neighbouring costs differ by more than
        `refine` (relative) and `floor` (ms); at most `per_axis` per axis,
        the intervals whose cost changes most first."""
        added = [set() for _ in self.axes]
        changes = [[] for _ in self.axes]
        for axis, points in enumerate(self.axes):
            others = [self.axes[k] for k in range(len(self.axes)) if k != axis]
            for low, high in zip(points, points[1:], strict=False):
                between = [c for c in self.candidates[axis] if low < c < high]
                if not between:
                    continue
                change = 0.0
                for rest in itertools.product(*others):
                    a = self.values[_insert(rest, axis, low)]
                    b = self.values[_insert(rest, axis, high)]
                    if abs(a - b) > refine * max(a, b, 1e-9) and abs(a - b) > floor:
                        change = max(change, abs(a - b))
                if change:
                    changes[axis].append((change, between[len(between) // 2]))
        for axis, found in enumerate(changes):
            found.sort(reverse=True)
            added[axis] = {value for _, value in found[:per_axis]}
        return added


def _insert(rest, axis, value):
    point = list(rest)
    point.insert(axis, value)
    return tuple(point)


def pressures(savings, p_c, genomes, floor=0.0, importance=None):
    """Latency pressure of each layer: saving per unit of strength lost.

    `pi_l = max(s_l, 0) / (v_l * a_l)`, with `s_l` the latency saved per
    filter removed (`LatencyExpectation.savings`), `v_l` the mean heredity
    `p_c` of the layer's live filters (the strength a removed filter takes
    with it, in the layer's own normalised units) and `a_l` the layer's
    accuracy sensitivity: with `importance` (per-cluster Taylor importance,
    `sensitivity.taylor_importance`), the mean importance of its live
    filters over the mean of all sampled layers' (at least 0.001), else 1.
    Scaled so the largest is 1, then raised to at least `floor` for every
    sampled layer. Protected layers get 0.

    Example:

    >>> import numpy as np
    >>> from keras_evosynth import quantizers
    >>> g = genetics.Genome("a", np.ones((1, 2)), np.ones((1, 2), bool),
    ...                     np.ones(2, bool), quantizers.get(8), input_axis=0)
    >>> pressures([2.0, 1.0], [np.array([1.0, 1.0]), np.array([0.5, 0.5])],
    ...           [g, g]).tolist()
    [1.0, 1.0]
    """
    values, _ = _raw_pressures(savings, p_c, genomes, importance)
    top = values.max() if values.size else 0.0
    values = values / top if top > 0 else values
    sampled = np.array([not g.protected for g in genomes])
    return np.where(sampled, np.maximum(values, floor), 0.0)


def _raw_pressures(savings, p_c, genomes, importance):
    """`(s_l / (v_l a_l) per layer before scaling, a_l)` of `pressures`
    (0 for protected layers and layers without live filters)."""
    sensitivity = _sensitivity(importance, p_c, genomes)
    values = []
    for s, p, g, a in zip(savings, p_c, genomes, sensitivity, strict=True):
        live = p[p > 0]
        values.append(0.0 if g.protected or live.size == 0 else max(s, 0.0) / (live.mean() * a))
    return np.asarray(values, dtype=np.float64), sensitivity


def branch_removals(expected, target, keep_filters, savings=None):
    """The whole branches a latency target removes this generation.

    Every removable branch (`genetics.branches`) still alive is priced at
    the parent: `rho_b = (f(parent) - f(parent without b)) / (sum_c p_c *
    a_t)`, the expected predicted latency it saves per unit of strength lost
    (`p_c` over the live filters of its terminal `t`, `a_t` the terminal's
    sensitivity as in `pressures`). Branches are taken greedily by
    decreasing `rho_b` while `rho_b` beats the best per-filter trim (the
    largest `s_l / (v_l a_l)` of `pressures`, before scaling), the
    expected latency is still above `target` (ms) and the offspring keeps
    at least `keep_filters` of the parent's sampled filters. `savings`:
    `expected.savings()` when the caller has it already.

    Returns:
        Sorted genome indices of the removed branches' members.
    """
    genomes, p_c = expected.genomes, expected.p_c
    base = [(p > 0).astype(np.float64) for p in p_c]
    current = expected.at_odds(base)
    raw, sensitivity = _raw_pressures(
        expected.savings() if savings is None else savings, p_c, genomes, expected.importance)
    trim = raw.max() if raw.size else 0.0

    def without(odds, members):
        return [np.zeros_like(o) if i in members else o for i, o in enumerate(odds)]

    choices = []
    for terminal, members in genetics.branches(genomes).items():
        if not all(base[m].any() for m in members):
            continue  # already (partly) gone
        strength = float(p_c[terminal][p_c[terminal] > 0].sum()) * sensitivity[terminal]
        rho = (current - expected.at_odds(without(base, members))) / max(strength, 1e-12)
        choices.append((-rho, terminal, members))
    removed, odds, latency = set(), list(base), current
    for negative_rho, _, members in sorted(choices):
        if -negative_rho <= trim or latency <= target:
            break
        trial = without(odds, members)
        if expected.kept_filters_at(trial) < keep_filters:
            continue
        odds, latency = trial, expected.at_odds(trial)
        removed.update(members)
    return sorted(removed)


def _sensitivity(importance, p_c, genomes):
    """`a_l` of `pressures`: each sampled layer's mean live-filter importance
    relative to the mean over sampled layers (1 without `importance`).

    >>> from keras_evosynth import quantizers
    >>> g = genetics.Genome("a", np.ones((1, 2)), np.ones((1, 2), bool),
    ...                     np.ones(2, bool), quantizers.get(8), input_axis=0)
    >>> _sensitivity([np.array([1.0, 3.0]), np.array([0.0, 6.0])],
    ...              [np.array([1.0, 1.0]), np.array([0.0, 1.0])], [g, g]).tolist()
    [0.5, 1.5]
    """
    if importance is None:
        return np.ones(len(genomes))
    means = np.array([
        float(np.mean(np.asarray(i)[p > 0])) if not g.protected and (p > 0).any() else np.nan
        for i, p, g in zip(importance, p_c, genomes, strict=True)
    ])
    reference = np.nanmean(means) if np.isfinite(means).any() else np.nan
    if not reference > 0:
        return np.ones(len(genomes))
    return np.where(np.isfinite(means), np.maximum(means / reference, 1e-3), 1.0)


def layer_factors(pressure, strength, floors=None):
    """Per-layer cluster factors `R_l = max(F_l, e * exp(-lambda * pi_l))`.

    A filter `c` of layer `l` then survives with `min(1, exp(S_c / Z_c -
    lambda * pi_l))`: its heredity minus the price of its latency, the
    Lagrangian relaxation of the knapsack "keep the most strength within the
    latency budget" (HALP). `lambda = strength` is solved by bisection. No
    factor goes below its floor `F_l` in one generation (default
    `MIN_LAYER_FACTOR`, 0.5: a layer keeps at least 18 to 50 % of its
    filters in expectation; `layer_floors` gives floors that cap each
    layer's cut): past that point the layers with less pressure are cut
    instead.

    Example:

    >>> [round(r, 4) for r in layer_factors([1.0, 0.0, 0.5], 1.0)]
    [1.0, 2.7183, 1.6487]
    >>> layer_factors([1.0], 10.0)
    [0.5]
    >>> layer_factors([1.0, 1.0], 10.0, floors=[0.5, 0.9])
    [0.5, 0.9]
    """
    if floors is None:
        floors = [MIN_LAYER_FACTOR] * len(pressure)
    return [float(min(genetics.MAX_FACTOR, max(f, math.e * math.exp(-strength * p))))
            for p, f in zip(pressure, floors, strict=True)]


def layer_floors(p_c, genomes, max_cut, iterations=50):
    """Per-genome factor floors that cap each layer's cut in one generation.

    Floor `F_l` is the smallest cluster factor at which layer `l` keeps, in
    expectation, `1 - max_cut` of its live filters: `mean_c min(1, F_l p_c)
    = 1 - max_cut` over its live filters `c` (bisection), never below
    `MIN_LAYER_FACTOR`. Protected layers (and layers without live filters)
    get `MIN_LAYER_FACTOR`, which their odds ignore.

    Example: two live filters with odds 0.5 and 1 keep 0.75 in expectation
    at factor 1; keeping at least 0.9 needs `F = 1.6` (0.8 + 1 = 1.8 of 2).

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> g = SimpleNamespace(protected=False)
    >>> round(layer_floors([np.array([0.5, 1.0, 0.0])], [g], 0.1)[0], 4)
    1.6
    >>> layer_floors([np.array([0.5, 1.0])], [g], 0.9)
    [0.5]
    """
    if not 0.0 < float(max_cut) < 1.0:
        raise ValueError(f"max_cut must be in (0, 1), got {max_cut!r}.")
    keep = 1.0 - float(max_cut)
    floors = []
    for p, g in zip(p_c, genomes, strict=True):
        live = np.asarray(p, np.float64)
        live = live[live > 0]
        if g.protected or not live.size:
            floors.append(MIN_LAYER_FACTOR)
            continue
        floors.append(float(_bisect(
            lambda r, live=live: float(np.minimum(1.0, r * live).mean()), keep,
            MIN_LAYER_FACTOR, genetics.MAX_FACTOR, 1e-9, iterations, increasing=True)))
    return floors
