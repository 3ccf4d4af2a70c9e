"""Equalised-learning-rate building blocks shared by the generator and the discriminator."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ssgan.kernels import bias_act, make_kernel, upfirdn2d

BLUR_TAPS = (1, 3, 3, 1)


class EqualLinear(nn.Module):
    """Linear layer with run-time weight scaling lr_mul/sqrt(in) and an optional fused leaky ReLU."""

    def __init__(self, in_dim, out_dim, bias_init=0.0, lr_mul=1.0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x):  # [..., in] -> [..., out]
        x = F.linear(x, self.weight * self.scale)
        return bias_act(x, self.bias * self.lr_mul, dim=x.ndim - 1, act=self.activation or "linear")


class Blur(nn.Module):
    """FIR low-pass filter with the [1,3,3,1] kernel; down=2 keeps (and computes) only the even pixels."""

    def __init__(self, padding, gain=1.0, down=1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_TAPS, gain), persistent=False)
        self.padding = padding
        self.down = down

    def forward(self, x):  # [NCHW]
        return upfirdn2d(x, self.kernel, down=self.down, padding=self.padding)


class Upsample(nn.Module):
    """2x FIR upsampling, as for the RGB/segmentation skip connections."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_TAPS, gain=4), persistent=False)

    def forward(self, x):  # [NCHW] -> [N, C, 2H, 2W]
        return upfirdn2d(x, self.kernel, up=2, padding=(2, 1))
