"""Step 3 of compaction: the physically smaller plain Keras model built from a
`ChannelAnalysis` (each layer with its kept channels only, folded constants
in biases, optional space-to-depth rewrites), in float32."""

import contextlib
import warnings

import keras
import numpy as np

from keras_evosynth import _channels as ch
from keras_evosynth import rewrites
from keras_evosynth._graph import Rebuilder
from keras_evosynth.conversion import _set_weights, _walk
from keras_evosynth.layers import FakeQuantActivation

_NOT_WEIGHTS = ("synapse_mask", "cluster_mask")


def count_weights(model):
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


def build(analysis, batch_shapes, space_to_depth):
    """The model `analysis` describes, in float32 (`float32_policy`), with
    `analysis.report` completed (dropped, channels, folded, params_after)."""
    with float32_policy():
        return _build(analysis, batch_shapes, space_to_depth)


def _build(analysis, batch_shapes, space_to_depth):
    plans = analysis.space_to_depth_plans(space_to_depth)
    rebuilder = Rebuilder(analysis.graph, batch_shapes)
    clones = {}
    for node in analysis.graph.nodes:
        kind = analysis.kind[id(node)]
        out = node.outputs[0]
        if kind == "fakequant":
            rebuilder.tensors[out] = rebuilder.tensors[node.inputs[0]]
            analysis.report.dropped.append(node.layer.name)
        elif kind != "fixed" and not analysis.keep[out].any():
            rebuilder.tensors[out] = None
            analysis.report.dropped.append(node.layer.name)
            if kind in ("synaptic", "depthwise"):
                analysis.report.channels[node.layer.name] = (0, len(analysis.keep[out]))
        elif kind in ("synaptic", "depthwise"):
            _build_synaptic(analysis, rebuilder, node, plans.get(id(node)))
        elif kind == "concat":
            _build_concat(analysis, rebuilder, node)
        elif kind == "fixed":
            _build_fixed(analysis, rebuilder, node, clones, plans.get(id(node)))
        else:
            layer = _from_config(node.layer, rebuilder)
            if isinstance(layer, keras.layers.Reshape):
                shape = list(layer.target_shape)
                shape[-1] = int(analysis.keep[out].sum())
                layer = _from_config(node.layer, rebuilder, target_shape=tuple(shape))
            rebuilder.call(node, layer)
            kept = analysis.keep[node.inputs[0]]
            _set_weights(layer, [w[..., kept] for w in node.layer.get_weights()])
    model = rebuilder.model()
    analysis.report.params_after = count_weights(model)
    return model


def _build_fixed(analysis, rebuilder, node, clones, plan):
    layer = node.layer
    if type(layer) in ch.PLAIN_CLASS:
        _build_synaptic(analysis, rebuilder, node, plan, full=True)
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

def _build_concat(analysis, rebuilder, node):
    parts = [
        rebuilder.tensors[t] for t in node.inputs if analysis.keep[t].any()
    ]
    out = node.outputs[0]
    if len(parts) == 1:
        rebuilder.tensors[out] = parts[0]
    else:
        layer = _from_config(node.layer, rebuilder)
        rebuilder.tensors[out] = layer(parts)

def _build_synaptic(analysis, rebuilder, node, plan, full=False):
    layer = node.layer
    kernel, bias = analysis.weights[id(node)]
    depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
    if full:
        kept_in = np.ones(kernel.shape[-2], bool)
        width = kernel.shape[-1] * (kernel.shape[-2] if depthwise else 1)
        kept_out = np.ones(width, bool)
    else:
        kept_in = analysis.keep[node.inputs[0]]
        kept_out = analysis.keep[node.outputs[0]]
    if depthwise:
        new_kernel = kernel[:, :, kept_in, :]
        if bias is not None:
            bias = bias.reshape(len(kept_in), -1)[kept_in].reshape(-1)
    else:
        new_kernel, bias = _fold(analysis, node, kernel, bias, kept_in, kept_out)
    config = _float32(layer, layer.get_config())
    config.pop("precision", None)
    config["name"] = rebuilder.unique_name(layer.name)
    if isinstance(layer, keras.layers.Dense):
        config["units"] = int(kept_out.sum())
    elif not depthwise:
        config["filters"] = int(kept_out.sum())
    config["use_bias"] = bias is not None
    if plan is None:
        new = ch.PLAIN_CLASS[type(layer)].from_config(config)
        rebuilder.call(node, new)
    else:
        x = rebuilder.tensors[node.inputs[0]]
        y, new = rewrites.apply_space_to_depth(x, plan, config, config["name"])
        rebuilder.tensors[node.outputs[0]] = y
        analysis.report.space_to_depth.append(new.name)
    if plan is None:
        weights = [new_kernel] + ([bias] if bias is not None else [])
    else:
        weights = rewrites.space_to_depth_weights(new_kernel, bias, plan)
    new.set_weights([w.astype(np.float32) for w in weights])
    analysis.report.channels[new.name] = (int(kept_out.sum()), len(kept_out))

def _fold(analysis, node, kernel, bias, kept_in, kept_out):
    """Slices a Conv2D/Dense kernel; folds removed constant inputs."""
    kernel = kernel[..., kept_out]
    if bias is not None:
        bias = bias[kept_out]
    new_kernel = kernel[..., kept_in, :].copy()
    flat = kernel.reshape(-1, len(kept_in), kernel.shape[-1])
    removed = ~kept_in & (flat != 0).any(axis=(0, 2))
    if not removed.any():
        return new_kernel, bias
    const = analysis.const[node.inputs[0]]
    if not np.isfinite(const[removed]).all():
        raise RuntimeError(
            f"compact(): internal error, layer '{node.layer.name}' would lose "
            "a varying input channel; please report this model."
        )
    removed &= const != 0
    if not removed.any():
        return new_kernel, bias
    bias = np.zeros(kernel.shape[-1]) if bias is None else bias.copy()
    if analysis.pads[id(node)]:
        carriers = kept_in & np.isfinite(const) & (const != 0)
        carrier = int(np.argmax(np.where(carriers, np.abs(const), -1.0)))
        position = int(kept_in[:carrier].sum())
        scale = const[removed] / const[carrier]
        extra = np.tensordot(kernel[..., removed, :], scale, axes=([-2], [0]))
        new_kernel[..., position, :] += extra
    else:
        bias = bias + const[removed] @ flat.sum(axis=0)[removed]
    analysis.report.folded.append(node.layer.name)
    return new_kernel, bias
