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



def _cuda(*shape, scale=1.0, shift=0.0):
    return (shift + scale * torch.randn(*shape, device="cuda")).requires_grad_()


def kernel_case(name):
    """(op of impl, the inputs to differentiate) for one kernel family, at sizes that are not multiples of the GPU
    tile sizes, so the real tiles' masking runs (the interpreter tests run other tile sizes)."""
    from ssgan.kernels import bias_act, class_mlp, depth_fusion, make_kernel, modulated_conv2d, styled_conv2d, upfirdn2d

    B, K, L, C, P, F = 3, 5, 4, 64, 4096 + 37, 96
    if name == "class_mlp":
        args = [_cuda(P, C), _cuda(K, L, C, C), _cuda(K, L, C, scale=0.2), _cuda(B, K, L, C, scale=0.3, shift=1.0),
                _cuda(K, C, scale=0.1), _cuda(K)]  # fmt: skip
        return (lambda impl: class_mlp(*args, 2, impl=impl)), args
    if name == "depth_fusion":
        args = [_cuda(B, K, P), _cuda(B, K, P, C), _cuda(K, F, C, scale=0.1), _cuda(K, F)]
        transparent = torch.tensor([False, False, True, False, True], device="cuda")
        keep = torch.tensor([[1.0, 1, 1, 0, 1], [1, 1, 0, 1, 1], [1, 0, 1, 1, 1]], device="cuda")
        return (lambda impl: depth_fusion(*args, transparent, keep, impl=impl)), args
    x, weight, styles = _cuda(B, 48, 37, 29), _cuda(80, 48, 3, 3), _cuda(B, 48, scale=0.3, shift=1.0)
    if name in ("modulated_conv2d", "modulated_conv2d_up2"):
        up = 2 if name.endswith("up2") else 1
        return (lambda impl: modulated_conv2d(x, weight, styles, up=up, impl=impl)), [x, weight, styles]
    if name == "styled_conv2d_up2":
        bias, strength, noise = _cuda(80), _cuda(()), torch.randn(B, 1, 74, 58, device="cuda")
        args = [x, weight, styles, bias, noise, strength]
        return (lambda impl: styled_conv2d(*args, up=2, impl=impl)), [x, weight, styles, bias, strength]
    y, bias, fir = _cuda(B, 19, 67, 45), _cuda(19), make_kernel((1, 3, 3, 1)).cuda()
    if name == "bias_act":
        return (lambda impl: bias_act(y, bias, impl=impl)), [y, bias]
    if name == "upfirdn2d_up2":
        return (lambda impl: upfirdn2d(y, fir, up=2, padding=(2, 1), impl=impl)), [y]
    if name == "upfirdn2d_down2":
        return (lambda impl: upfirdn2d(y, fir, down=2, padding=1, impl=impl)), [y]
    raise KeyError(name)


KERNEL_CASES = ["class_mlp", "depth_fusion", "modulated_conv2d", "modulated_conv2d_up2", "styled_conv2d_up2",
                "bias_act", "upfirdn2d_up2", "upfirdn2d_down2"]  # fmt: skip


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_each_kernel_compiled_matches_reference(name):
    """Every kernel family compiled for the card, forward and gradients, against its reference in float32."""
    torch.manual_seed(0)
    op, inputs = kernel_case(name)
    results, grad_outputs = {}, None
    for impl in ("reference", "triton"):
        outputs = op(impl)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        grad_outputs = grad_outputs or [torch.randn_like(o) for o in outputs]
        results[impl] = [o.detach() for o in outputs], torch.autograd.grad(outputs, inputs, grad_outputs)
    (out, grads), (out_ref, grads_ref) = results["triton"], results["reference"]
    for i, (a, b) in enumerate(zip(out, out_ref)):
        assert rel_err(a, b) < 1e-4, f"{name} output {i}"
    for i, (a, b) in enumerate(zip(grads, grads_ref)):
        assert rel_err(a, b) < 1e-3, f"{name} gradient of input {i}"
