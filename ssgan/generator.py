"""SemanticStyleGAN generator: mapping, latent layout, K batched local generators, fusion, render net."""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

from ssgan.config import SSGConfig
from ssgan.kernels import class_mlp, depth_fusion, styled_conv2d
from ssgan.kernels.nn import EqualLinear
from ssgan.latents import batched
from ssgan.layers import Upsample

NOISE_MODES = ("const", "random", "none")


@dataclass
class GeneratorOutput:
    image: torch.Tensor  # [B, 3, S, S]
    seg: torch.Tensor  # [B, K, S, S] logits in the 2*onehot-1 space
    coarse_seg: torch.Tensor  # [B, K, G, G] coarse mask rescaled to 2m-1
    depths: torch.Tensor  # [B, K, G, G] pseudo-depths (class 0 is all zeros)
    w_expanded: torch.Tensor  # [B, K*L, D]


class MappingNetwork(nn.Module):
    """z -> w: PixelNorm then n_mlp equalised linear layers with lr multiplier and leaky ReLU."""

    def __init__(self, style_dim, n_mlp, lr_mul):
        super().__init__()
        self.layers = nn.ModuleList(
            EqualLinear(style_dim, style_dim, lr_mul=lr_mul, activation="lrelu") for _ in range(n_mlp)
        )

    def forward(self, z):  # [B, D] -> [B, D]
        x = z * torch.rsqrt(z.square().mean(-1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        return x


def fourier_encoding(size, frequencies, dtype=None, device=None):
    """Fixed sin/cos encoding of a size x size grid in [-1, 1]^2: [x, y, sin(f x), sin(f y), cos(f x), cos(f y), ...]
    with f = 1, 2, ..., 2^(frequencies-1). Returns [size * size, 2 * (2 * frequencies + 1)] in `dtype` (default:
    torch's default dtype)."""
    axis = torch.linspace(-1, 1, size, dtype=dtype, device=device)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    coords = torch.stack([xs, ys], -1).reshape(-1, 2)  # [P, 2]
    features = [coords]
    for f in (2.0**n for n in range(frequencies)):
        features += [torch.sin(f * coords), torch.cos(f * coords)]
    return torch.cat(features, -1)  # [P, 2 * (2N + 1)]


class LocalGenerators(nn.Module):
    """All K local generators as stacked parameters; one tensor program over (sample, class)."""

    def __init__(self, cfg: SSGConfig):
        super().__init__()
        K, L, C, D, Fc = cfg.num_classes, cfg.local_layers, cfg.local_channel, cfg.style_dim, cfg.coarse_channel
        self.cfg = cfg
        self.pos_weight = nn.Parameter(torch.randn(C, 2 * (2 * cfg.pos_frequencies + 1)))  # learned 1x1 projection
        self.weight = nn.Parameter(torch.randn(K, L, C, C))
        self.bias = nn.Parameter(torch.zeros(K, L, C))
        self.style_weight = nn.Parameter(torch.randn(K, L, C, D))
        self.style_bias = nn.Parameter(torch.ones(K, L, C))
        self.depth_weight = nn.Parameter(torch.randn(K - 1, C))  # background (class 0) has no depth head
        self.depth_scale = nn.Parameter(torch.ones(K - 1, C))
        self.depth_bias = nn.Parameter(torch.zeros(K - 1))
        self.feat_weight = nn.Parameter(torch.randn(K, Fc, C))
        self.feat_scale = nn.Parameter(torch.ones(K, C))
        self.feat_bias = nn.Parameter(torch.zeros(K, Fc))
        self.register_buffer("transparent", torch.zeros(K, dtype=torch.bool), persistent=False)
        self.transparent[list(cfg.transparent)] = True

    def forward(self, w_expanded, composition_mask=None):
        """w_expanded: [B, K*L, D] -> features [B, F, G, G], mask m [B, K, G, G], depths [B, K, G, G]."""
        cfg = self.cfg
        C, G = cfg.local_channel, cfg.coarse_size
        # The encoding is built here, in the working dtype, like the original's: a buffer built once in float32
        # would only be widened by .double(), and the float64 model would then differ from the original by 1e-7.
        encoding = fourier_encoding(G, cfg.pos_frequencies, self.pos_weight.dtype, self.pos_weight.device)  # [P, E]
        pos = encoding @ (self.pos_weight / math.sqrt(encoding.shape[1])).t()  # [P, C], computed once for all B, K
        w = rearrange(w_expanded, "b (k l) d -> b k l d", k=cfg.num_classes)
        styles = einsum(w, self.style_weight, "b k l d, k l c d -> b k l c") / math.sqrt(cfg.style_dim)
        styles = styles + self.style_bias
        head_scale = 1 / math.sqrt(C)
        depth_weight = F.pad(self.depth_weight * self.depth_scale * head_scale, (0, 0, 1, 0))  # [K, C], row 0 zero
        depth_bias = F.pad(self.depth_bias, (1, 0))
        hidden, depth = class_mlp(
            pos, self.weight, self.bias, styles, depth_weight, depth_bias, cfg.depth_layers - 1, cfg.detach_texture
        )
        feat_weight = self.feat_weight * self.feat_scale[:, None, :] * head_scale
        transparent = self.transparent if cfg.transparent else None
        features, mask = depth_fusion(depth, hidden, feat_weight, self.feat_bias, transparent, composition_mask)
        to_map = lambda t: rearrange(t, "b c (h w) -> b c h w", h=G)  # noqa: E731
        return to_map(features), to_map(mask), to_map(depth)


class RenderConv(nn.Module):
    """Batch-shared weight-normalised 3x3 conv (optionally 2x up) + noise + bias + leaky ReLU."""

    def __init__(self, in_ch, out_ch, up):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.scale = nn.Parameter(torch.ones(in_ch))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.up = 2 if up else 1

    def forward(self, x, noise):  # [NCHW]
        return styled_conv2d(x, self.weight, self.scale, self.bias, noise, self.noise_strength, up=self.up)


class ToImage(nn.Module):
    """Non-modulated 1x1 conv with a learned per-input scale (no demodulation); the render net runs the RGB and
    segmentation heads of a block as one matmul (see RenderNet.heads)."""

    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.scale = nn.Parameter(torch.ones(in_ch))
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def effective_weight(self):  # [O, I]
        return self.weight[:, :, 0, 0] * self.scale / math.sqrt(self.weight.shape[1])


class RenderNet(nn.Module):
    """Upsamples the fused 64x64 features to the image and a segmentation refined from the coarse mask."""

    def __init__(self, cfg: SSGConfig):
        super().__init__()
        self.cfg = cfg
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.to_segs = nn.ModuleList()
        in_ch = cfg.coarse_channel
        for res in cfg.render_resolutions:
            out_ch = cfg.render_channels[res]
            if res // 2 == cfg.coarse_size:
                in_ch += cfg.coarse_channel  # the full-resolution fused features join here
            self.convs.append(RenderConv(in_ch, out_ch, up=True))
            self.convs.append(RenderConv(out_ch, out_ch, up=False))
            self.to_rgbs.append(ToImage(out_ch, 3))
            self.to_segs.append(ToImage(out_ch, cfg.num_classes))
            self.register_buffer(f"noise_{len(self.convs) - 2}", torch.randn(1, 1, res, res))
            self.register_buffer(f"noise_{len(self.convs) - 1}", torch.randn(1, 1, res, res))
            in_ch = out_ch
        self.upsample = Upsample()

    def noise(self, index, batch, mode, like):
        if mode == "const":
            return getattr(self, f"noise_{index}")
        if mode == "none":
            return None
        res = getattr(self, f"noise_{index}").shape[-1]
        return torch.randn(batch, 1, res, res, device=like.device, dtype=like.dtype)

    def heads(self, i, x):
        """Block i's RGB and segmentation 1x1 heads as one matmul: [B, C, H, W] -> [B, 3, H, W], [B, K, H, W]."""
        rgb, seg = self.to_rgbs[i], self.to_segs[i]
        weight = torch.cat([rgb.effective_weight(), seg.effective_weight()])  # [3 + K, C]
        bias = torch.cat([rgb.bias, seg.bias])
        y = torch.matmul(weight, x.flatten(2)) + bias[:, None]  # [B, 3 + K, H*W]
        return y.unflatten(2, x.shape[2:]).split([3, self.cfg.num_classes], 1)

    def forward(self, features, coarse_seg, noise_mode="const"):
        """features: [B, F, G, G]; coarse_seg: [B, K, G, G] -> image [B, 3, S, S], seg [B, K, S, S]."""
        cfg = self.cfg
        x = F.adaptive_avg_pool2d(features, cfg.min_feat_size)
        rgb = seg = None
        for i, res in enumerate(cfg.render_resolutions):
            if res // 2 == cfg.coarse_size:
                x = torch.cat([x, features], 1)
            x = self.convs[2 * i](x, self.noise(2 * i, x.shape[0], noise_mode, x))
            x = self.convs[2 * i + 1](x, self.noise(2 * i + 1, x.shape[0], noise_mode, x))
            new_rgb, new_seg = self.heads(i, x)
            rgb = new_rgb if rgb is None else new_rgb + self.upsample(rgb)
            seg = new_seg if seg is None else new_seg + self.upsample(seg)
            if cfg.residual_refine and res == cfg.coarse_size:
                seg = seg + coarse_seg
        return rgb, seg


class Generator(nn.Module):
    """SemanticStyleGAN generator. Call with z [B, D], or w as W [B, D], W+ [B, 2+2K, D] or expanded [B, K*L, D]
    (one code may come without B; `ssgan.latents` says how shapes are read)."""

    def __init__(self, cfg: SSGConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.style_dim, cfg.n_mlp, cfg.lr_mlp)
        self.local = LocalGenerators(cfg)
        self.render = RenderNet(cfg)
        self.register_buffer("expand_index", self._expand_index(cfg), persistent=False)
        self._w_avg = None

    @staticmethod
    def _expand_index(cfg):
        """[K*L] index into W+ for every modulated layer (class-major)."""
        index = torch.empty(cfg.num_classes, cfg.local_layers, dtype=torch.long)
        base, depth = cfg.base_layers, cfg.depth_layers
        for k in range(cfg.num_classes):
            shape_code, texture_code = base + 2 * k, base + 2 * k + 1
            index[k, :depth] = shape_code
            index[k, depth:] = texture_code
            if k > 0:  # foreground classes take the base codes first; the background has none
                index[k, :base] = torch.arange(base)
        return index.flatten()

    # --- latent space -----------------------------------------------------------------------------
    def layout(self, w):
        """Broadcast one w [B, D] to every W+ slot: [B, 2+2K, D]."""
        return w[:, None, :].expand(-1, self.cfg.n_latent, -1)

    def mix(self, w0, w1, generator=None):
        """Style mixing: base codes from w0; per sample and class, (shape, texture) from
        (w0, w0), (w0, w1) or (w1, w1) with equal probability.  [B, D] x2 -> W+ [B, 2+2K, D]"""
        cfg = self.cfg
        choice = torch.randint(0, 3, (w0.shape[0], cfg.num_classes), device=w0.device, generator=generator)
        shape_from_w1 = choice == 2
        texture_from_w1 = choice >= 1
        per_class = torch.stack([shape_from_w1, texture_from_w1], -1).flatten(1)  # [B, 2K]
        from_w1 = F.pad(per_class, (cfg.base_layers, 0), value=False)[..., None]  # [B, 2+2K, 1]
        return torch.where(from_w1, w1[:, None, :], w0[:, None, :])

    def expand(self, w_plus):
        """W+ [B, 2+2K, D] -> expanded [B, K*L, D]."""
        return w_plus[:, self.expand_index]

    @torch.no_grad()
    def mean_latent(self, n=10_000, seed=0):
        """Average w over n mapped z (cached per dtype and device), the centre of truncation. Returns [1, D]."""
        weight = self.local.weight
        key = (n, seed, weight.dtype, weight.device)
        if self._w_avg is None or self._w_avg[0] != key:
            z = torch.randn(n, self.cfg.style_dim, generator=torch.Generator().manual_seed(seed))
            z = z.to(weight.device, weight.dtype)  # the same draw in every dtype
            self._w_avg = (key, self.mapping(z).mean(0, keepdim=True))
        return self._w_avg[1]

    def to_expanded(self, z=None, w=None, psi=1.0, w_avg=None):
        """Resolve the inputs of `forward` to the expanded latent [B, K*L, D]."""
        cfg = self.cfg
        if (z is None) == (w is None):
            raise ValueError("give exactly one of z and w")
        if z is not None:
            if z.ndim != 2 or z.shape[1] != cfg.style_dim:
                raise ValueError(f"z must be [B, {cfg.style_dim}], got {tuple(z.shape)}")
            w, form = self.mapping(z)[:, None, :], "w"
        else:
            w, form = batched(cfg, w, ("w", "w+", "expanded"), what="w")
            w = w[:, None, :] if form == "w" else w
        if psi != 1:
            w_avg = self.mean_latent() if w_avg is None else w_avg
            w = w_avg.reshape(1, 1, -1) + psi * (w - w_avg.reshape(1, 1, -1))
        if form == "w":
            w = w.expand(-1, cfg.n_latent, -1)
        return w if form == "expanded" else self.expand(w)

    # --- synthesis --------------------------------------------------------------------------------
    def synthesis(self, w_expanded, noise_mode="const", composition_mask=None):
        cfg = self.cfg
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if composition_mask is not None:
            if composition_mask.shape != (w_expanded.shape[0], cfg.num_classes):
                raise ValueError(
                    f"composition_mask must be [B, K] = [{w_expanded.shape[0]}, {cfg.num_classes}], "
                    f"got {tuple(composition_mask.shape)}"
                )
            composition_mask = composition_mask.to(w_expanded.dtype)
        features, mask, depths = self.local(w_expanded, composition_mask)
        coarse_seg = 2 * mask - 1
        image, seg = self.render(features, coarse_seg, noise_mode)
        return GeneratorOutput(image, seg, coarse_seg, depths, w_expanded)

    def forward(self, z=None, w=None, psi=1.0, w_avg=None, noise_mode="const", composition_mask=None):
        w_expanded = self.to_expanded(z, w, psi, w_avg)
        return self.synthesis(w_expanded, noise_mode, composition_mask)
