"""StyleGAN2 modulated convolution, per-sample or batch-shared, with an optional fused epilogue.

    W'[b, o, i, :, :] = W[o, i, :, :] * s[b, i] / sqrt(I * kh * kw)
    W''[b, o]         = W'[b, o] * rsqrt(sum_{i, kh, kw} W'[b, o]^2 + 1e-8)      (if demodulate)
    y = conv(x, W'')  or, with up=2, a stride-2 transposed conv followed by a [1,3,3,1] blur.

Styles of shape [I] are shared by the batch (SemanticStyleGAN's render net), so the op is one plain
convolution; styles of shape [B, I] give StyleGAN2's per-sample form.

The Triton path never builds per-sample weights. It computes

    y[n, o] = out_scale[n, o] * conv(x[n] * in_scale[n, :, None, None], W)[o]

with in_scale = s / sqrt(I kh kw) folded into the loads of x and out_scale = the demodulation
coefficients applied in the epilogue (with noise * strength + bias + leaky ReLU * sqrt(2) for
`styled_conv2d`). For up=2 the transposed conv and the blur are merged into one 6x6 filter on the
zero-upsampled input, whose four output phases (y[2m+py, 2n+px]) are four 3x3 "same" convolutions of
x: the kernel runs them as one convolution with 4*O output channels and writes each phase in place.
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from ._dispatch import interpreting, new_output, resolve_impl
from .bias_act import SQRT2, bias_act, bias_act_reference
from .upfirdn2d import make_kernel, upfirdn2d

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

BLUR_TAPS = (1, 3, 3, 1)
LRELU_SLOPE = 0.2


def modulated_conv2d_reference(x, weight, styles, demodulate=True, up=1, parts_impl="reference"):
    """x: [NCHW]; weight: [O, I, kh, kw]; styles: [I] (batch-shared) or [N, I]. Returns [N, O, H*up, W*up].

    parts_impl: impl of the blur after an up=2 conv (`upfirdn2d`); the conv itself is always torch's (cuDNN)."""
    return _modulated_conv2d(x, weight, styles, demodulate, up, gain=1.0, parts_impl=parts_impl)


