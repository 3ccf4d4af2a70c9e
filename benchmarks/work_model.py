"""A model, not a measurement: DRAM bytes and FLOPs of each fused op against the eager reference it replaces, at the
preset sizes, and the time a roofline at an H100's published peaks predicts for each.

    python benchmarks/work_model.py            # prints the markdown table kept in benchmarks/RESULTS.md

Counted from the code, pass by pass: every eager op reads its inputs and writes its output once (in-place ops read
and write their tensor); a fused kernel reads its inputs and writes its outputs once. Small operands (weights,
styles, scales, biases: under 1% of the traffic here) are left out of both, and so is what stays in L2 (the
class-MLP backward's per-program scratch). The backward rows count autograd's passes of the reference as written
(each op's saved tensors read again, each gradient written). Times are max(bytes / bandwidth, FLOPs / peak): no
launch overhead, no cache effects, perfect overlap; they bound what a kernel could reach, they do not predict it.
"""
import ssgan

# H100 SXM5, NVIDIA's data sheet (dense, no sparsity)
HBM_BYTES_PER_S = 3.35e12
PEAK_FLOPS = {"fp32 FMA": 67e12, "3xTF32": 989e12 / 2 / 3, "tf32": 989e12 / 2, "bf16": 989e12}
ELEMENT = 4  # bytes: float32 activations


