#!/usr/bin/env bash
# Installs everything keras_evosynth needs on a fresh Debian/Ubuntu machine:
# the offline Fashion-MNIST data set (Debian package, optional) and the
# package with its dev and plot extras, editable, and the tfmot baseline
# (tensorflow-model-optimization + tf-keras, used only in a child process).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist) \
    || echo "install.sh: dataset-fashion-mnist not installed; recipes fall back to scikit-learn digits" >&2
fi
python3 -m pip install --upgrade pip -q
python3 -m pip install -e ".[dev,plot]"
# The `baselines` extra, without its dependencies: tfmot 0.8.1 pins
# absl-py~=1.2 and plain pip would downgrade the absl-py 2.x that TensorFlow
# 2.21 brings (docs/tflite_bench.md). dm-tree is the one dependency tfmot
# needs that TensorFlow does not already install. --no-warn-conflicts: pip
# would end with its resolver's red "ERROR: pip's dependency resolver does
# not currently take into account ... tensorflow-model-optimization 0.8.1
# requires absl-py~=1.2 ..." lines, the expected outcome of this route, said
# in one line below instead (a failing install still stops here, with pip's
# own error and exit status).
python3 -m pip install --no-deps --no-warn-conflicts "tensorflow-model-optimization==0.8.1" \
  "tf-keras>=2.21,<2.22"
python3 -m pip install --no-warn-conflicts dm-tree
echo "install.sh: tensorflow-model-optimization 0.8.1 installed without its pins" \
  "(absl-py~=1.2, mock): the tfmot baseline runs with TensorFlow 2.21's absl-py 2.x" \
  "(docs/tflite_bench.md); pip check lists them."
