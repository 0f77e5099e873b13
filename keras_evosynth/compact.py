"""Compaction: masked filters physically removed, plain Keras layers out.

`compact(model)` rebuilds a model (functional or Sequential, evolvable or
plain) as a plain Keras functional model: every `EvoConv2D` /
`EvoDepthwiseConv2D` / `EvoDense` becomes the Keras layer it extends, holding
its *effective* weights (masked, quantized at its precision);
`FakeQuantActivation` layers are dropped (the LiteRT converter calibrates
activation ranges itself); and every channel that does not change the
outputs is removed from its producer and from all its consumers.

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
3. Rebuild: each layer with the kept channels only; folded constants go into
   biases (a bias is added where a layer had none).

Layers the analysis cannot see through (custom layers, channels-first,
grouped convolutions, non-elementwise activations, ...) are kept intact with
all their channels, and listed in the `CompactionReport`.
"""

import contextlib
import dataclasses
import warnings

import keras
import numpy as np
from keras import ops

from keras_evosynth import _channels as ch
from keras_evosynth import rewrites
from keras_evosynth._deprecation import warn_renamed
from keras_evosynth._graph import Rebuilder, trace
from keras_evosynth.conversion import _set_weights, _walk
from keras_evosynth.layers import EvoLayer, FakeQuantActivation

_NOT_WEIGHTS = ("synapse_mask", "cluster_mask")


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


def _count_weights(model):
    """Weights a deployed model holds: masks and activation ranges excluded."""
    total = 0
    for layer in _walk(model):
        if isinstance(layer, FakeQuantActivation):
            continue
        for weight in layer.weights:
            if weight.path.split("/")[-1] not in _NOT_WEIGHTS:
                total += int(np.prod(weight.shape))
    return total


