"""Region-aware editing in W+: region specs, local style mixing, per-region interpolation, component-wise
generation, region-restricted directions (and fitting them), a locality measure, and shared colourisation.

Every tool names regions by class name. A region spec is "hair" (its shape and texture codes),
"mouth:texture", "eyes:shape" or "base" (the shared base codes); a comma-separated string or a list
combines several. W+ slots: 0..base_layers-1 are the base codes, base_layers+2k the shape code of
class k and base_layers+2k+1 its texture code.
"""
import colorsys
import numbers
import os
import re
import secrets
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, reduce

from ssgan.config import SSGConfig
from ssgan.latents import batched, known_batch, read_latent
from ssgan.io import atomic_write, load_npy, load_safetensors, save_image, save_safetensors

PARTS = ("shape", "texture")
BASE = "base"

# --- region specs ---------------------------------------------------------------------------------


def _spec_items(spec):
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    if not items or any(not s for s in items):
        raise ValueError(f"empty region in spec {spec!r}; use e.g. 'hair', 'mouth:texture', 'eyes:shape' or 'base'")
    return items


def region_slots(cfg: SSGConfig, spec):
    """Sorted W+ indices that a region spec selects."""
    slots = set()
    for item in _spec_items(spec):
        name, _, part = item.partition(":")
        if name == BASE and BASE not in cfg.class_names:
            if part:
                raise ValueError(f"region {item!r}: the base codes have no shape/texture parts; write 'base'")
            slots.update(range(cfg.base_layers))
            continue
        k = cfg.class_index(name)
        if part and part not in PARTS:
            raise ValueError(f"region {item!r}: part must be one of {', '.join(PARTS)}, got {part!r}")
        first = cfg.base_layers + 2 * k
        slots.update([first + PARTS.index(part)] if part else [first, first + 1])
    return sorted(slots)


def region_classes(cfg: SSGConfig, spec):
    """Class indices named in a spec (the base codes belong to no class)."""
    names = [item.partition(":")[0] for item in _spec_items(spec)]
    return sorted({cfg.class_index(n) for n in names if not (n == BASE and BASE not in cfg.class_names)})


def slot_mask(cfg: SSGConfig, spec, device=None):
    """Boolean mask [2+2K] over W+ that is True on the slots a region spec selects."""
    mask = torch.zeros(cfg.n_latent, dtype=torch.bool, device=device)
    mask[region_slots(cfg, spec)] = True
    return mask


# --- latents --------------------------------------------------------------------------------------


def as_w_plus(cfg: SSGConfig, w, pair_with=None, what="latent"):
    """W [B, D] or W+ [B, 2+2K, D] (one code may come without B; see `ssgan.latents`) -> W+ [B, 2+2K, D].

    pair_with: the batch size the latents must pair with, which decides an ambiguous [2+2K, D] array.
    Raises ValueError naming the expected and the given shape."""
    w, form = batched(cfg, w, ("w", "w+"), pair_with, what)
    return w[:, None, :].expand(-1, cfg.n_latent, -1) if form == "w" else w


SEEDS_HELP = "seeds and ranges like 0,3,10-12 (z ~ N(0, I) from torch.Generator(seed))"
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes any int64 >= 0
MAX_SEEDS = 100_000  # seeds in one list: beyond this a typo ("0-1000000") would run for days


