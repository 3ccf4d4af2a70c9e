"""Dual-branch discriminator: StyleGAN2 ResNet branches on the image and the segmentation, summed at 4x4."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ssgan.config import SSGConfig
from ssgan.kernels import bias_act
from ssgan.kernels.nn import EqualLinear
from ssgan.layers import Blur


SQRT2 = math.sqrt(2)


class EqualConv2d(nn.Module):
    """Conv with run-time weight scaling in_gain/sqrt(fan_in); optional 2x downsampling after a blur."""

    def __init__(self, in_ch, out_ch, kernel_size, downsample=False, in_gain=1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = in_gain / math.sqrt(in_ch * kernel_size**2)
        self.downsample = downsample
        if downsample:
            p = 2 + kernel_size - 1
            # A 1x1 conv reads only the blur's even pixels, so the blur computes only those.
            self.blur = Blur(padding=((p + 1) // 2, p // 2), down=2 if kernel_size == 1 else 1)

    def forward(self, x):  # [NCHW]
        weight = self.weight * self.scale
        if not self.downsample:
            return F.conv2d(x, weight, padding=self.weight.shape[-1] // 2)
        return F.conv2d(self.blur(x), weight, stride=self.blur.down % 2 + 1)


class ConvLayer(nn.Module):
    """EqualConv2d followed by bias + leaky ReLU (or nothing, for the skip path).

    StyleGAN2 multiplies every leaky ReLU output by sqrt(2). Leaky ReLU, blur and conv are positively
    homogeneous, so such a factor can instead ride on the weights of the layer that reads the activation:
    `act_gain` is the factor this layer's output keeps, `in_gain` the one its input left out. Same maths,
    one pass less over each activation map.
    """

    def __init__(self, in_ch, out_ch, kernel_size, downsample=False, activate=True, in_gain=1.0, act_gain=SQRT2):
        super().__init__()
        self.conv = EqualConv2d(in_ch, out_ch, kernel_size, downsample, in_gain)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if activate else None
        self.act_gain = act_gain

    def forward(self, x):
        x = self.conv(x)
        return x if self.bias is None else bias_act(x, self.bias, gain=self.act_gain)


class ResBlock(nn.Module):
    """(conv2(conv1(x)) + skip(x)) / sqrt(2), with the activations' sqrt(2) folded into the next weights.

    in_gain: the factor the input x left out (sqrt(2) after an activation without it, else 1).
    """

    def __init__(self, in_ch, out_ch, in_gain=1.0):
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, in_gain=in_gain, act_gain=1.0)
        # conv2's own sqrt(2) cancels the residual's 1 / sqrt(2)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, in_gain=SQRT2, act_gain=1.0)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, activate=False, in_gain=in_gain / SQRT2)

    def forward(self, x):  # [N, I, H, W] -> [N, O, H/2, W/2]
        return self.conv2(self.conv1(x)) + self.skip(x)


class Branch(nn.Sequential):
    """1x1 ConvLayer from the input channels, then ResBlocks from S down to 4x4."""

    def __init__(self, in_dim, cfg: SSGConfig):
        res = cfg.disc_resolutions
        ch = cfg.disc_channels
        first = ConvLayer(in_dim, ch[res[0]], 1, act_gain=1.0)
        super().__init__(first, *(ResBlock(ch[a], ch[b], in_gain=SQRT2 if a == res[0] else 1.0) for a, b in zip(res, res[1:])))


class Discriminator(nn.Module):
    """D(image, seg=None) -> [B, 1] logits. Without seg only the image branch runs (domain adaptation)."""

    stddev_group = 4

    def __init__(self, cfg: SSGConfig):
        super().__init__()
        self.cfg = cfg
        ch4 = cfg.disc_channels[4]
        self.image_branch = Branch(3, cfg)
        self.seg_branch = Branch(cfg.num_classes, cfg)
        self.final_conv = ConvLayer(ch4 + 1, ch4, 3)
        self.final_linear = EqualLinear(ch4 * 16, ch4, activation="lrelu")
        self.logit = EqualLinear(ch4, 1)

    def minibatch_stddev(self, x):  # [B, C, 4, 4] -> [B, C+1, 4, 4]
        batch, _, h, w = x.shape
        group = min(batch, self.stddev_group)
        if batch % group:
            raise ValueError(f"the discriminator's batch ({batch}) must be divisible by min(batch, {self.stddev_group})")
        grouped = x.reshape(group, -1, *x.shape[1:])
        std = torch.sqrt(grouped.var(0, unbiased=False) + 1e-8).mean([1, 2, 3])  # [B/group]
        return torch.cat([x, std.repeat(group)[:, None, None, None].expand(-1, 1, h, w)], 1)

    def forward(self, image, seg=None):
        cfg = self.cfg
        size = (cfg.size, cfg.size)
        if image.ndim != 4 or image.shape[1] != 3 or tuple(image.shape[2:]) != size:
            raise ValueError(f"image must be [B, 3, {cfg.size}, {cfg.size}], got {tuple(image.shape)}")
        x = self.image_branch(image)
        if seg is not None:
            if seg.shape != (image.shape[0], cfg.num_classes, *size):
                raise ValueError(
                    f"seg must be [B, {cfg.num_classes}, {cfg.size}, {cfg.size}] like the image, got {tuple(seg.shape)}"
                )
            x = x + self.seg_branch(seg)
        x = self.final_conv(self.minibatch_stddev(x))
        return self.logit(self.final_linear(x.flatten(1)))
