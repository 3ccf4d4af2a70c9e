"""Drop-in layers: a StyleGAN2-style synthesis block built from ssgan.kernels.nn loads the state dict of the
same block written in plain PyTorch (the widely used StyleGAN2 layer layout) and matches its outputs."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import rel_err
from einops import einsum
from ssgan.kernels import nn as dropin
from torch import nn

# --- Plain PyTorch re-statement of the StyleGAN2 layers (grouped-conv formulation), same parameter names. ---


def fir_kernel(factor=1):
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = taps[None, :] * taps[:, None]
    return k / k.sum() * factor**2


def fir_filter(x, kernel, pad0, pad1, up=1):
    """Zero-insert by `up`, pad (pad0, pad1) on both axes, then a true convolution with `kernel`."""
    n, c, h, w = x.shape
    if up > 1:
        upsampled = x.new_zeros(n, c, h * up, w * up)
        upsampled[:, :, ::up, ::up] = x
        x = upsampled
    x = F.pad(x, [pad0, pad1, pad0, pad1])
    return F.conv2d(x, kernel.flip(0, 1)[None, None].expand(c, 1, -1, -1).to(x), groups=c)


class PlainEqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.full((out_dim,), bias_init))

    def forward(self, x):
        return x @ (self.weight / math.sqrt(self.weight.shape[1])).t() + self.bias


class PlainBlur(nn.Module):
    def __init__(self, pad, factor):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(factor))
        self.pad = pad

    def forward(self, x):
        return fir_filter(x, self.kernel, *self.pad)


class PlainModulatedConv2d(nn.Module):
    def __init__(self, in_ch, out_ch, k, style_dim, demodulate=True, upsample=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, k, k))
        self.modulation = PlainEqualLinear(style_dim, in_ch, bias_init=1.0)
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            self.blur = PlainBlur((1, 1), factor=2)

    def forward(self, x, style):
        n, in_ch, h, w = x.shape
        _, out_ch, _, k, _ = self.weight.shape
        s = self.modulation(style)  # [N, I]
        weight = self.weight / math.sqrt(in_ch * k * k) * s[:, None, :, None, None]  # [N, O, I, k, k]
        if self.demodulate:
            weight = weight / torch.sqrt(weight.square().sum([2, 3, 4], keepdim=True) + 1e-8)
        grouped_x = x.reshape(1, n * in_ch, h, w)
        if self.upsample:
            grouped_w = weight.transpose(1, 2).reshape(n * in_ch, out_ch, k, k)
            y = F.conv_transpose2d(grouped_x, grouped_w, stride=2, groups=n)
            return self.blur(y.reshape(n, out_ch, *y.shape[2:]))
        y = F.conv2d(grouped_x, weight.reshape(n * out_ch, in_ch, k, k), padding=k // 2, groups=n)
        return y.reshape(n, out_ch, h, w)


class PlainNoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x, noise):
        return x + self.weight * noise


class PlainFusedLeakyReLU(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, x):
        return F.leaky_relu(x + self.bias[:, None, None], 0.2) * math.sqrt(2)


class PlainStyledConv(nn.Module):
    def __init__(self, in_ch, out_ch, k, style_dim, upsample=False):
        super().__init__()
        self.conv = PlainModulatedConv2d(in_ch, out_ch, k, style_dim, upsample=upsample)
        self.noise = PlainNoiseInjection()
        self.activate = PlainFusedLeakyReLU(out_ch)

    def forward(self, x, style, noise):
        return self.activate(self.noise(self.conv(x, style), noise))


class PlainUpsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", fir_kernel(2))

    def forward(self, x):
        return fir_filter(x, self.kernel, 2, 1, up=2)


class PlainToRGB(nn.Module):
    def __init__(self, in_ch, style_dim, upsample=True):
        super().__init__()
        if upsample:
            self.upsample = PlainUpsample()
        self.conv = PlainModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class PlainConstantInput(nn.Module):
    def __init__(self, channel, size=4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, x):
        return self.input.repeat(x.shape[0], 1, 1, 1)


# --- One synthesis network, assembled from either family of layers. ---

PLAIN = dict(ConstantInput=PlainConstantInput, StyledConv=PlainStyledConv, ToRGB=PlainToRGB)


class Synthesis(nn.Module):
    """const 4x4 -> StyledConv -> ToRGB, then blocks of (StyledConv up, StyledConv, ToRGB with upsampled skip)."""

    def __init__(self, layers, channels=(8, 6, 5), style_dim=8, **kw):
        super().__init__()
        self.input = layers["ConstantInput"](channels[0])
        self.conv1 = layers["StyledConv"](channels[0], channels[0], 3, style_dim, **kw)
        self.to_rgb1 = layers["ToRGB"](channels[0], style_dim, upsample=False, **kw)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        for in_ch, out_ch in zip(channels[:-1], channels[1:]):
            self.convs.append(layers["StyledConv"](in_ch, out_ch, 3, style_dim, upsample=True, **kw))
            self.convs.append(layers["StyledConv"](out_ch, out_ch, 3, style_dim, **kw))
            self.to_rgbs.append(layers["ToRGB"](out_ch, style_dim, **kw))

    def forward(self, styles, noises):  # styles: [N, n_latent, D]; noises: one per StyledConv
        x = self.input(styles)
        x = self.conv1(x, styles[:, 0], noises[0])
        skip = self.to_rgb1(x, styles[:, 1])
        for b, to_rgb in enumerate(self.to_rgbs):
            i = 1 + 2 * b
            x = self.convs[2 * b](x, styles[:, i], noises[1 + 2 * b])
            x = self.convs[2 * b + 1](x, styles[:, i + 1], noises[2 + 2 * b])
            skip = to_rgb(x, styles[:, i + 2], skip)
        return skip


def dropin_layers(impl):
    return dict(ConstantInput=dropin.ConstantInput, StyledConv=dropin.StyledConv, ToRGB=dropin.ToRGB), dict(impl=impl)


def random_state(model):
    """Nonzero biases and noise weights so that every parameter matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("bias", "noise.weight")):
                p.normal_()
    return model.state_dict()


