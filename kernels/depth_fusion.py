"""Softmax-depth fusion of the K local generators with their feature heads applied inside the blend.

    m        = softmax_k(depth)                          (renormalised by the composition mask if given)
    weight_k = m_k renormalised over opaque classes      for opaque k
             = m_k                                       for transparent k (overlaid on the composite)
    f        = sum_k weight_k * (W_k h_k + b_k)

f is computed as one reduction over K*C, so the K feature maps of F channels are never written.

Backward, with g = dL/df and gm = dL/dm (both optional):
    dL/dh_k      = weight_k * (W_k^T g)                         [B, K, P, C]
    dL/dweight_k = h_k . (W_k^T g) + b_k . g                    [B, K, P]
    dL/dW_k      = sum_{b,p} g (weight_k h_k)^T                 [K, F, C]
    dL/db_k      = sum_{b,p} weight_k g                         [K, F]
and dL/ddepth follows dL/dweight and gm back through the renormalisations and the softmax, per pixel.
Every step reduces over F or over pixels, so no [B, K, F, P] tensor is formed in either direction.
"""
import torch
from einops import einsum, rearrange

from ._dispatch import interpreting, new_output, resolve_impl

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

EPS = 1e-8  # added to the renormalisation denominators, as in the original implementation


def fusion_weights(depth, transparent=None, composition_mask=None):
    """depth: [B, K, P]; transparent: [K] bool or None; composition_mask: [B, K] or None.

    Returns the coarse mask m [B, K, P] and the feature weights [B, K, P].
    """
    mask = torch.softmax(depth, dim=1)
    if composition_mask is not None:
        mask = mask * composition_mask[:, :, None]
        mask = mask / (mask.sum(1, keepdim=True) + EPS)
    if transparent is None or not bool(transparent.any()):
        return mask, mask
    opaque = (~transparent).to(mask.dtype)[None, :, None]
    normal = mask * opaque
    normal = normal / (normal.sum(1, keepdim=True) + EPS)
    return mask, normal + mask * (1 - opaque)


def depth_fusion_reference(depth, hidden, feat_weight, feat_bias, transparent=None, composition_mask=None):
    """Fuse K classes into one feature map.

    depth:            [B, K, P]    pseudo-depths (logits of the coarse mask)
    hidden:           [B, K, P, C] last hidden layer of each local generator
    feat_weight:      [K, F, C]    feature heads, already scaled
    feat_bias:        [K, F]
    transparent:      [K] bool     classes overlaid on the opaque composite, or None
    composition_mask: [B, K]       classes to keep (others dropped and the rest renormalised), or None
    Returns the fused features [B, F, P] and the coarse mask m [B, K, P].
    """
    mask, weights = fusion_weights(depth, transparent, composition_mask)
    blended = rearrange(hidden * weights[..., None], "b k p c -> b p (k c)")
    features = blended @ rearrange(feat_weight, "k f c -> (k c) f")  # [B, P, F]
    features = features + einsum(weights, feat_bias, "b k p, k f -> b p f")
    return rearrange(features, "b p f -> b f p"), mask


def depth_fusion_naive(depth, hidden, feat_weight, feat_bias, transparent=None, composition_mask=None):
    """The original formulation: materialise the K feature maps [B, K, F, P], then blend them (benchmarks only)."""
    mask, weights = fusion_weights(depth, transparent, composition_mask)
    feature_maps = einsum(hidden, feat_weight, "b k p c, k f c -> b k f p") + feat_bias[None, :, :, None]
    return (feature_maps * weights[:, :, None, :]).sum(1), mask


def check_inputs(depth, hidden, feat_weight, feat_bias, transparent=None, composition_mask=None):
    """Raise ValueError naming the first shape that does not fit the others."""
    if depth.ndim != 3:
        raise ValueError(f"depth must be [B, K, P], got shape {tuple(depth.shape)}")
    B, K, P = depth.shape
    if hidden.ndim != 4 or tuple(hidden.shape[:3]) != (B, K, P):
        raise ValueError(f"hidden must be [B, K, P, C] = [{B}, {K}, {P}, C], got shape {tuple(hidden.shape)}")
    C = hidden.shape[3]
    if feat_weight.ndim != 3 or feat_weight.shape[0] != K or feat_weight.shape[2] != C:
        raise ValueError(f"feat_weight must be [K, F, C] = [{K}, F, {C}], got shape {tuple(feat_weight.shape)}")
    F = feat_weight.shape[1]
    if tuple(feat_bias.shape) != (K, F):
        raise ValueError(f"feat_bias must be [K, F] = [{K}, {F}], got shape {tuple(feat_bias.shape)}")
    if transparent is not None and (transparent.dtype != torch.bool or tuple(transparent.shape) != (K,)):
        raise ValueError(f"transparent must be a bool tensor of shape [{K}], got {transparent.dtype} {tuple(transparent.shape)}")
    if composition_mask is not None and tuple(composition_mask.shape) != (B, K):
        raise ValueError(f"composition_mask must be [B, K] = [{B}, {K}], got shape {tuple(composition_mask.shape)}")


