"""Softmax-depth fusion on the GPU (CUDA-synchronised; skipped on the CPU).

CelebAMask-HQ sizes (K=13 classes with two transparent, C=64 hidden channels, F=512 features, 64x64 grid),
four ways: the Triton kernels (one K*C reduction, the K feature maps never written), the eager reference
(weights the hidden maps, then one [P, K*C] x [K*C, F] matmul), torch.compile of the reference, and the
original formulation (materialise the K feature maps [B, K, F, P], then blend). Each records its peak
memory above the inputs in extra_info.

    pytest benchmarks/bench_depth_fusion.py --benchmark-enable
"""
import pytest
import torch

from conftest import compiled, measure_peak, requires_cuda, synchronized
from ssgan.kernels.depth_fusion import depth_fusion, depth_fusion_naive, depth_fusion_reference

pytestmark = requires_cuda

K, C, F, P = 13, 64, 512, 64 * 64
TRANSPARENT = (10, 12)
BATCHES = [4, 16]
DTYPES = {"float32": torch.float32, "float16": torch.float16}

compiled_reference = compiled(depth_fusion_reference)


IMPLS = {
    "triton": lambda *a: depth_fusion(*a, impl="triton"),
    "reference": depth_fusion_reference,
    "compiled": compiled_reference,
    "naive": depth_fusion_naive,
}


def fusion_inputs(batch, dtype, requires_grad=False):
    make = lambda *shape: torch.randn(*shape, device="cuda", dtype=dtype, requires_grad=requires_grad)  # noqa: E731
    transparent = torch.zeros(K, dtype=torch.bool, device="cuda")
    transparent[list(TRANSPARENT)] = True
    return make(batch, K, P), make(batch, K, P, C), make(K, F, C), make(K, F), transparent


def describe(record, impl, batch, dtype):
    record.update(impl=impl, batch=batch, dtype=dtype, K=K, C=C, F=F, P=P,
                  gflop=2 * batch * K * C * F * P / 1e9)  # the K*C x F GEMM per pixel


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_depth_fusion_forward(benchmark, record, impl, batch, dtype):
    inputs = fusion_inputs(batch, DTYPES[dtype])
    describe(record, impl, batch, dtype)
    fn = IMPLS[impl]
    with torch.no_grad():
        measure_peak(record, lambda: fn(*inputs))
        benchmark(synchronized(fn), *inputs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_depth_fusion_forward_backward(benchmark, record, impl, batch, dtype):
    *params, transparent = fusion_inputs(batch, DTYPES[dtype], requires_grad=True)
    describe(record, impl, batch, dtype)
    fn = IMPLS[impl]
    grad_features = torch.randn(batch, F, P, device="cuda", dtype=DTYPES[dtype])
    grad_mask = torch.randn(batch, K, P, device="cuda", dtype=DTYPES[dtype])

    def step():
        return torch.autograd.grad(fn(*params, transparent), params, (grad_features, grad_mask))

    measure_peak(record, step)
    benchmark(synchronized(step))