@contextlib.contextmanager
def float32_policy():
    """Builds layers in float32 whatever the global Keras dtype policy is: a
    compacted model, a rewrite's layers and a latency micro-model are
    deployment models (a recipe trains under `mixed_bfloat16`, and layers
    built in it would carry bfloat16 ops, e.g. SpaceToDepth, that the int8
    converter refuses). Restores the policy after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32(layer, config):
    """`config` with a mixed-precision policy replaced by float32: the
    compacted model is the deployment model (LiteRT converts float32 and
    quantizes to int8 from it; float16 ops would need TF Select)."""
    if layer.dtype_policy.name.startswith("mixed_"):
        config["dtype"] = "float32"
    return config


def _from_config(layer, rebuilder, **overrides):
    """A fresh layer of the same class and config (unique name, float32
    instead of a mixed-precision policy)."""
    config = _float32(layer, {**layer.get_config(), **overrides})
    config["name"] = rebuilder.unique_name(layer.name)
    return type(layer).from_config(config)


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
    """

    def __init__(self, model, remove_channels):
        self.model = model
        self.graph = trace(model, "compact()" if remove_channels else "strip_evolvable()")
        self.specs = self.graph.specs
        self.report = CompactionReport(params_before=_count_weights(model))
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
                shape = self.specs[node.inputs[0]].shape
                self.pads[id(node)] = ch.padded(node.layer, shape)
        self.const = {}
        self.keep = {}
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
        if kept_out.any() and not (kept | need).any():
            need[0] = True  # never feed a layer an empty tensor
        return need

    # ------------------------------------------------------------ rebuild
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
        float32 whatever the global dtype policy (`float32_policy`)."""
        with float32_policy():
            return self._build(batch_shapes, space_to_depth)

    def _build(self, batch_shapes, space_to_depth):
        self.plans = self.space_to_depth_plans(space_to_depth)
        rebuilder = Rebuilder(self.graph, batch_shapes)
        clones = {}
        for node in self.graph.nodes:
            kind = self.kind[id(node)]
            out = node.outputs[0]
            if kind == "fakequant":
                rebuilder.tensors[out] = rebuilder.tensors[node.inputs[0]]
                self.report.dropped.append(node.layer.name)
            elif kind != "fixed" and not self.keep[out].any():
                rebuilder.tensors[out] = None
                self.report.dropped.append(node.layer.name)
                if kind in ("synaptic", "depthwise"):
                    self.report.channels[node.layer.name] = (0, len(self.keep[out]))
            elif kind in ("synaptic", "depthwise"):
                self._build_synaptic(rebuilder, node)
            elif kind == "concat":
                self._build_concat(rebuilder, node)
            elif kind == "fixed":
                self._build_fixed(rebuilder, node, clones)
            else:
                layer = _from_config(node.layer, rebuilder)
                if isinstance(layer, keras.layers.Reshape):
                    shape = list(layer.target_shape)
                    shape[-1] = int(self.keep[out].sum())
                    layer = _from_config(
                        node.layer, rebuilder, target_shape=tuple(shape)
                    )
                rebuilder.call(node, layer)
                kept = self.keep[node.inputs[0]]
                _set_weights(layer, [w[..., kept] for w in node.layer.get_weights()])
        model = rebuilder.model()
        self.report.params_after = _count_weights(model)
        return model

    def _build_fixed(self, rebuilder, node, clones):
        layer = node.layer
        if type(layer) in ch.PLAIN_CLASS:
            self._build_synaptic(rebuilder, node, full=True)
            return
        if not isinstance(layer, keras.layers.Layer):
            rebuilder.call(node, layer)  # stateless operation
            return
        if id(layer) not in clones:
            try:
                clones[id(layer)] = _from_config(layer, rebuilder)
            except Exception as error:  # noqa: BLE001 - any custom layer
                warnings.warn(
                    f"compact(): layer '{layer.name}' ({type(layer).__name__}) "
                    f"cannot be re-created from its config ({error}); the "
                    "compacted model shares it with the original.",
                    stacklevel=3,
                )
                clones[id(layer)] = layer
            new = clones[id(layer)]
            rebuilder.call(node, new)
            if new is not layer:
                _set_weights(new, layer.get_weights())
        else:
            rebuilder.call(node, clones[id(layer)])

    def _build_concat(self, rebuilder, node):
        parts = [
            rebuilder.tensors[t] for t in node.inputs if self.keep[t].any()
        ]
        out = node.outputs[0]
        if len(parts) == 1:
            rebuilder.tensors[out] = parts[0]
        else:
            layer = _from_config(node.layer, rebuilder)
            rebuilder.tensors[out] = layer(parts)

    def _build_synaptic(self, rebuilder, node, full=False):
        layer = node.layer
        kernel, bias = self.weights[id(node)]
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        if full:
            kept_in = np.ones(kernel.shape[-2], bool)
            width = kernel.shape[-1] * (kernel.shape[-2] if depthwise else 1)
            kept_out = np.ones(width, bool)
        else:
            kept_in = self.keep[node.inputs[0]]
            kept_out = self.keep[node.outputs[0]]
        if depthwise:
            new_kernel = kernel[:, :, kept_in, :]
            if bias is not None:
                bias = bias.reshape(len(kept_in), -1)[kept_in].reshape(-1)
        else:
            new_kernel, bias = self._fold(node, kernel, bias, kept_in, kept_out)
        config = _float32(layer, layer.get_config())
        config.pop("precision", None)
        config["name"] = rebuilder.unique_name(layer.name)
        if isinstance(layer, keras.layers.Dense):
            config["units"] = int(kept_out.sum())
        elif not depthwise:
            config["filters"] = int(kept_out.sum())
        config["use_bias"] = bias is not None
        plan = self.plans.get(id(node))
        if plan is None:
            new = ch.PLAIN_CLASS[type(layer)].from_config(config)
            rebuilder.call(node, new)
        else:
            x = rebuilder.tensors[node.inputs[0]]
            y, new = rewrites.apply_space_to_depth(x, plan, config, config["name"])
            rebuilder.tensors[node.outputs[0]] = y
            self.report.space_to_depth.append(new.name)
        if plan is None:
            weights = [new_kernel] + ([bias] if bias is not None else [])
        else:
            weights = rewrites.space_to_depth_weights(new_kernel, bias, plan)
        new.set_weights([w.astype(np.float32) for w in weights])
        self.report.channels[new.name] = (int(kept_out.sum()), len(kept_out))

    def _fold(self, node, kernel, bias, kept_in, kept_out):
        """Slices a Conv2D/Dense kernel; folds removed constant inputs."""
        kernel = kernel[..., kept_out]
        if bias is not None:
            bias = bias[kept_out]
        new_kernel = kernel[..., kept_in, :].copy()
        flat = kernel.reshape(-1, len(kept_in), kernel.shape[-1])
        removed = ~kept_in & (flat != 0).any(axis=(0, 2))
        if not removed.any():
            return new_kernel, bias
        const = self.const[node.inputs[0]]
        if not np.isfinite(const[removed]).all():
            raise RuntimeError(
                f"compact(): internal error, layer '{node.layer.name}' would lose "
                "a varying input channel; please report this model."
            )
        removed &= const != 0
        if not removed.any():
            return new_kernel, bias
        bias = np.zeros(kernel.shape[-1]) if bias is None else bias.copy()
        if self.pads[id(node)]:
            carriers = kept_in & np.isfinite(const) & (const != 0)
            carrier = int(np.argmax(np.where(carriers, np.abs(const), -1.0)))
            position = int(kept_in[:carrier].sum())
            scale = const[removed] / const[carrier]
            extra = np.tensordot(kernel[..., removed, :], scale, axes=([-2], [0]))
            new_kernel[..., position, :] += extra
        else:
            bias = bias + const[removed] @ flat.sum(axis=0)[removed]
        self.report.folded.append(node.layer.name)
        return new_kernel, bias


def compact(model, return_report=False, space_to_depth=None):
    """Rebuilds `model` as a plain Keras model holding only live channels.

    Evolvable layers become the Keras layers they extend with their
    effective (masked, quantized) weights, `FakeQuantActivation` layers are
    dropped, and every filter/unit whose removal leaves the outputs unchanged
    is removed together with the matching input channels of its consumers
    (through BatchNormalization, activations, pooling, padding, Concatenate,
    Add/Multiply, depthwise convolutions, Flatten/GlobalPooling, channel-safe
    Reshape). In inference mode the result computes what `model` computes
    with its activation fake-quantization off, up to float rounding.

    Args:
        model: A built functional or Sequential Keras model (nested models
            are inlined).
        return_report: Also return a `CompactionReport`.
        space_to_depth: Strided `Conv2D` layers to rewrite exactly as
            `SpaceToDepth` + a stride-1 convolution (`keras_evosynth.rewrites`):
            a list of layer names, True for every one that can be, a dict
            `{layer name: outputs_per_block}` (blocks of stride x m pixels,
            each computing m x m outputs, then `DepthToSpace`; a list means
            m = 1), or a `LatencyTable` (the layers and forms it measured
            faster, `LatencyTable.space_to_depth_layers`). None: none.

    Returns:
        The compacted `keras.Model` (a new model; `model` is untouched), or
        `(model, report)` with `return_report=True`.

    Raises:
        TypeError: `model` is not a functional or Sequential Keras model.
        ValueError: The model is not built, or a layer named in
            `space_to_depth` is missing or cannot be rewritten.

    Example:

    >>> import numpy as np
    >>> from keras_evosynth import evolvable
    >>> base = keras.Sequential([keras.Input((8, 8, 1)),
    ...                          keras.layers.Conv2D(4, 3, name="conv"),
    ...                          keras.layers.Flatten(),
    ...                          keras.layers.Dense(2)])
    >>> evo = evolvable(base, precision="int8")
    >>> evo.get_layer("conv").set_masks(cluster_mask=[1, 0, 0, 1])
    >>> small, report = compact(evo, return_report=True)
    >>> small.get_layer("conv").filters, report.channels["conv"]
    (2, (2, 4))
    >>> x = np.random.rand(3, 8, 8, 1).astype("float32")
    >>> bool(np.allclose(small(x), evo(x), atol=1e-5))
    True
    >>> fast = compact(base, space_to_depth=True)   # conv has stride 1: unchanged
    >>> strided = keras.Sequential([keras.Input((8, 8, 3)),
    ...                             keras.layers.Conv2D(4, 7, 2, "same", name="stem")])
    >>> fast = compact(strided, space_to_depth=["stem"])
    >>> [type(layer).__name__ for layer in fast.layers[1:]], fast.get_layer("stem").kernel_size
    (['SpaceToDepth', 'Conv2D'], (4, 4))
    >>> x = np.random.rand(2, 8, 8, 3).astype("float32")
    >>> bool(np.allclose(fast(x), strided(x), atol=1e-5))
    True
    >>> wide = compact(strided, space_to_depth={"stem": 2})   # 4x4 blocks, 2x2 outputs each
    >>> wide.get_layer("stem").kernel_size, wide.get_layer("stem").filters
    ((3, 3), 16)
    >>> bool(np.allclose(wide(x), strided(x), atol=1e-5))
    True
    """
    compactor = ChannelAnalysis(model, remove_channels=True)
    result = compactor.build(space_to_depth=space_to_depth)
    return (result, compactor.report) if return_report else result


def strip_evolvable(model):
    """`model` with plain Keras layers only, every channel kept.

    The inverse of `evolvable`, named like tfmot's `strip_pruning`: evolvable
    layers become `Conv2D` / `DepthwiseConv2D` / `Dense` holding their
    effective (masked, quantized) weights and `FakeQuantActivation` layers
    are dropped. It is the first step of `compact`, usable on its own (it is
    what the LiteRT converter needs); `compact` also removes the dead
    channels. `to_plain` is its deprecated alias (removed in 0.2.0).

    Example:

    >>> from keras_evosynth import evolvable
    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> [type(layer).__name__ for layer in strip_evolvable(evolvable(base)).layers]
    ['InputLayer', 'Dense']
    """
    return ChannelAnalysis(model, remove_channels=False).build()


def to_plain(model):
    """Deprecated alias of `strip_evolvable`, removed in 0.2.0 (the old name
    did not say what it does). Warns once per process."""
    warn_renamed("to_plain", "strip_evolvable")
    return strip_evolvable(model)