if triton is not None:

    @triton.jit
    def _softmax_over_k(depth_ptr, b, offs_k, offs_p, K, P, ACC: tl.constexpr):
        """softmax over the K depth logits of one pixel tile: [BLOCK_K, BLOCK_P]; padded classes get 0."""
        k_ok = offs_k < K
        ptrs = depth_ptr + (b * K + offs_k[:, None]) * P + offs_p[None, :]
        d = tl.load(ptrs, mask=k_ok[:, None] & (offs_p < P)[None, :], other=0.0).to(ACC)
        d = tl.where(k_ok[:, None], d, float("-inf"))  # padded pixels keep finite logits, so no NaN
        e = tl.exp(d - tl.max(d, axis=0)[None, :])
        return e / tl.sum(e, axis=0)[None, :]

    @triton.jit
    def _fusion_weights_tile(depth_ptr, cmask_ptr, transparent_ptr, b, offs_k, offs_p, K, P,
                             HAS_CMASK: tl.constexpr, HAS_TRANSPARENT: tl.constexpr, ACC: tl.constexpr):
        """The coarse mask m and the feature weights of one pixel tile, both [BLOCK_K, BLOCK_P]."""
        m = _softmax_over_k(depth_ptr, b, offs_k, offs_p, K, P, ACC)
        if HAS_CMASK:
            keep = tl.load(cmask_ptr + b * K + offs_k, mask=offs_k < K, other=0.0).to(ACC)
            m = m * keep[:, None]
            m = m / (tl.sum(m, axis=0)[None, :] + 1e-8)
        w = m
        if HAS_TRANSPARENT:
            opaque = (tl.load(transparent_ptr + offs_k, mask=offs_k < K, other=0) == 0).to(ACC)[:, None]
            normal = m * opaque
            w = normal / (tl.sum(normal, axis=0)[None, :] + 1e-8) + m * (1 - opaque)
        return m, w

    @triton.jit
    def _depth_fusion_fwd_kernel(
        depth_ptr, hidden_ptr, weight_ptr, bias_ptr, cmask_ptr, transparent_ptr, out_ptr, mask_ptr,
        K, P, C, F,
        HAS_CMASK: tl.constexpr, HAS_TRANSPARENT: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_F: tl.constexpr,
    ):
        """One program per (pixel tile, feature tile, sample): out[b, f, p] = sum_(k,c) w_k h_kc W_kfc + sum_k w_k b_kf."""
        pid_p, pid_f, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
        offs_k = tl.arange(0, BLOCK_K)
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
        p_ok, f_ok = offs_p < P, offs_f < F
        m, w = _fusion_weights_tile(depth_ptr, cmask_ptr, transparent_ptr, b, offs_k, offs_p, K, P,
                                    HAS_CMASK, HAS_TRANSPARENT, ACC)
        if pid_f == 0:
            tl.store(mask_ptr + (b * K + offs_k[:, None]) * P + offs_p[None, :], m.to(mask_ptr.dtype.element_ty),
                     mask=(offs_k < K)[:, None] & p_ok[None, :])
        acc = tl.zeros((BLOCK_P, BLOCK_F), dtype=ACC)
        for k in range(K):
            w_k = tl.sum(tl.where(offs_k[:, None] == k, w, 0.0), axis=0)  # [BLOCK_P]
            for c0 in range(0, C, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                c_ok = offs_c < C
                h = tl.load(hidden_ptr + ((b * K + k) * P + offs_p[:, None]) * C + offs_c[None, :],
                            mask=p_ok[:, None] & c_ok[None, :], other=0.0)  # [BLOCK_P, BLOCK_C]
                wt = tl.load(weight_ptr + (k * F + offs_f[None, :]) * C + offs_c[:, None],
                             mask=c_ok[:, None] & f_ok[None, :], other=0.0)  # [BLOCK_C, BLOCK_F]
                weighted = (h.to(ACC) * w_k[:, None]).to(h.dtype)
                acc = tl.dot(weighted, wt, acc, input_precision=PRECISION)
            bias = tl.load(bias_ptr + k * F + offs_f, mask=f_ok, other=0.0).to(ACC)
            acc += w_k[:, None] * bias[None, :]
        tl.store(out_ptr + (b * F + offs_f[None, :]) * P + offs_p[:, None], acc.to(out_ptr.dtype.element_ty),
                 mask=p_ok[:, None] & f_ok[None, :])

    @triton.jit
    def _depth_fusion_bwd_hidden_kernel(
        depth_ptr, hidden_ptr, weight_ptr, bias_ptr, cmask_ptr, transparent_ptr, grad_out_ptr,
        grad_hidden_ptr, grad_w_ptr, w_ptr,
        K, P, C, F,
        HAS_CMASK: tl.constexpr, HAS_TRANSPARENT: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_F: tl.constexpr,
    ):
        """One program per (pixel tile, class k, sample). With G = W_k^T g [BLOCK_P, C]:
        grad_hidden = w_k G, grad_w = sum_c h_k G + b_k . g; also writes w_k for the parameter gradients."""
        pid_p, k, b = tl.program_id(0), tl.program_id(1), tl.program_id(2).to(tl.int64)
        offs_k = tl.arange(0, BLOCK_K)
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        p_ok = offs_p < P
        _, w = _fusion_weights_tile(depth_ptr, cmask_ptr, transparent_ptr, b, offs_k, offs_p, K, P,
                                    HAS_CMASK, HAS_TRANSPARENT, ACC)
        w_k = tl.sum(tl.where(offs_k[:, None] == k, w, 0.0), axis=0)  # [BLOCK_P]
        row = (b * K + k) * P + offs_p  # [BLOCK_P] index into [B, K, P]
        tl.store(w_ptr + row, w_k, mask=p_ok)
        grad_w = tl.zeros((BLOCK_P,), dtype=ACC)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            c_ok = offs_c < C
            G = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC)
            for f0 in range(0, F, BLOCK_F):
                offs_f = f0 + tl.arange(0, BLOCK_F)
                f_ok = offs_f < F
                g = tl.load(grad_out_ptr + (b * F + offs_f[None, :]) * P + offs_p[:, None],
                            mask=p_ok[:, None] & f_ok[None, :], other=0.0)  # [BLOCK_P, BLOCK_F]
                wt = tl.load(weight_ptr + (k * F + offs_f[:, None]) * C + offs_c[None, :],
                             mask=f_ok[:, None] & c_ok[None, :], other=0.0)  # [BLOCK_F, BLOCK_C]
                G = tl.dot(g, wt.to(g.dtype), G, input_precision=PRECISION)
                if c0 == 0:  # the bias term once, not once per channel tile
                    bias = tl.load(bias_ptr + k * F + offs_f, mask=f_ok, other=0.0).to(ACC)
                    grad_w += tl.sum(g.to(ACC) * bias[None, :], axis=1)
            hidden_ptrs = row[:, None] * C + offs_c[None, :]
            hc_ok = p_ok[:, None] & c_ok[None, :]
            h = tl.load(hidden_ptr + hidden_ptrs, mask=hc_ok, other=0.0).to(ACC)
            tl.store(grad_hidden_ptr + hidden_ptrs, (w_k[:, None] * G).to(grad_hidden_ptr.dtype.element_ty), mask=hc_ok)
            grad_w += tl.sum(h * G, axis=1)
        tl.store(grad_w_ptr + row, grad_w, mask=p_ok)

    @triton.jit
    def _depth_fusion_bwd_depth_kernel(
        depth_ptr, cmask_ptr, transparent_ptr, grad_w_ptr, grad_mask_ptr, grad_depth_ptr,
        K, P,
        HAS_CMASK: tl.constexpr, HAS_TRANSPARENT: tl.constexpr, HAS_GRAD_MASK: tl.constexpr, ACC: tl.constexpr,
        BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
    ):
        """One program per (pixel tile, sample): dL/ddepth from dL/dweights and dL/dm, through both renormalisations and the softmax."""
        pid_p, b = tl.program_id(0), tl.program_id(1).to(tl.int64)
        offs_k = tl.arange(0, BLOCK_K)
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        k_ok = offs_k < K
        kp_ok = k_ok[:, None] & (offs_p < P)[None, :]
        kp = (b * K + offs_k[:, None]) * P + offs_p[None, :]
        s = _softmax_over_k(depth_ptr, b, offs_k, offs_p, K, P, ACC)
        grad_m = tl.load(grad_w_ptr + kp, mask=kp_ok, other=0.0).to(ACC)  # dL/dweights for now
        m = s
        if HAS_CMASK:
            keep = tl.load(cmask_ptr + b * K + offs_k, mask=k_ok, other=0.0).to(ACC)[:, None]
            kept_sum = tl.sum(s * keep, axis=0)[None, :] + 1e-8
            m = s * keep / kept_sum
        if HAS_TRANSPARENT:  # weights = normal + m (1 - opaque), normal = m opaque / (sum m opaque + eps)
            opaque = (tl.load(transparent_ptr + offs_k, mask=k_ok, other=0) == 0).to(ACC)[:, None]
            opaque_sum = tl.sum(m * opaque, axis=0)[None, :] + 1e-8
            normal = m * opaque / opaque_sum
            grad_normal = (grad_m - tl.sum(grad_m * normal, axis=0)[None, :]) / opaque_sum
            grad_m = grad_m * (1 - opaque) + grad_normal * opaque
        if HAS_GRAD_MASK:
            grad_m += tl.load(grad_mask_ptr + kp, mask=kp_ok, other=0.0).to(ACC)
        grad_s = grad_m
        if HAS_CMASK:  # m = s keep / (sum s keep + eps)
            grad_s = (grad_m - tl.sum(grad_m * m, axis=0)[None, :]) / kept_sum * keep
        grad_depth = s * (grad_s - tl.sum(grad_s * s, axis=0)[None, :])
        tl.store(grad_depth_ptr + kp, grad_depth.to(grad_depth_ptr.dtype.element_ty), mask=kp_ok)

    @triton.jit
    def _depth_fusion_bwd_params_kernel(
        hidden_ptr, grad_out_ptr, w_ptr, grad_weight_ptr, grad_bias_ptr,
        B, K, P, C, F,
        ACC: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_F: tl.constexpr,
    ):
        """One program per (feature tile x channel tile, class k, split): partial sums over every SPLIT-th
        (sample, pixel tile) of grad_weight[k] = g (w_k h_k)^T and grad_bias[k] = g w_k."""
        pid_fc, k, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        num_c_tiles = tl.cdiv(C, BLOCK_C)
        pid_f, pid_c = pid_fc // num_c_tiles, pid_fc % num_c_tiles
        offs_f = pid_f * BLOCK_F + tl.arange(0, BLOCK_F)
        offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        f_ok, c_ok = offs_f < F, offs_c < C
        num_p_tiles = tl.cdiv(P, BLOCK_P)
        acc = tl.zeros((BLOCK_F, BLOCK_C), dtype=ACC)
        acc_bias = tl.zeros((BLOCK_F,), dtype=ACC)
        for tile in range(split, B * num_p_tiles, SPLIT):
            b = (tile // num_p_tiles).to(tl.int64)
            offs_p = (tile % num_p_tiles) * BLOCK_P + tl.arange(0, BLOCK_P)
            p_ok = offs_p < P
            row = (b * K + k) * P + offs_p
            g = tl.load(grad_out_ptr + (b * F + offs_f[:, None]) * P + offs_p[None, :],
                        mask=f_ok[:, None] & p_ok[None, :], other=0.0)  # [BLOCK_F, BLOCK_P]
            w_k = tl.load(w_ptr + row, mask=p_ok, other=0.0)  # [BLOCK_P]
            h = tl.load(hidden_ptr + row[:, None] * C + offs_c[None, :], mask=p_ok[:, None] & c_ok[None, :], other=0.0)
            weighted = (h.to(ACC) * w_k[:, None]).to(g.dtype)  # [BLOCK_P, BLOCK_C]
            acc = tl.dot(g, weighted, acc, input_precision=PRECISION)
            acc_bias += tl.sum(g.to(ACC) * w_k[None, :], axis=1)
        out = (split * K + k) * F + offs_f
        tl.store(grad_weight_ptr + out[:, None] * C + offs_c[None, :], acc, mask=f_ok[:, None] & c_ok[None, :])
        if pid_c == 0:
            tl.store(grad_bias_ptr + out, acc_bias, mask=f_ok)


def _block(n, cap):
    """Power-of-two tile for an extent n: at least 16 (the smallest tl.dot operand), at most cap."""
    return max(16, min(cap, triton.next_power_of_2(n)))


# Tiles per kernel: (BLOCK_P, BLOCK_F, BLOCK_C, num_warps). Chosen with `python -m ssgan.kernel_check` so that no
# kernel spills on sm_80 or sm_90 in any dtype; float32 without TF32 is the tightest case, since tl.dot then runs on
# the FMA units with both operands spread over the registers (64-wide tiles there spilled kilobytes). Registers,
# spills and occupancy of each: benchmarks/kernel_resources.md.
TILES = {
    "forward": (64, 64, 16, 4),  # acc [P, F]; the dot reduces over BLOCK_C
    "hidden": (64, 32, 16, 4),  # acc [P, C]; reduces over BLOCK_F
    "params": (16, 64, 64, 8),  # acc [F, C]; reduces over BLOCK_P
}


def _launch_config(depth, hidden, feat_weight, kernel="forward"):
    K, C, F = depth.shape[1], hidden.shape[3], feat_weight.shape[1]
    dtype = hidden.dtype
    if dtype == torch.float64:
        acc, precision = tl.float64, "ieee"
    else:
        acc = tl.float32
        precision = "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"
    block_p, block_f, block_c, num_warps = TILES[kernel]
    return dict(
        ACC=acc, PRECISION=precision, BLOCK_K=triton.next_power_of_2(K), BLOCK_P=block_p,
        BLOCK_C=_block(C, block_c), BLOCK_F=_block(F, block_f), num_warps=num_warps,
    )


def _transparent_flags(transparent):
    """[K] int8 flags, or None when no class is transparent (the plain rule, as in the reference)."""
    if transparent is None or not bool(transparent.any()):
        return None
    return transparent.to(torch.int8).contiguous()


def _depth_fusion_forward(depth, hidden, feat_weight, feat_bias, transparent, composition_mask):
    B, K, P = depth.shape
    C, F = hidden.shape[3], feat_weight.shape[1]
    cfg = _launch_config(depth, hidden, feat_weight)
    features = new_output((B, F, P), hidden)
    mask = new_output((B, K, P), depth)
    grid = (triton.cdiv(P, cfg["BLOCK_P"]), triton.cdiv(F, cfg["BLOCK_F"]), B)
    _depth_fusion_fwd_kernel[grid](
        depth, hidden, feat_weight, feat_bias, composition_mask, transparent, features, mask, K, P, C, F,
        HAS_CMASK=composition_mask is not None, HAS_TRANSPARENT=transparent is not None, **cfg,
    )
    return features, mask


def _depth_fusion_backward(depth, hidden, feat_weight, feat_bias, transparent, composition_mask,
                           grad_features, grad_mask, needs_params):
    B, K, P = depth.shape
    C, F = hidden.shape[3], feat_weight.shape[1]
    cfg = _launch_config(depth, hidden, feat_weight, "hidden")
    acc_dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    grad_hidden = new_output(hidden.shape, hidden)
    grad_w = new_output((B, K, P), depth, dtype=acc_dtype)  # dL/dweights
    weights = new_output((B, K, P), depth, dtype=acc_dtype)
    flags = dict(HAS_CMASK=composition_mask is not None, HAS_TRANSPARENT=transparent is not None)
    num_p_tiles = triton.cdiv(P, cfg["BLOCK_P"])
    _depth_fusion_bwd_hidden_kernel[(num_p_tiles, K, B)](
        depth, hidden, feat_weight, feat_bias, composition_mask, transparent, grad_features,
        grad_hidden, grad_w, weights, K, P, C, F, **flags, **cfg,
    )
    grad_depth = new_output(depth.shape, depth)
    _depth_fusion_bwd_depth_kernel[(num_p_tiles, B)](
        depth, composition_mask, transparent, grad_w, grad_mask, grad_depth, K, P,
        HAS_GRAD_MASK=grad_mask is not None, ACC=cfg["ACC"], BLOCK_K=cfg["BLOCK_K"], BLOCK_P=cfg["BLOCK_P"], **flags,
    )
    if not needs_params:
        return grad_depth, grad_hidden, None, None
    cfg = _launch_config(depth, hidden, feat_weight, "params")
    num_p_tiles = triton.cdiv(P, cfg["BLOCK_P"])
    num_fc_tiles = triton.cdiv(F, cfg["BLOCK_F"]) * triton.cdiv(C, cfg["BLOCK_C"])
    split = min(B * num_p_tiles, _param_grad_split(depth.device, num_fc_tiles * K))
    grad_weight = new_output((split, K, F, C), depth, dtype=acc_dtype)
    grad_bias = new_output((split, K, F), depth, dtype=acc_dtype)
    _depth_fusion_bwd_params_kernel[(num_fc_tiles, K, split)](
        hidden, grad_features, weights, grad_weight, grad_bias, B, K, P, C, F,
        ACC=cfg["ACC"], PRECISION=cfg["PRECISION"], SPLIT=split,
        BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], BLOCK_F=cfg["BLOCK_F"], num_warps=cfg["num_warps"],
    )
    return grad_depth, grad_hidden, grad_weight.sum(0).to(feat_weight.dtype), grad_bias.sum(0).to(feat_bias.dtype)


