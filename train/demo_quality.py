"""What the main job is meant to show, measured on a trained generator: smooth pseudo-depths shaped like their parts,
local edits, and how much each region varies.

- Depth smoothness: the share of a depth map's spectral energy (its mean removed) above a spatial frequency. A depth
  map that draws a part as a smooth shape keeps nearly all its energy at low frequencies; stripes put it high.
- Depth shape: the IoU between a class's region and as many of its depth map's highest cells (`top_area_iou`).
- Locality (the paper's central claim): for each class, swap its shape and texture codes with another sample's
  (`ssgan.editing.swap_regions`) and measure with `ssgan.editing.locality_of` how much the image changes inside the
  class's region versus outside it, and how much of the segmentation outside it survives (`swap_sheet` draws it).
- Texture diversity: how much each region's colour varies over samples, against the training data.
"""

import numpy as np
import torch
from einops import rearrange

from ssgan.editing import colorize_seg, inferno, locality_of, swap_regions, to_uint8

# Frequencies at or above a quarter of the Nyquist frequency of the map count as high.
HIGH_FREQUENCY_FRACTION = 0.25


def high_frequency_share(maps, fraction=HIGH_FREQUENCY_FRACTION):
    """Per map, the share of spectral energy at radial frequency >= fraction * Nyquist, its mean removed.

    maps: [..., H, W] -> [...] in [0, 1]; 0 for a constant map (no energy at all). On a 32 x 32 map a hard-edged disc
    of radius 3-12 pixels gives 0.36-0.12, stripes with a period under 8 pixels and white noise give > 0.9."""
    if maps.ndim < 2:
        raise ValueError(f"high_frequency_share: expected maps [..., H, W], got shape {tuple(maps.shape)}")
    x = maps.double()
    x = x - x.mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square()
    fy = torch.fft.fftfreq(x.shape[-2], dtype=torch.float64)[:, None]  # cycles per pixel, Nyquist 0.5
    fx = torch.fft.fftfreq(x.shape[-1], dtype=torch.float64)[None, :]
    high = (fx.square() + fy.square()).sqrt() >= fraction * 0.5
    total = power.sum((-2, -1))
    return torch.where(total > 0, (power * high).sum((-2, -1)) / total.clamp_min(1e-300), 0.0).float()


@torch.no_grad()
def _samples(G, num_samples, batch, seed):
    """num_samples samples of G (z drawn from `seed`, constant noise), rendered in batches: a list of outputs."""
    z = torch.randn(num_samples, G.cfg.style_dim, generator=torch.Generator().manual_seed(seed))
    z = z.to(G.local.weight.device)
    return [G(z=z[i : i + batch], noise_mode="const") for i in range(0, num_samples, batch)]


@torch.no_grad()
def _pairs(G, num_pairs, seed):
    """(target, source) W [num_pairs, D] of num_pairs pairs of samples, z drawn from `seed`."""
    z = torch.randn(2, num_pairs, G.cfg.style_dim, generator=torch.Generator().manual_seed(seed))
    z = z.to(G.local.weight.device)
    return G.mapping(z[0]), G.mapping(z[1])


def top_area_iou(depths, regions):
    """Per map, the IoU between a region and as many of the map's highest cells as the region has: 1 when the depth map
    draws the region's shape as its peak, lower when its high values lie elsewhere too (bands, stripes).
    depths [..., H, W] float, regions [..., H, W] bool -> [...]; NaN where the region is empty."""
    d, r = depths.flatten(-2), regions.flatten(-2)
    area = r.sum(-1, keepdim=True)
    rank = d.argsort(-1, descending=True).argsort(-1)  # 0 for the highest cell
    top = rank < area
    iou = (top & r).sum(-1) / (top | r).sum(-1).clamp_min(1)
    return torch.where(area[..., 0] > 0, iou.double(), torch.nan).float()


@torch.no_grad()
def depth_measures(G, num_samples=64, batch=16, seed=321):
    """Both depth measures over the same num_samples samples, for every class with a depth (all but class 0, the
    background), each with "mean" over the classes:
    - smoothness, {class: mean high-frequency share of its depth map};
    - shape, {class: mean top_area_iou of its depth map and its region of the coarse mask} over the samples that draw
      the class (None if none does). A class drawn under others (the face under the eyes, brows and mouth) keeps its
      depth high under them, which lowers its score.
    Returns (smoothness, shape)."""
    outs = _samples(G, num_samples, batch, seed)
    depths = torch.cat([o.depths for o in outs]).cpu()  # [B, K, G, G]
    labels = torch.cat([o.coarse_seg for o in outs]).argmax(1).cpu()  # [B, G, G]
    share = high_frequency_share(depths[:, 1:]).mean(0)  # [K - 1]
    smoothness = dict(zip(G.cfg.class_names[1:], share.tolist())) | {"mean": float(share.mean())}
    shape = {}
    for k, name in enumerate(G.cfg.class_names[1:], start=1):
        iou = top_area_iou(depths[:, k], labels == k)
        shape[name] = iou.nanmean().item() if not iou.isnan().all() else None
    drawn = [v for v in shape.values() if v is not None]
    shape["mean"] = sum(drawn) / len(drawn) if drawn else None
    return smoothness, shape


