"""FIR up/down-sampling of 2-d feature maps: upsample by zero insertion, pad, filter, downsample.

Per axis, with input length n, FIR kernel f of length k (true convolution, so f is flipped), pads p0, p1:

    u[j]   = x[j / up] if j % up == 0 else 0                          j in [0, n * up)
    y[o]   = sum_t f[k - 1 - t] * u[o * down + t - p0]                o in [0, (n * up + p0 + p1 - k) // down + 1)

Negative pads crop. The gradient w.r.t. x is the same op on dy with the kernel flipped, up and down swapped
and pads (k - p0 - 1, n * up - m * down + p0 - up + 1), m the output length; so the Triton path's backward
is itself an upfirdn2d and can be differentiated again. The FIR kernel is a constant there (it is a buffer
in every model); `upfirdn2d_reference` also differentiates w.r.t. it.
"""

import torch
import torch.nn.functional as F

from ._dispatch import new_output, resolve_impl

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLOCK = 1024


def make_kernel(taps, gain=1.0):
    """Separable 2-d FIR kernel from 1-d taps, normalised to sum to `gain`."""  # [kh, kw]
    k = torch.as_tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None] if k.ndim == 1 else k
    return k / k.sum() * gain


def _parse_padding(padding):
    """(x0, x1, y0, y1) from an int, (pad0, pad1) applied to both axes, or (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if len(padding) == 2:  # (x, y) or rosinality's (pad0, pad1) applied to both axes
        return padding[0], padding[1], padding[0], padding[1]
    if len(padding) == 4:
        return tuple(padding)
    raise ValueError(f"padding must be an int, (pad0, pad1) or (x0, x1, y0, y1), got {padding!r}")


def _output_length(n, k, up, down, p0, p1):
    return (n * up + p0 + p1 - k) // down + 1


def _check(x, kernel, up, down, padding):
    """Validate the arguments; return the pads (x0, x1, y0, y1) and the output size (oh, ow)."""
    if x.ndim != 4:
        raise ValueError(f"x must be NCHW, got shape {tuple(x.shape)}")
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-d [kh, kw], got shape {tuple(kernel.shape)}")
    for name, factor in (("up", up), ("down", down)):
        if not isinstance(factor, int) or factor < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {factor!r}")
    px0, px1, py0, py1 = _parse_padding(padding)
    (_, _, h, w), (kh, kw) = x.shape, kernel.shape
    oh = _output_length(h, kh, up, down, py0, py1)
    ow = _output_length(w, kw, up, down, px0, px1)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"upfirdn2d of a {h}x{w} map with a {kh}x{kw} kernel, up={up}, down={down}, "
            f"padding (x0, x1, y0, y1)={(px0, px1, py0, py1)} has no output pixels"
        )
    return (px0, px1, py0, py1), (oh, ow)


def _pad(x, x0, x1, y0, y1):
    """Zero-pad the last two axes; negative pads crop (after the padding, so a crop may eat into it)."""
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    return x[..., max(-y0, 0) : x.shape[-2] - max(-y1, 0), max(-x0, 0) : x.shape[-1] - max(-x1, 0)]


def upfirdn2d_naive(x, kernel, up=1, down=1, padding=0):
    """The definition, literally: zero insertion, pad, depthwise convolution, subsampling.  # [NCHW]

    Slow (it filters the zeros and the pixels that subsampling drops); the tests' oracle.
    """
    (px0, px1, py0, py1), _ = _check(x, kernel, up, down, padding)
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = _pad(x, px0, px1, py0, py1)
    weight = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def _depthwise(op, x, kernel, **kwargs):
    """`op` (F.conv2d or F.conv_transpose2d) of every channel of x [NCHW] with the same kernel [kh, kw]."""
    n, c, h, w = x.shape
    kernel = kernel.to(x.dtype)[None, None]  # [1, 1, kh, kw]
    if x.dtype == torch.float64 and x.device.type == "cpu":
        # oneDNN has no float64 convolution, and PyTorch's fallback runs a grouped one group by group (about
        # 100x slower here); one single-channel op over the N*C maps computes the same sums.
        y = op(x.reshape(n * c, 1, h, w), kernel, **kwargs)
        return y.reshape(n, c, *y.shape[2:])
    return op(x, kernel.expand(c, 1, -1, -1), groups=c, **kwargs)


def upfirdn2d_reference(x, kernel, up=1, down=1, padding=0):
    """x: [NCHW]; kernel: [kh, kw]. padding: int, (pad0, pad1) on both axes, or (x0, x1, y0, y1).

    Same convention as StyleGAN2's upfirdn2d: true convolution (the kernel is flipped).
    Negative padding crops. Exactly `upfirdn2d_naive` in math, without computing what it throws away:
    up > 1 is a stride-`up` transposed convolution (the zeros are never multiplied), down > 1 a strided
    convolution, and the symmetric part of the padding goes to the convolution instead of a padded copy.
    """
    (px0, px1, py0, py1), _ = _check(x, kernel, up, down, padding)
    kh, kw = kernel.shape
    if up == 1:
        sy, sx = max(min(py0, py1), 0), max(min(px0, px1), 0)
        if (px0, px1, py0, py1) != (sx, sx, sy, sy):
            x = _pad(x, px0 - sx, px1 - sx, py0 - sy, py1 - sy)  # the asymmetric rest
        return _depthwise(F.conv2d, x, torch.flip(kernel, [0, 1]), stride=down, padding=(sy, sx))
    # The transposed convolution's full output (length (n - 1) * up + k) holds the naive result from
    # index k - 1 - p0 on, and ends k - up - p1 before the naive result's end (negative: pad with zeros).
    start_y, end_y, start_x, end_x = kh - 1 - py0, kh - up - py1, kw - 1 - px0, kw - up - px1
    cy = min(max(min(start_y, end_y), 0), kh - 1)
    cx = min(max(min(start_x, end_x), 0), kw - 1)
    x = _depthwise(F.conv_transpose2d, x, kernel, stride=up, padding=(cy, cx))
    if (start_y, end_y, start_x, end_x) != (cy, cy, cx, cx):
        x = _pad(x, cx - start_x, cx - end_x, cy - start_y, cy - end_y)
    return x[:, :, ::down, ::down] if down > 1 else x


# ---------------------------------------------------------------------------------------------------------
# Triton kernel. Output pixels are grouped by phase (oy % up, ox % up): within one phase the taps that hit
# an inserted zero are the same for every pixel, so each program skips them with a scalar branch and never
# loads them. Grid: (blocks of the flattened [planes, ceil(oh / up), ceil(ow / up)] index, up * up phases).

if triton is not None:

    @triton.jit
    def _upfirdn2d_kernel(
        x_ptr,
        k_ptr,
        y_ptr,
        h,
        w,
        oh,
        ow,
        ohp,
        owp,
        total,
        px0,
        py0,
        UP: tl.constexpr,
        DOWN: tl.constexpr,
        KH: tl.constexpr,
        KW: tl.constexpr,
        F64: tl.constexpr,
        INDEX64: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        phase_y = tl.program_id(1) // UP
        phase_x = tl.program_id(1) % UP
        pid = tl.program_id(0).to(tl.int64) if INDEX64 else tl.program_id(0)  # 64-bit division only when needed
        e = pid * BLOCK + tl.arange(0, BLOCK)
        ix = e % owp
        iy = (e // owp) % ohp
        plane = e // (owp * ohp)
        oy = phase_y + UP * iy
        ox = phase_x + UP * ix
        valid = (e < total) & (oy < oh) & (ox < ow)
        x_plane = x_ptr + plane * h * w
        acc = tl.zeros([BLOCK], dtype=tl.float64 if F64 else tl.float32)
        for ty in tl.static_range(KH):
            # Upsampled row oy * DOWN + ty - py0 = UP * (DOWN * iy) + ry: a real row iff ry % UP == 0.
            ry = phase_y * DOWN + ty - py0
            if ry % UP == 0:
                row = DOWN * iy + ry // UP
                row_ok = valid & (row >= 0) & (row < h)
                for tx in tl.static_range(KW):
                    rx = phase_x * DOWN + tx - px0
                    if rx % UP == 0:
                        col = DOWN * ix + rx // UP
                        tap = tl.load(k_ptr + (KH - 1 - ty) * KW + (KW - 1 - tx))
                        xv = tl.load(x_plane + row * w + col, mask=row_ok & (col >= 0) & (col < w), other=0)
                        acc += xv.to(acc.dtype) * tap
        out = y_ptr + plane * oh * ow + oy * ow + ox
        tl.store(out, acc.to(y_ptr.dtype.element_ty), mask=valid)


def _launch(x, kernel, up, down, pads):
    """The forward pass on the GPU (or the Triton interpreter).  # [NCHW] -> [N, C, oh, ow]"""
    (px0, _, py0, _), (oh, ow) = _check(x, kernel, up, down, pads)
    x = x.contiguous()
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    f64 = x.dtype == torch.float64
    taps = kernel.detach().to(device=x.device, dtype=torch.float64 if f64 else torch.float32).contiguous()
    y = new_output((n, c, oh, ow), x)
    ohp, owp = triton.cdiv(oh, up), triton.cdiv(ow, up)
    total = n * c * ohp * owp
    if total == 0:
        return y
    _upfirdn2d_kernel[(triton.cdiv(total, BLOCK), up * up)](
        x,
        taps,
        y,
        h,
        w,
        oh,
        ow,
        ohp,
        owp,
        total,
        px0,
        py0,
        UP=up,
        DOWN=down,
        KH=kh,
        KW=kw,
        F64=f64,
        INDEX64=max(x.numel(), y.numel(), total + BLOCK) >= 2**31,
        BLOCK=BLOCK,
    )
    return y


