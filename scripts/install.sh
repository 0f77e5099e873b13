#!/usr/bin/env bash
# Installs everything keras_evosynth needs on a fresh Debian/Ubuntu machine:
# the offline Fashion-MNIST data set (Debian package, optional) and the
# package with its dev and plot extras, editable.
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
