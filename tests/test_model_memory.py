"""The reference path's memory savings change no number: recomputing the local generators in the backward."""
import pytest
import torch

import ssgan


TINY = dict(
    size=32, style_dim=32, n_mlp=2, class_names=("background", "face", "hair"), transparent=(), local_layers=4,
    depth_layers=2, base_layers=1, local_channel=16, coarse_channel=16, coarse_size=16, min_feat_size=8,
    render_channels={16: 16, 32: 16}, disc_channels={4: 16, 8: 16, 16: 16, 32: 16},
)  # fmt: skip


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    return ssgan.Generator(ssgan.SSGConfig(**TINY)).double()


def path_length_step(generator, w, noise, recompute):
    """Image and first-order gradient w.r.t. W+, then the second-order (path-length style) parameter gradients."""
    generator.local.recompute_in_backward = recompute
    generator.zero_grad()
    w = w.clone().requires_grad_()
    out = generator(w=w)
    (grad_w,) = torch.autograd.grad((out.image * noise).sum() + out.seg.square().mean(), w, create_graph=True)
    grad_w.square().sum().backward()
    params = {name: p.grad.clone() for name, p in generator.named_parameters() if p.grad is not None}
    return out.image.detach(), grad_w.detach(), params


def test_recomputation_gives_the_same_gradients(generator):
    cfg = generator.cfg
    w = torch.randn(2, cfg.n_latent, cfg.style_dim, dtype=torch.float64)
    noise = torch.randn(2, 3, cfg.size, cfg.size, dtype=torch.float64)
    image, grad_w, params = path_length_step(generator, w, noise, recompute=True)
    image_ref, grad_w_ref, params_ref = path_length_step(generator, w, noise, recompute=False)
    generator.local.recompute_in_backward = True
    torch.testing.assert_close(image, image_ref, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(grad_w, grad_w_ref, rtol=1e-10, atol=1e-14)
    assert params.keys() == params_ref.keys()
    assert "local.weight" in params  # the second-order gradient reaches the recomputed MLP
    for name in params:
        torch.testing.assert_close(params[name], params_ref[name], rtol=1e-9, atol=1e-14, msg=name)


def saved_bytes(generator, w):
    """Bytes of the distinct storages autograd keeps from a forward for the backward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        generator(w=w)
    return sum(storages.values())


def test_recomputation_stores_less(generator):
    cfg = generator.cfg
    w = torch.randn(2, cfg.n_latent, cfg.style_dim, dtype=torch.float64, requires_grad=True)
    generator.local.recompute_in_backward = False
    plain = saved_bytes(generator, w)
    generator.local.recompute_in_backward = True
    recomputed = saved_bytes(generator, w)
    # The plain reference keeps about four [B, K, P, C] activations per local layer.
    activation = 2 * cfg.num_classes * cfg.coarse_size**2 * cfg.local_channel * 8
    assert plain - recomputed > 2 * cfg.local_layers * activation