def _param_grad_split(device, programs):
    """How many partial sums the parameter gradients are split into, so that the GPU gets ~4 programs per SM."""
    if interpreting():
        return 2  # still exercises the partial sums, without paying the interpreter for many programs
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, triton.cdiv(4 * sms, programs))


class _DepthFusion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, depth, hidden, feat_weight, feat_bias, transparent, composition_mask):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(depth, hidden, feat_weight, feat_bias, transparent, composition_mask)
        return _depth_fusion_forward(depth, hidden, feat_weight, feat_bias, transparent, composition_mask)

    @staticmethod
    def backward(ctx, grad_features, grad_mask):
        depth, hidden, feat_weight, feat_bias, transparent, composition_mask = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        if grad_features is None and grad_mask is None:
            return (None,) * 6
        if torch.is_grad_enabled():
            # create_graph=True: differentiate the reference so that the gradients are differentiable too.
            grads = _reference_grads(ctx, grad_features, grad_mask)
        else:
            if grad_features is None:
                grad_features = torch.zeros(depth.shape[0], feat_weight.shape[1], depth.shape[2],
                                            device=hidden.device, dtype=hidden.dtype)
            grads = _depth_fusion_backward(
                depth, hidden, feat_weight, feat_bias, transparent, composition_mask,
                grad_features.contiguous(), None if grad_mask is None else grad_mask.contiguous(), needs[2] or needs[3],
            )
        return tuple(g if need else None for g, need in zip(grads, needs)) + (None, None)


