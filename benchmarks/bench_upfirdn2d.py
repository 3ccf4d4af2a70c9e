"""upfirdn2d speed.

CPU (runs anywhere; the CPU model uses the reference): three exact formulations of the model's two FIR uses
on big maps, [2, 128, 256, 256] float32 output, the [1,3,3,1] kernel:
  naive      the definition: zero insertion, padded copy, depthwise 4x4 conv2d (the old reference);
  reference  the shipped reference: a stride-2 depthwise transposed conv for up=2, the padding given to the conv;
  separable  the kernel's rank-1 factors applied as two 1-d depthwise (transposed) convs.
GPU (CUDA-synchronised; skipped on the CPU): Triton vs the reference vs torch.compile(reference) at the
model's sizes (celebamask-256, batch 8), forward and forward + backward.

    pytest benchmarks/bench_upfirdn2d.py --benchmark-enable
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import compiled, requires_cuda, synchronized
from ssgan.kernels.upfirdn2d import make_kernel, upfirdn2d, upfirdn2d_naive, upfirdn2d_reference

TAPS = (1, 3, 3, 1)

# name -> (input shape, gain, up, padding); all give a [2, 128, 256, 256] output.
CPU_CASES = {
    "blur-pad1": ((2, 128, 257, 257), 4, 1, (1, 1)),
    "up2-pad21": ((2, 128, 128, 128), 4, 2, (2, 1)),
}


def separable(x, kernel, up, padding):
    """Two 1-d depthwise passes with the rank-1 factors of `kernel` (exact for [1,3,3,1] x [1,3,3,1])."""
    c = x.shape[1]
    ky, kx = kernel.sum(1), kernel.sum(0) / kernel.sum()  # [kh], [kw]: kernel == ky[:, None] * kx[None, :]
    p0, p1 = padding
    if up == 1:
        wy = ky.flip(0).to(x)[None, None, :, None].expand(c, 1, -1, 1)
        wx = kx.flip(0).to(x)[None, None, None, :].expand(c, 1, 1, -1)
        assert p0 == p1, "the benchmark's blur case has symmetric padding"
        return F.conv2d(F.conv2d(x, wy, padding=(p0, 0), groups=c), wx, padding=(0, p0), groups=c)
    k = kernel.shape[0]
    assert (k - 1 - p0, k - up - p1) == (1, 1), "the benchmark's upsampling case crops 1 on both sides"
    wy = ky.to(x)[None, None, :, None].expand(c, 1, -1, 1)
    wx = kx.to(x)[None, None, None, :].expand(c, 1, 1, -1)
    y = F.conv_transpose2d(x, wy, stride=(up, 1), padding=(1, 0), groups=c)
    return F.conv_transpose2d(y, wx, stride=(1, up), padding=(0, 1), groups=c)


CPU_IMPLS = {
    "naive": lambda x, k, up, pad: upfirdn2d_naive(x, k, up=up, padding=pad),
    "reference": lambda x, k, up, pad: upfirdn2d_reference(x, k, up=up, padding=pad),
    "separable": separable,
}


@pytest.mark.parametrize("case", CPU_CASES)
@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_upfirdn2d_cpu_forward(benchmark, record, impl, case):
    shape, gain, up, pad = CPU_CASES[case]
    torch.manual_seed(0)
    x, kernel = torch.randn(shape), make_kernel(TAPS, gain)
    fn = CPU_IMPLS[impl]
    record.update(impl=impl, case=case, device="cpu", threads=torch.get_num_threads())
    with torch.no_grad():
        out = benchmark(fn, x, kernel, up, pad)
    assert out.shape == (2, 128, 256, 256)
    torch.testing.assert_close(out, upfirdn2d_naive(x, kernel, up=up, padding=pad), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CPU_CASES)
@pytest.mark.parametrize("impl", ["naive", "reference"])
def test_upfirdn2d_cpu_forward_backward(benchmark, record, impl, case):
    shape, gain, up, pad = CPU_CASES[case]
    x = torch.randn(shape, requires_grad=True)
    kernel = make_kernel(TAPS, gain)
    fn = CPU_IMPLS[impl]
    dy = torch.randn(2, 128, 256, 256)
    record.update(impl=impl, case=case, device="cpu", threads=torch.get_num_threads())
    benchmark(lambda: torch.autograd.grad(fn(x, kernel, up, pad), x, dy))


# --- GPU ---------------------------------------------------------------------------------------------------

compiled_reference = compiled(upfirdn2d_reference)


GPU_IMPLS = {
    "triton": lambda *a, **k: upfirdn2d(*a, **k, impl="triton"),
    "reference": upfirdn2d_reference,
    "compiled": compiled_reference,
}

# name -> (input shape, gain, up, down, padding) at celebamask-256, batch 8.
GPU_CASES = {
    "render-blur-256": ((8, 128, 257, 257), 4, 1, 1, (1, 1)),  # after the 2x transposed conv to 256
    "skip-up-seg-256": ((8, 13, 128, 128), 4, 2, 1, (2, 1)),  # Upsample of the segmentation skip
    "disc-blur-256": ((8, 128, 256, 256), 1, 1, 1, (2, 2)),  # before the stride-2 3x3 conv
    "disc-blur-64": ((8, 512, 64, 64), 1, 1, 1, (2, 2)),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def gpu_inputs(case, dtype, requires_grad=False):
    shape, gain, up, down, pad = GPU_CASES[case]
    x = torch.randn(shape, device="cuda", dtype=DTYPES[dtype], requires_grad=requires_grad)
    return x, make_kernel(TAPS, gain).cuda(), {"up": up, "down": down, "padding": pad}


def describe(record, impl, case, dtype, x, y):
    moved = (x.numel() + y.numel()) * x.element_size()
    record.update(impl=impl, case=case, dtype=dtype, shape=list(x.shape), mbytes=moved / 1e6)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GPU_CASES)
@pytest.mark.parametrize("impl", GPU_IMPLS)
def test_upfirdn2d_gpu_forward(benchmark, record, impl, case, dtype):
    x, kernel, kwargs = gpu_inputs(case, dtype)
    fn = GPU_IMPLS[impl]
    with torch.no_grad():
        describe(record, impl, case, dtype, x, fn(x, kernel, **kwargs))
        benchmark(synchronized(fn), x, kernel, **kwargs)


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GPU_CASES)
@pytest.mark.parametrize("impl", GPU_IMPLS)
def test_upfirdn2d_gpu_forward_backward(benchmark, record, impl, case, dtype):
    x, kernel, kwargs = gpu_inputs(case, dtype, requires_grad=True)
    fn = GPU_IMPLS[impl]
    y = fn(x, kernel, **kwargs)
    describe(record, impl, case, dtype, x, y)
    dy = torch.randn_like(y)
    benchmark(synchronized(lambda: torch.autograd.grad(fn(x, kernel, **kwargs), x, dy)))
