"""Faithfulness: ssgan reproduces the original implementation's outputs on its own checkpoint."""
import pytest
import torch

from conftest import rel_err

TOL = 1e-4


@pytest.fixture(scope="module")
def z_out(official_small):
    ckpt, v = official_small
    with torch.no_grad():
        return ckpt.g_ema(z=v["z"])


@pytest.mark.parametrize("field", ["image", "seg", "coarse_seg", "depths", "w_expanded"])
def test_z_outputs(official_small, z_out, field):
    _, v = official_small
    assert rel_err(getattr(z_out, field), v[f"z.{field}"]) < TOL


def test_background_depth_is_zero(z_out):
    assert torch.all(z_out.depths[:, 0] == 0)


@pytest.mark.parametrize("case", ["w_plus", "trunc", "cmask"])
def test_other_inputs(official_small, case):
    ckpt, v = official_small
    kwargs = {
        "w_plus": dict(w=v["w_plus"]),
        "trunc": dict(z=v["z"], psi=0.7, w_avg=v["trunc.w_avg"]),
        "cmask": dict(z=v["z"], composition_mask=v["cmask"]),
    }[case]
    with torch.no_grad():
        out = ckpt.g_ema(**kwargs)
    assert rel_err(out.image, v[f"{case}.image"]) < TOL
    assert rel_err(out.seg, v[f"{case}.seg"]) < TOL


def test_expanded_latent_input(official_small, z_out):
    ckpt, v = official_small
    with torch.no_grad():
        out = ckpt.g_ema(w=v["z.w_expanded"])
    assert rel_err(out.image, v["z.image"]) < TOL


def test_discriminator(official_small):
    ckpt, v = official_small
    with torch.no_grad():
        assert rel_err(ckpt.d(v["d.image"], v["d.seg"]), v["d.logits"]) < TOL
        assert rel_err(ckpt.d(v["d.image"]), v["d.logits_image_only"]) < TOL


def test_gradient_wrt_w_plus(official_small):
    """The gradient through the training generator `g`, against the float32 golden.

    In float32 this quantity is ill-conditioned: perturbing w_plus by 1e-7 (relative) moves the float64
    gradient by 1.5e-4, and the original's own float32 gradient (this golden) lies 1.3e-4 from the original's
    float64 one. Ours lies 5.8e-4 from that float64 truth in float32 and 4e-15 in float64, which then differs
    from this golden by the golden's own 1.3e-4. So float32 is held to 1e-3 and float64 to 5e-4 here; the
    precise proof of the backward pass is tests/test_golden_float64.py (float64, 1e-9, against the original).
    """
    ckpt, v = official_small
    for dtype, tol in ((torch.float32, 1e-3), (torch.float64, 5e-4)):
        g = ckpt.g.to(dtype)
        w = v["w_plus"].detach().to(dtype, copy=True).requires_grad_()
        (g(w=w).image * v["grad.image_weights"].to(dtype)).sum().backward()
        assert rel_err(w.grad, v["grad.w_plus"]) < tol, dtype
    ckpt.g.float()
