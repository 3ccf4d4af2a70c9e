"""Per-class coordinate MLP: the K local generators of SemanticStyleGAN, batched over (sample, class).

Every layer is a modulated, demodulated 1x1 convolution (a per-pixel linear map) followed by bias,
leaky ReLU and a gain of sqrt(2). Modulation and demodulation are folded into per-(sample, class,
layer) scale vectors so that the weights stay shared across the batch:

    y[o] = lrelu(demod[o] * sum_i W[o, i] * (s[i] / sqrt(C)) * x[i] + b[o]) * sqrt(2)
    demod[o] = rsqrt(sum_i (W[o, i] * s[i] / sqrt(C))^2 + 1e-8)

After layer `depth_layer` a linear head gives the pseudo-depth of each class.

The Triton path computes the scales and demodulation with small torch ops (autograd handles them)
and runs the MLP itself as one fused op over (input scale s, output scale d):
  forward:  one program per (pixel tile, class, sample) runs all L layers with the activations on
            chip and writes only the last hidden layer and the depth;
  backward: persistent programs loop over the same tiles; each recomputes its tile's forward, parks
            the L layer inputs in a small per-program scratch (not one buffer per layer of the whole
            batch), walks back through the layers and adds its partial weight, bias, scale and
            position gradients into fp32 accumulators with atomics (so the summation order, and the
            last bits of those gradients, may vary from run to run);
  double backward: the backward recomputes with the reference under autograd when grad mode is on.
"""
import math

import torch
import torch.nn.functional as F
from einops import einsum, rearrange

from ._dispatch import interpreting, new_output, resolve_impl

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

SQRT2 = math.sqrt(2.0)
NEG_SLOPE = 0.2

# Tile sizes (pixels per program) and warps on a GPU, chosen with `python -m ssgan.kernel_check` so that neither
# kernel spills on sm_80 or sm_90 (benchmarks/kernel_resources.md): the backward holds a [C, C] weight, its [C, C]
# gradient and several [tile, C] tensors live at once, so it takes a 16-pixel tile and 8 warps. The interpreter pays
# per operation and per program rather than per element, so it runs far fewer, larger tiles.
FWD_BLOCK_P, FWD_WARPS, FWD_STAGES = 32, 8, 2  # 3 stages (the default) spilled 8 B at C=32 (demo) on sm_90
BWD_BLOCK_P, BWD_WARPS = 16, 8
INTERPRETER_BLOCK_P = 1024
# The kernels keep a [C, C] weight and several [tile, C] activations in registers, and tl.dot wants
# every dimension >= 16: channel counts outside this set of powers of two use the reference.
KERNEL_CHANNELS = (16, 32, 64, 128)


def demodulation(weight, styles):
    """weight: [K, L, O, I]; styles: [B, K, L, I] (already divided by sqrt(I)) -> [B, K, L, O]."""
    return torch.rsqrt(einsum(weight.square(), styles.square(), "k l o i, b k l i -> b k l o") + 1e-8)


def _modulated_mlp_reference(pos, weight, bias, scale, demod, depth_weight, depth_bias, depth_layer, detach_texture):
    """The MLP with its input scales [B, K, L, C] and output scales `demod` [B, K, L, C] given.

    Each layer's input scale, output scale and the previous layer's gain are folded into one small weight per
    (sample, class, layer), so a layer is one batched matmul-add and one in-place activation over [B, K, P, C]
    instead of five passes: lrelu(z) * sqrt(2) is kept as lrelu(z), with the sqrt(2) applied by its reader.
    """
    B, K, L, C = scale.shape
    folded = weight[None] * scale[:, :, :, None, :] * demod[:, :, :, :, None]  # [B, K, L, O, I]
    folded = torch.cat([folded[:, :, :1], folded[:, :, 1:] * SQRT2], 2)  # every layer input but pos has the gain
    folded = rearrange(folded, "b k l o i -> l (b k) i o")
    layer_bias = rearrange(bias, "k l c -> l k 1 c").repeat(1, B, 1, 1)  # [L, B*K, 1, C]
    x = pos.expand(B * K, *pos.shape)  # [B*K, P, C]
    depth = None
    for layer in range(L):
        x = F.leaky_relu_(torch.baddbmm(layer_bias[layer], x, folded[layer]), NEG_SLOPE)  # [B*K, P, C]
        if layer == depth_layer:
            depth = torch.bmm(x, depth_weight.repeat(B, 1)[:, :, None] * SQRT2)  # [B*K, P, 1]
            depth = rearrange(depth, "(b k) p 1 -> b k p", b=B) + depth_bias[None, :, None]
            if detach_texture:
                x = x.detach()
    return rearrange(x * SQRT2, "(b k) p c -> b k p c", b=B), depth


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
    scale = styles / math.sqrt(weight.shape[-1])
    demod = demodulation(weight, scale)  # [B, K, L, C]
    return _modulated_mlp_reference(
        pos, weight, bias, scale, demod, depth_weight, depth_bias, depth_layer, detach_texture
    )


