#!/usr/bin/env bash
# Trains the paper regime's caches on a GPU machine: the width-1.0 DetectNet
# ancestor and the family widths (docs/detectnet.md, "The paper's regime"),
# each with the ancestor's settings (3,000 generated scenes, 500 validation,
# 384x128, DIGITS augmentation, to the plateau), in float32 so that any CPU
# host can evolve from them with --mixed_precision=float32 (the caches record
# the policy). Resumable: rerun it and every finished width loads, a killed
# one goes on from its last epoch. Then packs them without the Adam state
# (recipes.detectnet.cache; the ancestor 24 MB) into $OUT/cache.
#
#   OUT=/tmp/out bash scripts/gpu_paper_cache.sh           # WIDTHS="1.0 0.5" for some
#   cp -r /tmp/out/cache/. runs/detectnet_paper/           # on the CPU host, then:
#   python -m recipes.detectnet.evolve --cache_dir=runs/detectnet_paper \
#       --mixed_precision=float32 --out_dir=runs/detectnet_paper_e8 ...
#
# Extra arguments go to every training, after the defaults (a smoke run:
# WIDTHS=0.15 CACHE=/tmp/c OUT=/tmp/o bash scripts/gpu_paper_cache.sh
# --num_train=20 --num_val=10 --epochs=1).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the packed caches}"
CACHE="${CACHE:-runs/detectnet_paper}"
WIDTHS="${WIDTHS:-1.0 0.5 0.35 0.25 0.15}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "gpu_paper_cache: no nvidia-smi"
for width in $WIDTHS; do
  if [ "$width" = "1.0" ]; then dir="$CACHE/ancestor"; else dir="$CACHE/family/width_$width"; fi
  echo "--- width $width -> $dir ($(date -u +%H:%M:%S))"
  python3 -m recipes.detectnet.train --width="$width" --num_train=3000 --num_val=500 \
    --epochs=60 --plateau=4 --batch_size=10 --learning_rate=0.001 --seed=0 \
    --image_height=128 --image_width=384 --mixed_precision=float32 --out_dir="$dir" "$@"
done
python3 -m recipes.detectnet.cache --cache_dir="$CACHE" --to="$OUT/cache"
du -sh "$OUT/cache"
