"""Faithfulness to the last digit: in float64, ssgan reproduces the original implementation to 1e-9.

Float32 comparisons (tests/test_golden.py) stop near 1e-4, where rounding in either implementation hides any
smaller difference. In float64 two implementations of the same mathematics agree to about 1e-14, so these
tests pin down every constant, epsilon and gradient path:

- `vectors_float64.safetensors`: the training generator `g` after `.double()` and nothing else (image,
  segmentation, gradient w.r.t. W+), on the reference path and with every Triton kernel forced;
- `train_step_float64.safetensors`: one iteration of the original training recipe, term by term, through
  ssgan's own loss functions: each loss, each gradient norm and the gradient of every parameter, compared
  under the original's parameter names through the checkpoint converter, so that a wrong tensor is named.
"""
import argparse

import pytest
import torch
from conftest import rel_err, shared_path
from ssgan.train import losses
from ssgan.train.loop import TrainOptions

import ssgan
from ssgan.checkpoint import convert_discriminator, convert_generator

TOL = 1e-9


def _fixture(name):
    from safetensors.torch import load_file

    return load_file(shared_path("fixtures", "official_small", name))


@pytest.fixture(scope="module")
def official64():
    """The checkpoint's models after .double(), and the original's own state dicts (for the converter)."""
    path = shared_path("fixtures", "official_small", "checkpoint.pt")
    ckpt = ssgan.load_checkpoint(path)
    torch.serialization.add_safe_globals([argparse.Namespace])
    original = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt.g.double(), ckpt.d.double(), ckpt.config, original


# --- the model --------------------------------------------------------------------------------------------
def _forward_backward(g, batch):
    """g's image, segmentation and gradient w.r.t. W+ on the first `batch` samples of the float64 vectors."""
    v, weights = _fixture("vectors_float64.safetensors"), _fixture("vectors.safetensors")["grad.image_weights"]
    w = v["w_plus"][:batch].clone().requires_grad_()
    out = g(w=w)
    (out.image * weights[:batch].double()).sum().backward()
    results = {"image": out.image, "seg": out.seg, "grad.w_plus": w.grad}
    return {key: rel_err(value, v[key][:batch]) for key, value in results.items()}


def test_float64_model_reference_path(official64, monkeypatch):
    monkeypatch.setenv("SSGAN_KERNELS", "reference")
    errors = _forward_backward(official64[0], batch=3)
    assert all(e < TOL for e in errors.values()), errors


@pytest.mark.slow
def test_float64_model_triton_kernels(official64, monkeypatch):
    """Every op through its Triton kernel (the interpreter, float64 accumulators). One sample of the three:
    samples are independent, and each costs 20-35 s of CPU in the interpreter."""
    monkeypatch.setenv("SSGAN_KERNELS", "triton")
    errors = _forward_backward(official64[0], batch=1)
    assert all(e < TOL for e in errors.values()), errors


def test_truncation_centre_follows_the_dtype():
    """mean_latent maps the same draw of z in the model's dtype (and caches it per dtype)."""
    cfg = ssgan.SSGConfig(
        size=16, style_dim=16, n_mlp=2, class_names=("background", "a", "b"), transparent=(), local_channel=16,
        coarse_channel=16, coarse_size=8, min_feat_size=4, render_channels={8: 16, 16: 16},
    )  # fmt: skip
    g = ssgan.Generator(cfg)
    w_avg32 = g.mean_latent(n=100)
    g.double()
    w_avg64 = g.mean_latent(n=100)
    assert w_avg64.dtype == torch.float64
    torch.testing.assert_close(w_avg64.float(), w_avg32)
    assert g(z=torch.randn(1, 16, dtype=torch.float64), psi=0.7).image.dtype == torch.float64


# --- one training iteration -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_step():
    return _fixture("train_step_float64.safetensors")


@pytest.fixture(scope="module")
def recipe():
    """The hyper-parameters of the original's recipe, as ssgan's trainer resolves them."""
    return TrainOptions(preset="celebamask-256").resolved()


def _gradients_by_original_name(module, original_sd, convert, cfg, what):
    """The gradients of `module`'s parameters sent back through the checkpoint converter:
    {original name: (gradient in the original's shape, our parameter it came from)}.

    Every element of the original state dict is tagged with its index and the tags are converted like
    weights (FIR kernels keep their values: the converter checks them); the converted tags then say where
    each element of our parameters came from. Elements no parameter came from (noise buffers) stay NaN."""
    tags, offset = {}, 0
    for name, t in original_sd.items():
        tags[name] = t if name.endswith(".kernel") else torch.arange(offset, offset + t.numel()).reshape(t.shape)
        offset += 0 if name.endswith(".kernel") else t.numel()
    converted = convert({name: t.double() for name, t in tags.items()}, cfg, what)
    flat = torch.full((offset,), float("nan"), dtype=torch.float64)
    owner = torch.full((offset,), -1)
    names = [name for name, _ in module.named_parameters()]
    for i, (ours, param) in enumerate(module.named_parameters()):
        index = converted[ours].reshape(-1)
        assert torch.equal(index, index.round()) and (owner[index.long()] < 0).all(), f"{ours}: not a pure relabelling"
        index = index.long()
        flat[index] = torch.zeros_like(param).reshape(-1) if param.grad is None else param.grad.reshape(-1)
        owner[index] = i
    result = {}
    for name, t in tags.items():
        if not name.endswith(".kernel"):
            first = owner[t.reshape(-1)[0]]
            result[name] = flat[t.reshape(-1)].reshape(t.shape), names[first] if first >= 0 else None
    return result