def _check_inputs(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer):
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must be [K, L, C, C], got {tuple(weight.shape)}")
    K, L, C, _ = weight.shape
    expected = {"pos": (pos.shape[0], C), "bias": (K, L, C), "styles": (styles.shape[0], K, L, C),
                "depth_weight": (K, C), "depth_bias": (K,)}
    given = {"pos": pos, "bias": bias, "styles": styles, "depth_weight": depth_weight, "depth_bias": depth_bias}
    for name, tensor in given.items():
        if tuple(tensor.shape) != expected[name]:
            raise ValueError(
                f"{name} must have shape {expected[name]} for weight {tuple(weight.shape)}, got {tuple(tensor.shape)}"
            )
    if not 0 <= depth_layer < L:
        raise ValueError(f"depth_layer must lie in [0, {L}) for {L} layers, got {depth_layer}")


def class_mlp(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer, detach_texture=False, impl="auto"):
    """Fused per-class coordinate MLP; see `class_mlp_reference` for shapes."""
    _check_inputs(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer)
    if resolve_impl(impl, pos, weight, styles, op="class_mlp") == "triton" and weight.shape[-1] in KERNEL_CHANNELS:
        return class_mlp_triton(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer, detach_texture)
    return class_mlp_reference(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer, detach_texture)


def class_mlp_triton(pos, weight, bias, styles, depth_weight, depth_bias, depth_layer, detach_texture=False):
    """The Triton path of `class_mlp` (C in KERNEL_CHANNELS, all tensors of one floating dtype)."""
    tensors = {"pos": pos, "weight": weight, "bias": bias, "styles": styles,
               "depth_weight": depth_weight, "depth_bias": depth_bias}  # fmt: skip
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) != 1 or not weight.dtype.is_floating_point:
        raise ValueError(f"class_mlp's Triton path needs all inputs in one floating dtype, got {dtypes}")
    if weight.shape[-1] not in KERNEL_CHANNELS:
        raise ValueError(f"class_mlp's Triton path needs C in {KERNEL_CHANNELS}, got C={weight.shape[-1]}")
    # Scales and demodulation in at least float32: their gradients nearly cancel (demodulation makes each
    # layer blind to the scale of a weight row), which half precision would turn into noise.
    compute = torch.promote_types(weight.dtype, torch.float32)
    scale = styles.to(compute) / math.sqrt(weight.shape[-1])
    demod = demodulation(weight.to(compute), scale)
    return _ModulatedMLP.apply(pos, weight, bias, scale, demod, depth_weight, depth_bias, depth_layer, detach_texture)


