#!/usr/bin/env bash
# GPU smoke run of the paper's setting: full-size (1248x384) width-1.0
# DetectNet, 300 training steps of batch 10 on 1,000 generated KITTI-format
# scenes, streamed + DIGITS augmentation + mixed_float16 on all visible GPUs.
# Prints images/s of the input pipeline and of training, peak RSS and peak
# GPU memory; writes benchmarks/results/gpu_smoke.json.
#   bash scripts/gpu_smoke.sh              # extra flags are passed on
set -euo pipefail
cd "$(dirname "$0")/.."
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "gpu_smoke: no nvidia-smi"
python3 -m benchmarks.kitti_stream --images=1000 --epochs=3 --width=1.0 \
  --strategy=mirrored --mixed_precision=mixed_float16 \
  --data_dir=runs/gpu_smoke_scenes --json=benchmarks/results/gpu_smoke.json "$@"