def _reference_grads(ctx, grad_features, grad_mask):
    depth, hidden, feat_weight, feat_bias, transparent, composition_mask = ctx.saved_tensors
    inputs = (depth, hidden, feat_weight, feat_bias)
    wanted = [x for x, need in zip(inputs, ctx.needs_input_grad[:4]) if need]
    flags = None if transparent is None else transparent.bool()
    keep = None if composition_mask is None else composition_mask.to(depth.dtype)
    outputs = depth_fusion_reference(*inputs, flags, keep)
    pairs = [(out, g) for out, g in zip(outputs, (grad_features, grad_mask)) if g is not None]
    grads = iter(torch.autograd.grad([o for o, _ in pairs], wanted, [g for _, g in pairs],
                                     create_graph=True, allow_unused=True))
    return tuple(next(grads) if need else None for need in ctx.needs_input_grad[:4])


def depth_fusion_triton(depth, hidden, feat_weight, feat_bias, transparent=None, composition_mask=None):
    """Triton path of `depth_fusion`: [B, F, P] features and the [B, K, P] mask, differentiable in everything but the composition mask."""
    if triton is None:
        raise RuntimeError("depth_fusion_triton needs triton, which is not installed")
    dtype = hidden.dtype
    if depth.dtype != dtype or feat_weight.dtype != dtype or feat_bias.dtype != dtype:
        raise ValueError(f"depth, hidden, feat_weight and feat_bias must share a dtype, got {depth.dtype}, {dtype}, "
                         f"{feat_weight.dtype}, {feat_bias.dtype}")
    keep_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    keep = None if composition_mask is None else composition_mask.detach().to(keep_dtype).contiguous()
    return _DepthFusion.apply(depth.contiguous(), hidden.contiguous(), feat_weight.contiguous(),
                              feat_bias.contiguous(), _transparent_flags(transparent), keep)


def depth_fusion(depth, hidden, feat_weight, feat_bias, transparent=None, composition_mask=None, impl="auto"):
    """Fused softmax-depth compositing; see `depth_fusion_reference` for shapes."""
    check_inputs(depth, hidden, feat_weight, feat_bias, transparent, composition_mask)
    if resolve_impl(impl, depth, hidden, feat_weight, op="depth_fusion") == "triton":
        return depth_fusion_triton(depth, hidden, feat_weight, feat_bias, transparent, composition_mask)
    return depth_fusion_reference(depth, hidden, feat_weight, feat_bias, transparent, composition_mask)
