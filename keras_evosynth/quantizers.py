"""Synaptic precision: the weight quantizer the offspring are trained at.

`SynapticPrecision(bits)` is a symmetric, per-output-channel, narrow-range fake
quantizer: for `b` bits each output channel `c` gets the scale
`s_c = max|w_c| / (2^(b-1) - 1)` and a weight becomes `s_c * round(w / s_c)`,
an integer in `[-(2^(b-1) - 1), 2^(b-1) - 1]` times the scale. Gradients pass
straight through (STE). `bits=32` is float passthrough.

Example:

>>> import numpy as np
>>> q = get("int2")
>>> np.asarray(q(np.array([[-1.0], [-0.4], [0.2], [0.9]]))).ravel().tolist()
[-1.0, 0.0, 0.0, 1.0]
"""

import math

import keras
import numpy as np
from keras import ops

SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)

# The smallest per-channel range; an all-zero channel (a dead cluster) then
# quantizes to exact zeros instead of dividing by zero.
_MIN_RANGE = 1e-12


@keras.saving.register_keras_serializable(package="keras_evosynth")
class SynapticPrecision:
    """Symmetric per-output-channel fake quantizer for kernels.

    Args:
        bits: Bit-width of the deployed synapses, one of 2..8, 16 or 32
            (32 = float32, no quantization).

    Calling it on a kernel whose last `channel_axes` axes index the output
    channels returns the fake-quantized kernel (same shape and dtype) with
    straight-through gradients.

    Example:

    >>> q = SynapticPrecision(4)
    >>> q.levels
    15
    >>> SynapticPrecision.from_config(q.get_config()) == q
    True
    """

    def __init__(self, bits=8):
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
            raise TypeError(
                f"SynapticPrecision: `bits` must be an int in {SUPPORTED_BITS}, "
                f"got {bits!r} of type {type(bits).__name__}."
            )
        if int(bits) not in SUPPORTED_BITS:
            raise ValueError(
                f"SynapticPrecision: unsupported bit-width {bits}; supported: {SUPPORTED_BITS}."
            )
        self.bits = int(bits)

    @property
    def is_float(self):
        """True for the float32 passthrough (`bits=32`)."""
        return self.bits == 32

    @property
    def qmax(self):
        """Largest integer level, `2^(bits-1) - 1` (None for float32)."""
        return None if self.is_float else 2 ** (self.bits - 1) - 1

    @property
    def levels(self):
        """Number of distinct values per channel, `2^bits - 1` (None for float32)."""
        return None if self.is_float else 2 * self.qmax + 1

    def __call__(self, kernel, channel_axes=1):
        """Fake-quantizes `kernel` per output channel.

        Args:
            kernel: Tensor or array; its last `channel_axes` axes together
                index the output channels (1 for Conv2D/Dense kernels, 2 for
                DepthwiseConv2D's `(kh, kw, in, multiplier)`).
            channel_axes: How many trailing axes form the channel index.

        Returns:
            A tensor of the same shape, on the quantization grid.
        """
        kernel = ops.convert_to_tensor(kernel)
        if self.is_float:
            return kernel
        shape = ops.shape(kernel)
        channels = math.prod(kernel.shape[-channel_axes:])
        flat = ops.reshape(kernel, (-1, channels))
        max_abs = ops.stop_gradient(ops.maximum(ops.max(ops.abs(flat), axis=0), _MIN_RANGE))
        quantized = keras.quantizers.fake_quant_with_min_max_vars(
            flat,
            -max_abs,
            max_abs,
            num_bits=self.bits,
            narrow_range=True,
            axis=-1,
        )
        return ops.reshape(quantized, shape)

    def scales(self, kernel, channel_axes=1):
        """Per-channel step sizes `max|w_c| / qmax` as a numpy array."""
        kernel = np.asarray(kernel, dtype=np.float32)
        flat = kernel.reshape(-1, math.prod(kernel.shape[-channel_axes:]))
        max_abs = np.maximum(np.abs(flat).max(axis=0), _MIN_RANGE)
        if self.is_float:
            return np.zeros_like(max_abs)
        return max_abs / self.qmax

    def quantize_numpy(self, kernel, channel_axes=1):
        """Pure numpy reference of `__call__`, float32 step for step like TF's
        `FakeQuantWithMinMaxVarsPerChannel` (nudged range, round half up).

        Used by the genetics, where `q(|w|)` is needed on plain arrays.
        """
        kernel = np.asarray(kernel, dtype=np.float32)
        if self.is_float:
            return kernel.copy()
        flat = kernel.reshape(-1, math.prod(kernel.shape[-channel_axes:]))
        max_abs = np.maximum(np.abs(flat).max(axis=0), np.float32(_MIN_RANGE))
        one = np.float32(1)
        quant_max = np.float32(2**self.bits - 1)
        scale = (max_abs + max_abs) / (quant_max - one)
        zero_point = np.clip(np.round(one + max_abs / scale), one, quant_max)
        nudged_min = (one - zero_point) * scale
        nudged_max = (quant_max - zero_point) * scale
        shifted = np.clip(flat, nudged_min, nudged_max) - nudged_min
        steps = np.floor(shifted * (one / scale) + np.float32(0.5))
        return (steps * scale + nudged_min).astype(np.float32).reshape(kernel.shape)

    def get_config(self):
        return {"bits": self.bits}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, SynapticPrecision) and other.bits == self.bits

    def __hash__(self):
        return hash(("SynapticPrecision", self.bits))

    def __repr__(self):
        return f"SynapticPrecision(bits={self.bits})"


ALIASES = {
    **{f"int{b}": b for b in SUPPORTED_BITS if b <= 16},
    "float32": 32,
    "float": 32,
}


def get(identifier):
    """Returns a `SynapticPrecision` from an alias, bit count, config or instance.

    Args:
        identifier: `"int8"`, `"int4"`, `"int2"` (any `"int<b>"` with b in
            2..8 or 16), `"float32"`, an int bit count, a dict produced by
            `serialize`, a `SynapticPrecision`, or None (float32).

    Example:

    >>> get("int4").bits, get(8).bits, get(None).bits
    (4, 8, 32)
    """
    if identifier is None:
        return SynapticPrecision(32)
    if isinstance(identifier, SynapticPrecision):
        return identifier
    if isinstance(identifier, str):
        if identifier not in ALIASES:
            raise ValueError(
                f"Unknown synaptic precision {identifier!r}; use one of "
                f"{sorted(ALIASES)} or an int in {SUPPORTED_BITS}."
            )
        return SynapticPrecision(ALIASES[identifier])
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, (int, np.integer)) and not isinstance(identifier, bool):
        return SynapticPrecision(int(identifier))
    raise TypeError(
        f"Cannot interpret {identifier!r} (type {type(identifier).__name__}) "
        "as a synaptic precision."
    )


def serialize(precision):
    """Serializes a precision to a Keras-style config dict."""
    return keras.saving.serialize_keras_object(get(precision))


def deserialize(config):
    """Inverse of `serialize`."""
    obj = keras.saving.deserialize_keras_object(
        config, custom_objects={"SynapticPrecision": SynapticPrecision}
    )
    if not isinstance(obj, SynapticPrecision):
        raise ValueError(f"Config {config!r} is not a SynapticPrecision.")
    return obj
