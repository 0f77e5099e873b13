"""Evolvable Keras layers (masks + synaptic precision)."""

from keras_evosynth.layers.activation import FakeQuantActivation
from keras_evosynth.layers.base import EvoLayer
from keras_evosynth.layers.conv import EvoConv2D, EvoDepthwiseConv2D
from keras_evosynth.layers.dense import EvoDense

__all__ = [
    "EvoConv2D",
    "EvoDense",
    "EvoDepthwiseConv2D",
    "EvoLayer",
    "FakeQuantActivation",
]
