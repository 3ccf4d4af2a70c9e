"""The compile check (ssgan.kernel_check): every Triton kernel compiled for a real GPU target without a GPU.

The compiler refuses to run under TRITON_INTERPRET=1, which tests/conftest.py sets, so the check runs in a
subprocess with it removed. The full sweep (both architectures, every preset, batch, dtype mode and config) is
`python -m ssgan.kernel_check`, which rewrites benchmarks/kernel_resources.md.
"""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


def run_check(*args, interpret=False):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-m", "ssgan.kernel_check", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_quick_subset_compiles_for_sm90_within_budgets_and_matches_the_table():
    """celebamask-256 at batch 16, one config per autotuned kernel, fp32 and bf16: compile errors, shared memory
    over the card's limit, spills over budget and a stale resource table all fail."""
    result = run_check("--quick")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def test_refuses_to_run_in_the_interpreter():
    result = run_check("--quick", interpret=True)
    assert result.returncode != 0 and "TRITON_INTERPRET" in result.stderr


def test_ptxas_log_and_occupancy():
    from ssgan.kernel_check import Result, _parse_ptxas_log

    log = """ptxas info    : Function properties for k
    16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers"""
    assert _parse_ptxas_log(log, "k") == dict(registers=255, stack=16, spill_stores=12, spill_loads=8)
    with pytest.raises(RuntimeError, match="no ptxas resource report"):
        _parse_ptxas_log("ptxas fatal", "k")
    # 128 registers x 256 threads = half the register file: 2 blocks of 8 warps, 16 of 64 warps
    assert Result("k", "", "fp32", 90, num_warps=8, registers=128).occupancy() == 0.25
    # shared memory limits: 100 KB per block leaves room for 2 blocks on sm_90 (228 KB), 1 on sm_80 (164 KB)
    assert Result("k", "", "fp32", 90, num_warps=4, registers=32, shared=100 * 1024).blocks_per_sm() == 2
    assert Result("k", "", "fp32", 80, num_warps=4, registers=32, shared=100 * 1024).blocks_per_sm() == 1


def test_resource_table_is_complete_and_spill_free():
    """The checked-in table has every kernel in every mode on both architectures, and no spills over budget."""
    from ssgan.kernel_check import CARDS, MODES, SPILL_BUDGETS, TABLE, read_table

    _, rows = read_table(TABLE)
    kernels = {"_bias_act_kernel", "_upfirdn2d_kernel", "_class_mlp_fwd_kernel", "_class_mlp_bwd_kernel",
               "_depth_fusion_fwd_kernel", "_depth_fusion_bwd_hidden_kernel", "_depth_fusion_bwd_depth_kernel",
               "_depth_fusion_bwd_params_kernel", "_scaled_conv_kernel", "_scaled_conv_weight_grad_kernel"}
    for kernel in kernels:
        for mode in MODES:
            for arch in CARDS:
                assert any(key[0] == kernel and key[2] == mode and key[3] == arch for key in rows), (kernel, mode, arch)
    for (kernel, config, mode, arch), row in rows.items():
        assert row["spill_stores"] <= SPILL_BUDGETS.get(kernel, (0, ""))[0], (kernel, config, mode, arch, row)
        assert row["registers"] > 32 or row["spill_stores"] == 0, "the 32-register pathology"


class _OnCuda:
    is_cuda = True


def test_auto_runs_cudnn_for_convolutions_and_triton_elsewhere(monkeypatch):
    from ssgan.kernels._dispatch import AUTO_ON_CUDA, resolve_impl

    monkeypatch.delenv("SSGAN_KERNELS", raising=False)
    cuda = _OnCuda()
    assert resolve_impl("auto", cuda, op="styled_conv2d") == "reference"
    assert resolve_impl("auto", cuda, op="modulated_conv2d") == "reference"
    for op in ("class_mlp", "depth_fusion", "bias_act", "upfirdn2d"):
        assert resolve_impl("auto", cuda, op=op) == "triton"
    assert resolve_impl("auto", torch.zeros(1), op="class_mlp") == "reference"
    assert resolve_impl("triton", torch.zeros(1), op="styled_conv2d") == "triton"  # every Triton path stays available
    assert all(evidence for _, evidence in AUTO_ON_CUDA.values())
