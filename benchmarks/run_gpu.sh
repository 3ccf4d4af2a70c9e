#!/usr/bin/env bash
# On a CUDA machine: compile every kernel for real, run the GPU tests and all benchmarks, and print a table
# to append to benchmarks/RESULTS.md (with the card's name, versions and date).
set -euo pipefail
cd "$(dirname "$0")/.."
export TRITON_INTERPRET=0
out=${1:-benchmarks/last_gpu_run}
mkdir -p "$out"
python -c "import torch, triton; print(f'{torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | $(date -u +%F)')" | tee "$out/card.txt"
python -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.txt"
python -m pytest -q -p no:cacheprovider benchmarks/ --benchmark-enable --benchmark-json="$out/benchmarks.json" \
    --benchmark-columns=median,min,max,rounds 2>&1 | tee "$out/benchmarks.txt"
python benchmarks/summarize.py "$out/benchmarks.json" | tee "$out/table.md"
