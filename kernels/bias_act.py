"""Fused bias + activation: y = act(x + b) * gain, the StyleGAN2 `fused_lrelu` epilogue.

    y  = act(x + b[c]) * gain                      c = index of x along `dim`
    dx = dy * gain * act'(x + b[c])                act' = 1 (linear) or (1 if > 0 else alpha) (lrelu)
    db = sum of dx over every axis but `dim`

The backward is itself a fused op (`_BiasActGrad`): it is linear in dy, and act' is piecewise constant, so
its own backward is the same op again and the pair is differentiable any number of times.
"""

import math

import torch
import torch.nn.functional as F

from ._dispatch import new_output, resolve_impl

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

SQRT2 = math.sqrt(2.0)
ACTS = ("lrelu", "linear")
BLOCK = 1024


def _check_args(x, bias, dim, act, gain):
    """Validate the arguments; return (dim >= 0, gain)."""
    if act not in ACTS:
        raise ValueError(f"act must be 'lrelu' or 'linear', got {act!r}")
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"dim {dim} is out of range for x of shape {tuple(x.shape)}")
    dim = dim % x.ndim
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != x.shape[dim]):
        raise ValueError(f"bias of shape {tuple(bias.shape)} does not match dim {dim} of x {tuple(x.shape)}")
    if gain is None:
        gain = SQRT2 if act == "lrelu" else 1.0
    return dim, float(gain)


def bias_act_reference(x, bias=None, dim=1, act="lrelu", alpha=0.2, gain=None):
    """x: any shape; bias: [x.shape[dim]] or None. act is "lrelu" or "linear"."""
    dim, gain = _check_args(x, bias, dim, act, gain)
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, alpha)
    return x * gain if gain != 1 else x


# ---------------------------------------------------------------------------------------------------------
# Triton kernel: one elementwise pass over the flattened tensor, forward (y) or gradient (dx).

if triton is not None:

    @triton.jit
    def _bias_act_kernel(
        x_ptr,
        b_ptr,
        dy_ptr,
        out_ptr,
        total,
        channels,
        inner,
        alpha: tl.constexpr,  # constants, not float arguments: those are float32 in compiled kernels, and
        gain: tl.constexpr,  # a constant takes the dtype it meets (float64 under F64, float32 otherwise)
        HAS_BIAS: tl.constexpr,
        LRELU: tl.constexpr,
        GRAD: tl.constexpr,
        F64: tl.constexpr,
        INDEX64: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64) if INDEX64 else tl.program_id(0)  # 64-bit division only when needed
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        mask = offs < total
        compute = tl.float64 if F64 else tl.float32
        v = tl.load(x_ptr + offs, mask=mask, other=0).to(compute)
        if HAS_BIAS:
            c = (offs // inner) % channels  # the index along `dim` of this element
            v += tl.load(b_ptr + c, mask=mask, other=0).to(compute)
        if GRAD:
            dy = tl.load(dy_ptr + offs, mask=mask, other=0).to(compute)
            out = dy * gain
            if LRELU:
                out = tl.where(v > 0, out, out * alpha)
        else:
            out = v
            if LRELU:
                out = tl.where(v > 0, v, v * alpha)
            out = out * gain
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(x, bias, dy, dim, act, alpha, gain):
    """act(x + b) * gain if dy is None, else dy * gain * act'(x + b); returned in dy's (or the promoted) dtype."""
    x = x.contiguous()
    dy = None if dy is None else dy.contiguous()
    if dy is not None:
        dtype = dy.dtype
    else:
        dtype = x.dtype if bias is None else torch.promote_types(x.dtype, bias.dtype)
    out = new_output(x.shape, x, dtype)
    total = x.numel()
    if total == 0:
        return out
    inner = math.prod(x.shape[dim + 1 :])
    f64 = torch.float64 in (x.dtype, dtype)
    _bias_act_kernel[(triton.cdiv(total, BLOCK),)](
        x,
        x if bias is None else bias.contiguous(),
        x if dy is None else dy,
        out,
        total,
        x.shape[dim],
        inner,
        float(alpha),
        float(gain),
        HAS_BIAS=bias is not None,
        LRELU=act == "lrelu",
        GRAD=dy is not None,
        F64=f64,
        INDEX64=total + BLOCK >= 2**31,
        BLOCK=BLOCK,
    )
    return out


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * gain * act'(x + b). Linear in dy; zero derivative w.r.t. x and b (act' is piecewise constant)."""

    @staticmethod
    def forward(ctx, dy, x, bias, dim, act, alpha, gain):
        ctx.save_for_backward(x, bias)
        ctx.args = dim, act, alpha, gain
        return _launch(x, bias, dy, dim, act, alpha, gain)

    @staticmethod
    def backward(ctx, ddx):
        x, bias = ctx.saved_tensors
        return _BiasActGrad.apply(ddx, x, bias, *ctx.args), None, None, None, None, None, None


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bias, dim, act, alpha, gain):
        ctx.save_for_backward(x, bias)
        ctx.args = dim, act, alpha, gain
        return _launch(x, bias, None, dim, act, alpha, gain)

    @staticmethod
    def backward(ctx, dy):
        x, bias = ctx.saved_tensors
        dim = ctx.args[0]
        dx = _BiasActGrad.apply(dy, x, bias, *ctx.args)
        db = None
        if bias is not None and ctx.needs_input_grad[1]:
            others = [d for d in range(dx.ndim) if d != dim]
            db = (dx.sum(others) if others else dx).to(bias.dtype)  # sum([]) would sum everything
        return dx.to(x.dtype), db, None, None, None, None


def bias_act_triton(x, bias=None, dim=1, act="lrelu", alpha=0.2, gain=None):
    """The Triton path of `bias_act` (differentiable twice and more)."""
    dim, gain = _check_args(x, bias, dim, act, gain)
    return _BiasAct.apply(x, bias, dim, act, float(alpha), gain)


def bias_act(x, bias=None, dim=1, act="lrelu", alpha=0.2, gain=None, impl="auto"):
    """act(x + bias) * gain; gain defaults to sqrt(2) for lrelu and 1 for linear."""
    if resolve_impl(impl, x, bias, op="bias_act") == "triton":
        return bias_act_triton(x, bias, dim, act, alpha, gain)
    return bias_act_reference(x, bias, dim, act, alpha, gain)
