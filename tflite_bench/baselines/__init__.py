"""Baselines to compare evolved models with, each run in its own process.

- `tflite_bench.baselines.tfmot`: magnitude pruning + pruning-preserving QAT
  with tensorflow-model-optimization on `tf_keras` (optional `baselines`
  extra), exported to int8 .tflite.
- `tflite_bench.baselines.archs`: small architectures written against a
  `keras` module argument, so one definition builds the Keras 3 model and
  the `tf_keras` baseline alike.

Importing this package imports neither TensorFlow nor tfmot.
"""
