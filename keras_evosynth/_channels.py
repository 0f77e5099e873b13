"""Channel rules of the layers compaction sees through.

Each node of a traced graph (see `_graph`) gets a *kind* saying how its
tensors' channels (last axis, channels-last) relate:

- `"synaptic"`: Conv2D / Dense (plain or evolvable); output channels are
  free, an input channel is needed when a kept output uses it.
- `"depthwise"`: DepthwiseConv2D; input channel c owns outputs
  `c * depth_multiplier + m`, kept or removed together.
- `"channelwise"`: same channels in and out (BatchNormalization, elementwise
  activations, pooling, padding, cropping, dropout, channel-safe Reshape ...).
- `"fakequant"`: `FakeQuantActivation`, channelwise and dropped on rebuild.
- `"flatten"`: Flatten of a channels-last tensor (feature = pos * C + c).
- `"concat"`: Concatenate on the channel axis (offset bookkeeping).
- `"merge"`: Add / Subtract / Multiply / Average / Maximum / Minimum
  (inputs and output keep the same channels; 1-channel inputs broadcast).
- `"fixed"`: anything else; all its channels are kept and it is rebuilt
  unchanged (reported as intact).

The pure numpy helpers here compute, for channels that are *constant* (the
same value at every position and for every example, NaN = varying), the
constant a layer produces from constant inputs.
"""

import math

import keras
import numpy as np

from keras_evosynth.layers import (
    EvoConv2D,
    EvoDense,
    EvoDepthwiseConv2D,
    FakeQuantActivation,
)

L = keras.layers

PLAIN_CLASS = {
    EvoConv2D: L.Conv2D,
    EvoDense: L.Dense,
    EvoDepthwiseConv2D: L.DepthwiseConv2D,
    L.Conv2D: L.Conv2D,
    L.Dense: L.Dense,
    L.DepthwiseConv2D: L.DepthwiseConv2D,
}

# Activations computed value by value (safe to remove channels around).
ELEMENTWISE_ACTIVATIONS = frozenset(
    "celu elu exponential gelu hard_shrink hard_sigmoid hard_silu hard_swish "
    "hard_tanh leaky_relu linear log_sigmoid mish relu relu6 selu sigmoid silu "
    "soft_shrink softplus softsign sparse_plus squareplus swish tanh "
    "tanh_shrink".split()
)

IDENTITY_AT_INFERENCE = (
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianNoise,
    L.GaussianDropout,
    L.AlphaDropout,
    L.ActivityRegularization,
    L.Identity,
)
_SPATIAL = (
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
)
_PADDING = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)
_VALUEWISE = (L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Rescaling)
_MERGE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)


def activation_name(fn):
    """Registered name of an activation function (None for custom ones)."""
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # noqa: BLE001 - custom callables
        return None
    return name if isinstance(name, str) else None


def is_elementwise(fn):
    return activation_name(fn) in ELEMENTWISE_ACTIVATIONS


def channels(spec):
    """Channel count of a tensor spec (last axis), None if unknown/scalar."""
    shape = spec.shape
    if len(shape) < 2 or shape[-1] is None:
        return None
    return int(shape[-1])


def channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def classify(node, specs, shared):
    """Returns `(kind, reason)`; reason explains a `"fixed"` kind."""
    layer = node.layer
    ins = [channels(specs[t]) for t in node.inputs]
    outs = [channels(specs[t]) for t in node.outputs]
    name = type(layer).__name__
    if not isinstance(layer, keras.layers.Layer):
        return "fixed", f"operation {name} (not a layer)"
    if None in ins or None in outs or len(outs) != 1 or not ins:
        return "fixed", "tensors without a known channel axis"
    if not channels_last(layer):
        return "fixed", f"data_format={layer.data_format}"
    kind = type(layer)
    if kind in PLAIN_CLASS:
        if len(ins) != 1:
            return "fixed", "called on several tensors"
        if kind in (L.DepthwiseConv2D, EvoDepthwiseConv2D):
            return "depthwise", None
        if getattr(layer, "groups", 1) != 1:
            return "fixed", f"grouped convolution (groups={layer.groups})"
        return "synaptic", None
    if len(ins) == 1 and kind is L.Flatten:
        return "flatten", None
    if kind is L.Concatenate:
        rank = len(specs[node.outputs[0]].shape)
        if layer.axis not in (-1, rank - 1):
            return "fixed", f"concatenation on axis {layer.axis}"
        return "concat", None
    if kind in _MERGE:
        if any(c not in (1, outs[0]) for c in ins) or outs[0] not in ins:
            return "fixed", "inputs with mismatched channels"
        return "merge", None
    if len(ins) != 1 or ins[0] != outs[0]:
        return "fixed", f"{name} changes the channel axis"
    if shared and kind not in IDENTITY_AT_INFERENCE + _SPATIAL + _PADDING:
        # Shared stateful layers (e.g. one BN called twice) would need one
        # slice per call; keep them whole.
        return "fixed", "layer called several times"
    if kind is FakeQuantActivation:
        return "fakequant", None
    if kind in IDENTITY_AT_INFERENCE + _SPATIAL + _PADDING + (L.Reshape, L.PReLU):
        return "channelwise", None
    if kind is L.BatchNormalization:
        rank = len(specs[node.inputs[0]].shape)
        if layer.axis not in (-1, rank - 1):
            return "fixed", f"normalizes axis {layer.axis}"
        return "channelwise", None
    if kind is L.Activation and not is_elementwise(layer.activation):
        return "fixed", f"activation {activation_name(layer.activation)!r}"
    if kind is L.Rescaling and (
        np.ndim(layer.scale) > 0 or np.ndim(layer.offset) > 0
    ):
        return "fixed", "per-channel rescaling"
    if kind in _VALUEWISE:
        return "channelwise", None
    return "fixed", f"unsupported layer type {name}"


