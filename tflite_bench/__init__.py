"""tflite_bench: side-by-side LiteRT (.tflite) benchmarks, host and Android.

Measures any .tflite files (it does not import keras_evosynth or
TensorFlow): latency at batch 1 per thread count, memory, file size,
int8/float operator counts and, given labelled data, top-1 accuracy; one
table with ratios against the first model, JSON and an optional bar plot.

Public API:

- `compare(models, threads=..., runs=..., data=...) -> Report`
- `Report` (`rows`, `table()`, `to_json()`, `plot()`), `Row`
- `inspect_model(path) -> ModelInfo`
- `BenchError`
- CLI: `python -m tflite_bench a.tflite b.tflite --threads 1,2,4`
- baseline: `python -m tflite_bench.baselines.tfmot` (own process, tf_keras)

Example:

>>> import tflite_bench
>>> report = tflite_bench.compare(["float.tflite", "int8.tflite"],
...                               threads=[1, 2])  # doctest: +SKIP
>>> print(report.table())  # doctest: +SKIP
"""

from tflite_bench.bench import compare
from tflite_bench.errors import BenchError
from tflite_bench.modelinfo import ModelInfo, inspect_model
from tflite_bench.report import Report, Row

__all__ = [
    "BenchError",
    "ModelInfo",
    "Report",
    "Row",
    "compare",
    "inspect_model",
]
