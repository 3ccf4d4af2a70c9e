#!/usr/bin/env bash
# On a CUDA machine: compile every kernel for real, run the GPU tests and the GPU benchmarks, and write a
# table to append to benchmarks/RESULTS.md (with the card's name, versions and date).
#
#   bash benchmarks/run_gpu.sh [quick|full] [OUTDIR]      (OUTDIR defaults to $OUT, else benchmarks/last_gpu_run)
#
# quick (default; about 9 minutes at most, for a lent device's short budget): the registers and spills the driver
#   reports against benchmarks/kernel_resources.md, the GPU tests, the Triton-vs-cuDNN render-net conv rows that
#   decide what impl="auto" runs (kernels/_dispatch.py), then the rows that issue #3's targets read, without
#   torch.compile; each stage is time-boxed, so a slow stage cannot starve the others, and each leaves its own
#   JSON and table.
# full: every GPU benchmark, torch.compile rows included (compiling takes a minute or more per case).
set -uo pipefail  # no -e: a failed or timed-out stage still leaves the other stages' results
cd "$(dirname "$0")/.."
export TRITON_INTERPRET=0
mode=${1:-quick}
out=${2:-${OUT:-benchmarks/last_gpu_run}}
mkdir -p "$out"
python -c "import torch, triton; print(f'{torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | $(date -u +%F)')" | tee "$out/card.txt"

stage() {  # stage NAME SECONDS PYTEST-ARGS...
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most ${seconds}s)"
    timeout "$seconds" python -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee "$out/$name.txt"
    if [ -f "$out/$name.json" ]; then
        { echo "### $name"; python benchmarks/summarize.py "$out/$name.json"; echo; } | tee -a "$out/table.md"
    fi
}
bench() {  # bench NAME SECONDS PYTEST-ARGS...: a stage of benchmarks, kept short by few rounds
    local name=$1 seconds=$2
    shift 2
    stage "$name" "$seconds" --benchmark-enable --benchmark-json="$out/$name.json" --benchmark-min-rounds=3 \
        --benchmark-max-time=0.2 --benchmark-columns=median,min,max,rounds "$@"
}

echo "== kernel_resources (at most 120s): driver-reported registers and spills vs benchmarks/kernel_resources.md"
timeout 120 python -m ssgan.kernel_check --driver "$out/kernel_resources_driver.md" 2>&1 | tail -n 40 | tee "$out/kernel_resources.txt"
stage gpu_tests 150 tests/test_gpu.py
bench render_convs 150 benchmarks/bench_modulated_conv2d.py -k "render_conv"
if [ "$mode" = quick ]; then
    bench local_generators 60 benchmarks/bench_class_mlp.py benchmarks/bench_depth_fusion.py -k "forward_backward and not compiled"
    bench modulated_conv 60 benchmarks/bench_modulated_conv2d.py -k "forward_backward and not render_conv"
    bench train_256 120 benchmarks/bench_train.py -k "celebamask-256"
else
    bench kernels 1800 benchmarks/bench_class_mlp.py benchmarks/bench_depth_fusion.py benchmarks/bench_modulated_conv2d.py \
        benchmarks/bench_bias_act.py benchmarks/bench_upfirdn2d.py -k "not cpu"
    bench model 3600 benchmarks/bench_model_gpu.py
    bench train 1200 benchmarks/bench_train.py -k "not cpu"
fi
echo "table: $out/table.md"
