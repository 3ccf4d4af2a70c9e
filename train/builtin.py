"""A procedural face dataset for the demo preset: cartoon faces with exact label maps, drawn with numpy.

Every class has its own colour band in HSV (a hue range, or "dark" for the eyes), and textures only scale the value
channel, so a pixel's class can be read back from its colour: `segment_builtin` does that, and `agreement_score`
compares it with a generator's segmentation (the demo's image-mask agreement metric).
"""
import contextlib
import hashlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssgan.config import DEMO_CLASSES
from ssgan.io import atomic_directory

BUILTIN_CLASSES = DEMO_CLASSES
BACKGROUND, FACE, EYES, BROWS, MOUTH, HAIR, NECK = range(len(BUILTIN_CLASSES))
BUILTIN_VERSION = 3  # bump when the drawing changes, so stale caches are not reused
CACHE_MANIFEST = "ssgan-manifest.json"  # {file name: SHA-256} of a complete cache
CHUNK = 32  # images drawn per batch; fixed, so the first n images do not depend on num_images

# Per class: hue range in degrees (None: any hue), saturation range, value range. Hue bands are disjoint; the eyes are
# the only dark class. Textures multiply the value by 1 - amplitude * pattern with amplitude <= TEXTURE_MAX, so every
# other class keeps value >= 0.5 * (1 - TEXTURE_MAX) = 0.375, well above DARK_VALUE.
COLOURS = {
    BACKGROUND: ((200, 250), (0.35, 0.75), (0.50, 0.95)),
    FACE: ((14, 32), (0.35, 0.65), (0.65, 1.00)),
    EYES: (None, (0.00, 0.50), (0.04, 0.22)),
    BROWS: ((95, 135), (0.45, 0.85), (0.50, 0.80)),
    MOUTH: ((325, 352), (0.50, 0.90), (0.50, 0.90)),
    HAIR: ((45, 66), (0.50, 0.90), (0.50, 0.95)),
    NECK: ((158, 182), (0.30, 0.60), (0.55, 0.95)),
}
TEXTURE_MAX = 0.25
DARK_VALUE = 0.29
# segment_builtin: hue bin edges halfway between neighbouring bands, and the class of each bin.
HUE_EDGES = (3.0, 38.5, 80.5, 146.5, 191.0, 287.5)
HUE_BIN_CLASSES = (MOUTH, FACE, HAIR, BROWS, NECK, BACKGROUND, MOUTH)


def default_cache_dir():
    return Path(os.environ.get("SSGAN_CACHE") or Path.home() / ".cache" / "ssgan")


def builtin_dataset(num_images=2000, size=64, seed=0, cache_dir=None):
    """The procedural face dataset as a `datasets.Dataset` with "image" (RGB PNG) and "mask" (mode "L" labels 0..6).

    Drawn on first use and cached with save_to_disk under cache_dir (default $SSGAN_CACHE or ~/.cache/ssgan), keyed by
    (num_images, size, seed, BUILTIN_VERSION). The same arguments always give the same bytes. The cache carries a
    manifest of its files' SHA-256; a cache that does not match it (cut short, garbled, or left half-written) is
    silently drawn again.
    """
    import datasets

    _check_args(num_images, size)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / f"builtin-v{BUILTIN_VERSION}-n{num_images}-s{size}-seed{seed}"
    if _cache_is_intact(path):
        # whatever the reader makes of a cache that passed its manifest yet fails, it is drawn again
        with contextlib.suppress(Exception):
            return datasets.load_from_disk(str(path))
    _write_cache(path, num_images, size, seed)
    return datasets.load_from_disk(str(path))


def _digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_is_intact(path):
    """Whether every file listed in the cache's manifest is there with its recorded SHA-256."""
    try:
        manifest = json.loads((path / CACHE_MANIFEST).read_text())
        return bool(manifest) and all(_digest(path / name) == digest for name, digest in manifest.items())
    except (OSError, ValueError, AttributeError):  # no manifest, an unreadable one, or a listed file missing
        return False