def _modulated_conv2d(x, weight, styles, demodulate, up, gain, parts_impl="reference"):
    """modulated_conv2d_reference times `gain`, applied to the small weights or scales, not to the output.

    Always returns a fresh tensor that no backward needs, so callers may finish it in place."""
    if up not in (1, 2):
        raise ValueError(f"up must be 1 or 2, got {up}")
    out_ch, in_ch, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != in_ch:
        raise ValueError(f"x of shape {tuple(x.shape)} does not fit a weight with {in_ch} input channels")
    shared = styles.ndim == 1
    if styles.shape[-1] != in_ch or (not shared and styles.shape[0] != x.shape[0]):
        raise ValueError(
            f"styles of shape {tuple(styles.shape)} do not fit x {tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    scale = 1 / math.sqrt(in_ch * kh * kw)
    if shared:
        w = weight * (styles * scale)[None, :, None, None]  # [O, I, kh, kw]
        if demodulate:
            w = w * torch.rsqrt(w.square().sum([1, 2, 3], keepdim=True) + 1e-8)
        if gain != 1:
            w = w * gain
        if up == 1:
            return F.conv2d(x, w, padding=kh // 2)
        y = _conv_transpose2d_nchw(x, w.transpose(0, 1))
    else:
        # Per-sample: scale the input, convolve with the shared weight, rescale the output (equivalent).
        s = styles * scale  # [N, I]
        x = x * (s if demodulate else s * gain)[:, :, None, None]
        if up == 1:
            y = F.conv2d(x, weight, padding=kh // 2)
        else:
            y = _conv_transpose2d_nchw(x, weight.transpose(0, 1))
        if demodulate:
            demod = torch.rsqrt(weight.square().sum([2, 3])[None] @ s.square()[..., None] + 1e-8)  # [N, O, 1]
            y = y * (demod * gain)[..., None]
        if up == 1:
            return y
    return upfirdn2d(y, make_kernel(BLUR_TAPS, gain=4).to(y), padding=1, impl=parts_impl)


def _conv_transpose2d_nchw(x, weight):
    """Stride-2 transposed conv; on CPU computed in NCHW, its result in x's memory format.

    On CPU, oneDNN's weight gradient of a transposed conv is about 1.6x slower with a channels-last input (as
    the render net's is, coming from the fused features); two layout copies cost far less. Not measured on
    GPUs, so left to cuDNN there."""
    if x.device.type != "cpu":
        return F.conv_transpose2d(x, weight, stride=2)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    y = F.conv_transpose2d(x.contiguous(), weight, stride=2)
    return y.contiguous(memory_format=torch.channels_last) if channels_last else y


def styled_conv2d_reference(x, weight, styles, bias, noise=None, noise_strength=None, demodulate=True, up=1,
                            parts_impl="reference"):
    """Modulated conv, then noise * strength, then bias + leaky ReLU * sqrt(2).  # [NCHW]

    noise: [N or 1, 1, H, W] or None; noise_strength: scalar tensor. parts_impl: impl of the blur (`upfirdn2d`)
    and of the bias + leaky ReLU (`bias_act`); the conv itself is always torch's (cuDNN).
    """
    # lrelu(z) * sqrt(2) == lrelu(sqrt(2) * z): the gain goes into the weights, noise and bias, and the
    # epilogue runs in place on the conv's fresh output, which spares three full-size tensors each way.
    y = _modulated_conv2d(x, weight, styles, demodulate, up, gain=SQRT2, parts_impl=parts_impl)
    if noise is not None:
        y = y.add_(noise * (noise_strength * SQRT2))
    if resolve_impl(parts_impl, y, bias, op="bias_act") == "triton":
        return bias_act(y, bias * SQRT2, alpha=LRELU_SLOPE, gain=1.0, impl="triton")  # one pass instead of two
    y = y.add_(bias[:, None, None] * SQRT2)
    return F.leaky_relu_(y, LRELU_SLOPE)


def modulated_conv2d(x, weight, styles, demodulate=True, up=1, impl="auto"):
    """Modulated (and demodulated) convolution; see `modulated_conv2d_reference`."""
    if resolve_impl(impl, x, weight, styles, op="modulated_conv2d") == "triton":
        return _modulated_conv2d_triton(x, weight, styles, demodulate, up)
    return modulated_conv2d_reference(x, weight, styles, demodulate, up, parts_impl=impl)


def styled_conv2d(x, weight, styles, bias, noise=None, noise_strength=None, demodulate=True, up=1, impl="auto"):
    """Modulated conv with the noise + bias + leaky-ReLU epilogue fused; see `styled_conv2d_reference`."""
    if resolve_impl(impl, x, weight, styles, op="styled_conv2d") == "triton":
        return _modulated_conv2d_triton(x, weight, styles, demodulate, up, bias, noise, noise_strength)
    # cuDNN's conv; under impl="auto" on CUDA the blur and the epilogue still take their fused Triton kernels
    return styled_conv2d_reference(x, weight, styles, bias, noise, noise_strength, demodulate, up, parts_impl=impl)


# ---------------------------------------------------------------------------------------------
# Triton path: the op as a convolution with input and output scales, and its reference.


def phase_weight(weight, up):
    """[O, I, k, k] -> [O*up*up, I, k, k]: up=2 merges the stride-2 transposed conv and the x4 blur.

    The merged filter E = W (*) blur is 6x6 on the zero-upsampled input; output phase (py, px) sees the
    taps E[4+py-2t, 4+px-2u], t, u in 0..2, which is a 3x3 "same" convolution of x.
    """
    if up == 1:
        return weight
    out_ch, in_ch = weight.shape[:2]
    blur = make_kernel(BLUR_TAPS, gain=4).to(weight)  # [4, 4], symmetric
    merged = F.conv2d(F.pad(weight.reshape(out_ch * in_ch, 1, 3, 3), [3, 3, 3, 3]), blur[None, None])  # [OI, 1, 6, 6]
    taps = merged.flip(-2, -1).reshape(out_ch, in_ch, 3, 2, 3, 2).flip(3, 5)  # E[4+p-2t] = flipped[2t+1-p]
    return rearrange(taps, "o i t py u px -> (o py px) i t u")


def scaled_conv2d_reference(x, weight, in_scale, out_scale, up=1, bias=None, noise=None, noise_strength=None):
    """What the Triton kernel computes, in PyTorch (used to differentiate the backward).

    x: [N, I, H, W]; weight: [O*up*up, I, k, k] from `phase_weight`; in_scale: [N, I];
    out_scale: [N, O] or None. With a bias, the noise + bias + leaky ReLU epilogue follows.
    """
    z = F.conv2d(x * in_scale[:, :, None, None].to(x.dtype), weight, padding=weight.shape[-1] // 2)
    y = rearrange(z, "n (o py px) h w -> n o (h py) (w px)", py=up, px=up)
    if out_scale is not None:
        y = y * out_scale[:, :, None, None].to(y.dtype)
    if bias is None:
        return y
    if noise is not None:
        y = y + noise_strength * noise
    return bias_act_reference(y, bias)


def _check_triton_args(x, weight, up, bias, noise, noise_strength):
    out_ch, _, kh, kw = weight.shape
    if x.dtype != weight.dtype:
        raise ValueError(f"x ({x.dtype}) and weight ({weight.dtype}) must have the same dtype")
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"the Triton modulated conv needs a square odd kernel, got {kh}x{kw}")
    if up == 2 and kh != 3:
        raise ValueError(f"the Triton modulated conv supports up=2 only with 3x3 kernels, got {kh}x{kw}")
    if bias is not None and tuple(bias.shape) != (out_ch,):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not fit {out_ch} output channels")
    if noise is not None:
        n, _, h, w = x.shape
        if noise_strength is None:
            raise ValueError("noise was given without noise_strength")
        if noise.ndim != 4 or noise.shape[0] not in (1, n) or tuple(noise.shape[1:]) != (1, h * up, w * up):
            raise ValueError(f"noise of shape {tuple(noise.shape)} must be [{n} or 1, 1, {h * up}, {w * up}]")


def _modulated_conv2d_triton(x, weight, styles, demodulate, up, bias=None, noise=None, noise_strength=None):
    if up not in (1, 2):
        raise ValueError(f"up must be 1 or 2, got {up}")
    in_ch = weight.shape[1]
    if x.ndim != 4 or x.shape[1] != in_ch:
        raise ValueError(f"x of shape {tuple(x.shape)} does not fit a weight with {in_ch} input channels")
    if styles.ndim not in (1, 2) or styles.shape[-1] != in_ch or (styles.ndim == 2 and styles.shape[0] != x.shape[0]):
        raise ValueError(
            f"styles of shape {tuple(styles.shape)} do not fit x {tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    _check_triton_args(x, weight, up, bias, noise, noise_strength)
    if triton is None:
        raise RuntimeError("impl='triton' was requested but triton is not installed")
    # Scales in float32 (float64 for float64 inputs) whatever the input precision.
    scale_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    in_scale = styles.to(scale_dtype) / math.sqrt(weight[0].numel())  # [I] or [N, I]
    out_scale = None
    if demodulate:
        energy = weight.to(scale_dtype).square().sum([2, 3])  # [O, I]
        out_scale = torch.rsqrt(in_scale.square() @ energy.t() + 1e-8)  # [O] or [N, O]
        out_scale = out_scale.expand(x.shape[0], -1)
    in_scale = in_scale.expand(x.shape[0], -1)
    if noise is not None:
        noise_strength = torch.as_tensor(noise_strength, device=x.device, dtype=x.dtype)
    weight = phase_weight(weight, up)
    # The backward needs z (before the output scale and epilogue); without either, z is y. Inference skips it.
    operands = (x, weight, in_scale, out_scale, bias, noise, noise_strength)
    keep_z = (out_scale is not None or bias is not None) and torch.is_grad_enabled()
    keep_z = keep_z and any(t is not None and t.requires_grad for t in operands)
    return _ScaledConv2d.apply(x, weight, in_scale, out_scale, up, bias, noise, noise_strength, keep_z)


class _ScaledConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, in_scale, out_scale, up, bias, noise, noise_strength, keep_z):
        y, z = _conv_forward(x, weight, in_scale, out_scale, up, bias, noise, noise_strength, store_z=keep_z)
        ctx.up = up
        ctx.save_for_backward(x, weight, in_scale, out_scale, bias, noise, noise_strength, z if keep_z else y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, in_scale, out_scale, bias, noise, noise_strength, z = ctx.saved_tensors
        up = ctx.up
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            # create_graph=True (path length, R1): differentiate the reference so that this is differentiable too.
            inputs = (x, weight, in_scale, out_scale, None, bias, noise, noise_strength, None)
            wanted = [t for t, need in zip(inputs, needs) if need]
            with torch.enable_grad():
                y = scaled_conv2d_reference(x, weight, in_scale, out_scale, up, bias, noise, noise_strength)
                grads = iter(torch.autograd.grad(y, wanted, grad, create_graph=True, allow_unused=True))
            return tuple(next(grads) if need else None for need in needs)

        grad = grad.contiguous()
        grad_bias = grad_noise = grad_strength = grad_out_scale = None
        if bias is not None:  # undo the epilogue: d/dpre of lrelu(pre) * sqrt(2)
            pre = z * out_scale[:, :, None, None] if out_scale is not None else z
            if noise is not None:
                pre = pre + noise_strength * noise
            pre = pre + bias[:, None, None]
            # the slopes as tensors of grad's dtype: torch.where of two Python floats rounds them to float32
            slope = torch.where(pre > 0, grad.new_tensor(SQRT2), grad.new_tensor(LRELU_SLOPE * SQRT2))
            grad = grad * slope
            grad_bias = grad.sum([0, 2, 3]) if needs[5] else None
            if noise is not None and needs[6]:
                grad_noise = (grad * noise_strength).sum(1, keepdim=True)
                grad_noise = grad_noise.sum(0, keepdim=True) if noise.shape[0] == 1 else grad_noise
            if noise is not None and needs[7]:
                grad_strength = (grad * noise).sum().reshape(noise_strength.shape)
        if out_scale is not None and needs[3]:
            grad_out_scale = (grad.to(out_scale.dtype) * z).sum([2, 3])  # [N, O]
        grad_x = grad_weight = grad_in_scale = None
        if needs[0] or needs[2]:
            # The adjoint conv: flipped, transposed weight; the output scale folds into the grad's load.
            u = _conv_input_grad(grad, weight, out_scale, up, x.shape)  # [N, I, H, W]
            grad_x = (u * in_scale[:, :, None, None]).to(x.dtype) if needs[0] else None
            grad_in_scale = (u.to(in_scale.dtype) * x).sum([2, 3]) if needs[2] else None
        if needs[1]:
            grad_weight = _conv_weight_grad(grad, out_scale, x, in_scale, weight.shape, up)
        return grad_x, grad_weight, grad_in_scale, grad_out_scale, None, grad_bias, grad_noise, grad_strength, None


# ---------------------------------------------------------------------------------------------
# Launchers.


def _dot_precision(dtype):
    """tl.dot's input precision: float32 follows cuDNN's TF32 setting; without TF32 a GPU runs 3xTF32 (error near
    float32's), since IEEE fp32 dots run on the FMA units with their operands in registers and spill."""
    if dtype != torch.float32 or interpreting():
        return "ieee"
    return "tf32" if torch.backends.cudnn.allow_tf32 else "tf32x3"


def _acc_type(dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _launch(kernels, grid, args, meta, small_blocks, large_blocks, small):
    """Run the autotuned kernel on a GPU. The interpreter cannot autotune, and each interpreted op costs about
    a millisecond: there small problems (the tests) get the smallest blocks, so that partial and multiple
    tiles are exercised, and large ones big blocks, so that a whole model still runs on the CPU."""
    jit_kernel, tuned_kernel = kernels
    if not interpreting():
        return tuned_kernel[grid](*args, **meta)
    return jit_kernel[grid](*args, **meta, **(small_blocks if small else large_blocks))


def _pow2_between(n, low, high):
    return min(high, max(low, triton.next_power_of_2(n)))


# Autotune configs (BLOCK_P, BLOCK_O, BLOCK_I, warps, stages), the last block size being the reduction's. Kept: those
# that compile without spills on sm_80 and sm_90 in every dtype mode, at the preset shapes and off the tile sizes
# (`python -m ssgan.kernel_check`, table in benchmarks/kernel_resources.md). A 32-wide reduction tile spilled in
# every config tried (up to 2 KB; 8 KB at 32 registers for 128x128x32 in float32); on sm_80, 128x64x16 spilled
# 4-12 B in 16-bit dtypes, the weight gradient 8-32 B with 3 stages, and its 64x32x16 on 4 warps 4 B (16-bit, off
# the tile sizes).
CONV_CONFIGS = [(64, 128, 16, 8, 3), (64, 32, 16, 4, 2)]
WEIGHT_GRAD_CONFIGS = [(64, 128, 16, 8, 2), (64, 64, 16, 8, 2)]


def _tuning_configs(keys, sizes):
    return [triton.Config(dict(zip(keys, s[:3])), num_warps=s[3], num_stages=s[4]) for s in sizes]


def _conv_forward(x, weight, in_scale, out_scale, up, bias, noise, noise_strength, store_z):
    """y = epilogue(out_scale * conv(x * in_scale, weight)), phase-layout output for up=2."""
    n, in_ch, h, w = x.shape
    gemm_out, k = weight.shape[0], weight.shape[-1]
    y = new_output((n, gemm_out // (up * up), h * up, w * up), x)
    z = new_output(y.shape, y) if store_z else y
    dummy = y  # never read: its pointer stands in for absent operands
    noise_strides = (
        (noise.stride(0) if noise.shape[0] > 1 else 0, noise.stride(2), noise.stride(3))
        if noise is not None
        else (0, 0, 0)
    )
    grid = lambda meta: (triton.cdiv(h * w, meta["BLOCK_P"]), triton.cdiv(gemm_out, meta["BLOCK_O"]), n)
    args = (
        x,
        weight,
        in_scale,
        dummy if out_scale is None else out_scale,
        dummy if noise is None else noise,
        dummy if noise is None else noise_strength,
        dummy if bias is None else bias,
        y,
        z,
        in_ch,
        gemm_out,
        h,
        w,
        *x.stride(),
        weight.stride(0),
        weight.stride(1),
        weight.stride(2),
        weight.stride(3),
        *in_scale.stride(),
        *(out_scale.stride() if out_scale is not None else (0, 0)),
        *noise_strides,
        *y.stride(),
        *z.stride(),
    )
    meta = dict(
        K=k,
        FLIP=False,
        P_IN=1,
        P_OUT=up,
        HAS_IN_SCALE=True,
        HAS_OUT_SCALE=out_scale is not None,
        HAS_NOISE=noise is not None,
        EPILOGUE=bias is not None,
        STORE_Z=store_z,
        ACC_TYPE=_acc_type(x.dtype),
        DOT_PRECISION=_dot_precision(x.dtype),
    )
    _launch(_CONV_KERNELS, grid, args, meta, *_conv_blocks(h * w, gemm_out, in_ch))
    return y, z


def _conv_blocks(pixels, out_ch, in_ch):
    small = dict(BLOCK_P=32, BLOCK_O=32, BLOCK_I=16)
    large = dict(BLOCK_P=256, BLOCK_O=_pow2_between(out_ch, 32, 128), BLOCK_I=_pow2_between(in_ch, 16, 64))
    return small, large, pixels <= 256


def _conv_input_grad(grad, weight, out_scale, up, x_shape):
    """u = conv^T(grad * out_scale, weight): a "same" conv of the phase-split grad with W flipped and transposed."""
    n, in_ch, h, w = x_shape
    gemm_out, k = weight.shape[0], weight.shape[-1]
    u = new_output((n, in_ch, h, w), grad)
    grid = lambda meta: (triton.cdiv(h * w, meta["BLOCK_P"]), triton.cdiv(in_ch, meta["BLOCK_O"]), n)
    args = (
        grad,
        weight,
        u if out_scale is None else out_scale,
        u,
        u,
        u,
        u,
        u,
        u,
        gemm_out,
        in_ch,
        h,
        w,
        *grad.stride(),
        weight.stride(1),
        weight.stride(0),
        weight.stride(2),
        weight.stride(3),
        *(out_scale.stride() if out_scale is not None else (0, 0)),
        0,
        0,
        0,
        0,
        0,
        *u.stride(),
        *u.stride(),
    )
    meta = dict(
        K=k,
        FLIP=True,
        P_IN=up,
        P_OUT=1,
        HAS_IN_SCALE=out_scale is not None,
        HAS_OUT_SCALE=False,
        HAS_NOISE=False,
        EPILOGUE=False,
        STORE_Z=False,
        ACC_TYPE=_acc_type(grad.dtype),
        DOT_PRECISION=_dot_precision(grad.dtype),
    )
    _launch(_CONV_KERNELS, grid, args, meta, *_conv_blocks(h * w, in_ch, gemm_out))
    return u


def _conv_weight_grad(grad, out_scale, x, in_scale, weight_shape, up):
    """dW[oc, i, t] = sum_{n, p} (grad * out_scale)[n, oc, p] * (x * in_scale)[n, i, p + t - k//2]."""
    n, in_ch, h, w = x.shape
    gemm_out, _, k, _ = weight_shape
    dw = new_output(weight_shape, x)
    grid = lambda meta: (triton.cdiv(gemm_out, meta["BLOCK_O"]), triton.cdiv(in_ch, meta["BLOCK_I"]), k * k)
    args = (
        grad,
        dw if out_scale is None else out_scale,
        x,
        in_scale,
        dw,
        n,
        in_ch,
        gemm_out,
        h,
        w,
        *grad.stride(),
        *(out_scale.stride() if out_scale is not None else (0, 0)),
        *x.stride(),
        *in_scale.stride(),
        *dw.stride(),
    )
    meta = dict(
        K=k,
        P_OUT=up,
        HAS_OUT_SCALE=out_scale is not None,
        ACC_TYPE=_acc_type(x.dtype),
        DOT_PRECISION=_dot_precision(x.dtype),
    )
    small = h * w <= 256
    large = dict(BLOCK_O=_pow2_between(gemm_out, 32, 128), BLOCK_I=_pow2_between(in_ch, 32, 64), BLOCK_P=1024)
    _launch(_WEIGHT_GRAD_KERNELS, grid, args, meta, dict(BLOCK_O=32, BLOCK_I=32, BLOCK_P=64), large, small)
    return dw


# ---------------------------------------------------------------------------------------------
# Kernels.

if triton is not None:

    @triton.jit
    def _scaled_conv_kernel(
        x_ptr,
        w_ptr,
        in_scale_ptr,
        out_scale_ptr,
        noise_ptr,
        strength_ptr,
        bias_ptr,
        y_ptr,
        z_ptr,
        C_in,
        C_out,
        H,
        W,
        sxn,
        sxc,
        sxh,
        sxw,
        swo,
        swi,
        swy,
        swx,
        sin_n,
        sin_c,
        sout_n,
        sout_c,
        snn,
        snh,
        snw,
        syn,
        syc,
        syh,
        syw,
        szn,
        szc,
        szh,
        szw,
        K: tl.constexpr,
        FLIP: tl.constexpr,
        P_IN: tl.constexpr,
        P_OUT: tl.constexpr,
        HAS_IN_SCALE: tl.constexpr,
        HAS_OUT_SCALE: tl.constexpr,
        HAS_NOISE: tl.constexpr,
        EPILOGUE: tl.constexpr,
        STORE_Z: tl.constexpr,
        ACC_TYPE: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_O: tl.constexpr,
        BLOCK_I: tl.constexpr,
    ):
        """Implicit-GEMM "same" convolution of one sample over an H x W grid of pixels.

        GEMM channel c of the input (of C_in) is channel c // P_IN^2 of x at sub-pixel phase
        (c // P_IN % P_IN, c % P_IN); GEMM channel o of the output (of C_out) is channel o // P_OUT^2
        of y at phase (o // P_OUT % P_OUT, o % P_OUT). Scales are indexed by the true channels.
        """
        pid_p = tl.program_id(0)
        pid_o = tl.program_id(1)
        n = tl.program_id(2).to(tl.int64)
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
        offs_i = tl.arange(0, BLOCK_I)
        ph = offs_p // W
        pw = offs_p % W
        p_in = offs_p < H * W
        o_in = offs_o < C_out
        # Offsets of the first channel block; each block of BLOCK_I GEMM channels (a multiple of P_IN^2)
        # advances the true channel by BLOCK_I // P_IN^2 with the same sub-pixel pattern.
        chan = offs_i // (P_IN * P_IN)
        x_chan = chan * sxc
        if P_IN > 1:
            x_chan += (offs_i // P_IN % P_IN) * sxh + (offs_i % P_IN) * sxw
        row_step = P_IN * sxh
        col_step = P_IN * sxw
        x_pix = ph * row_step + pw * col_step  # [BLOCK_P]
        x_sample = x_ptr + n * sxn
        w_block = offs_i[:, None] * swi + offs_o[None, :] * swo  # [BLOCK_I, BLOCK_O]
        s_first = in_scale_ptr + n * sin_n + chan * sin_c
        # Steps per channel block (scalars hoisted out of the loops).
        x_step = (BLOCK_I // (P_IN * P_IN)) * sxc
        s_step = (BLOCK_I // (P_IN * P_IN)) * sin_c
        w_step = BLOCK_I * swi
        acc = tl.zeros([BLOCK_P, BLOCK_O], dtype=ACC_TYPE)
        # A runtime loop over the taps, not an unrolled one: unrolled, the compiler hoisted every tap's pointers and
        # masks out of the channel loops, and ptxas spilled at any tile size (kernel_check, sm_80 and sm_90).
        for tap in range(K * K):
            ky = tap // K
            kx = tap % K
            hy = ph + (ky - K // 2)
            wx = pw + (kx - K // 2)
            ok = p_in & (hy >= 0) & (hy < H) & (wx >= 0) & (wx < W)
            shift = (ky - K // 2) * row_step + (kx - K // 2) * col_step
            x_ptrs = x_sample + shift + x_pix[:, None] + x_chan[None, :]  # [BLOCK_P, BLOCK_I]
            if FLIP:
                w_ptrs = w_ptr + (K - 1 - ky) * swy + (K - 1 - kx) * swx + w_block  # [BLOCK_I, BLOCK_O]
            else:
                w_ptrs = w_ptr + ky * swy + kx * swx + w_block
            s_ptrs = s_first
            for i0 in range(0, C_in, BLOCK_I):
                i_in = offs_i < C_in - i0
                xt = tl.load(x_ptrs, mask=ok[:, None] & i_in[None, :], other=0)
                if HAS_IN_SCALE:
                    scale = tl.load(s_ptrs, mask=i_in, other=0).to(ACC_TYPE)
                    xt = (xt.to(ACC_TYPE) * scale[None, :]).to(x_ptr.dtype.element_ty)
                    s_ptrs += s_step
                wt = tl.load(w_ptrs, mask=i_in[:, None] & o_in[None, :], other=0)
                acc = tl.dot(xt, wt, acc, input_precision=DOT_PRECISION)
                x_ptrs += x_step
                w_ptrs += w_step

        out_chan = offs_o // (P_OUT * P_OUT)
        oy = (ph * P_OUT)[:, None] + (offs_o // P_OUT % P_OUT)[None, :]  # [BLOCK_P, BLOCK_O]
        ox = (pw * P_OUT)[:, None] + (offs_o % P_OUT)[None, :]
        mask = p_in[:, None] & o_in[None, :]
        if STORE_Z:
            z_at = z_ptr + n * szn + out_chan[None, :] * szc + oy * szh + ox * szw
            tl.store(z_at, acc.to(z_ptr.dtype.element_ty), mask=mask)
        if HAS_OUT_SCALE:
            acc *= tl.load(out_scale_ptr + n * sout_n + out_chan * sout_c, mask=o_in, other=0).to(ACC_TYPE)[None, :]
        if EPILOGUE:
            if HAS_NOISE:
                noise = tl.load(noise_ptr + n * snn + oy * snh + ox * snw, mask=mask, other=0).to(ACC_TYPE)
                acc += tl.load(strength_ptr).to(ACC_TYPE) * noise
            acc += tl.load(bias_ptr + out_chan, mask=o_in, other=0).to(ACC_TYPE)[None, :]
            acc = tl.where(acc > 0, acc, acc * 0.2) * 1.4142135623730951
        tl.store(
            y_ptr + n * syn + out_chan[None, :] * syc + oy * syh + ox * syw, acc.to(y_ptr.dtype.element_ty), mask=mask
        )

    @triton.jit
    def _scaled_conv_weight_grad_kernel(
        g_ptr,
        out_scale_ptr,
        x_ptr,
        in_scale_ptr,
        dw_ptr,
        N,
        C_in,
        C_out,
        H,
        W,
        sgn,
        sgc,
        sgh,
        sgw,
        sout_n,
        sout_c,
        sxn,
        sxc,
        sxh,
        sxw,
        sin_n,
        sin_c,
        sdo,
        sdi,
        sdy,
        sdx,
        K: tl.constexpr,
        P_OUT: tl.constexpr,
        HAS_OUT_SCALE: tl.constexpr,
        ACC_TYPE: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
        BLOCK_O: tl.constexpr,
        BLOCK_I: tl.constexpr,
        BLOCK_P: tl.constexpr,
    ):
        """One tap of the weight gradient: a [BLOCK_O, BLOCK_I] tile reduced over samples and pixels."""
        pid_o = tl.program_id(0)
        pid_i = tl.program_id(1)
        tap = tl.program_id(2)
        ky = tap // K
        kx = tap % K
        offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
        offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
        o_in = offs_o < C_out
        i_in = offs_i < C_in
        out_chan = offs_o // (P_OUT * P_OUT)
        g_chan = out_chan * sgc + (offs_o // P_OUT % P_OUT) * sgh + (offs_o % P_OUT) * sgw  # [BLOCK_O]
        acc = tl.zeros([BLOCK_O, BLOCK_I], dtype=ACC_TYPE)
        for p0 in range(0, H * W, BLOCK_P):
            offs_p = p0 + tl.arange(0, BLOCK_P)
            ph = offs_p // W
            pw = offs_p % W
            p_in = offs_p < H * W
            hy = ph + (ky - K // 2)
            wx = pw + (kx - K // 2)
            ok = p_in & (hy >= 0) & (hy < H) & (wx >= 0) & (wx < W)
            g_ptrs = g_ptr + g_chan[:, None] + ((ph * P_OUT) * sgh + (pw * P_OUT) * sgw)[None, :]  # [BLOCK_O, BLOCK_P]
            x_ptrs = x_ptr + offs_i[None, :] * sxc + (hy * sxh + wx * sxw)[:, None]  # [BLOCK_P, BLOCK_I]
            g_mask = o_in[:, None] & p_in[None, :]
            x_mask = ok[:, None] & i_in[None, :]
            x_scale_ptrs = in_scale_ptr + offs_i * sin_c
            g_scale_ptrs = out_scale_ptr + out_chan * sout_c
            for n in range(N):  # pointers advance per sample: no int32 overflow on large batches
                gt = tl.load(g_ptrs, mask=g_mask, other=0)
                if HAS_OUT_SCALE:
                    g_scale = tl.load(g_scale_ptrs, mask=o_in, other=0).to(ACC_TYPE)
                    gt = (gt.to(ACC_TYPE) * g_scale[:, None]).to(g_ptr.dtype.element_ty)
                    g_scale_ptrs += sout_n
                x_scale = tl.load(x_scale_ptrs, mask=i_in, other=0).to(ACC_TYPE)
                xt = tl.load(x_ptrs, mask=x_mask, other=0)
                xt = (xt.to(ACC_TYPE) * x_scale[None, :]).to(x_ptr.dtype.element_ty)
                acc = tl.dot(gt, xt, acc, input_precision=DOT_PRECISION)
                g_ptrs += sgn
                x_ptrs += sxn
                x_scale_ptrs += sin_n
        dw_at = dw_ptr + offs_o[:, None] * sdo + offs_i[None, :] * sdi + ky * sdy + kx * sdx
        tl.store(dw_at, acc.to(dw_ptr.dtype.element_ty), mask=o_in[:, None] & i_in[None, :])

    _CONV_KERNELS = (
        _scaled_conv_kernel,
        triton.autotune(
            _tuning_configs(("BLOCK_P", "BLOCK_O", "BLOCK_I"), CONV_CONFIGS),
            key=["C_in", "C_out", "H", "W", "K", "P_IN", "P_OUT"],
        )(_scaled_conv_kernel),
    )
    _WEIGHT_GRAD_KERNELS = (
        _scaled_conv_weight_grad_kernel,
        triton.autotune(
            _tuning_configs(("BLOCK_O", "BLOCK_I", "BLOCK_P"), WEIGHT_GRAD_CONFIGS),
            key=["C_in", "C_out", "H", "W", "K", "P_OUT"],
        )(_scaled_conv_weight_grad_kernel),
    )
