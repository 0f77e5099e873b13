"""keras_evosynth: evolutionary synthesis of small, fast Keras 3 networks
under synaptic precision restrictions, exported to int8 LiteRT.

Public API (everything else is internal):

- precision: `SynapticPrecision`, `quantizers` (`get`, `serialize`, `deserialize`)
- layers: `EvoConv2D`, `EvoDepthwiseConv2D`, `EvoDense`, `FakeQuantActivation`
- `evolvable(model, precision=..., layers=...)`, `summary(model)`
- evolution: `EvolutionCallback`, the environments (`Environment`, the base
  of `ConstantEnvironment`, `ResourceTarget` and `LatencyTarget`), `genetics` (the pure
  maths), `Lineage`, `read_lineage`, `plot_lineage`
- retraining: `ParentDistiller` (an offspring trained on its parent's outputs
  too)
- latency: `LatencyTable` (measured per-layer LiteRT costs; `predict(model)`)
- deployment: `compact(model)`, `strip_evolvable(model)`,
  `export_litert(model, data)`

Deprecated aliases, removed in 0.2.0 (each warns once): `Distiller`
(`ParentDistiller`), `to_plain` (`strip_evolvable`), `export_tflite`
(`export_litert`).
"""

from keras_evosynth import genetics, quantizers
from keras_evosynth.callbacks import EvolutionCallback
from keras_evosynth.compact import CompactionReport, compact, strip_evolvable, to_plain
from keras_evosynth.conversion import evolvable
from keras_evosynth.distill import Distiller, ParentDistiller
from keras_evosynth.environments import (
    ConstantEnvironment,
    Environment,
    LatencyTarget,
    ResourceTarget,
)
from keras_evosynth.export import ExportReport, export_litert, export_tflite
from keras_evosynth.latency import LatencyTable
from keras_evosynth.layers import (
    EvoConv2D,
    EvoDense,
    EvoDepthwiseConv2D,
    EvoLayer,
    FakeQuantActivation,
)
from keras_evosynth.lineage import Lineage, read_lineage
from keras_evosynth.plotting import plot_lineage
from keras_evosynth.quantizers import SynapticPrecision
from keras_evosynth.stats import LayerStats, ModelStats, summary

__version__ = "0.1.0"

__all__ = [
    "CompactionReport",
    "ConstantEnvironment",
    "Environment",
    "EvoConv2D",
    "EvoDense",
    "EvoDepthwiseConv2D",
    "EvoLayer",
    "EvolutionCallback",
    "ExportReport",
    "FakeQuantActivation",
    "LatencyTable",
    "LatencyTarget",
    "LayerStats",
    "Lineage",
    "ModelStats",
    "ParentDistiller",
    "ResourceTarget",
    "SynapticPrecision",
    "compact",
    "evolvable",
    "export_litert",
    "genetics",
    "plot_lineage",
    "quantizers",
    "read_lineage",
    "strip_evolvable",
    "summary",
    # deprecated aliases (removed in 0.2.0)
    "Distiller",
    "export_tflite",
    "to_plain",
]