def _check_gradients(term, network, module, original_sd, convert, cfg, ref):
    """The term's gradient norm, then every parameter's gradient under its original name (and ours)."""
    grads = [p.grad.reshape(-1) for p in module.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.cat(grads))
    assert rel_err(norm, ref[f"{term}.grad_norm"]) < TOL, f"{term}.grad_norm: {norm.item()!r}"
    prefix = f"{term}.grad.{network}."
    expected = {key[len(prefix) :]: t for key, t in ref.items() if key.startswith(prefix)}
    ours = _gradients_by_original_name(module, original_sd, convert, cfg, network)
    unmatched = sorted(set(expected) ^ {name for name in ours if ".noises." not in name})
    assert not unmatched, f"{term}: parameters without a reference gradient, or the reverse: {unmatched}"
    wrong = []
    for name, want in expected.items():
        got, source = ours[name]
        err = rel_err(got, want) if want.norm() > 0 else got.norm().item()
        if not err < TOL:
            wrong.append(f"{name} (ssgan: {network}.{source}): relative error {err:.2e}")
    assert not wrong, f"{term}: {len(wrong)} of {len(expected)} parameter gradients differ:\n" + "\n".join(wrong)


def _zero_grads(*modules):
    for module in modules:
        for p in module.parameters():
            p.grad = None


def test_d_logistic(official64, train_step):
    g, d, cfg, original = official64
    t = train_step
    _zero_grads(g, d)
    with torch.no_grad():
        fake = g(z=t["input.z_d"])
    loss = losses.d_logistic(d(t["input.real_image"], t["input.real_seg"]), d(fake.image, fake.seg))
    loss.backward()
    assert rel_err(loss, t["d_logistic.loss"]) < TOL
    _check_gradients("d_logistic", "d", d, original["d"], convert_discriminator, cfg, t)


def test_r1(official64, train_step, recipe):
    g, d, cfg, original = official64
    t = train_step
    _zero_grads(g, d)
    image = t["input.real_image"].clone().requires_grad_()
    seg = t["input.real_seg"].clone().requires_grad_()
    r1, penalty_image, penalty_seg = losses.r1_loss(d(image, seg), image, seg, recipe.r1_img, recipe.r1_seg)
    loss = r1 * recipe.d_reg_every
    loss.backward()
    assert rel_err(penalty_image, t["r1.penalty_image"]) < TOL
    assert rel_err(penalty_seg, t["r1.penalty_seg"]) < TOL
    assert rel_err(loss, t["r1.loss"]) < TOL
    _check_gradients("r1", "d", d, original["d"], convert_discriminator, cfg, t)


def test_g_total(official64, train_step, recipe):
    g, d, cfg, original = official64
    t = train_step
    _zero_grads(g, d)
    out = g(z=t["input.z_g"])
    nonsaturating = losses.g_nonsaturating(d(out.image, out.seg))
    mask = losses.mask_loss(out.coarse_seg, out.seg)
    loss = nonsaturating + recipe.lambda_mask * mask
    loss.backward()
    assert rel_err(nonsaturating, t["g.nonsaturating"]) < TOL
    assert rel_err(mask, t["g.mask"]) < TOL
    assert rel_err(loss, t["g_total.loss"]) < TOL
    _check_gradients("g_total", "g", g, original["g"], convert_generator, cfg, t)


def test_path_length(official64, train_step, recipe):
    g, d, cfg, original = official64
    t = train_step
    _zero_grads(g, d)
    assert t["input.z_pl"].shape[0] == t["input.z_g"].shape[0] // recipe.path_batch_shrink
    with torch.no_grad():  # as the trainer's GeneratorStep: the latents are leaves, the mapping gets no gradient
        w_expanded = g.to_expanded(z=t["input.z_pl"])
    out = g.synthesis(w_expanded.requires_grad_())
    lengths = losses.path_lengths(out.image, out.w_expanded, noise=t["input.pl_noise"])
    penalty, new_mean, _ = losses.path_length_penalty(lengths, t["input.mean_path_length"].item(), recipe.path_decay)
    loss = recipe.path_reg * recipe.g_reg_every * penalty
    loss.backward()
    assert rel_err(lengths, t["path.lengths"]) < TOL
    assert abs(new_mean - t["path.new_mean"].item()) < TOL * new_mean
    assert rel_err(loss, t["path.loss"]) < TOL
    _check_gradients("path", "g", g, original["g"], convert_generator, cfg, t)
