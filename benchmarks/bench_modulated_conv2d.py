"""Modulated 3x3 convolution on the GPU (CUDA-synchronised; skipped on the CPU).

Per-sample styles, three ways: the Triton implicit GEMM (styles folded into the loads, demodulation in the
epilogue), StyleGAN2's grouped-conv formulation (per-sample weights, one cuDNN grouped conv), and the
reference (input scaling + one cuDNN conv with the shared weight + output scaling). cuDNN on the shared,
unmodulated weight is the floor: the same FLOPs with nothing per-sample. Then styled_conv2d's fused
noise + bias + leaky-ReLU epilogue against the same Triton conv followed by separate elementwise ops.

    pytest benchmarks/bench_modulated_conv2d.py --benchmark-enable
"""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_cuda, synchronized
from ssgan.kernels.bias_act import bias_act
from ssgan.kernels.modulated_conv2d import modulated_conv2d, styled_conv2d
from ssgan.kernels.upfirdn2d import make_kernel, upfirdn2d

pytestmark = requires_cuda

SHAPES = [(512, 32), (256, 128)]  # (channels, resolution)
BATCHES = [4, 16]
DTYPES = {"float32": torch.float32, "float16": torch.float16}


def grouped_modulated_conv2d(x, weight, styles, demodulate=True):
    """StyleGAN2's formulation: build [N, O, I, 3, 3] weights and run one grouped conv over the batch."""
    n, in_ch, h, w = x.shape
    out_ch, _, k, _ = weight.shape
    wt = weight[None] * (styles / math.sqrt(in_ch * k * k))[:, None, :, None, None]  # [N, O, I, k, k]
    if demodulate:
        wt = wt * torch.rsqrt(wt.square().sum([2, 3, 4], keepdim=True) + 1e-8)
    y = F.conv2d(x.reshape(1, n * in_ch, h, w), wt.reshape(n * out_ch, in_ch, k, k), padding=k // 2, groups=n)
    return y.reshape(n, out_ch, h, w)


def conv_inputs(channels, size, batch, dtype, requires_grad=False):
    x = torch.randn(batch, channels, size, size, device="cuda", dtype=dtype, requires_grad=requires_grad)
    weight = torch.randn(channels, channels, 3, 3, device="cuda", dtype=dtype, requires_grad=requires_grad)
    styles = torch.randn(batch, channels, device="cuda", dtype=dtype, requires_grad=requires_grad)
    return x, weight, styles


CONV_IMPLS = {
    "triton": lambda x, w, s: modulated_conv2d(x, w, s, impl="triton"),
    "grouped": grouped_modulated_conv2d,
    "reference": lambda x, w, s: modulated_conv2d(x, w, s, impl="reference"),
    "cudnn_shared": lambda x, w, s: F.conv2d(x, w, padding=1),
}


def describe(record, channels, size, batch, dtype, passes=1):
    gflop = 2 * batch * channels * channels * 9 * size * size * passes / 1e9
    record.update(channels=channels, size=size, batch=batch, dtype=dtype, gflop=gflop)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_modulated_conv2d_forward(benchmark, record, impl, channels, size, batch, dtype):
    x, weight, styles = conv_inputs(channels, size, batch, DTYPES[dtype])
    describe(record, channels, size, batch, dtype)
    record["impl"] = impl
    fn = CONV_IMPLS[impl]
    with torch.no_grad():
        benchmark(synchronized(fn), x, weight, styles)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_modulated_conv2d_forward_backward(benchmark, record, impl, channels, size, batch, dtype):
    x, weight, styles = conv_inputs(channels, size, batch, DTYPES[dtype], requires_grad=True)
    describe(record, channels, size, batch, dtype, passes=3)  # forward, input grad, weight grad
    record["impl"] = impl
    fn = CONV_IMPLS[impl]
    grad = torch.randn(batch, channels, size, size, device="cuda", dtype=DTYPES[dtype])

    def step():  # cudnn_shared leaves styles unused
        return torch.autograd.grad(fn(x, weight, styles), (x, weight, styles), grad, allow_unused=True)

    benchmark(synchronized(step))


def unfused_styled_conv2d(x, weight, styles, bias, noise, strength):
    y = modulated_conv2d(x, weight, styles, impl="triton")
    return bias_act(y + strength * noise, bias, impl="triton")


STYLED_IMPLS = {
    "fused": lambda *a: styled_conv2d(*a, impl="triton"),
    "unfused": unfused_styled_conv2d,
    "reference": lambda *a: styled_conv2d(*a, impl="reference"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("channels,size", SHAPES)
@pytest.mark.parametrize("impl", STYLED_IMPLS)
def test_styled_conv2d_epilogue(benchmark, record, impl, channels, size, batch, dtype):
    x, weight, styles = conv_inputs(channels, size, batch, DTYPES[dtype])
    bias = torch.randn(channels, device="cuda", dtype=DTYPES[dtype])
    noise = torch.randn(batch, 1, size, size, device="cuda", dtype=DTYPES[dtype])
    strength = torch.tensor(0.1, device="cuda", dtype=DTYPES[dtype])
    describe(record, channels, size, batch, dtype)
    record["impl"] = impl
    with torch.no_grad():
        benchmark(synchronized(STYLED_IMPLS[impl]), x, weight, styles, bias, noise, strength)


def cudnn_upsample_shared(x, weight, styles):
    """The floor for up=2: cuDNN's stride-2 transposed conv with the shared weight, then the FIR blur."""
    y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    return upfirdn2d(y, make_kernel((1, 3, 3, 1), gain=4).to(y), padding=1)


UP_IMPLS = {
    "triton": lambda x, w, s: modulated_conv2d(x, w, s, up=2, impl="triton"),
    "reference": lambda x, w, s: modulated_conv2d(x, w, s, up=2, impl="reference"),
    "cudnn_shared": cudnn_upsample_shared,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("channels,size", [(512, 32), (256, 64)])  # input resolution; the output is twice it
@pytest.mark.parametrize("impl", UP_IMPLS)
def test_modulated_conv2d_up2_forward_backward(benchmark, record, impl, channels, size, batch, dtype):
    """The Triton up=2 path merges transposed conv and blur into four 3x3 phase convolutions: no intermediate
    map, but 4x the multiply-adds of the transposed conv. This case shows whether that trade pays on the card."""
    x, weight, styles = conv_inputs(channels, size, batch, DTYPES[dtype], requires_grad=True)
    describe(record, channels, size, batch, dtype, passes=3)  # transposed-conv work, counted on the input grid
    record["impl"] = impl
    fn = UP_IMPLS[impl]
    grad = torch.randn(batch, channels, 2 * size, 2 * size, device="cuda", dtype=DTYPES[dtype])

    def step():
        return torch.autograd.grad(fn(x, weight, styles), (x, weight, styles), grad, allow_unused=True)

    benchmark(synchronized(step))


# The render net's convolutions (batch-shared styles, noise + bias + leaky ReLU epilogue) at the celebamask-256
# preset's shapes: (input channels, output channels, output resolution, up). These rows decide what impl="auto" runs
# on CUDA (kernels/_dispatch.py AUTO_ON_CUDA): "triton" is the fused Triton conv, "auto" cuDNN's conv with the Triton
# blur and epilogue. The default float32 runs with torch's defaults (cuDNN TF32 on), as training does.
RENDER_CONVS = [(512, 512, 32, 2), (512, 512, 32, 1), (512, 512, 64, 2), (512, 512, 64, 1),
                (1024, 256, 128, 2), (256, 256, 128, 1), (256, 128, 256, 2), (128, 128, 256, 1)]
RENDER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@pytest.mark.parametrize("dtype", RENDER_DTYPES)
@pytest.mark.parametrize("batch", [16])
@pytest.mark.parametrize("in_ch,out_ch,size,up", RENDER_CONVS)
@pytest.mark.parametrize("impl", ["triton", "auto"])
def test_render_conv_forward_backward(benchmark, record, impl, in_ch, out_ch, size, up, batch, dtype):
    dt = RENDER_DTYPES[dtype]
    x = torch.randn(batch, in_ch, size // up, size // up, device="cuda", dtype=dt, requires_grad=True)
    weight = torch.randn(out_ch, in_ch, 3, 3, device="cuda", dtype=dt, requires_grad=True)
    styles = torch.ones(in_ch, device="cuda", dtype=dt, requires_grad=True)
    bias = torch.zeros(out_ch, device="cuda", dtype=dt, requires_grad=True)
    noise = torch.randn(1, 1, size, size, device="cuda", dtype=dt)
    strength = torch.tensor(0.1, device="cuda", dtype=dt, requires_grad=True)
    inputs = (x, weight, styles, bias, strength)
    gflop = 2 * batch * out_ch * in_ch * 9 * (size // up) ** 2 * 3 / 1e9  # forward, input grad, weight grad
    record.update(channels=f"{in_ch}->{out_ch}", size=size, up=up, batch=batch, dtype=dtype, gflop=gflop, impl=impl)
    grad = torch.randn(batch, out_ch, size, size, device="cuda", dtype=dt)

    def step():
        y = styled_conv2d(x, weight, styles, bias, noise, strength, up=up, impl=impl)
        return torch.autograd.grad(y, inputs, grad)

    benchmark(synchronized(step))
