"""Blur and upsampling modules shared by the generator and the discriminator (their FIR kernels are not saved in
state dicts, unlike the drop-in layers of ssgan.kernels.nn, so checkpoints keep the original's tensor set)."""
from torch import nn

from ssgan.kernels import make_kernel, upfirdn2d

BLUR_TAPS = (1, 3, 3, 1)


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
