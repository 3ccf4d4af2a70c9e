"""GPU checks: the compiled Triton kernels inside the whole model on CUDA. Skipped without a GPU.

Run with `TRITON_INTERPRET=0 python -m pytest tests/test_gpu.py` (benchmarks/run_gpu.sh does).
"""
import os

import pytest
import torch

from conftest import rel_err

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="run with TRITON_INTERPRET=0 to compile the kernels"),
]


@pytest.fixture(autouse=True)
def exact_float32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def with_kernels(monkeypatch, impl, fn):
    monkeypatch.setenv("SSGAN_KERNELS", impl)
    return fn()


def test_golden_vectors_with_triton_on_cuda(official_small, monkeypatch):
    ckpt, v = official_small
    g, d = ckpt.g_ema.cuda(), ckpt.d.cuda()
    monkeypatch.setenv("SSGAN_KERNELS", "triton")
    with torch.no_grad():
        out = g(z=v["z"].cuda())
        assert rel_err(out.image.cpu(), v["z.image"]) < 1e-4
        assert rel_err(out.seg.cpu(), v["z.seg"]) < 1e-4
        out = g(z=v["z"].cuda(), composition_mask=v["cmask"].cuda())
        assert rel_err(out.image.cpu(), v["cmask.image"]) < 1e-4
        assert rel_err(d(v["d.image"].cuda(), v["d.seg"].cuda()).cpu(), v["d.logits"]) < 1e-4
    g.cpu(), d.cpu()


@pytest.mark.parametrize("preset", ["celebamask-256"])
def test_full_size_triton_matches_reference(preset, monkeypatch):
    import ssgan

    torch.manual_seed(0)
    cfg = ssgan.preset(preset)
    g, d = ssgan.Generator(cfg).cuda(), ssgan.Discriminator(cfg).cuda()
    w = g.expand(g.layout(g.mapping(torch.randn(4, cfg.style_dim, device="cuda")))).detach()

    def step():
        w_ = w.clone().requires_grad_()
        out = g.synthesis(w_)
        logits = d(out.image, out.seg)
        grad, = torch.autograd.grad(logits.sum() + out.image.square().mean(), w_)
        return out.image.detach(), logits.detach(), grad

    ref = with_kernels(monkeypatch, "reference", step)
    fast = with_kernels(monkeypatch, "triton", step)
    for a, b in zip(fast, ref):
        assert rel_err(a, b) < 1e-3


def test_r1_and_path_length_double_backward_on_cuda(monkeypatch):
    import ssgan

    monkeypatch.setenv("SSGAN_KERNELS", "triton")
    cfg = ssgan.preset("demo")
    g, d = ssgan.Generator(cfg).cuda(), ssgan.Discriminator(cfg).cuda()
    w = g.expand(g.layout(g.mapping(torch.randn(4, cfg.style_dim, device="cuda")))).detach().requires_grad_()
    out = g.synthesis(w)
    grad, = torch.autograd.grad((out.image * torch.randn_like(out.image)).sum(), w, create_graph=True)
    grad.square().sum().backward()
    image = out.image.detach().requires_grad_()
    seg = out.seg.detach().requires_grad_()
    gi, gs = torch.autograd.grad(d(image, seg).sum(), [image, seg], create_graph=True)
    (gi.square().sum() + gs.square().sum()).backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in [*g.parameters(), *d.parameters()])