def parse_seeds(text):
    """A seed list like "0,3,10-12" -> [0, 3, 10, 11, 12], in the order given; a seed given twice is refused.

    Every item is a seed or an inclusive range low-high with 0 <= low <= high <= MAX_SEED; at most MAX_SEEDS in all.
    Raises ValueError naming the list and the bad item (the one message of every command taking seeds)."""
    def bad(reason):
        return ValueError(f"bad seed list {text!r}: {reason}; write seeds and ranges like 0,3,10-12")

    seeds, total = [], 0
    for item in str(text).split(","):
        m = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", item)
        if not m:
            if not item.strip():
                raise bad("empty item")
            compact = re.sub(r"\s", "", item)
            if re.fullmatch(r"-[0-9]+(--?[0-9]+)?|[0-9]+--[0-9]+", compact):
                raise bad(f"{item.strip()!r} has a negative seed; seeds are 0 or more")
            raise bad(f"{item.strip()!r} is not a seed or a range")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise bad(f"range {item.strip()!r} runs backwards (did you mean {hi}-{lo}?)")
        if hi > MAX_SEED:
            raise bad(f"{hi} is above the largest seed {MAX_SEED}")
        total += hi - lo + 1
        if total > MAX_SEEDS:
            raise bad(f"more than {MAX_SEEDS} seeds")
        seeds.append(range(lo, hi + 1))
    flat = [seed for r in seeds for seed in r]
    if len(set(flat)) != len(flat):
        seen, repeated = set(), []
        for seed in flat:
            if seed in seen and seed not in repeated:
                repeated.append(seed)
            seen.add(seed)
        shown = ", ".join(map(str, repeated[:5])) + (", ..." if len(repeated) > 5 else "")
        raise bad(f"seed{'s' * (len(repeated) != 1)} {shown} given more than once; give each seed once")
    return flat


