"""keras_evosynth: evolutionary synthesis of small, fast Keras 3 networks
under synaptic precision restrictions, exported to int8 LiteRT.

Public API (everything else is internal):

- precision: `SynapticPrecision`, `quantizers` (`get`, `serialize`, `deserialize`)
- layers: `EvoConv2D`, `EvoDepthwiseConv2D`, `EvoDense`, `FakeQuantActivation`
- `evolvable(model, precision=..., layers=...)`, `summary(model)`
- evolution: `EvolutionCallback`, `ConstantEnvironment`, `ResourceTarget`,
  `genetics` (the pure maths), `Lineage`, `read_lineage`, `plot_lineage`
- retraining: `Distiller` (an offspring trained on its parent's outputs too)
- latency: `LatencyTable` (measured per-layer LiteRT costs; `predict(model)`)
- deployment: `compact(model)`, `to_plain(model)`, `export_tflite(model, data)`
"""

from keras_evosynth import genetics, quantizers
from keras_evosynth.callbacks import EvolutionCallback
from keras_evosynth.compact import CompactionReport, compact, to_plain
from keras_evosynth.conversion import evolvable
from keras_evosynth.distill import Distiller
from keras_evosynth.environment import ConstantEnvironment, ResourceTarget
from keras_evosynth.export import ExportReport, export_tflite
from keras_evosynth.latency import LatencyTable
from keras_evosynth.layers import (
    EvoConv2D,
    EvoDense,
    EvoDepthwiseConv2D,
    EvoLayer,
    FakeQuantActivation,
)
from keras_evosynth.lineage import Lineage, plot_lineage, read_lineage
from keras_evosynth.quantizers import SynapticPrecision
from keras_evosynth.stats import LayerStats, ModelStats, summary

__version__ = "0.1.0"

__all__ = [
    "CompactionReport",
    "ConstantEnvironment",
    "Distiller",
    "EvoConv2D",
    "EvoDense",
    "EvoDepthwiseConv2D",
    "EvoLayer",
    "EvolutionCallback",
    "ExportReport",
    "FakeQuantActivation",
    "LatencyTable",
    "LayerStats",
    "Lineage",
    "ModelStats",
    "ResourceTarget",
    "SynapticPrecision",
    "compact",
    "evolvable",
    "export_tflite",
    "genetics",
    "plot_lineage",
    "quantizers",
    "read_lineage",
    "summary",
    "to_plain",
]
