"""Compaction: masked filters physically removed, plain Keras layers out.

`compact(model)` rebuilds a model (functional or Sequential, evolvable or
plain) as a plain Keras functional model: every `EvoConv2D` /
`EvoDepthwiseConv2D` / `EvoDense` becomes the Keras layer it extends, holding
its *effective* weights (masked, quantized at its precision);
`FakeQuantActivation` layers are dropped (the LiteRT converter calibrates
activation ranges itself); and every channel that does not change the
outputs is removed from its producer and from all its consumers.

The analysis (which channels are removable, and why) is
`keras_evosynth.channel_analysis`; building the model from it is
`keras_evosynth._compaction`.
"""

import keras  # noqa: F401 (doctests)

from keras_evosynth._compaction import float32_policy
from keras_evosynth._deprecation import warn_renamed
from keras_evosynth.channel_analysis import ChannelAnalysis, CompactionReport

__all__ = ["ChannelAnalysis", "CompactionReport", "compact", "float32_policy",
           "strip_evolvable", "to_plain"]


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
