"""Recipes: end-to-end experiments built on keras_evosynth.

- `recipes.detectnet`: GoogLeNet-based DetectNet (NVIDIA DIGITS) on KITTI or
  generated KITTI-format road scenes.
- `recipes.datasets`: offline classification data (Fashion-MNIST, digits).
"""

import sys as _sys

if _sys.argv[:1] == ["-m"]:  # `python -m recipes.<app>` is starting (see tflite_bench.quiet)
    from tflite_bench import quiet as _quiet

    if _quiet.launched_as_module_of(__name__):
        # before any recipe module imports TensorFlow: its native log lines
        # (absl::InitializeLog, oneDNN, CUDA) hidden unless --verbose
        _quiet.quiet_startup()
