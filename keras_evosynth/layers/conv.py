"""Evolvable convolutions: `EvoConv2D` and `EvoDepthwiseConv2D`."""

import keras
from keras import ops

from keras_evosynth.layers.base import EvoLayer


@keras.saving.register_keras_serializable(package="keras_evosynth")
class EvoConv2D(EvoLayer, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with synapse/cluster masks and a weight precision.

    Takes every `Conv2D` argument, in `Conv2D`'s positional order, plus the
    keyword-only `precision` (see `keras_evosynth.quantizers.get`). With
    all-ones masks and `precision="float32"` it computes exactly what
    `Conv2D` computes. A cluster is one output filter. `set_weights` also
    takes a plain `Conv2D`'s `[kernel, bias]` (the masks stay), and
    `kernel.constraint` is an instance of the user's `kernel_constraint`.

    Example:

    >>> import numpy as np
    >>> layer = EvoConv2D(4, 3, precision="int4")
    >>> y = layer(np.ones((1, 8, 8, 2), "float32"))
    >>> layer.set_masks(cluster_mask=[1, 0, 1, 1])
    >>> layer.count_clusters(), layer.count_synapses() <= 3 * 3 * 2 * 3
    (3, True)
    """

    def __init__(self, filters, kernel_size, *args, precision="float32", **kwargs):
        super().__init__(filters, kernel_size, *args, **kwargs)
        self._init_evo(precision)

    def _compute_outputs(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="keras_evosynth")
class EvoDepthwiseConv2D(EvoLayer, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with masks and a weight precision.

    A cluster is one output channel, `in_channel * depth_multiplier + m`, so
    the cluster mask has `in_channels * depth_multiplier` entries. Takes every
    `DepthwiseConv2D` argument in its positional order, plus the keyword-only
    `precision`.

    Example:

    >>> import numpy as np
    >>> layer = EvoDepthwiseConv2D(3, depth_multiplier=2, precision="int8")
    >>> y = layer(np.ones((1, 8, 8, 3), "float32"))
    >>> tuple(layer.cluster_mask.shape)
    (6,)
    """

    _channel_axes = 2

    def __init__(self, kernel_size, *args, precision="float32", **kwargs):
        super().__init__(kernel_size, *args, **kwargs)
        self._init_evo(precision)

    def _compute_outputs(self, inputs, kernel):
        return ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