def rows_for(preset, batch):
    cfg = ssgan.preset(preset)
    B, K, L, C, Fc = batch, cfg.num_classes, cfg.local_layers, cfg.local_channel, cfg.coarse_channel
    P = cfg.coarse_size**2
    bkpc, bkp, bfp = B * K * P * C, B * K * P, B * Fc * P
    rows = []

    # class_mlp forward. Eager (_modulated_mlp_reference): per layer one baddbmm (reads x, writes y) and an in-place
    # leaky ReLU (reads and writes y); the depth head reads x once; the final x * sqrt(2) reads and writes.
    # Fused: writes hidden and depth (pos is [P, C], shared by every program).
    mlp_flops = 2 * B * K * P * L * C * C
    rows.append(("class_mlp forward", (4 * L + 3) * bkpc + bkp, bkpc + bkp, mlp_flops, mlp_flops, "3xTF32"))
    # class_mlp backward. Eager: per layer, baddbmm's backward reads grad and x and writes grad x (3 passes), leaky
    # ReLU's reads grad and its saved output and writes grad (3), plus the last layer's scaling (2).
    # Fused: reads grad_hidden and grad_depth, recomputes the forward (1x FLOPs) and runs 2 dots per layer (2x);
    # the weight gradient adds a [C, C] tile per (16-pixel tile, layer) with L2 atomics (not DRAM, listed below).
    rows.append(("class_mlp backward", (6 * L + 2) * bkpc + bkp, bkpc + bkp, 2 * mlp_flops, 3 * mlp_flops, "3xTF32"))

    # depth_fusion forward. Eager (depth_fusion_reference): hidden * weights (reads hidden, writes), the rearrange to
    # [B, P, K*C] (a copy: reads, writes), the matmul (reads, writes [B, P, F]), the bias einsum (writes [B, P, F]),
    # the sum (reads both, writes); softmax and renormalisations ~8 passes over [B, K, P].
    # Fused: reads depth and hidden, writes the features and the mask.
    fusion_flops = 2 * B * P * K * C * Fc
    rows.append(("depth_fusion forward", 4 * bkpc + 5 * bfp + 8 * bkp, bkpc + bfp + 2 * bkp, fusion_flops,
                 fusion_flops, "fp32 FMA"))
    # depth_fusion backward. Eager: the matmul's backward reads grad [B, P, F] and the blended copy and writes both
    # gradients (2 x BKPC + BFP), the copy and the product backward (3 x BKPC), the bias einsum (BFP + BKP).
    # Fused: the hidden kernel reads grad features and hidden and writes grad hidden (one dot: W^T g); the parameter
    # kernel reads both again (one dot: g (w h)^T).
    rows.append(("depth_fusion backward", 6 * bkpc + 3 * bfp + 8 * bkp, 3 * bkpc + 2 * bfp + 4 * bkp,
                 2 * fusion_flops, 2 * fusion_flops, "fp32 FMA"))

    # Render-net styled conv, per layer, forward. Reference on cuDNN: conv (reads x, writes y), for up=2 a stride-2
    # transposed conv to [2H+1, 2W+1] and the blur (reads, writes), then the noise add, bias add and leaky ReLU,
    # each in place (reads and writes y). "auto" on CUDA: the same conv and blur, the noise in place, then one
    # bias_act pass. Fused Triton: reads x, writes y and (training) z; up=2 runs 4 phase convs, each 3x3, on the
    # input grid: 4 x 9 MACs per input pixel and output channel against the transposed conv's 9.
    in_ch = cfg.coarse_channel
    for res in cfg.render_resolutions:
        out_ch = cfg.render_channels[res]
        if res // 2 == cfg.coarse_size:
            in_ch += cfg.coarse_channel
        for up, ci in ((2, in_ch), (1, out_ch)):
            x = B * ci * (res // up) ** 2
            y = B * out_ch * res * res
            flops = 2 * B * out_ch * ci * 9 * (res // up) ** 2
            pre = B * out_ch * (res + 1) ** 2 if up == 2 else y
            eager = x + pre + (pre + y if up == 2 else 0) + 6 * y
            rows.append((f"styled_conv2d {ci}->{out_ch} @{res} up={up} forward", eager, x + 2 * y, flops,
                         flops * (4 if up == 2 else 1), "tf32"))
            in_ch = out_ch

    # bias_act (discriminator, first 3x3 conv at full resolution): eager x + b, leaky ReLU, * gain: 3 read+write
    # passes; fused: one read, one write.
    d_act = B * cfg.disc_channels[cfg.size] * cfg.size**2
    rows.append((f"bias_act [{B}, {cfg.disc_channels[cfg.size]}, {cfg.size}, {cfg.size}]", 6 * d_act, 2 * d_act,
                 3 * d_act, 3 * d_act, "fp32 FMA"))
    # upfirdn2d 2x up of the RGB + segmentation skip at the largest resolution (3 + K channels). The reference is one
    # depthwise stride-2 transposed conv whose padding already crops to the output: it reads x and writes y, as the
    # fused kernel does, and both make 16 MACs per input pixel (4 of the 4x4 taps per output pixel).
    ch = 3 + K
    small, big = B * ch * (cfg.size // 2) ** 2, B * ch * cfg.size**2
    rows.append((f"upfirdn2d 2x up [{B}, {ch}, {cfg.size // 2}^2]", small + big, small + big, 2 * 16 * small,
                 2 * 16 * small, "fp32 FMA"))
    return rows


def seconds(nbytes, flops, unit):
    return max(nbytes / HBM_BYTES_PER_S, flops / PEAK_FLOPS[unit])


def table(presets=(("celebamask-256", 16), ("celebamask-512", 16))):
    lines = ["| preset | op | eager MB | fused MB | eager GFLOP | fused GFLOP | eager model ms | fused model ms "
             "| fused peak used | model speed-up |", "|---|---|---|---|---|---|---|---|---|---|"]
    for preset, batch in presets:
        for name, eager_el, fused_el, eager_flops, fused_flops, unit in rows_for(preset, batch):
            eager_b, fused_b = eager_el * ELEMENT, fused_el * ELEMENT
            # the eager reference runs float32 matmuls on the FMA units (torch's default: no TF32) except the convs
            eager_unit = "tf32" if unit == "tf32" else "fp32 FMA"
            t_eager = seconds(eager_b, eager_flops, eager_unit)
            t_fused = seconds(fused_b, fused_flops, unit)
            lines.append(f"| {preset} b{batch} | {name} | {eager_b / 1e6:,.0f} | {fused_b / 1e6:,.0f} | "
                         f"{eager_flops / 1e9:,.1f} | {fused_flops / 1e9:,.1f} | {t_eager * 1e3:.3f} | "
                         f"{t_fused * 1e3:.3f} | {unit} | {t_eager / t_fused:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
