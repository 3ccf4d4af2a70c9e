"""Fused bias + activation: y = act(x + b) * gain, the StyleGAN2 `fused_lrelu` epilogue."""
import math

import torch
import torch.nn.functional as F

from ._dispatch import resolve_impl

SQRT2 = math.sqrt(2.0)


def bias_act_reference(x, bias=None, dim=1, act="lrelu", alpha=0.2, gain=None):
    """x: any shape; bias: [x.shape[dim]] or None. act is "lrelu" or "linear"."""
    if act not in ("lrelu", "linear"):
        raise ValueError(f"act must be 'lrelu' or 'linear', got {act!r}")
    if gain is None:
        gain = SQRT2 if act == "lrelu" else 1.0
    if bias is not None:
        if bias.ndim != 1 or bias.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(bias.shape)} does not match dim {dim} of x {tuple(x.shape)}")
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    return x * gain if gain != 1 else x


def bias_act(x, bias=None, dim=1, act="lrelu", alpha=0.2, gain=None, impl="auto"):
    """act(x + bias) * gain; gain defaults to sqrt(2) for lrelu and 1 for linear."""
    if resolve_impl(impl, x, bias) == "triton":
        from ._bias_act_triton import bias_act_triton

        return bias_act_triton(x, bias, dim, act, alpha, gain)
    return bias_act_reference(x, bias, dim, act, alpha, gain)
