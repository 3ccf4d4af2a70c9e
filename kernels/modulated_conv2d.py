"""StyleGAN2 modulated convolution, per-sample or batch-shared, with an optional fused epilogue.

    W'[b, o, i, :, :] = W[o, i, :, :] * s[b, i] / sqrt(I * kh * kw)
    W''[b, o]         = W'[b, o] * rsqrt(sum_{i, kh, kw} W'[b, o]^2 + 1e-8)      (if demodulate)
    y = conv(x, W'')  or, with up=2, a stride-2 transposed conv followed by a [1,3,3,1] blur.

Styles of shape [I] are shared by the batch (SemanticStyleGAN's render net), so the op is one plain
convolution; styles of shape [B, I] give StyleGAN2's per-sample form.
"""
import math

import torch
import torch.nn.functional as F

from ._dispatch import resolve_impl
from .bias_act import bias_act_reference
from .upfirdn2d import make_kernel, upfirdn2d_reference

BLUR_TAPS = (1, 3, 3, 1)


def modulated_conv2d_reference(x, weight, styles, demodulate=True, up=1):
    """x: [NCHW]; weight: [O, I, kh, kw]; styles: [I] (batch-shared) or [N, I]. Returns [N, O, H*up, W*up]."""
    if up not in (1, 2):
        raise ValueError(f"up must be 1 or 2, got {up}")
    out_ch, in_ch, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != in_ch:
        raise ValueError(f"x of shape {tuple(x.shape)} does not fit a weight with {in_ch} input channels")
    shared = styles.ndim == 1
    if styles.shape[-1] != in_ch or (not shared and styles.shape[0] != x.shape[0]):
        raise ValueError(f"styles of shape {tuple(styles.shape)} do not fit x {tuple(x.shape)} and weight {tuple(weight.shape)}")
    scale = 1 / math.sqrt(in_ch * kh * kw)
    if shared:
        w = weight * (styles * scale)[None, :, None, None]  # [O, I, kh, kw]
        if demodulate:
            w = w * torch.rsqrt(w.square().sum([1, 2, 3], keepdim=True) + 1e-8)
        if up == 1:
            return F.conv2d(x, w, padding=kh // 2)
        y = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
    else:
        # Per-sample: scale the input, convolve with the shared weight, rescale the output (equivalent).
        s = styles * scale  # [N, I]
        x = x * s[:, :, None, None]
        if up == 1:
            y = F.conv2d(x, weight, padding=kh // 2)
        else:
            y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
        if demodulate:
            demod = torch.rsqrt(weight.square().sum([2, 3])[None] @ s.square()[..., None] + 1e-8)  # [N, O, 1]
            y = y * demod[..., None]
        if up == 1:
            return y
    return upfirdn2d_reference(y, make_kernel(BLUR_TAPS, gain=4).to(y), padding=1)


def styled_conv2d_reference(x, weight, styles, bias, noise=None, noise_strength=None, demodulate=True, up=1):
    """Modulated conv, then noise * strength, then bias + leaky ReLU * sqrt(2).  # [NCHW]

    noise: [N or 1, 1, H, W] or None; noise_strength: scalar tensor.
    """
    y = modulated_conv2d_reference(x, weight, styles, demodulate, up)
    if noise is not None:
        y = y + noise_strength * noise
    return bias_act_reference(y, bias)


def modulated_conv2d(x, weight, styles, demodulate=True, up=1, impl="auto"):
    """Modulated (and demodulated) convolution; see `modulated_conv2d_reference`."""
    if resolve_impl(impl, x, weight, styles) == "triton":
        from ._modulated_conv2d_triton import modulated_conv2d_triton

        return modulated_conv2d_triton(x, weight, styles, demodulate, up)
    return modulated_conv2d_reference(x, weight, styles, demodulate, up)


def styled_conv2d(x, weight, styles, bias, noise=None, noise_strength=None, demodulate=True, up=1, impl="auto"):
    """Modulated conv with the noise + bias + leaky-ReLU epilogue fused; see `styled_conv2d_reference`."""
    if resolve_impl(impl, x, weight, styles) == "triton":
        from ._modulated_conv2d_triton import styled_conv2d_triton

        return styled_conv2d_triton(x, weight, styles, bias, noise, noise_strength, demodulate, up)
    return styled_conv2d_reference(x, weight, styles, bias, noise, noise_strength, demodulate, up)
