"""Drop-in nn.Modules for StyleGAN2-family generators, backed by the fused kernels of ssgan.kernels.

Parameter names, shapes and buffers follow the layers of the widely used StyleGAN2 PyTorch port
(rosinality/stylegan2-pytorch), so a state dict saved from those layers loads unchanged:

    EqualLinear      weight [out, in], bias [out]                (scaled by lr_mul / sqrt(in) at run time)
    ModulatedConv2d  weight [1, O, I, k, k], modulation = EqualLinear(style_dim, I, bias_init=1),
                     blur.kernel [4, 4] when upsampling
    NoiseInjection   weight [1]
    FusedLeakyReLU   bias [C]
    StyledConv       conv (ModulatedConv2d), noise (NoiseInjection), activate (FusedLeakyReLU)
    ToRGB            conv (1x1 ModulatedConv2d, no demodulation), bias [1, 3, 1, 1], upsample.kernel
    Blur, Upsample   kernel buffer (normalised FIR, times factor^2 when upsampling)
    ConstantInput    input [1, C, size, size]

Every module takes impl="auto"|"triton"|"reference" (see ssgan.kernels._dispatch.resolve_impl).
"""

import math

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

from .bias_act import bias_act
from .class_mlp import class_mlp
from .depth_fusion import depth_fusion
from .modulated_conv2d import BLUR_TAPS, modulated_conv2d, styled_conv2d
from .upfirdn2d import make_kernel, upfirdn2d

__all__ = [
    "Blur",
    "ClassMLPFusion",
    "ConstantInput",
    "EqualLinear",
    "FusedLeakyReLU",
    "ModulatedConv2d",
    "NoiseInjection",
    "StyledConv",
    "ToRGB",
    "Upsample",
]


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; activation="fused_lrelu" (any truthy value) adds leaky ReLU * sqrt(2)."""

    def __init__(self, in_dim, out_dim, bias=True, bias_init=0.0, lr_mul=1.0, activation=None, impl="auto"):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation
        self.impl = impl

    def forward(self, x):  # [..., in] -> [..., out]
        out = F.linear(x, self.weight * self.scale)
        bias = None if self.bias is None else self.bias * self.lr_mul
        act = "lrelu" if self.activation else "linear"
        return bias_act(out, bias, dim=out.ndim - 1, act=act, impl=self.impl)


class FusedLeakyReLU(nn.Module):
    """act(x + bias) with leaky ReLU and a gain (sqrt(2) by default), bias over dim 1."""

    def __init__(self, channel, bias=True, negative_slope=0.2, scale=2**0.5, impl="auto"):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale
        self.impl = impl

    def forward(self, x):  # [NC...]
        return bias_act(x, self.bias, dim=1, act="lrelu", alpha=self.negative_slope, gain=self.scale, impl=self.impl)


def _check_fused_blur(blur_kernel):
    if tuple(blur_kernel) != BLUR_TAPS:
        raise ValueError(f"the fused upsampling conv uses the blur kernel {list(BLUR_TAPS)}, got {list(blur_kernel)}")


class Blur(nn.Module):
    """FIR filter with `kernel` taps (normalised, times upsample_factor^2) and padding (pad0, pad1)."""

    def __init__(self, kernel, pad, upsample_factor=1, impl="auto"):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel, gain=upsample_factor**2))
        self.pad = tuple(pad)
        self.impl = impl

    def forward(self, x):  # [NCHW]
        return upfirdn2d(x, self.kernel, padding=self.pad, impl=self.impl)


class Upsample(nn.Module):
    """FIR upsampling by `factor` (the skip path of ToRGB)."""

    def __init__(self, kernel, factor=2, impl="auto"):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel, gain=factor**2))
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.impl = impl

    def forward(self, x):  # [N, C, H, W] -> [N, C, H*factor, W*factor]
        return upfirdn2d(x, self.kernel, up=self.factor, padding=self.pad, impl=self.impl)


class ConstantInput(nn.Module):
    """A learned constant feature map, repeated over the batch of its input."""

    def __init__(self, channel, size=4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, x):  # x: anything with a batch dimension
        return self.input.repeat(x.shape[0], 1, 1, 1)


class NoiseInjection(nn.Module):
    """x + weight * noise, with fresh N(0, 1) noise per sample and pixel when none is given."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise=None):  # [NCHW]
        if noise is None:
            noise = random_noise_like(image)
        return image + self.weight * noise


def random_noise_like(image):
    batch, _, height, width = image.shape
    return image.new_empty(batch, 1, height, width).normal_()