class _ModulatedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, weight, bias, scale, demod, depth_weight, depth_bias, depth_layer, detach_texture):
        ctx.save_for_backward(pos, weight, bias, scale, demod, depth_weight, depth_bias)
        ctx.depth_layer, ctx.detach_texture = depth_layer, detach_texture
        return _forward(pos, weight, bias, scale, demod, depth_weight, depth_bias, depth_layer)

    @staticmethod
    def backward(ctx, grad_hidden, grad_depth):
        inputs = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a backward that autograd can differentiate again
            needed = [i for i, need in enumerate(ctx.needs_input_grad[:7]) if need]
            compute = inputs[3].dtype  # that of the scales, at least float32
            with torch.enable_grad():
                promoted = [t.to(compute) for t in inputs]
                outputs = _modulated_mlp_reference(*promoted, ctx.depth_layer, ctx.detach_texture)
            grad_outputs = (grad_hidden.to(compute), grad_depth.to(compute))
            found = torch.autograd.grad(outputs, [inputs[i] for i in needed], grad_outputs,
                                        create_graph=True, allow_unused=True)
            grads = [None] * 7
            for i, grad in zip(needed, found):
                grads[i] = grad
        else:
            grads = _backward(*inputs, grad_hidden, grad_depth, ctx.depth_layer, ctx.detach_texture,
                              need_pos=ctx.needs_input_grad[0])
        return (*grads, None, None)


def _kernel_dtypes(dtype):
    """(accumulator dtype, tl.dot input precision) for inputs of `dtype`."""
    acc = tl.float64 if dtype == torch.float64 else tl.float32
    if dtype != torch.float32:
        return acc, "ieee"
    # fp32 follows torch's matmul setting so the fused op rounds like the reference on the same GPU. Without TF32,
    # a GPU runs the dots as 3xTF32 (error near float32's): an IEEE fp32 tl.dot goes to the FMA units with both
    # operands held in registers, and spilled kilobytes in the backward (ptxas on sm_80: 32 registers, 11.8 KB).
    if torch.backends.cuda.matmul.allow_tf32:
        return acc, "tf32"
    return acc, "ieee" if interpreting() else "tf32x3"


def _forward(pos, weight, bias, scale, demod, depth_weight, depth_bias, depth_layer):
    B, K, L, C = scale.shape
    P = pos.shape[0]
    hidden = new_output((B, K, P, C), pos)
    depth = new_output((B, K, P), pos)
    acc, precision = _kernel_dtypes(pos.dtype)
    block = _block_p(FWD_BLOCK_P, P)
    grid = (triton.cdiv(P, block), K, B)
    _class_mlp_fwd_kernel[grid](
        pos.contiguous(), weight.contiguous(), bias.contiguous(), scale.contiguous(), demod.contiguous(),
        depth_weight.contiguous(), depth_bias.contiguous(), hidden, depth, P, K, L, depth_layer,
        C=C, BLOCK_P=block, ACC=acc, PRECISION=precision, num_warps=FWD_WARPS, num_stages=FWD_STAGES,
    )
    return hidden, depth


def _block_p(gpu_block, P):
    """Pixels per tile: the GPU size, or under the interpreter a larger one (no larger than P needs)."""
    if not interpreting():
        return gpu_block
    return max(16, min(INTERPRETER_BLOCK_P, triton.next_power_of_2(P)))