def synthesis_inputs(batch=2, channels=(8, 6, 5), style_dim=8):
    n_latent = 2 + 2 * (len(channels) - 1) + 1
    styles = torch.randn(batch, n_latent, style_dim)
    sizes = [4] + [4 * 2 ** (b // 2 + 1) for b in range(2 * (len(channels) - 1))]
    noises = [torch.randn(1 if i % 2 else batch, 1, s, s) for i, s in enumerate(sizes)]
    return styles, noises


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_synthesis_block_loads_plain_state_dict_and_matches(impl):
    torch.manual_seed(0)
    plain = Synthesis(PLAIN)
    state = random_state(plain)
    layers, kw = dropin_layers(impl)
    fused = Synthesis(layers, **kw)
    assert set(fused.state_dict()) == set(state)
    fused.load_state_dict(state, strict=True)
    styles, noises = synthesis_inputs()
    styles.requires_grad_()
    out, ref = fused(styles, noises), plain(styles, noises)
    assert out.shape == ref.shape == (2, 3, 16, 16)
    assert rel_err(out, ref) < 1e-5
    grad = torch.randn_like(ref)
    params = [p for _, p in sorted(fused.named_parameters())]
    ref_params = [p for _, p in sorted(plain.named_parameters())]
    got = torch.autograd.grad(out, [styles, *params], grad)
    want = torch.autograd.grad(ref, [styles, *ref_params], grad)
    for (name, _), g, w in zip([("styles", None), *sorted(fused.named_parameters())], got, want):
        assert rel_err(g, w) < 1e-4, name


def test_state_dict_layout():
    conv = dropin.StyledConv(4, 5, 3, 6, upsample=True)
    shapes = {k: tuple(v.shape) for k, v in conv.state_dict().items()}
    assert shapes == {
        "conv.weight": (1, 5, 4, 3, 3),
        "conv.modulation.weight": (4, 6),
        "conv.modulation.bias": (4,),
        "conv.blur.kernel": (4, 4),
        "noise.weight": (1,),
        "activate.bias": (5,),
    }
    assert torch.all(conv.conv.modulation.bias == 1)
    rgb = dropin.ToRGB(5, 6)
    assert {k: tuple(v.shape) for k, v in rgb.state_dict().items()} == {
        "upsample.kernel": (4, 4),
        "conv.weight": (1, 3, 5, 1, 1),
        "conv.modulation.weight": (5, 6),
        "conv.modulation.bias": (5,),
        "bias": (1, 3, 1, 1),
    }
    assert torch.allclose(rgb.upsample.kernel.sum(), torch.tensor(4.0))


def test_small_layers_match_plain_definitions():
    x = torch.randn(2, 3, 5, 6)
    blur = dropin.Blur((1, 3, 3, 1), pad=(2, 1))
    assert rel_err(blur(x), fir_filter(x, fir_kernel(), 2, 1)) < 1e-6
    assert rel_err(dropin.Upsample((1, 3, 3, 1))(x), fir_filter(x, fir_kernel(2), 2, 1, up=2)) < 1e-6
    act = dropin.FusedLeakyReLU(3)
    nn.init.normal_(act.bias)
    assert rel_err(act(x), F.leaky_relu(x + act.bias[:, None, None], 0.2) * math.sqrt(2)) < 1e-6
    lin = dropin.EqualLinear(6, 4, bias_init=0.5, lr_mul=0.01, activation="fused_lrelu")
    v = torch.randn(3, 6)
    want = F.leaky_relu(v @ (lin.weight * 0.01 / math.sqrt(6)).t() + 0.5 * 0.01, 0.2) * math.sqrt(2)
    assert rel_err(lin(v), want) < 1e-6
    noise = dropin.NoiseInjection()
    assert noise(x).shape == x.shape
    with pytest.raises(ValueError, match="downsample"):
        dropin.ModulatedConv2d(3, 4, 3, 8, downsample=True)
    with pytest.raises(ValueError, match="blur kernel"):
        dropin.ModulatedConv2d(3, 4, 3, 8, upsample=True, blur_kernel=(1, 2, 1))


def test_styled_conv_draws_fresh_noise():
    conv = dropin.StyledConv(3, 4, 3, 8, upsample=True)
    nn.init.ones_(conv.noise.weight)
    x, style = torch.randn(2, 3, 4, 4), torch.randn(2, 8)
    assert not torch.equal(conv(x, style), conv(x, style))


@pytest.mark.parametrize("impl", ["reference", "triton"])
def test_class_mlp_fusion_matches_plain_loop(impl):
    """Per class: L modulated/demodulated 1x1 layers, depth after `depth_layer`, features blended by softmax depth."""
    torch.manual_seed(0)
    K, L, C, F_out, D, P, B = 3, 4, 16, 16, 8, 20, 2
    block = dropin.ClassMLPFusion(K, L, C, F_out, D, depth_layer=1, impl=impl)
    with torch.no_grad():
        for p in (block.bias, block.depth_bias, block.feat_bias):
            p.normal_()
    pos, w = torch.randn(P, C), torch.randn(B, K * L, D)
    features, mask, depth = block(pos, w)

    depths, feats = [], []
    for k in range(K):
        x = pos.expand(B, P, C)
        for layer in range(L):
            s = (
                w[:, k * L + layer] @ block.style_weight[k, layer].t() / math.sqrt(D) + block.style_bias[k, layer]
            )  # [B, C]
            wt = block.weight[k, layer][None] * s[:, None, :] / math.sqrt(C)  # [B, C_out, C_in]
            wt = wt / torch.sqrt(wt.square().sum(-1, keepdim=True) + 1e-8)
            x = einsum(x, wt, "b p i, b o i -> b p o") + block.bias[k, layer]
            x = F.leaky_relu(x, 0.2) * math.sqrt(2)
            if layer == 1:
                depths.append(x @ block.depth_weight[k] / math.sqrt(C) + block.depth_bias[k])
        feats.append(x @ block.feat_weight[k].t() / math.sqrt(C) + block.feat_bias[k])  # [B, P, F]
    want_depth = torch.stack(depths, 1)  # [B, K, P]
    want_mask = torch.softmax(want_depth, 1)
    want_features = einsum(want_mask, torch.stack(feats, 1), "b k p, b k p f -> b f p")
    assert rel_err(depth, want_depth) < 1e-5
    assert rel_err(mask, want_mask) < 1e-5
    assert rel_err(features, want_features) < 1e-5
