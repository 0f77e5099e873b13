"""Evolvable fully-connected layer: `EvoDense`."""

import keras
from keras import ops

from keras_evosynth.layers.base import EvoLayer


@keras.saving.register_keras_serializable(package="keras_evosynth")
class EvoDense(EvoLayer, keras.layers.Dense):
    """`keras.layers.Dense` with synapse/cluster masks and a weight precision.

    A cluster is one output unit. Takes every `Dense` argument in its
    positional order, plus the keyword-only `precision`; with all-ones masks
    and float32 it equals `Dense`.

    Example:

    >>> import numpy as np
    >>> layer = EvoDense(3, precision="int8")
    >>> y = layer(np.ones((2, 5), "float32"))
    >>> layer.set_masks(synapse_mask=np.eye(5, 3))
    >>> layer.count_synapses(), layer.count_macs()
    (3, 3)
    """

    def __init__(self, units, *args, precision="float32", **kwargs):
        super().__init__(units, *args, **kwargs)
        self._init_evo(precision)

    def call(self, inputs, training=None):
        return EvoLayer.call(self, inputs)

    def _compute_outputs(self, inputs, kernel):
        return ops.matmul(inputs, kernel)
