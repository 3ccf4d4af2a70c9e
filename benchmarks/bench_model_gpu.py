"""The whole generator and discriminator on the GPU (CUDA-synchronised; skipped on the CPU): Triton kernels vs the
eager reference vs torch.compile of the reference, forward and forward+backward, at the released sizes (K=13,
64x64 coarse grid) for batch 4 and 16. Peak memory in extra_info. Issue #3's targets read off these rows.

    pytest benchmarks/bench_model_gpu.py --benchmark-enable
"""
import pytest
import torch
from conftest import compiled, measure_peak, requires_cuda, synchronized

import ssgan

pytestmark = requires_cuda

PRESETS = ("celebamask-256", "celebamask-512")
BATCHES = (4, 16)
KERNELS = ("triton", "reference", "compiled")  # "compiled": torch.compile of the reference path


@pytest.fixture(scope="module", params=PRESETS)
def models(request):
    torch.manual_seed(0)
    cfg = ssgan.preset(request.param)
    return request.param, cfg, ssgan.Generator(cfg).cuda(), ssgan.Discriminator(cfg).cuda()


def run_with(monkeypatch, kernels, fn):
    """fn with the model's ops on the Triton path or the reference one; "compiled" compiles fn once per case."""
    monkeypatch.setenv("SSGAN_KERNELS", "triton" if kernels == "triton" else "reference")
    return compiled(fn) if kernels == "compiled" else fn


def timed(benchmark, record, fn, **info):
    """Record the peak memory of one call after a warm-up (Triton and cuDNN autotuning, compilation), then time."""
    fn = synchronized(fn)
    record.update(info)
    measure_peak(record, fn)
    benchmark.pedantic(fn, rounds=10, iterations=1, warmup_rounds=1)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kernels", KERNELS)
def test_generator_forward(benchmark, record, monkeypatch, models, kernels, batch):
    preset, cfg, g, _ = models
    z = torch.randn(batch, cfg.style_dim, device="cuda")

    @torch.no_grad()
    def forward():
        out = g(z=z)
        return out.image, out.seg

    timed(benchmark, record, run_with(monkeypatch, kernels, forward), preset=preset, kernels=kernels, batch=batch)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kernels", KERNELS)
def test_generator_forward_backward(benchmark, record, monkeypatch, models, kernels, batch):
    preset, cfg, g, _ = models
    w = torch.randn(batch, cfg.n_latent, cfg.style_dim, device="cuda", requires_grad=True)

    def step():
        out = g(w=w)
        (out.image.square().mean() + out.seg.square().mean()).backward()

    timed(benchmark, record, run_with(monkeypatch, kernels, step), preset=preset, kernels=kernels, batch=batch)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("kernels", KERNELS)
def test_discriminator_forward_backward(benchmark, record, monkeypatch, models, kernels, batch):
    preset, cfg, _, d = models
    image = torch.randn(batch, 3, cfg.size, cfg.size, device="cuda")
    seg = torch.randn(batch, cfg.num_classes, cfg.size, cfg.size, device="cuda")

    def step():
        d(image, seg).sum().backward()

    timed(benchmark, record, run_with(monkeypatch, kernels, step), preset=preset, kernels=kernels, batch=batch)
