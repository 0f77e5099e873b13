"""The channel analysis behind compaction, export and the latency table.

How channels are found removable, exactly:

1. Constants, forward. A channel whose filter is dead (all-zero effective
   kernel) outputs its bias, a constant. Constants flow through
   BatchNormalization (which turns a dead filter's 0 into
   `beta - mean * gamma / sqrt(var + eps)`, generally not 0), elementwise
   activations, pooling, Concatenate, Add/Multiply, ... A convolution whose
   used inputs are all constant outputs a constant unless it pads the input
   (zero padding makes a non-zero constant non-uniform at the borders).
2. Needed channels, backward to a fixed point. Model inputs and outputs keep
   all channels. A Conv2D/Dense needs an input channel when a kept output
   uses it and it is not a constant it can absorb: a constant folds into the
   bias when the layer does not pad (Dense, 1x1 or 'valid' convolutions); a
   zero constant needs nothing; under 'same' padding all non-zero constant
   inputs are folded into *one* kept constant "carrier" channel
   (`W[carrier] += c_k / c_carrier * W[k]`, exact because every constant
   channel is zero-padded the same way). Channelwise layers, Add/Multiply
   groups and depthwise convolutions couple their channels; Concatenate maps
   them with offsets; Flatten maps a channel to all its positions.

Layers the analysis cannot see through (custom layers, channels-first,
grouped convolutions, non-elementwise activations, ...) are kept intact with
all their channels, and listed in the `CompactionReport`. Building the
smaller model from the analysis (`ChannelAnalysis.build`) is
`keras_evosynth._compaction`'s.
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from keras_evosynth import _channels as ch
from keras_evosynth import _compaction, rewrites
from keras_evosynth._graph import trace
from keras_evosynth.layers import EvoLayer


@dataclasses.dataclass
class CompactionReport:
    """What `compact` did.

    Attributes:
        channels: `{layer name: (kept, total)}` output channels of every
            Conv2D / DepthwiseConv2D / Dense layer.
        intact: `[(layer name, reason)]` layers kept whole because the
            analysis cannot see through them (their channels all stay).
        folded: Names of layers whose bias (or carrier channel) absorbed
            removed constant input channels.
        dropped: Names of layers removed (`FakeQuantActivation`, layers whose
            every output channel was removed).
        space_to_depth: Names of the strided convolutions rewritten as
            `SpaceToDepth` + a stride-1 convolution (`keras_evosynth.rewrites`;
            their kernels hold the added zeros).
        params_before: Weights of the input model (masks excluded).
        params_after: Weights of the compacted model.
    """

    channels: dict = dataclasses.field(default_factory=dict)
    intact: list = dataclasses.field(default_factory=list)
    folded: list = dataclasses.field(default_factory=list)
    dropped: list = dataclasses.field(default_factory=list)
    space_to_depth: list = dataclasses.field(default_factory=list)
    params_before: int = 0
    params_after: int = 0

    @property
    def removed_channels(self):
        """Output channels removed from Conv2D/DepthwiseConv2D/Dense layers."""
        return sum(total - kept for kept, total in self.channels.values())

    def __str__(self):
        lines = [
            f"compaction: {self.params_before:,} -> {self.params_after:,} weights, "
            f"{self.removed_channels} channels removed"
        ]
        lines += [f"  {n}: {k}/{t} channels" for n, (k, t) in self.channels.items()]
        lines += [f"  kept intact: {n} ({why})" for n, why in self.intact]
        lines += [f"  space-to-depth: {n}" for n in self.space_to_depth]
        return "\n".join(lines)


def _effective(layer):
    """(kernel, bias) numpy arrays the layer multiplies by."""
    if isinstance(layer, EvoLayer):
        kernel = layer.effective_kernel()
        bias = layer.effective_bias()
    else:
        kernel = getattr(layer, "depthwise_kernel", None)
        kernel = layer.kernel if kernel is None else kernel
        bias = layer.bias if layer.use_bias else None
    return (
        ops.convert_to_numpy(kernel).astype(np.float64),
        None if bias is None else ops.convert_to_numpy(bias).astype(np.float64),
    )


def _space_to_depth_plan(layer, input_shape, outputs_per_block=1):
    """`rewrites.space_to_depth_plan` for a layer, or `(None, reason)`."""
    conv = isinstance(layer, keras.layers.Conv2D) and not isinstance(
        layer, keras.layers.DepthwiseConv2D)
    if not conv or type(layer) not in ch.PLAIN_CLASS:
        return None, "only Conv2D layers can be"
    if layer.groups != 1 or layer.data_format != "channels_last":
        return None, "grouped or channels_first convolution"
    return rewrites.space_to_depth_plan(
        layer.kernel_size, layer.strides, layer.padding, input_shape[1:3], layer.dilation_rate,
        outputs_per_block=outputs_per_block,
    )


class ChannelAnalysis:
    """The channel analysis of one model, and the compacted model it builds.

    The one analysis that compaction, `export_litert` and the latency table
    share (they build it, nobody else re-switches on the node kinds): the
    model traced once (`graph`), the kind of every node by the one rule
    table (`_channels.classify`: synaptic, depthwise, channelwise, concat,
    merge, flatten, fakequant, fixed; `report.intact` says why a node is
    fixed), the constant value of every dead channel (`const`), and which
    channels every tensor keeps (`keep`, by tensor id). `build()` makes the
    physically smaller plain Keras model (`compact`), or, with
    `remove_channels=False`, the plain one with every channel
    (`strip_evolvable`).

    Args:
        model: A functional or Sequential model (Evo layers or plain).
        remove_channels: Find the removable channels (False: keep all).
        dead: Names of layers analysed as if every filter of theirs were
            dead (kernel and bias 0): what `keep` then still holds of their
            outputs is what compaction keeps whatever their masks say
            (channels an opaque consumer reads whole).
    """

    def __init__(self, model, remove_channels, dead=()):
        self.model = model
        self.graph = trace(model, "compact()" if remove_channels else "strip_evolvable()")
        self.specs = self.graph.specs
        self.report = CompactionReport(params_before=_compaction.count_weights(model))
        calls = {}
        for node in self.graph.nodes:
            calls[id(node.layer)] = calls.get(id(node.layer), 0) + 1
        self.kind, self.weights, self.pads = {}, {}, {}
        for node in self.graph.nodes:
            kind, reason = ch.classify(node, self.specs, calls[id(node.layer)] > 1)
            if not remove_channels and kind != "fakequant":
                kind, reason = "fixed", None
            self.kind[id(node)] = kind
            if reason is not None:
                self.report.intact.append((node.layer.name, reason))
            if type(node.layer) in ch.PLAIN_CLASS:
                self.weights[id(node)] = _effective(node.layer)
                if node.layer.name in dead:
                    self.weights[id(node)] = tuple(
                        None if w is None else np.zeros_like(w) for w in self.weights[id(node)])
                shape = self.specs[node.inputs[0]].shape
                self.pads[id(node)] = ch.padded(node.layer, shape)
        self.const = {}
        self.keep = {}
        self._dead = frozenset(dead)
        self._forward()
        self._backward(remove_channels)

    # ----------------------------------------------------------- analysis
    def _c(self, tid):
        return ch.channels(self.specs[tid])

    def _forward(self):
        for tid in keras.tree.flatten(self.graph.inputs):
            if self._c(tid) is not None:
                self.const[tid] = np.full(self._c(tid), np.nan)
        for node in self.graph.nodes:
            kind, layer = self.kind[id(node)], node.layer
            ins = [self.const.get(t) for t in node.inputs]
            if kind == "synaptic":
                out = ch.synaptic_constants(
                    *self.weights[id(node)], ins[0], self.pads[id(node)], layer.activation
                )
            elif kind == "depthwise":
                out = ch.depthwise_constants(
                    *self.weights[id(node)], ins[0], self.pads[id(node)], layer.activation
                )
            elif kind in ("channelwise", "fakequant"):
                out = ch.channelwise_constants(layer, ins[0])
            elif kind == "flatten":
                out = np.tile(ins[0], self._c(node.outputs[0]) // len(ins[0]))
            elif kind == "concat":
                out = np.concatenate(ins)
            elif kind == "merge":
                out = ch.merge_constants(layer, ins, self._c(node.outputs[0]))
            else:
                out = None
            for tid in node.outputs:
                if self._c(tid) is not None:
                    self.const[tid] = (
                        np.full(self._c(tid), np.nan) if out is None else out
                    )

    def _set(self, tid, mask):
        """ORs `mask` into keep[tid]; returns True when it changed."""
        old = self.keep[tid]
        new = old | mask
        if (new != old).any():
            self.keep[tid] = new
            return True
        return False

    def _backward(self, remove_channels):
        for tid, spec in self.specs.items():
            c = ch.channels(spec)
            self.keep[tid] = np.full(c or 0, not remove_channels)
        for tid in keras.tree.flatten((self.graph.inputs, self.graph.outputs)):
            self._set(tid, True)
        for node in self.graph.nodes:
            fixed = self.kind[id(node)] == "fixed"
            if fixed or (
                self.kind[id(node)] in ("synaptic", "depthwise")
                and not ch.is_elementwise(node.layer.activation)
            ):
                for tid in node.outputs + (node.inputs if fixed else []):
                    self._set(tid, True)
        changed = True
        while changed:
            changed = False
            for node in reversed(self.graph.nodes):
                changed |= self._propagate(node)

    def _propagate(self, node):
        kind, keep = self.kind[id(node)], self.keep
        ins, outs = node.inputs, node.outputs
        changed = False
        if kind in ("channelwise", "fakequant"):
            union = keep[ins[0]] | keep[outs[0]]
            changed = self._set(ins[0], union) | self._set(outs[0], union)
        elif kind == "flatten":
            c = self._c(ins[0])
            union = keep[ins[0]] | keep[outs[0]].reshape(-1, c).any(axis=0)
            changed = self._set(ins[0], union)
            changed |= self._set(outs[0], np.tile(union, len(keep[outs[0]]) // c))
        elif kind == "concat":
            start = 0
            for tid in ins:
                end = start + self._c(tid)
                union = keep[tid] | keep[outs[0]][start:end]
                changed |= self._set(tid, union)
                full = keep[outs[0]].copy()
                full[start:end] = union
                changed |= self._set(outs[0], full)
                start = end
        elif kind == "merge":
            width = self._c(outs[0])
            union = keep[outs[0]].copy()
            for tid in ins:
                if self._c(tid) == width:
                    union |= keep[tid]
                else:
                    changed |= self._set(tid, True)
            for tid in ins + outs:
                if self._c(tid) == width:
                    changed |= self._set(tid, union)
        elif kind == "depthwise":
            c = self._c(ins[0])
            union = keep[ins[0]] | keep[outs[0]].reshape(c, -1).any(axis=1)
            changed = self._set(ins[0], union)
            changed |= self._set(outs[0], np.repeat(union, len(keep[outs[0]]) // c))
        elif kind == "synaptic":
            changed = self._set(ins[0], self._needed_inputs(node))
        return changed

    def _needed_inputs(self, node):
        kernel, _ = self.weights[id(node)]
        tid = node.inputs[0]
        kept_out = self.keep[node.outputs[0]]
        k = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1])
        used = (k[:, :, kept_out] != 0).any(axis=(0, 2))
        const, kept = self.const[tid], self.keep[tid]
        finite = np.isfinite(const)
        need = used & ~finite
        if self.pads[id(node)]:
            loose = used & finite & (const != 0) & ~kept & ~need
            carriers = (kept | need) & finite & (const != 0)
            if loose.any() and not carriers.any():
                need[np.argmax(np.where(loose, np.abs(const), -1.0))] = True
        if kept_out.any() and not (kept | need).any() and not self._dead:
            need[0] = True  # never feed a layer an empty tensor (a build's rule, not a pin)
        return need

    # ------------------------------------------------------ space to depth
    def space_to_depth_plans(self, selection):
        """`{node id: SpaceToDepthPlan}` for `selection` (see `compact`)."""
        if selection is None or selection is False:
            return {}
        if not isinstance(selection, (bool, list, tuple, set, frozenset, dict)):
            selection = selection.space_to_depth_layers(self.model)  # a LatencyTable
        if selection is True:
            blocks = None
        elif isinstance(selection, dict):
            blocks = dict(selection)
        else:
            blocks = dict.fromkeys(selection, 1)
        if blocks is not None and not all(isinstance(n, str) for n in blocks):
            raise TypeError(
                "space_to_depth must be True, a list of layer names, a dict {layer name: "
                f"outputs_per_block}} or a LatencyTable, got {selection!r}."
            )
        plans, seen = {}, set()
        for node in self.graph.nodes:
            layer = node.layer
            if blocks is not None and layer.name not in blocks:
                continue
            seen.add(layer.name)
            plan, why = _space_to_depth_plan(layer, self.specs[node.inputs[0]].shape,
                                             1 if blocks is None else blocks[layer.name])
            if plan is not None:
                plans[id(node)] = plan
            elif blocks is not None:
                raise ValueError(
                    f"space_to_depth: layer '{layer.name}' ({type(layer).__name__}) "
                    f"cannot be rewritten: {why}."
                )
        if blocks is not None and blocks.keys() - seen:
            raise ValueError(
                f"space_to_depth: no layer named {sorted(blocks.keys() - seen)} in "
                f"'{self.model.name}'."
            )
        return plans

    def build(self, batch_shapes=None, space_to_depth=None):
        """The compacted (or, `remove_channels=False`, plain) model, built in
        float32 whatever the global dtype policy (`float32_policy`); fills
        the rest of `report`.

        Args:
            batch_shapes: The new model's input batch shapes (None: the
                traced model's).
            space_to_depth: See `compact`.
        """
        return _compaction.build(self, batch_shapes, space_to_depth)
