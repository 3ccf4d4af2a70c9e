"""FIR up/down-sampling of 2-d feature maps: upsample by zero insertion, pad, filter, downsample."""
import torch
import torch.nn.functional as F

from ._dispatch import resolve_impl


def make_kernel(taps, gain=1.0):
    """Separable 2-d FIR kernel from 1-d taps, normalised to sum to `gain`."""  # [kh, kw]
    k = torch.as_tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None] if k.ndim == 1 else k
    return k / k.sum() * gain


def _parse_padding(padding):
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:  # (x, y) or rosinality's (pad0, pad1) applied to both axes
        return padding[0], padding[1], padding[0], padding[1]
    return tuple(padding)


def upfirdn2d_reference(x, kernel, up=1, down=1, padding=0):
    """x: [NCHW]; kernel: [kh, kw]. padding: int, (pad0, pad1) on both axes, or (x0, x1, y0, y1).

    Same convention as StyleGAN2's upfirdn2d: true convolution (the kernel is flipped).
    Negative padding crops.
    """
    if x.ndim != 4:
        raise ValueError(f"x must be NCHW, got shape {tuple(x.shape)}")
    px0, px1, py0, py1 = _parse_padding(padding)
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upfirdn2d(x, kernel, up=1, down=1, padding=0, impl="auto"):
    """Upsample by `up`, pad, convolve with `kernel` ([kh, kw]), downsample by `down`.  # [NCHW]"""
    if resolve_impl(impl, x, kernel) == "triton":
        from ._upfirdn2d_triton import upfirdn2d_triton

        return upfirdn2d_triton(x, kernel, up, down, _parse_padding(padding))
    return upfirdn2d_reference(x, kernel, up, down, padding)