def _write_cache(path, num_images, size, seed):
    """Draw the dataset into a temporary folder with its manifest and move it into place (`atomic_directory`),
    after moving a damaged cache out of the way."""
    if path.exists() and not _cache_is_intact(path):  # re-checked: another process may have replaced it meanwhile
        stale = path.parent / f".{path.name}.damaged-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(OSError):
            os.rename(path, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        with atomic_directory(path) as tmp:
            generate_builtin(num_images, size, seed).save_to_disk(str(tmp))
            manifest = {p.name: _digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            (tmp / CACHE_MANIFEST).write_text(json.dumps(manifest, indent=1))
    except OSError:
        if not _cache_is_intact(path):  # unless another process cached it first
            raise


def generate_builtin(num_images=2000, size=64, seed=0):
    """The procedural face dataset, in memory (no cache)."""
    import datasets

    _check_args(num_images, size)
    images, masks = [], []
    for start in range(0, num_images, CHUNK):
        rgb, labels = draw_faces(np.random.default_rng([seed, start // CHUNK]), CHUNK, size)
        for k in range(min(CHUNK, num_images - start)):
            images.append({"bytes": _png(rgb[k]), "path": None})
            masks.append({"bytes": _png(labels[k]), "path": None})
    features = datasets.Features(image=datasets.Image(), mask=datasets.Image())
    return datasets.Dataset.from_dict({"image": images, "mask": masks}, features=features)


def _check_args(num_images, size):
    if int(num_images) != num_images or num_images < 1:
        raise ValueError(f"builtin dataset: num_images must be a positive integer, got {num_images!r}")
    if int(size) != size or size < 8:
        raise ValueError(f"builtin dataset: size must be an integer >= 8, got {size!r}")


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def draw_faces(rng, batch, size):
    """Draw `batch` faces: (rgb uint8 [B,S,S,3], labels uint8 [B,S,S])."""

    def uniform(low, high):
        return rng.uniform(low, high, size=(batch, 1, 1)).astype(np.float32)

    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = centres[None, None, :], centres[None, :, None]  # [1,1,W], [1,H,1] in (0,1)

    # Everything but the background lives in the face's tilted frame (x right, y down, origin at the face centre).
    cx, cy = uniform(0.42, 0.58), uniform(0.42, 0.55)
    rx, ry = uniform(0.20, 0.27), uniform(0.26, 0.34)
    tilt = uniform(-0.15, 0.15)
    x = np.cos(tilt) * (u - cx) + np.sin(tilt) * (v - cy)  # [B,H,W]
    y = -np.sin(tilt) * (u - cx) + np.cos(tilt) * (v - cy)

    def ellipse(ex, ey, ax, ay, angle=0.0):
        dx, dy = x - ex, y - ey
        ca, sa = np.cos(angle), np.sin(angle)
        return ((ca * dx + sa * dy) / ax) ** 2 + ((-sa * dx + ca * dy) / ay) ** 2 <= 1

    labels = np.full((batch, size, size), BACKGROUND, dtype=np.uint8)

    def paint(region, label):
        labels[region] = label

    # Hair: an ellipse around and above the face, sometimes long (down past the chin), sometimes with a fringe.
    hx, hy = uniform(-0.03, 0.03), -ry * uniform(0.12, 0.30)
    hrx, hry = rx * uniform(1.15, 1.40), ry * uniform(1.05, 1.30)
    hair = ellipse(hx, hy, hrx, hry)
    long_hair = (uniform(0, 1) < 0.5) & (y > hy) & (y < ry * uniform(0.6, 1.4))
    long_hair &= np.abs(x - hx) < hrx * uniform(0.85, 1.0)
    paint(hair | long_hair, HAIR)
    paint((np.abs(x) < rx * uniform(0.40, 0.60)) & (y > ry * 0.5), NECK)
    face = ellipse(0, 0, rx, ry)
    paint(face, FACE)
    paint(face & hair & (uniform(0, 1) < 0.5) & (y < -ry * uniform(0.55, 0.80)), HAIR)

    # Parts are drawn large, cartoon-like (about 1.5-2.5 % of the image each), to span several cells of the demo's
    # 32 x 32 coarse mask: with v2's 1-1.4 % a 6-kimg run learnt them one after another and not always all.
    eye_dx, eye_y = rx * uniform(0.38, 0.50), -ry * uniform(0.08, 0.18)
    erx = rx * uniform(0.28, 0.36)
    ery = erx * uniform(0.55, 0.80)
    paint(ellipse(-eye_dx, eye_y, erx, ery) | ellipse(eye_dx, eye_y, erx, ery), EYES)
    brow_y = eye_y - ry * uniform(0.22, 0.28)
    brx, bry, brow_angle = erx * uniform(1.1, 1.4), ry * uniform(0.09, 0.12), uniform(0.0, 0.3)
    paint(ellipse(-eye_dx, brow_y, brx, bry, brow_angle) | ellipse(eye_dx, brow_y, brx, bry, -brow_angle), BROWS)
    mouth_x, mouth_y = rx * uniform(-0.03, 0.03), ry * uniform(0.40, 0.55)
    paint(ellipse(mouth_x, mouth_y, rx * uniform(0.35, 0.55), ry * uniform(0.13, 0.19)), MOUTH)

    # Colours: per image and class a base colour inside the class's band and a texture (pixel noise, stripes or a
    # linear gradient) that scales the value; each pixel looks up the parameters of its class.
    classes = range(len(BUILTIN_CLASSES))
    ranges = np.array([[COLOURS[k][0] or (0, 360), COLOURS[k][1], COLOURS[k][2]] for k in classes])  # [K,3,2]

    def per_class(low, high):  # [B,K]
        return rng.uniform(low, high, size=(batch, len(classes))).astype(np.float32)

    hue, sat, val = (per_class(ranges[:, i, 0], ranges[:, i, 1]) for i in range(3))
    kind = rng.integers(0, 3, size=(batch, len(classes)))
    amplitude, angle = per_class(0.05, TEXTURE_MAX), per_class(0, np.pi)
    frequency, phase = per_class(3, 10), per_class(0, 2 * np.pi)  # stripes per image side

    pixel = (np.arange(batch)[:, None, None], labels)  # index a [B,K] table with this to get [B,H,W]
    along = (u - 0.5) * np.cos(angle[pixel]) + (v - 0.5) * np.sin(angle[pixel])
    noise = rng.random(labels.shape, dtype=np.float32)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * frequency[pixel] * along + phase[pixel])
    gradient = np.clip(0.5 + along, 0, 1)
    pattern = np.choose(kind[pixel], (noise, stripes, gradient))
    texture = 1 - amplitude[pixel] * pattern
    return _hsv_to_rgb(hue[pixel], sat[pixel], val[pixel] * texture), labels


def _hsv_to_rgb(hue, sat, val):
    """HSV (hue in degrees) [B,H,W] each -> RGB uint8 [B,H,W,3]."""
    channels = []
    for n in (5, 3, 1):  # red, green, blue
        k = (n + hue / 60) % 6
        channels.append(val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1))
    rgb = np.stack(channels, axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def segment_builtin(images):
    """Rule-based labels for images drawn by this generator: [B,3,H,W] in [-1,1] -> [B,H,W] long.

    Dark pixels are eyes; every other pixel takes the class of its hue band.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"segment_builtin: expected images [B,3,H,W], got shape {tuple(images.shape)}")
    rgb = ((images.float() + 1) / 2).clamp(0, 1)  # [B3HW]
    val, _ = rgb.max(dim=1)  # [BHW]
    chroma = val - rgb.min(dim=1).values
    red, green, blue = rgb.unbind(dim=1)
    safe = chroma.clamp_min(1e-6)
    hue = torch.where(val == red, ((green - blue) / safe) % 6,
                      torch.where(val == green, (blue - red) / safe + 2, (red - green) / safe + 4)) * 60  # fmt: skip
    edges = torch.tensor(HUE_EDGES, device=images.device)
    bin_classes = torch.tensor(HUE_BIN_CLASSES, device=images.device)
    labels = bin_classes[torch.bucketize(hue.contiguous(), edges, right=True)]
    return torch.where(val < DARK_VALUE, torch.full_like(labels, EYES), labels)


def agreement_score(images, seg_logits):
    """Pixel accuracy between argmax(seg_logits) [B,K,H,W] and segment_builtin(images) [B,3,H,W]; chance is ~1/K."""
    if seg_logits.ndim != 4 or seg_logits.shape[1] != len(BUILTIN_CLASSES):
        raise ValueError(f"agreement_score: expected seg_logits [B,{len(BUILTIN_CLASSES)},H,W], "
                         f"got {tuple(seg_logits.shape)}")  # fmt: skip
    if seg_logits.shape[0] != images.shape[0] or seg_logits.shape[2:] != images.shape[2:]:
        raise ValueError(f"agreement_score: images {tuple(images.shape)} and seg_logits {tuple(seg_logits.shape)} "
                         "differ in batch or spatial size")  # fmt: skip
    predicted = seg_logits.argmax(dim=1)  # [BHW]
    return (predicted == segment_builtin(images)).float().mean().item()