# The targets for a local edit: outside / inside <= 0.1 and the segmentation outside kept (IoU >= 0.95).
LOCAL_RATIO, LOCAL_IOU = 0.1, 0.95
# The region's edge band in pixels: a 64-px image renders an edge as a pixel that mixes both sides' colours (the
# render net upsamples its coarser RGB outputs, and the coarse mask has 2-px cells), so that pixel changes with
# either side. The strict reading (no band, the unedited sample's region) is reported beside it.
EDGE_BAND = 1
_EMPTY = {"inside": None, "outside": None, "ratio": None, "seg_iou_outside": None, "ratio_strict": None,
          "seg_iou_strict": None, "local": None, "pairs": 0}  # fmt: skip


@torch.no_grad()
def region_locality(G, num_pairs=32, seed=654, dilate=EDGE_BAND):
    """Per class: swap its shape and texture codes between num_pairs pairs of samples and measure the edit's locality.

    Returns {class: {"inside", "outside", "ratio" (outside / inside), "seg_iou_outside", "ratio_strict",
    "seg_iou_strict", "local", "pairs"}}: mean |Δpixel| (image in [-1, 1]) inside the region the class covers before
    or after the edit, grown by `dilate` pixels, and outside it, averaged over the pairs where the class is drawn, and
    the mean IoU of the other classes' segmentation outside the region before and after. The strict pair takes the
    region of the unedited sample only, not grown, so the pixels a shape swap newly covers count as outside.
    "local": ratio <= 0.1 and IoU >= 0.95 (the targets of issue #14). A class no sample draws gets None everywhere
    (JSON has no NaN) and "pairs" 0."""
    w_target, w_source = _pairs(G, num_pairs, seed)
    before = G(w=w_target, noise_mode="const")  # rendered once: `ssgan.editing.locality` minus the repeated render
    report = {}
    for k, name in enumerate(G.cfg.class_names):
        after = G(w=swap_regions(G.cfg, w_target, w_source, name), noise_mode="const")
        union, strict = locality_of(before, after, k, dilate, "union"), locality_of(before, after, k, 0, "before")
        present = ~union.inside.isnan()
        if not present.any():
            report[name] = dict(_EMPTY)
            continue

        def mean(values):
            return values[present].nanmean().item()

        def ratio(m):
            inside = mean(m.inside)
            return mean(m.outside) / inside if inside > 0 else None  # None: nothing changed inside at all

        entry = {"inside": mean(union.inside), "outside": mean(union.outside), "ratio": ratio(union),
                 "seg_iou_outside": mean(union.seg_iou_outside), "ratio_strict": ratio(strict),
                 "seg_iou_strict": mean(strict.seg_iou_outside)}  # fmt: skip
        entry["local"] = entry["ratio"] is not None and entry["ratio"] <= LOCAL_RATIO \
            and entry["seg_iou_outside"] >= LOCAL_IOU
        report[name] = entry | {"pairs": int(present.sum())}
    return report


def format_locality(report):
    lines = ["locality of swapping one class's shape and texture codes (mean |Δ| of pixels in [-1, 1]);",
             f"region: the class's pixels before or after the swap and a {EDGE_BAND}-px edge band "
             "(strict: before only, no band);",
             f"local: outside/inside <= {LOCAL_RATIO} and seg IoU outside >= {LOCAL_IOU}",
             "  class        pairs  inside  outside  outside/inside  seg IoU outside  local  strict: ratio  IoU"]
    for name, r in report.items():
        if r["pairs"] == 0:
            lines.append(f"  {name:<11s} {0:6d}  (absent from every sample: nothing to measure)")
            continue
        ratio, strict = ("n/a" if v is None else f"{v:.3f}" for v in (r["ratio"], r["ratio_strict"]))
        lines.append(f"  {name:<11s} {r['pairs']:6d}  {r['inside']:6.3f}  {r['outside']:7.4f}  {ratio:>14s}"
                     f"  {r['seg_iou_outside']:15.3f}  {'yes' if r['local'] else 'no':>5s}  {strict:>13s}"
                     f"  {r['seg_iou_strict']:.3f}")  # fmt: skip
    return "\n".join(lines)