@torch.no_grad()
def w_from_seeds(G, seeds, psi=1.0):
    """W [len(seeds), D]: z ~ N(0, I) drawn from torch.Generator(seed) on the CPU, mapped, truncated by psi."""
    D = G.cfg.style_dim
    z = torch.stack([torch.randn(D, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    w = G.mapping(z.to(G.local.weight.device))
    if psi != 1:
        w_avg = G.mean_latent()
        w = w_avg + psi * (w - w_avg)
    return w


def _pair(a, b):
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"batch sizes {a.shape[0]} and {b.shape[0]} do not pair up (equal, or one of them 1)")
    B = max(a.shape[0], b.shape[0])
    return a.expand(B, *a.shape[1:]), b.expand(B, *b.shape[1:])


def swap_regions(cfg: SSGConfig, w_target, w_source, regions):
    """Local style mixing: W+ of `w_target` with the chosen regions' codes taken from `w_source`.

    Batched over pairs (equal batch sizes, or one side 1). Every other slot is the target's, bit for bit."""
    target = as_w_plus(cfg, w_target, known_batch(cfg, w_source), "target latent")
    source = as_w_plus(cfg, w_source, known_batch(cfg, w_target), "source latent")
    target, source = _pair(target, source)
    mask = slot_mask(cfg, regions, target.device)[:, None]  # [N, 1]
    return torch.where(mask, source, target)


def blend_regions(cfg: SSGConfig, w_target, w_source, regions, t):
    """W+ of `w_target` with the chosen regions' codes moved a fraction t in [0, 1] of the way to `w_source`.

    t = 0 keeps the target and t = 1 is `swap_regions`, both exactly (torch.lerp is exact at its ends); every
    other slot is the target's, bit for bit. Batched like swap_regions."""
    if not 0 <= t <= 1:
        raise ValueError(f"blend fraction t must lie in [0, 1], got {t}")
    target, source = _pair(as_w_plus(cfg, w_target), as_w_plus(cfg, w_source))
    mask = slot_mask(cfg, regions, target.device)[:, None]  # [N, 1]
    return torch.where(mask, torch.lerp(target, source, t), target)


def apply_direction(cfg: SSGConfig, w, direction, strength, regions):
    """w + strength * direction on the chosen regions' slots only; the others stay bit-identical.

    direction: one code, [D] (the same step in every chosen slot) or a W+ direction [2+2K, D] (a leading batch
    dimension of 1 is allowed); strength: a number, or [B] for one strength per sample."""
    strength = torch.as_tensor(strength).reshape(-1)
    w = as_w_plus(cfg, w, strength.shape[0] if known_batch(cfg, w) is None else None)  # strengths decide [N, D]
    direction = read_latent(cfg, direction, ("w", "w+"), what="direction", single=True).w[0]
    strength = strength.to(dtype=w.dtype, device=w.device).reshape(-1, 1, 1)  # [B|1, 1, 1]
    if strength.shape[0] != w.shape[0] and 1 not in (strength.shape[0], w.shape[0]):
        raise ValueError(f"{strength.shape[0]} strengths for a batch of {w.shape[0]} latents")
    moved = w + strength * direction.to(w)
    return torch.where(slot_mask(cfg, regions, w.device)[:, None], moved, w.expand_as(moved))


# --- interpolation --------------------------------------------------------------------------------


def lerp(a, b, t):
    return a + (b - a) * t


def slerp(a, b, t, eps=1e-6):
    """Spherical interpolation along the last dim (norms too change along the arc); lerp where a ∥ b."""
    cos = F.cosine_similarity(a, b, dim=-1, eps=eps).clamp(-1, 1)[..., None]
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    safe = sin.abs() > eps
    sin = torch.where(safe, sin, torch.ones_like(sin))
    arc = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / sin
    return torch.where(safe, arc, lerp(a, b, t))


def catmull_rom(p0, p1, p2, p3, u):
    """Uniform Catmull-Rom segment from p1 (u=0) to p2 (u=1)."""
    u2, u3 = u * u, u * u * u
    return 0.5 * (2 * p1 + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u2 + (3 * p1 - p0 - 3 * p2 + p3) * u3)


INTERPOLATIONS = ("linear", "spherical", "cubic")


def key_path(keys, frames, method="cubic", closed=False):
    """[frames, ...] points on a path through keys [M, ...], evenly spaced in the key parameter.

    linear / spherical: piecewise between consecutive keys; cubic: Catmull-Rom through every key.
    closed: the path returns to the first key (a loop; the last frame stops one step short of it)."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"method must be one of {', '.join(INTERPOLATIONS)}, got {method!r}")
    M = keys.shape[0]
    if M < 2 or frames < 1:
        raise ValueError(f"need at least 2 keys and 1 frame, got {M} keys and {frames} frames")
    segments = M if closed else M - 1
    s = torch.arange(frames, dtype=torch.float64) * segments / (frames if closed else max(frames - 1, 1))
    seg = s.floor().long().clamp(max=segments - 1)
    u = (s - seg).to(keys.dtype).to(keys.device).reshape(-1, *[1] * (keys.ndim - 1))  # [T, 1, ...]
    index = lambda i: i % M if closed else i.clamp(0, M - 1)  # noqa: E731
    p1, p2 = keys[index(seg)], keys[index(seg + 1)]
    if method == "linear":
        return lerp(p1, p2, u)
    if method == "spherical":
        return slerp(p1, p2, u)
    return catmull_rom(keys[index(seg - 1)], p1, p2, keys[index(seg + 2)], u)


def interpolate_regions(cfg: SSGConfig, w, keys, regions, frames, method="cubic", closed=False):
    """W+ frames [T, 2+2K, D]: the chosen regions' slots follow a path through `keys`; the rest stay at `w`.

    w: one latent (W [1, D] or W+ [1, 2+2K, D], or without the 1); keys: [M, D] W or [M, 2+2K, D] W+ latents."""
    w = as_w_plus(cfg, read_latent(cfg, w, ("w", "w+"), what="latent to interpolate", single=True).w)
    path = key_path(as_w_plus(cfg, keys, what="key latents"), frames, method, closed)  # [T, N, D]
    return torch.where(slot_mask(cfg, regions, w.device)[:, None], path, w)


# --- colourisation --------------------------------------------------------------------------------

# The class colours: index 0 (the background) is black; the first 20 are hand-picked to be well separated.
PALETTE = np.array([
    [0, 0, 0], [204, 120, 92], [76, 153, 230], [153, 102, 51], [230, 25, 75], [245, 200, 40],
    [145, 30, 180], [60, 180, 75], [0, 200, 200], [250, 130, 200], [128, 128, 0], [255, 255, 255],
    [0, 0, 160], [170, 255, 195], [128, 0, 0], [255, 215, 180], [90, 90, 90], [255, 128, 0],
    [180, 180, 255], [0, 110, 80],
], dtype=np.uint8)  # fmt: skip
GOLDEN = (5**0.5 - 1) / 2


def palette(num_classes):
    """Colours of classes 0..num_classes-1, [num_classes, 3] uint8, for any number of classes: the fixed PALETTE,
    then hues a golden-ratio step apart (so neighbours differ most) at alternating saturation and brightness.
    palette(n) starts with palette(m) for m < n, so a class keeps its colour whatever the class count."""
    extra = []
    for i in range(len(PALETTE), num_classes):
        j = i - len(PALETTE)
        rgb = colorsys.hsv_to_rgb((j * GOLDEN) % 1, (0.9, 0.55, 0.75)[j % 3], (0.95, 0.75)[(j // 3) % 2])
        extra.append([round(255 * c) for c in rgb])
    return np.concatenate([PALETTE[:num_classes], np.array(extra, dtype=np.uint8).reshape(-1, 3)])


# Anchor colours of an inferno-like perceptual map (black -> purple -> orange -> pale yellow), evenly spaced.
INFERNO = np.array([
    [0, 0, 4], [22, 11, 57], [66, 10, 104], [106, 23, 110], [147, 38, 103], [188, 55, 84],
    [221, 81, 58], [243, 120, 25], [252, 165, 10], [246, 215, 70], [252, 255, 164],
], dtype=np.float64)  # fmt: skip


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def seg_labels(seg):
    """Segmentation logits [B, K, H, W] -> labels [B, H, W] (int64)."""
    return _numpy(seg).argmax(1)


def colorize_labels(labels):
    """Class labels [..., H, W] (integers >= 0) -> RGB [..., H, W, 3] uint8 in the class colours (`palette`)."""
    labels = _numpy(labels).astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"class labels must be >= 0, got {labels.min()}")
    return palette(int(labels.max()) + 1 if labels.size else 0)[labels]


def colorize_seg(seg):
    """Segmentation logits [B, K, H, W], any K -> RGB [B, H, W, 3] uint8 of the argmax class."""
    return colorize_labels(seg_labels(seg))


def inferno(x):
    """Values in [0, 1] (clipped) [...] -> RGB [..., 3] uint8 on the inferno-like map."""
    x = np.clip(_numpy(x).astype(np.float64), 0, 1) * (len(INFERNO) - 1)
    lo = np.minimum(np.floor(x).astype(np.int64), len(INFERNO) - 2)
    frac = (x - lo)[..., None]
    return np.round(INFERNO[lo] * (1 - frac) + INFERNO[lo + 1] * frac).astype(np.uint8)


def colorize_depth(depth):
    """Pseudo-depth maps [B, H, W] -> RGB [B, H, W, 3] uint8, each map rescaled to its own [min, max]."""
    d = _numpy(depth).astype(np.float64)
    lo = d.min(axis=(-2, -1), keepdims=True)
    span = d.max(axis=(-2, -1), keepdims=True) - lo
    return inferno(np.where(span > 0, (d - lo) / np.where(span > 0, span, 1), 0))


def to_uint8(image):
    """Images [B, 3, H, W] in [-1, 1] -> RGB [B, H, W, 3] uint8."""
    x = (_numpy(image).astype(np.float64) + 1) * 127.5
    return rearrange(np.clip(np.round(x), 0, 255).astype(np.uint8), "b c h w -> b h w c")


def resize_nearest(rgb, size):
    """RGB [B, h, w, 3] -> [B, size, size, 3] by pixel repetition (h must divide size)."""
    h = rgb.shape[1]
    if size % h:
        raise ValueError(f"cannot repeat {h} pixels up to {size}")
    r = size // h
    return rgb.repeat(r, axis=1).repeat(r, axis=2)


def side_by_side(*panels):
    """Panels [B, H, W, 3] (same H) -> [B, H, sum W, 3]."""
    return np.concatenate(panels, axis=2)


# --- rendering and files --------------------------------------------------------------------------


@torch.no_grad()
def render(G, w, batch_size=8, noise_mode="const", composition_mask=None):
    """G on W / W+ / expanded latents in chunks of batch_size; the GeneratorOutput fields concatenated."""
    outs = []
    for i in range(0, w.shape[0], batch_size):
        cm = None if composition_mask is None else composition_mask[i : i + batch_size]
        outs.append(G(w=w[i : i + batch_size], noise_mode=noise_mode, composition_mask=cm))
    return type(outs[0])(*(torch.cat([getattr(o, f) for o in outs]) for f in outs[0].__dataclass_fields__))


def image_and_seg(out):
    """[B, S, 2S, 3] uint8: the image beside its colourised segmentation."""
    return side_by_side(to_uint8(out.image), colorize_seg(out.seg))


@contextmanager
def atomic_path(path):
    """A temporary name beside `path` to write to (it keeps the suffix, so writers pick the format by name), renamed
    over `path` once the write succeeded: a failed or interrupted write never leaves a partial file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_png(rgb, path):
    from PIL import Image

    save_image(Image.fromarray(np.ascontiguousarray(rgb)), path)


def save_gif(frames, path, fps=20):
    """frames [T, H, W, 3] uint8 -> an endlessly looping GIF."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    save_image(images[0], path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def mp4_available():
    return shutil.which("ffmpeg") is not None


def save_mp4(frames, path, fps=20):
    """frames [T, H, W, 3] uint8 -> H.264 MP4 through an ffmpeg executable on PATH."""
    if not mp4_available():
        raise FileNotFoundError("MP4 needs an ffmpeg executable on PATH; write a GIF instead")
    T, H, W, _ = frames.shape
    with atomic_path(path) as tmp:
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
               "-r", str(fps), "-i", "-", "-pix_fmt", "yuv420p", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
               str(tmp)]  # fmt: skip
        subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), check=True)


# --- component-wise generation --------------------------------------------------------------------


def component_order(cfg: SSGConfig, order=None):
    """Foreground classes in the order they are added (default 1..K-1); the background always comes first."""
    classes = list(range(1, cfg.num_classes)) if order is None else [cfg.class_index(c) for c in _spec_items(order)]
    if 0 in classes:
        raise ValueError(f"{cfg.class_names[0]!r} (the background) is always drawn first; list only other classes")
    if len(set(classes)) != len(classes):
        raise ValueError(f"a class is listed twice in the component order {order!r}")
    return classes


def component_masks(cfg: SSGConfig, order=None):
    """Composition masks [1 + len(order), K]: the background alone, then one more class per step."""
    classes = component_order(cfg, order)
    masks = torch.zeros(len(classes) + 1, cfg.num_classes)
    masks[:, 0] = 1
    for step, k in enumerate(classes, start=1):
        masks[step:, k] = 1
    return masks


@torch.no_grad()
def render_components(G, w, order=None, noise_mode="const"):
    """One latent rendered with a growing set of classes: (GeneratorOutput over steps, added class per step)."""
    cfg = G.cfg
    w = as_w_plus(cfg, read_latent(cfg, w, ("w", "w+"), what="latent to render by components", single=True).w)
    masks = component_masks(cfg, order).to(w)
    out = render(G, w.expand(masks.shape[0], -1, -1), batch_size=masks.shape[0], noise_mode=noise_mode,
                 composition_mask=masks)  # fmt: skip
    return out, [0] + component_order(cfg, order)


def components_sheet(out, added):
    """[steps*S, 4S, 3] uint8; one row per step: image | seg | coarse seg | pseudo-depth of the class just added."""
    S = out.image.shape[-1]
    steps = torch.arange(len(added), device=out.depths.device)
    depth = out.depths[steps, torch.tensor(added, device=out.depths.device)]  # [steps, G, G]
    rows = side_by_side(
        to_uint8(out.image), colorize_seg(out.seg), resize_nearest(colorize_seg(out.coarse_seg), S),
        resize_nearest(colorize_depth(depth), S),
    )  # fmt: skip
    return rearrange(rows, "t h w c -> (t h) w c")


# --- editing directions ---------------------------------------------------------------------------


@dataclass
class Direction:
    normal: torch.Tensor  # unit normal of the separating hyperplane, shaped like one latent
    bias: float  # decision value = <latent, normal> + bias
    accuracy: float  # on the training latents


FIT_METHODS = ("svm", "logistic")


def fit_direction(latents, labels, method="svm", l2=1e-3, steps=100):
    """InterFaceGAN-style direction: a linear classifier on latents [M, ...] and binary labels [M];
    returns its unit normal (pointing to label 1). svm: L2-regularised squared hinge; logistic: L2 logistic
    regression; both solved with L-BFGS in float64 on standardised features."""
    if method not in FIT_METHODS:
        raise ValueError(f"method must be one of {', '.join(FIT_METHODS)}, got {method!r}")
    x = torch.as_tensor(latents).double()
    latent_shape = x.shape[1:]
    y = torch.as_tensor(labels).reshape(-1).double()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{x.shape[0]} latents but {y.shape[0]} labels")
    if not torch.all((y == 0) | (y == 1)):
        raise ValueError("labels must be binary (0 or 1)")
    if y.min() == y.max():
        raise ValueError("labels must contain both classes (0 and 1)")
    x = rearrange(x, "m ... -> m (...)")
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    xs = (x - mean) / std
    sign = 2 * y - 1
    v = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([v, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        margin = sign * (xs @ v + b)
        data = F.relu(1 - margin).square() if method == "svm" else F.softplus(-margin)
        loss = data.mean() + 0.5 * l2 * v.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        raw = v / std  # the same hyperplane on unstandardised latents
        norm = raw.norm()
        if norm == 0:
            raise ValueError("the classifier found no direction (are the latents all equal?)")
        bias = (b - mean @ raw) / norm
        normal = raw / norm
        accuracy = ((x @ normal + bias > 0).double() == y).double().mean().item()
    return Direction(normal.reshape(latent_shape).float(), bias.item(), accuracy)


# --- locality -------------------------------------------------------------------------------------


@dataclass
class Locality:
    inside: torch.Tensor  # [B] mean |Δpixel| inside the edited region (see locality_of); NaN if absent
    outside: torch.Tensor  # [B] mean |Δpixel| outside it
    seg_iou_outside: torch.Tensor  # [B] mean IoU, over the other classes present, of the seg before/after outside it

    @property
    def outside_over_inside(self):
        """[B] mean |Δ| outside / inside: small for a local edit (the main job calls an edit local at <= 0.1)."""
        return self.outside / self.inside.clamp_min(1e-12)

    def report(self, region=""):
        head = f"locality{' of ' + region if region else ''}:"
        lines = [head, "  sample  |d| inside  |d| outside  outside/inside  seg IoU outside"]
        for i, (a, b, r, iou) in enumerate(zip(self.inside, self.outside, self.outside_over_inside,
                                               self.seg_iou_outside)):  # fmt: skip
            if torch.isnan(a):  # no pixel of the region in this sample: nothing to measure inside it
                lines.append(f"  {i:6d}  region absent in this sample")
                continue
            lines.append(f"  {i:6d}  {a:10.4f}  {b:11.4f}  {r:14.3f}  {iou:15.4f}")
        return "\n".join(lines)


REGION_EXTENTS = ("union", "before")


def locality_of(before, after, region, dilate=0, extent="union"):
    """Locality of an edit of class `region` (index) from the GeneratorOutputs before and after it.

    The edited region is, per sample, the pixels the class covers (argmax of the segmentation) before or after the
    edit (extent="union": a shape edit moves the region, and what it newly covers or uncovers belongs to the edit), or
    before it only (extent="before", the stricter reading), grown by `dilate` pixels. Returns a Locality: mean |Δpixel|
    (channel mean of the image in [-1, 1]) inside and outside the region, and the mean IoU over the other classes of
    the segmentation before and after, counted outside the region. For an edit of several classes, measure each: the
    others then count as "outside". Raises ValueError for an unknown extent, a region that is not a class index of
    these outputs, or a dilate that is not a whole number >= 0."""
    if extent not in REGION_EXTENTS:
        raise ValueError(f"locality_of: extent must be one of {REGION_EXTENTS}, got {extent!r}")
    num_classes = before.seg.shape[1]
    if isinstance(region, bool) or not isinstance(region, numbers.Integral) or not 0 <= region < num_classes:
        raise ValueError(f"locality_of: region must be a class index in 0..{num_classes - 1}, got {region!r} "
                         "(ssgan.editing.locality takes class names)")  # fmt: skip
    if isinstance(dilate, bool) or not isinstance(dilate, numbers.Integral) or dilate < 0:
        raise ValueError(f"locality_of: dilate must be a whole number of pixels >= 0, got {dilate!r}")
    labels_before, labels_after = before.seg.argmax(1), after.seg.argmax(1)  # [B, S, S]
    covered = labels_before == region
    if extent == "union":
        covered = covered | (labels_after == region)
    inside = covered.float()[:, None]  # [B, 1, S, S]
    if dilate > 0:
        inside = F.max_pool2d(inside, 2 * dilate + 1, stride=1, padding=dilate)
    change = reduce((after.image - before.image).abs(), "b c h w -> b 1 h w", "mean")
    def mean_over(m):  # NaN where the region (or everything else) is empty: no pixels to measure
        area = m.sum((1, 2, 3))
        return (change * m).sum((1, 2, 3)) / area.where(area > 0, torch.nan)

    outside = inside[:, 0] == 0  # [B, S, S]
    ious = []
    for c in (c for c in range(num_classes) if c != region):
        a, b = (labels_before == c) & outside, (labels_after == c) & outside
        union = (a | b).sum((1, 2)).double()
        ious.append(torch.where(union > 0, (a & b).sum((1, 2)) / union.clamp_min(1), torch.nan))
    iou = torch.stack(ious, 1).nanmean(1) if ious else torch.ones(labels_before.shape[0])
    return Locality(mean_over(inside), mean_over(1 - inside), iou.float())


@torch.no_grad()
def locality(G, w_before, w_after, region, dilate=0, noise_mode="const", extent="union"):
    """Render both latents and measure how local the edit of `region` (a class name or index) is (see locality_of)."""
    k = G.cfg.class_index(region)
    return locality_of(G(w=w_before, noise_mode=noise_mode), G(w=w_after, noise_mode=noise_mode), k, dilate, extent)


# --- latent files ---------------------------------------------------------------------------------

LATENT_KEY = "w_plus"


LATENT_SUFFIXES = (".npy", ".safetensors")


def check_latent_path(path):
    """Refuse a latent file name ssgan cannot write, before any work is done."""
    if Path(path).suffix not in LATENT_SUFFIXES:
        raise ValueError(f"{path}: latents are written as .npy or .safetensors")


def save_latents(path, w):
    """Write latents as .npy or .safetensors (under the key 'w_plus'), atomically."""
    path = Path(path)
    check_latent_path(path)
    w = w.detach().float().cpu().contiguous()
    if path.suffix == ".npy":
        with atomic_write(path) as f:
            np.save(f, w.numpy())
    else:
        save_safetensors(path, {LATENT_KEY: w})
    return path


def load_latents(path, key=None):
    """Read a latent tensor from .npy or .safetensors (the one tensor in the file, or `key`).
    Raises FileNotFoundError, DamagedFileError for a file cut short or garbled, ValueError otherwise; each names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no latent file {path}")
    if path.suffix == ".npy":
        return torch.from_numpy(load_npy(path, "latents (.npy)")).float()
    if path.suffix == ".safetensors":
        tensors, _ = load_safetensors(path, "latents (.safetensors)")
        if key is None and len(tensors) == 1:
            return next(iter(tensors.values())).float()
        key = key or LATENT_KEY
        if key not in tensors:
            raise ValueError(f"{path}: no tensor {key!r}; the file holds {', '.join(sorted(tensors))}")
        return tensors[key].float()
    raise ValueError(f"{path}: latents are read from .npy or .safetensors files")
