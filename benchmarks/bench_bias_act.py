"""bias_act on the GPU (CUDA-synchronised; skipped on the CPU): Triton vs the reference vs
torch.compile(reference), forward and forward + backward, at the model's sizes (celebamask-256, batch 8).

    pytest benchmarks/bench_bias_act.py --benchmark-enable
"""

import pytest
import torch
from conftest import compiled, requires_cuda, synchronized
from ssgan.kernels.bias_act import bias_act, bias_act_reference

pytestmark = requires_cuda

compiled_reference = compiled(bias_act_reference)


IMPLS = {
    "triton": lambda *a, **k: bias_act(*a, **k, impl="triton"),
    "reference": bias_act_reference,
    "compiled": compiled_reference,
}

# name -> (shape, dim, act)
CASES = {
    "disc-conv-256": ((8, 128, 256, 256), 1, "lrelu"),  # the discriminator's first ResBlock
    "disc-conv-32": ((8, 512, 32, 32), 1, "lrelu"),
    "mapping-linear": ((8, 512), -1, "lrelu"),  # EqualLinear of the mapping network
}
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def inputs(case, dtype, requires_grad=False):
    shape, dim, act = CASES[case]
    x = torch.randn(shape, device="cuda", dtype=DTYPES[dtype], requires_grad=requires_grad)
    bias = torch.randn(shape[dim], device="cuda", dtype=DTYPES[dtype], requires_grad=requires_grad)
    return x, bias, {"dim": dim, "act": act}


def describe(record, impl, case, dtype, x):
    record.update(impl=impl, case=case, dtype=dtype, shape=list(x.shape), mbytes=2 * x.numel() * x.element_size() / 1e6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", IMPLS)
def test_bias_act_forward(benchmark, record, impl, case, dtype):
    x, bias, kwargs = inputs(case, dtype)
    describe(record, impl, case, dtype, x)
    with torch.no_grad():
        benchmark(synchronized(IMPLS[impl]), x, bias, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("impl", IMPLS)
def test_bias_act_forward_backward(benchmark, record, impl, case, dtype):
    x, bias, kwargs = inputs(case, dtype, requires_grad=True)
    describe(record, impl, case, dtype, x)
    fn = IMPLS[impl]
    dy = torch.randn_like(x)
    benchmark(synchronized(lambda: torch.autograd.grad(fn(x, bias, **kwargs), [x, bias], dy)))
