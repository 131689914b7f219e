#!/usr/bin/env bash
# The GPU figures issue 13 still needs, as one script for one GPU host (docs/performance.md):
#   1. throughput, memory and checkpoint cost per reference model, and the aggregate throughput
#      of 1, 2 and 4 trials packed on the GPU (the default packing's ceiling) with the projection;
#   2. covbench's trial loop against a hand-written CUDA loop with the same device options.
# Every figure goes to $OUT (default ./gpu-figures). About 8 minutes on one H200.
#   bash scripts/gpu_engine_check.sh            # on the GPU host (after `source .gpu/env-on-gpu-host.sh`)
#   TINY=1 bash scripts/gpu_engine_check.sh     # the same steps on a CPU in about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-figures}"
mkdir -p "$OUT"
export COVBENCH_CACHE="${COVBENCH_CACHE:-$OUT/cache}"
if [[ -n "${TINY:-}" ]]; then
  python scripts/gpu_check.py --tiny --epochs 1 --models unet --concurrent 1,2 --json "$OUT/gpu_check.json" \
    | tee "$OUT/gpu_check.txt"
  python benchmarks/bench_training.py --models unet --preset smoke --epochs 1 --repeats 1 \
    --json "$OUT/bench_training.json" | tee "$OUT/bench_training.txt"
else
  nvidia-smi | tee "$OUT/nvidia-smi.txt" || true
  python scripts/gpu_check.py --epochs 3 --concurrent 1,2,4 --json "$OUT/gpu_check.json" \
    | tee "$OUT/gpu_check.txt"
  python benchmarks/bench_training.py --device cuda --preset paper --epochs 1 --repeats 2 \
    --json "$OUT/bench_training.json" | tee "$OUT/bench_training.txt"
fi