class ModulatedConv2d(nn.Module):
    """Per-sample modulated conv: styles = modulation(style); 2x upsampling as transposed conv + blur, fused.

    `fused` is accepted for signature compatibility: this layer always runs the fused op.
    """

    def __init__(
        self,
        in_channel,
        out_channel,
        kernel_size,
        style_dim,
        demodulate=True,
        upsample=False,
        downsample=False,
        blur_kernel=BLUR_TAPS,
        fused=True,
        impl="auto",
    ):
        super().__init__()
        if downsample:
            raise ValueError("downsample=True is not supported: StyleGAN2 generators only upsample")
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1, impl=impl)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            # Held for the state-dict layout (blur.kernel); the fused op applies the same [1,3,3,1] blur.
            _check_fused_blur(blur_kernel)
            p = len(blur_kernel) - 2 - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2, impl=impl)
        self.impl = impl

    def forward(self, x, style):  # x: [N, I, H, W]; style: [N, style_dim] -> [N, O, H*up, W*up]
        return modulated_conv2d(
            x, self.weight[0], self.modulation(style), self.demodulate, 2 if self.upsample else 1, impl=self.impl
        )


class StyledConv(nn.Module):
    """Modulated conv + noise + bias + leaky ReLU, run as one fused op."""

    def __init__(
        self,
        in_channel,
        out_channel,
        kernel_size,
        style_dim,
        upsample=False,
        blur_kernel=BLUR_TAPS,
        demodulate=True,
        impl="auto",
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel,
            out_channel,
            kernel_size,
            style_dim,
            demodulate=demodulate,
            upsample=upsample,
            blur_kernel=blur_kernel,
            impl=impl,
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel, impl=impl)
        self.impl = impl

    def forward(self, x, style, noise=None):  # noise: [N or 1, 1, H*up, W*up] or None for fresh noise
        conv = self.conv
        up = 2 if conv.upsample else 1
        if noise is None:
            noise = random_noise_like(x.new_empty(x.shape[0], 1, x.shape[2] * up, x.shape[3] * up))
        styles = conv.modulation(style)
        return styled_conv2d(
            x, conv.weight[0], styles, self.activate.bias, noise, self.noise.weight, conv.demodulate, up, impl=self.impl
        )


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to 3 channels + bias, plus the upsampled skip image."""

    def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=BLUR_TAPS, impl="auto"):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel, impl=impl)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False, impl=impl)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):  # [N, I, H, W] -> [N, 3, H, W]
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ClassMLPFusion(nn.Module):
    """SemanticStyleGAN's K local generators and their depth fusion, as one block.

    Each class k runs an L-layer modulated 1x1 MLP (C channels; modulation by a per-layer affine of its
    style vector, demodulation, bias, leaky ReLU * sqrt(2)) on shared positional features; a depth head
    after layer `depth_layer` and a feature head after the last layer are blended with softmax(depth)
    without writing the K feature maps. Heads use the equalised 1/sqrt(C) scaling.
    """

    def __init__(
        self, num_classes, num_layers, channels, out_channels, style_dim, depth_layer, transparent=(), impl="auto"
    ):
        super().__init__()
        if not 0 <= depth_layer < num_layers:
            raise ValueError(f"depth_layer must be in [0, {num_layers}), got {depth_layer}")
        K, L, C = num_classes, num_layers, channels
        self.weight = nn.Parameter(torch.randn(K, L, C, C))
        self.bias = nn.Parameter(torch.zeros(K, L, C))
        self.style_weight = nn.Parameter(torch.randn(K, L, C, style_dim))
        self.style_bias = nn.Parameter(torch.ones(K, L, C))
        self.depth_weight = nn.Parameter(torch.randn(K, C))
        self.depth_bias = nn.Parameter(torch.zeros(K))
        self.feat_weight = nn.Parameter(torch.randn(K, out_channels, C))
        self.feat_bias = nn.Parameter(torch.zeros(K, out_channels))
        self.register_buffer("transparent", torch.zeros(K, dtype=torch.bool), persistent=False)
        self.transparent[list(transparent)] = True
        self.depth_layer = depth_layer
        self.impl = impl

    def forward(self, pos, w, composition_mask=None):
        """pos: [P, C] positional features; w: [B, K, L, style_dim] (or [B, K*L, style_dim]).

        Returns features [B, F, P], the coarse mask softmax(depth) [B, K, P] and depths [B, K, P].
        """
        num_classes, num_layers, channels = self.weight.shape[:3]
        if w.ndim == 3:
            w = rearrange(w, "b (k l) d -> b k l d", k=num_classes)
        if w.shape[1:3] != (num_classes, num_layers):
            raise ValueError(f"w of shape {tuple(w.shape)} does not fit {num_classes} classes x {num_layers} layers")
        styles = einsum(w, self.style_weight, "b k l d, k l c d -> b k l c") / math.sqrt(w.shape[-1]) + self.style_bias
        head_scale = 1 / math.sqrt(channels)
        hidden, depth = class_mlp(
            pos,
            self.weight,
            self.bias,
            styles,
            self.depth_weight * head_scale,
            self.depth_bias,
            self.depth_layer,
            impl=self.impl,
        )
        transparent = self.transparent if bool(self.transparent.any()) else None
        features, mask = depth_fusion(
            depth, hidden, self.feat_weight * head_scale, self.feat_bias, transparent, composition_mask, impl=self.impl
        )
        return features, mask, depth