def _gradient_pads(in_len, out_len, k, up, down, p0):
    return k - p0 - 1, in_len * up - out_len * down + p0 - up + 1


class _UpFirDn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, up, down, pads):
        y = _launch(x, kernel, up, down, pads)
        px0, _, py0, _ = pads
        (kh, kw), (h, w), (oh, ow) = kernel.shape, x.shape[2:], y.shape[2:]
        gx0, gx1 = _gradient_pads(w, ow, kw, up, down, px0)
        gy0, gy1 = _gradient_pads(h, oh, kh, up, down, py0)
        ctx.save_for_backward(kernel)
        ctx.args = down, up, (gx0, gx1, gy0, gy1)
        return y

    @staticmethod
    def backward(ctx, dy):
        (kernel,) = ctx.saved_tensors
        dx = _UpFirDn2d.apply(dy, torch.flip(kernel, [0, 1]), *ctx.args)
        return dx, None, None, None, None


def upfirdn2d_triton(x, kernel, up=1, down=1, padding=0):
    """The Triton path of `upfirdn2d`; differentiable (any order) w.r.t. x, not w.r.t. the FIR kernel."""
    if kernel.requires_grad:
        raise ValueError("upfirdn2d's Triton path does not differentiate w.r.t. the FIR kernel; use impl='reference'")
    pads, _ = _check(x, kernel, up, down, padding)
    return _UpFirDn2d.apply(x, kernel, up, down, pads)


def upfirdn2d(x, kernel, up=1, down=1, padding=0, impl="auto"):
    """Upsample by `up`, pad, convolve with `kernel` ([kh, kw]), downsample by `down`.  # [NCHW]"""
    if resolve_impl(impl, x, kernel, op="upfirdn2d") == "triton":
        return upfirdn2d_triton(x, kernel, up, down, padding)
    return upfirdn2d_reference(x, kernel, up, down, padding)
