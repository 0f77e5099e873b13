"""keras_evosynth: evolutionary synthesis of small, fast Keras 3 networks
under synaptic precision restrictions, exported to int8 LiteRT.

Public API (everything else is internal):

- `SynapticPrecision`, `quantizers` (`get`, `serialize`, `deserialize`)
- layers: `EvoConv2D`, `EvoDepthwiseConv2D`, `EvoDense`, `FakeQuantActivation`
- `evolvable(model, precision=..., layers=...)`
- `summary(model)`
"""

from keras_evosynth import quantizers
from keras_evosynth.conversion import evolvable
from keras_evosynth.layers import (
    EvoConv2D,
    EvoDense,
    EvoDepthwiseConv2D,
    EvoLayer,
    FakeQuantActivation,
)
from keras_evosynth.quantizers import SynapticPrecision
from keras_evosynth.stats import LayerStats, ModelStats, summary

__version__ = "0.1.0"

__all__ = [
    "EvoConv2D",
    "EvoDense",
    "EvoDepthwiseConv2D",
    "EvoLayer",
    "FakeQuantActivation",
    "LayerStats",
    "ModelStats",
    "SynapticPrecision",
    "evolvable",
    "quantizers",
    "summary",
]
