"""What the reference path keeps for the backward: the memory half of issue #2's speed and memory targets.

The local generators keep about one [B, K, P, C] activation per layer, and a render-net conv keeps nothing of
its own size but its output (its noise, bias and leaky-ReLU epilogue runs in place)."""
import pytest
import torch

import ssgan
from ssgan.generator import RenderConv

TINY = dict(
    size=32, style_dim=32, n_mlp=2, class_names=("background", "face", "hair"), transparent=(), local_layers=4,
    depth_layers=2, base_layers=1, local_channel=16, coarse_channel=16, coarse_size=16, min_feat_size=8,
    render_channels={16: 16, 32: 16}, disc_channels={4: 16, 8: 16, 16: 16, 32: 16},
)  # fmt: skip


def saved_storages(fn, *args):
    """Sizes in bytes of the distinct storages autograd keeps from fn(*args) for the backward."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args)
    return list(storages.values())


def test_local_generators_keep_one_activation_per_layer():
    torch.manual_seed(0)
    cfg = ssgan.SSGConfig(**TINY)
    local = ssgan.Generator(cfg).local
    batch = 2
    w = torch.randn(batch, cfg.num_classes * cfg.local_layers, cfg.style_dim, requires_grad=True)
    activation = batch * cfg.num_classes * cfg.coarse_size**2 * cfg.local_channel * 4  # one [B, K, P, C] in float32
    large = [n for n in saved_storages(local, w) if n >= activation // 2]
    # one per layer, the scaled output and the blend that the fusion's matmul reads
    assert sum(large) <= (cfg.local_layers + 2) * activation


@pytest.mark.parametrize("up", [False, True])
def test_render_conv_keeps_only_its_input_and_output(up):
    torch.manual_seed(0)
    conv = RenderConv(8, 8, up)
    x = torch.randn(2, 8, 8, 8, requires_grad=True)
    res = 16 if up else 8
    noise = torch.randn(1, 1, res, res)
    out_bytes = 2 * 8 * res * res * 4
    large = [n for n in saved_storages(conv, x, noise) if n >= x.numel() * 4]
    # input, output, and for up=2 the transposed conv's (2H+1)^2 result that the blur reads
    assert sum(large) <= x.numel() * 4 + out_bytes + (2 * 8 * (res + 1) ** 2 * 4 if up else 0)
