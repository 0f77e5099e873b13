"""Benchmarks: `python -m benchmarks.<name>` (see the README's tables)."""

import sys as _sys

if _sys.argv[:1] == ["-m"]:  # `python -m benchmarks.<name>` is starting (see tflite_bench.quiet)
    from tflite_bench import quiet as _quiet

    if _quiet.launched_as_module_of(__name__):
        # before the benchmark imports TensorFlow: its native log lines
        # (absl::InitializeLog, oneDNN, CUDA) hidden unless --verbose
        _quiet.quiet_startup()