# --------------------------------------------------------------- constants
def padded(layer, input_shape):
    """Whether a convolution pads its input (so constant inputs stop being
    constant at the borders). Dense never pads."""
    if not hasattr(layer, "padding") or layer.padding == "valid":
        return False
    spatial = input_shape[1:-1]
    for size, k, s, d in zip(
        spatial, layer.kernel_size, layer.strides, layer.dilation_rate, strict=True
    ):
        if size is None:
            return True
        out = math.ceil(size / s)
        if (out - 1) * s + (k - 1) * d + 1 - size > 0:
            return True
    return False


def apply_activation(fn, values):
    """`fn` applied to the finite entries of `values` (NaN stays NaN)."""
    if not is_elementwise(fn):
        return np.full_like(values, np.nan)
    finite = np.isfinite(values)
    x = np.where(finite, values, 0.0).astype(np.float32)
    y = keras.ops.convert_to_numpy(fn(keras.ops.convert_to_tensor(x)))
    return np.where(finite, y.astype(np.float64), np.nan)


def synaptic_constants(kernel, bias, const_in, pads, activation):
    """Output constants of a Conv2D/Dense with `kernel` `(..., in, out)`."""
    k = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).astype(np.float64)
    used = (k != 0).any(axis=0)  # (in, out)
    finite = np.isfinite(const_in)
    bad = ~finite | ((const_in != 0) & pads)
    varying = (used & bad[:, None]).any(axis=0)
    values = np.where(finite & ~bad, const_in, 0.0) @ k.sum(axis=0)
    if bias is not None:
        values = values + bias
    return apply_activation(activation, np.where(varying, np.nan, values))


def depthwise_constants(kernel, bias, const_in, pads, activation):
    """Output constants of a DepthwiseConv2D, kernel `(kh, kw, in, mult)`."""
    k = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).astype(np.float64)
    dead = ~(k != 0).any(axis=0)  # (in, mult)
    c = const_in[:, None]
    uniform = np.isfinite(c) & ((c == 0) | (not pads))
    values = np.where(dead, 0.0, np.where(uniform, c, np.nan) * k.sum(axis=0))
    values = values.reshape(-1)
    if bias is not None:
        values = values + bias
    return apply_activation(activation, values)


def channelwise_constants(layer, const_in):
    """Output constants of a `"channelwise"`/`"fakequant"` layer."""
    if isinstance(layer, L.BatchNormalization):
        w = {v.path.split("/")[-1]: keras.ops.convert_to_numpy(v) for v in layer.weights}
        scale = 1.0 / np.sqrt(w["moving_variance"].astype(np.float64) + layer.epsilon)
        if layer.scale:
            scale = scale * w["gamma"]
        out = (const_in - w["moving_mean"]) * scale
        return out + w["beta"] if layer.center else out
    if isinstance(layer, _PADDING):
        return np.where(const_in == 0, 0.0, np.nan)
    if isinstance(layer, L.PReLU):
        return np.where(const_in >= 0, const_in, np.nan)
    if isinstance(layer, _VALUEWISE):
        finite = np.isfinite(const_in)
        x = np.where(finite, const_in, 0.0).astype(np.float32)[None]
        y = keras.ops.convert_to_numpy(layer(x))[0].astype(np.float64)
        return np.where(finite, y, np.nan)
    return const_in.copy()


def merge_constants(layer, consts, out_channels):
    """Output constants of a merge layer (1-channel inputs broadcast)."""
    c = np.stack([np.broadcast_to(x, (out_channels,)) for x in consts])
    if isinstance(layer, L.Multiply):
        zero = (c == 0).any(axis=0)
        return np.where(zero, 0.0, np.prod(c, axis=0))
    if isinstance(layer, L.Subtract):
        return c[0] - c[1]
    if isinstance(layer, L.Average):
        return c.mean(axis=0)
    if isinstance(layer, L.Maximum):
        return c.max(axis=0)
    if isinstance(layer, L.Minimum):
        return c.min(axis=0)
    return c.sum(axis=0)
