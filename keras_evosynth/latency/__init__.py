"""Measured LiteRT latency: a per-layer lookup table that predicts a model's
int8 latency on this host (or on a device), and the expectation the
latency-target environment solves against.

MACs are not latency (DESIGN.md §5b): a 7x7/2 convolution on 3 channels can
run 100x slower per MAC than a 64->64 3x3 one, and thin layers sit in a
per-pixel-overhead regime where cutting filters saves nothing. So the
environment sees *measured* costs, as NetAdapt, HALP and Once-for-All do:

- every timed operation of the model is an **op**: a Conv2D / Dense
  (evolvable or plain; cost over a 2-D grid of live input channels x live
  filters), a DepthwiseConv2D (1-D grid over live channels), or a layer whose
  cost scales with its channels (pooling, Concatenate, Add/Multiply,
  standalone BatchNormalization and activations, padding, ...; 1-D grid);
  BatchNormalization and ReLU/ReLU6 right after a convolution are folded
  into it (as the LiteRT converter does), and so is a ZeroPadding2D that
  equals the `"same"` padding of the convolutions reading it;
  Dropout/Flatten/Reshape are free;
- a layer without a micro-model whose size no offspring changes
  (compaction keeps it whole: Normalization, LayerNormalization, custom
  layers, `keras.ops` calls, ...) is a fixed cost, priced in the fixed
  remainder below; one whose channels follow evolvable layers is refused,
  or priced there too with `measure(..., untimed="ignore")` and recorded
  (`model_ops`);
- each op is timed as an int8 micro-model (int8 inputs and outputs, so no
  QUANTIZE op) at its real input size with the LiteRT interpreter, minus the
  cost of invoking an empty model, interleaved round by round with the
  other points of its grid;
- the grid starts coarse (a few multiples of `step` per axis, the maximum
  included) and is refined by bisection where neighbouring points differ by
  more than `refine` of the point's cost *and* matter for the model (more
  than `0.5 %` of the sum of all ops); costs are interpolated linearly
  between grid points, never assumed monotone or convex;
- the **fixed remainder** (input quantize, output dequantize, the
  interpreter's own overhead) and the **scale** of op costs inside one graph
  (ops run faster in a graph than alone, the more so the thinner they are)
  come from the whole model timed at `ANCHOR_KEEP` fractions of its filters
  (random cuts, interleaved), once per architecture: a model whose op costs
  sum to `g` is predicted by the piecewise-linear curve through the anchors'
  `(sum of op costs, whole)` points, and beyond the outermost anchors by the
  least-squares line's slope `scale` (`_whole`). The relation is not a line:
  thin ops cost less in a graph than alone far more than wide ones do
  (MobileNetV2 on a Sapphire Rapids host: the op sums at 100 / 40 / 10 % of
  the filters are 3.10 / 1.42 / 1.25 ms, the whole models 3.53 / 1.44 /
  0.65 ms).

Ops that share a signature (kind, configuration, input size) are measured
once. Tables are cached as JSON, one file per CPU, runtime version and
thread count; a second `measure` of the same model re-times nothing.

The package, one concept per module: `ops` (the timed operations of a
model, `model_ops`), `folding` (what the converter folds away, priced at
nothing), `grid` (grid axes, `Entry`), `timing` (micro-models,
the LiteRT interpreter and interleaved timer of `tflite_bench.host`),
`calibration` (measuring a table: grids, then the whole-model anchors),
`curve` (the anchor curve), `expectation` (`kept_channels`,
`LatencyExpectation`) and `table` (`LatencyTable`). How a latency target
allocates its cut from these costs is the environment's side
(`keras_evosynth.environments.latency_target`).

Example:

>>> import keras
>>> model = keras.Sequential([keras.Input((16, 16, 3)),
...     keras.layers.Conv2D(8, 3, name="c"), keras.layers.BatchNormalization(),
...     keras.layers.ReLU(), keras.layers.MaxPooling2D(name="p"),
...     keras.layers.Flatten(), keras.layers.Dense(4, name="d")])
>>> [(op.name, op.kind, op.cin, op.cout) for op in model_ops(model)]
[('c', 'conv2d', 3, 8), ('p', 'channel', 8, 8), ('d', 'dense', 392, 4)]
>>> model_ops(model)[0].signature["activation"]  # BN and ReLU fold into the conv
'relu'
"""

from keras_evosynth.latency.calibration import ANCHOR_BRANCHES, ANCHOR_KEEP, MAX_GRID_POINTS
from keras_evosynth.latency.expectation import LatencyExpectation, kept_channels
from keras_evosynth.latency.grid import TILE, Entry
from keras_evosynth.latency.ops import (
    OUTPUTS_PER_BLOCK,
    PRICINGS,
    UNTIMED,
    Op,
    OpList,
    fingerprint,
    model_ops,
    pricing_summary,
    space_to_depth_forms,
    space_to_depth_op,
)
from keras_evosynth.latency.table import FORMAT, LatencyTable
from keras_evosynth.latency.timing import time_interleaved

__all__ = [
    "ANCHOR_BRANCHES",
    "ANCHOR_KEEP",
    "FORMAT",
    "MAX_GRID_POINTS",
    "OUTPUTS_PER_BLOCK",
    "PRICINGS",
    "TILE",
    "UNTIMED",
    "Entry",
    "LatencyExpectation",
    "LatencyTable",
    "Op",
    "OpList",
    "fingerprint",
    "kept_channels",
    "model_ops",
    "pricing_summary",
    "space_to_depth_forms",
    "space_to_depth_op",
    "time_interleaved",
]
