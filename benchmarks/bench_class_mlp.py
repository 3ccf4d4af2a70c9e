"""class_mlp on the GPU (CUDA-synchronised; skipped on the CPU): Triton vs the eager reference vs
torch.compile(reference), forward and forward + backward, at the paper's local-generator size
(K=13 classes, C=64 channels, L=10 layers, a 64x64 grid of P=4096 points). Peak memory in extra_info.

    pytest benchmarks/bench_class_mlp.py --benchmark-enable
"""
import math

import pytest
import torch
from conftest import compiled, measure_peak, requires_cuda, synchronized
from ssgan.kernels.class_mlp import class_mlp, class_mlp_reference

pytestmark = requires_cuda

K, C, L, P, DEPTH_LAYER = 13, 64, 10, 4096, 5
BATCHES = (4, 16)
DTYPES = {"float32": torch.float32, "float16": torch.float16}

compiled_reference = compiled(class_mlp_reference)


IMPLS = {
    "triton": lambda *args: class_mlp(*args, impl="triton"),
    "reference": class_mlp_reference,
    "compiled": compiled_reference,
}


def inputs(batch, dtype, requires_grad=False):
    """Scaled like the generator's: unit positions, styles near 1, class 0 without depth."""
    depth_weight = torch.randn(K, C, device="cuda") / math.sqrt(C)
    depth_weight[0] = 0
    tensors = (
        torch.randn(P, C, device="cuda"),
        torch.randn(K, L, C, C, device="cuda"),
        0.2 * torch.randn(K, L, C, device="cuda"),
        1 + 0.5 * torch.randn(batch, K, L, C, device="cuda"),
        depth_weight,
        torch.randn(K, device="cuda"),
    )
    return [t.to(DTYPES[dtype]).requires_grad_(requires_grad) for t in tensors]


def describe(record, impl, batch, dtype):
    record.update(impl=impl, batch=batch, dtype=dtype, K=K, C=C, L=L, P=P,
                  tf32=torch.backends.cuda.matmul.allow_tf32)  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_class_mlp_forward(benchmark, record, impl, batch, dtype):
    args = (*inputs(batch, dtype), DEPTH_LAYER)
    describe(record, impl, batch, dtype)
    fn = synchronized(IMPLS[impl])
    with torch.no_grad():
        measure_peak(record, lambda: fn(*args))
        benchmark(fn, *args)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("impl", IMPLS)
def test_class_mlp_forward_backward(benchmark, record, impl, batch, dtype):
    leaves = inputs(batch, dtype, requires_grad=True)
    describe(record, impl, batch, dtype)
    grad_hidden = torch.randn(batch, K, P, C, device="cuda", dtype=DTYPES[dtype])
    grad_depth = torch.randn(batch, K, P, device="cuda", dtype=DTYPES[dtype])

    def step():
        hidden, depth = IMPLS[impl](*leaves, DEPTH_LAYER)
        return torch.autograd.grad((hidden, depth), leaves, (grad_hidden, grad_depth))

    fn = synchronized(step)
    measure_peak(record, fn)
    benchmark(fn)
