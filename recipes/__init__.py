"""Recipes: end-to-end experiments built on keras_evosynth.

- `recipes.detectnet`: GoogLeNet-based DetectNet (NVIDIA DIGITS) on KITTI or
  generated KITTI-format road scenes.
- `recipes.datasets`: offline classification data (Fashion-MNIST, digits).
"""
