"""ssgan.kernels: fused Triton kernels for StyleGAN-family models, each with a PyTorch reference.

Importable alone: nothing here depends on the rest of ssgan.
"""
from .bias_act import bias_act
from .class_mlp import class_mlp
from .depth_fusion import depth_fusion
from .modulated_conv2d import modulated_conv2d, styled_conv2d
from .upfirdn2d import make_kernel, upfirdn2d

__all__ = ["bias_act", "class_mlp", "depth_fusion", "make_kernel", "modulated_conv2d", "styled_conv2d", "upfirdn2d"]
