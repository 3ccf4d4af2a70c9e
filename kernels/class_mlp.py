"""Per-class coordinate MLP: the K local generators of SemanticStyleGAN, batched over (sample, class).

Every layer is a modulated, demodulated 1x1 convolution (a per-pixel linear map) followed by bias,
leaky ReLU and a gain of sqrt(2). Modulation and demodulation are folded into per-(sample, class,
layer) scale vectors so that the weights stay shared across the batch:

    y[o] = lrelu(demod[o] * sum_i W[o, i] * (s[i] / sqrt(C)) * x[i] + b[o]) * sqrt(2)
    demod[o] = rsqrt(sum_i (W[o, i] * s[i] / sqrt(C))^2 + 1e-8)

After layer `depth_layer` a linear head gives the pseudo-depth of each class.
"""
import math

import torch
import torch.nn.functional as F
from einops import einsum

from ._dispatch import resolve_impl

SQRT2 = math.sqrt(2.0)


def demodulation(weight, styles):
    """weight: [K, L, O, I]; styles: [B, K, L, I] (already divided by sqrt(I)) -> [B, K, L, O]."""
    return torch.rsqrt(einsum(weight.square(), styles.square(), "k l o i, b k l i -> b k l o") + 1e-8)


def class_mlp_reference(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer, detach_texture=False):
    """Run the K local MLPs on a shared positional encoding.

    pos:          [P, C]        positional features of the P grid points (shared by samples and classes)
    weight:       [K, L, C, C]  raw layer weights (out, in)
    bias:         [K, L, C]
    styles:       [B, K, L, C]  style vectors s = affine(w), one per sample, class and layer
    depth_weight: [K, C]        depth head, already scaled (a zero row gives a class no depth)
    depth_bias:   [K]
    depth_layer:  index of the layer whose output feeds the depth head
    Returns hidden [B, K, P, C] (output of the last layer) and depth [B, K, P].
    """
    num_layers, channels = weight.shape[1], weight.shape[-1]
    styles = styles / math.sqrt(channels)
    demod = demodulation(weight, styles)  # [B, K, L, C]
    x = pos
    depth = None
    for layer in range(num_layers):
        x = x * styles[:, :, layer, None, :]  # [B, K, P, C]
        x = einsum(x, weight[:, layer], "b k p i, k o i -> b k p o")
        x = x * demod[:, :, layer, None, :] + bias[None, :, layer, None, :]
        x = F.leaky_relu(x, 0.2) * SQRT2
        if layer == depth_layer:
            depth = einsum(x, depth_weight, "b k p c, k c -> b k p") + depth_bias[None, :, None]
            if detach_texture:
                x = x.detach()
    return x, depth


def class_mlp(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer, detach_texture=False, impl="auto"):
    """Fused per-class coordinate MLP; see `class_mlp_reference` for shapes."""
    if not detach_texture and resolve_impl(impl, pos, weight, styles) == "triton":
        from ._class_mlp_triton import class_mlp_triton

        return class_mlp_triton(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer)
    return class_mlp_reference(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer, detach_texture)