def _resident_programs(device):
    """How many backward programs to launch: enough to fill the GPU, each reusing its scratch slot."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def _backward(pos, weight, bias, scale, demod, depth_weight, depth_bias, grad_hidden, grad_depth,
              depth_layer, detach_texture, need_pos):
    B, K, L, C = scale.shape
    P = pos.shape[0]
    acc, precision = _kernel_dtypes(pos.dtype)
    acc_dtype = torch.float64 if pos.dtype == torch.float64 else torch.float32
    sums = {name: torch.zeros(shape, device=pos.device, dtype=acc_dtype) for name, shape in {
        "pos": (P, C) if need_pos else (1,), "weight": weight.shape, "bias": bias.shape, "scale": scale.shape,
        "demod": demod.shape, "depth_weight": depth_weight.shape, "depth_bias": depth_bias.shape}.items()}
    block = _block_p(BWD_BLOCK_P, P)
    tiles_per_map = triton.cdiv(P, block)
    num_tiles = tiles_per_map * K * B
    programs = min(num_tiles, _resident_programs(pos.device))
    scratch = torch.empty((programs, L, block, C), device=pos.device, dtype=acc_dtype)
    _class_mlp_bwd_kernel[(programs,)](
        pos.contiguous(), weight.contiguous(), bias.contiguous(), scale.contiguous(), demod.contiguous(),
        depth_weight.contiguous(), grad_hidden.contiguous(), grad_depth.contiguous(), scratch,
        *sums.values(),
        P, K, L, depth_layer, tiles_per_map, num_tiles,
        C=C, BLOCK_P=block, ACC=acc, PRECISION=precision, DETACH=detach_texture, NEED_POS=need_pos,
        num_warps=BWD_WARPS,
    )
    if not need_pos:
        sums["pos"] = None
    inputs = (pos, weight, bias, scale, demod, depth_weight, depth_bias)
    return [None if grad is None else grad.to(t.dtype) for grad, t in zip(sums.values(), inputs)]


if triton is not None:

    @triton.jit
    def _modulated_layer(x, w, s_ptrs, d_ptrs, b_ptrs, ACC: tl.constexpr, PRECISION: tl.constexpr):
        """One layer on a [tile, C] block with weight w [O, I]: lrelu((x * s) @ W^T * d + b) * sqrt(2)."""
        u = (x * tl.load(s_ptrs).to(ACC)[None, :]).to(w.dtype)  # the dot runs in the input dtype, like the reference
        y = tl.dot(u, tl.trans(w), input_precision=PRECISION, out_dtype=ACC)
        y = y * tl.load(d_ptrs).to(ACC)[None, :] + tl.load(b_ptrs).to(ACC)[None, :]
        return tl.where(y > 0, y, y * 0.2) * 1.4142135623730951

    @triton.jit
    def _class_mlp_fwd_kernel(
        pos_ptr, weight_ptr, bias_ptr, scale_ptr, demod_ptr, depth_weight_ptr, depth_bias_ptr,
        hidden_ptr, depth_ptr, P, K, L, depth_layer,
        C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
    ):
        k = tl.program_id(1).to(tl.int64)
        bk = tl.program_id(2).to(tl.int64) * K + k  # flat (sample, class)
        rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        ch = tl.arange(0, C)
        in_map = rows < P
        x = tl.load(pos_ptr + rows[:, None] * C + ch[None, :], mask=in_map[:, None], other=0.0).to(ACC)  # [tile, C]
        # pointers to layer 0's parameters, advanced one layer per step
        w_ptrs = weight_ptr + k * L * C * C + ch[:, None] * C + ch[None, :]  # [O, I]
        s_ptrs = scale_ptr + bk * L * C + ch
        d_ptrs = demod_ptr + bk * L * C + ch
        b_ptrs = bias_ptr + k * L * C + ch
        for layer in range(L):
            x = _modulated_layer(x, tl.load(w_ptrs), s_ptrs, d_ptrs, b_ptrs, ACC, PRECISION)
            if layer == depth_layer:
                head = tl.load(depth_weight_ptr + k * C + ch).to(ACC)
                depth = tl.sum(x * head[None, :], axis=1) + tl.load(depth_bias_ptr + k).to(ACC)
                tl.store(depth_ptr + bk * P + rows, depth.to(depth_ptr.dtype.element_ty), mask=in_map)
            w_ptrs += C * C
            s_ptrs += C
            d_ptrs += C
            b_ptrs += C
        tl.store(hidden_ptr + (bk * P + rows[:, None]) * C + ch[None, :], x.to(hidden_ptr.dtype.element_ty),
                 mask=in_map[:, None])

    @triton.jit
    def _class_mlp_bwd_kernel(
        pos_ptr, weight_ptr, bias_ptr, scale_ptr, demod_ptr, depth_weight_ptr, grad_hidden_ptr, grad_depth_ptr,
        scratch_ptr, grad_pos_ptr, grad_weight_ptr, grad_bias_ptr, grad_scale_ptr, grad_demod_ptr,
        grad_depth_weight_ptr, grad_depth_bias_ptr, P, K, L, depth_layer, tiles_per_map, num_tiles,
        C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr, PRECISION: tl.constexpr,
        DETACH: tl.constexpr, NEED_POS: tl.constexpr,
    ):
        ch = tl.arange(0, C)
        square = ch[:, None] * C + ch[None, :]  # [O, I] offsets inside one weight
        # this program's scratch: the L layer inputs of its current tile
        slot = scratch_ptr + tl.program_id(0).to(tl.int64) * L * BLOCK_P * C
        slot += tl.arange(0, BLOCK_P)[:, None] * C + ch[None, :]
        for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
            bk = (tile // tiles_per_map).to(tl.int64)  # flat (sample, class)
            k = bk % K
            rows = (tile % tiles_per_map) * BLOCK_P + tl.arange(0, BLOCK_P)
            in_map = rows < P

            # Recompute the tile's forward, keeping each layer's input.
            x = tl.load(pos_ptr + rows[:, None] * C + ch[None, :], mask=in_map[:, None], other=0.0).to(ACC)
            w_off = k * L * C * C  # layer 0's weight; advanced (then walked back) one layer per step
            v_off = bk * L * C  # layer 0's scale and demodulation
            b_off = k * L * C  # layer 0's bias
            for layer in range(L):
                tl.store(slot + layer * BLOCK_P * C, x)
                x = _modulated_layer(x, tl.load(weight_ptr + w_off + square), scale_ptr + v_off + ch,
                                     demod_ptr + v_off + ch, bias_ptr + b_off + ch, ACC, PRECISION)
                w_off += C * C
                v_off += C
                b_off += C
            tl.debug_barrier()  # the scratch is read back by other threads of the program

            # Walk back. g: gradient of the current layer's output; rows outside the map carry zeros.
            g = tl.load(grad_hidden_ptr + (bk * P + rows[:, None]) * C + ch[None, :], mask=in_map[:, None],
                        other=0.0).to(ACC)
            grad_depth = tl.load(grad_depth_ptr + bk * P + rows, mask=in_map, other=0.0).to(ACC)
            out = x
            for step in range(L):
                layer = L - 1 - step
                w_off -= C * C
                v_off -= C
                b_off -= C
                x = tl.load(slot + layer * BLOCK_P * C)  # layer input [tile, C]
                if layer == depth_layer:
                    if DETACH:
                        g = tl.zeros_like(g)
                    head = tl.load(depth_weight_ptr + k * C + ch).to(ACC)
                    g += grad_depth[:, None] * head[None, :]
                    tl.atomic_add(grad_depth_weight_ptr + k * C + ch, tl.sum(grad_depth[:, None] * out, axis=0))
                    tl.atomic_add(grad_depth_bias_ptr + k, tl.sum(grad_depth, axis=0))
                w = tl.load(weight_ptr + w_off + square)  # [O, I]
                s = tl.load(scale_ptr + v_off + ch).to(ACC)
                d = tl.load(demod_ptr + v_off + ch).to(ACC)
                # lrelu keeps the sign, so the layer output tells which slope applied
                grad_y = tl.where(out > 0, g, g * 0.2) * 1.4142135623730951  # [tile, O]
                tl.atomic_add(grad_bias_ptr + b_off + ch, tl.sum(grad_y, axis=0))
                u = (x * s[None, :]).to(w.dtype)
                # outer[o, i] = sum_p grad_y[p, o] u[p, i]: dW = d[o] outer, and d(demod)[o] = sum_i W[o, i] outer[o, i]
                outer = tl.dot(tl.trans(grad_y.to(w.dtype)), u, input_precision=PRECISION, out_dtype=ACC)  # [O, I]
                tl.atomic_add(grad_weight_ptr + w_off + square, outer * d[:, None])
                tl.atomic_add(grad_demod_ptr + v_off + ch, tl.sum(outer * w.to(ACC), axis=1))
                grad_a = (grad_y * d[None, :]).to(w.dtype)
                grad_u = tl.dot(grad_a, w, input_precision=PRECISION, out_dtype=ACC)  # [tile, I]
                tl.atomic_add(grad_scale_ptr + v_off + ch, tl.sum(grad_u * x, axis=0))
                g = grad_u * s[None, :]
                out = x
            if NEED_POS:
                tl.atomic_add(grad_pos_ptr + rows[:, None] * C + ch[None, :], g, mask=in_map[:, None])
            tl.debug_barrier()  # the next tile overwrites the scratch