@torch.no_grad()
def swap_sheet(G, num_pairs=2, seed=654, scale=2):
    """Swaps like those `region_locality` measures (pairs drawn the same way), as a picture: per pair of samples three rows (image, segmentation, |Δ|
    against the target), columns target, source, then the target with each class's shape and texture codes taken
    from the source. |Δ| (channel mean) is drawn on an inferno scale with 0.5 as full brightness. Tiles are
    upscaled `scale` times by pixel repetition. Returns a uint8 [3 * num_pairs * S', (2 + K) * S', 3] array."""
    w_target, w_source = _pairs(G, num_pairs, seed)
    outs = [G(w=w_target, noise_mode="const"), G(w=w_source, noise_mode="const")]
    outs += [G(w=swap_regions(G.cfg, w_target, w_source, name), noise_mode="const") for name in G.cfg.class_names]
    images = np.stack([to_uint8(o.image) for o in outs], 1)  # [P, 2 + K, S, S, 3]
    segs = np.stack([colorize_seg(o.seg) for o in outs], 1)
    change = torch.stack([(o.image - outs[0].image).abs().mean(1) for o in outs], 1)  # [P, 2 + K, S, S]
    heat = inferno(change.cpu().numpy() / 0.5)
    heat[:, :2] = 0  # no edit in the target and source columns
    sheet = np.stack([images, segs, heat], 1)  # [P, 3, 2 + K, S, S, 3]
    sheet = sheet.repeat(scale, axis=3).repeat(scale, axis=4)
    return np.ascontiguousarray(rearrange(sheet, "p r c h w rgb -> (p r h) (c w) rgb"))


def colour_spread(images, labels, num_classes):
    """Per class, how much its colour varies between samples: the standard deviation over the samples that draw the
    class of the region's mean colour, averaged over R, G and B (images [B, 3, H, W] in [-1, 1], labels [B, H, W]).
    Returns a list of K floats, None for a class drawn in fewer than 2 samples."""
    spread = []
    for k in range(num_classes):
        region = (labels == k).float()[:, None]  # [B1HW]
        area = region.sum((1, 2, 3))
        means = (images.float() * region).sum((2, 3))[area > 0] / area[area > 0, None]  # [b, 3]
        spread.append(means.std(0).mean().item() if means.shape[0] >= 2 else None)
    return spread


@torch.no_grad()
def texture_diversity(G, dataset, num_samples=128, batch=16, seed=987):
    """{class: {"model", "data", "ratio"}}: `colour_spread` of num_samples generated images (labels: the argmax of
    their segmentation) and of the first num_samples rows of `dataset` (items with "image" [3, S, S] and a one-hot
    "mask" [K, S, S]), and model / data. A region whose codes barely change its colour gives swaps that are local but
    hard to see; the ratio says how far a short run is from the data's variety. Raises ValueError for data of fewer
    than 2 rows."""
    if len(dataset) < 2:
        raise ValueError(f"texture_diversity: the data has {len(dataset)} rows; the spread needs at least 2")
    outs = _samples(G, num_samples, batch, seed)
    fake = colour_spread(torch.cat([o.image for o in outs]).cpu(), torch.cat([o.seg for o in outs]).argmax(1).cpu(),
                         G.cfg.num_classes)  # fmt: skip
    rows = [dataset[i] for i in range(min(num_samples, len(dataset)))]
    real = colour_spread(torch.stack([r["image"] for r in rows]), torch.stack([r["mask"] for r in rows]).argmax(1),
                         G.cfg.num_classes)  # fmt: skip
    return {name: {"model": m, "data": d, "ratio": m / d if m is not None and d else None}
            for name, m, d in zip(G.cfg.class_names, fake, real)}  # fmt: skip


def format_diversity(report):
    items = (f"{name} " + ("n/a" if r["ratio"] is None else f"{r['ratio']:.2f}") for name, r in report.items())
    return "texture diversity (spread of each region's colour, model / data): " + ", ".join(items)


def final_report(G, num_pairs=32, num_samples=64, dataset=None):
    """The measures as metric results: {"depth_high_frequency": {...}, "depth_region_iou": {...}, "locality": {...}}
    and, given the training data (with masks), "texture_diversity"."""
    was_training = G.training
    G.eval()
    try:
        smoothness, shape = depth_measures(G, num_samples)
        report = {"depth_high_frequency": smoothness, "depth_region_iou": shape,
                  "locality": region_locality(G, num_pairs)}
        if dataset is not None:
            report["texture_diversity"] = texture_diversity(G, dataset)
        return report
    finally:
        G.train(was_training)
