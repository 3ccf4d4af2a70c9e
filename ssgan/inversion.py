"""Inversion of real (aligned) images into W+ or W by optimisation, with optional pivotal tuning.

The latent starts at w_avg and is fitted with Adam under the StyleGAN2-projector learning-rate ramp to
pixel MSE, an optional perceptual distance from a feature network the user has locally (a TorchScript
file), and the regulariser mean((w - w_avg)^2). Pivotal tuning then fits a copy of the generator's
weights to the image with the latent held fixed. The inverted segmentation comes out as a by-product.
"""
import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssgan.editing import as_w_plus
from ssgan.images import read_image, warn_if_upsampled
from ssgan.latents import batched
from ssgan.io import save_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
INVERSION_MODES = ("w+", "w")


# --- images ---------------------------------------------------------------------------------------


def load_image(path, size, resize=True):
    """An aligned square image file -> [3, size, size] float32 in [-1, 1] (resized unless resize=False).

    Read by `ssgan.images.read_image`: EXIF orientation applied, transparency composited on white. A photo smaller
    than `size` is upsampled with an UpsamplingWarning. Raises ValueError for an unreadable or non-square image.
    """
    from PIL import Image

    img = read_image(path)
    w, h = img.size
    if w != h:
        raise ValueError(f"{path}: image is {w}x{h}; inversion needs square, aligned faces")
    if w != size:
        if not resize:
            raise ValueError(f"{path}: image is {w}x{h} but the model makes {size}x{size} images")
        warn_if_upsampled(w, h, size, str(path))
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())  # [H, W, 3] in 0..255
    return x.permute(2, 0, 1) / 127.5 - 1


def list_images(folder):
    """The image files in a folder, sorted by name; a single image file is a list of itself."""
    folder = Path(folder)
    if folder.is_file():
        if folder.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"{folder} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        return [folder]
    if not folder.is_dir():
        raise FileNotFoundError(f"no image file or folder {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ValueError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def load_images(paths, size, resize=True):
    """[B, 3, size, size] from image files."""
    return torch.stack([load_image(p, size, resize) for p in paths])


# --- losses ---------------------------------------------------------------------------------------


def projector_lr(step, steps, lr, rampup=0.05, rampdown=0.25):
    """StyleGAN2-projector schedule: linear warm-up over the first `rampup` of the steps, cosine decay
    over the last `rampdown`. Evaluated at the middle of each step, (step + 0.5) / steps, so that neither the first
    step (at 0 the warm-up gives 0: `--steps 1` would never move) nor the last (at 1 the decay gives 0) is lost."""
    t = (step + 0.5) / steps
    ramp = min(1.0, (1 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / rampup)


class FeatureLoss(nn.Module):
    """Perceptual distance [B] from a feature network: net(image in [-1, 1]) returns one feature tensor or a
    list/tuple of them; each is unit-normalised along dim 1 and the mean squared differences are summed.
    Images larger than `size` are average-pooled down to it first (as the original does for LPIPS)."""

    def __init__(self, net, size=256):
        super().__init__()
        self.net = net
        self.size = size

    @classmethod
    def from_file(cls, path, size=256, device="cpu"):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no feature network file {path}")
        try:
            net = torch.jit.load(str(path), map_location=device)
        except RuntimeError as e:
            raise ValueError(f"{path}: not a TorchScript feature network ({e})") from None
        return cls(net.eval(), size)

    def features(self, x):  # [NCHW]
        if x.shape[-1] > self.size:
            x = F.adaptive_avg_pool2d(x, self.size)
        out = self.net(x)
        return [out] if isinstance(out, torch.Tensor) else list(out)

    def forward(self, x, y):  # [NCHW] x2 -> [N]
        total = 0
        for fx, fy in zip(self.features(x), self.features(y)):
            diff = F.normalize(fx, dim=1) - F.normalize(fy, dim=1)
            total = total + diff.square().flatten(1).mean(1)
        return total


class ReconstructionLoss(nn.Module):
    """pixel_weight * MSE + perceptual_weight * FeatureLoss (if any), per sample [B]."""

    def __init__(self, perceptual=None, pixel_weight=None, perceptual_weight=1.0):
        super().__init__()
        self.perceptual = perceptual
        # With a perceptual loss the original weighs MSE 0.1; alone, the pixels carry all the weight.
        self.pixel_weight = (0.1 if perceptual is not None else 1.0) if pixel_weight is None else pixel_weight
        self.perceptual_weight = perceptual_weight

    def forward(self, image, target):  # [NCHW] x2 -> [N]
        loss = self.pixel_weight * (image - target).square().flatten(1).mean(1)
        if self.perceptual is not None:
            loss = loss + self.perceptual_weight * self.perceptual(image, target)
        return loss


# --- inversion ------------------------------------------------------------------------------------


@dataclass
class InversionResult:
    w_plus: torch.Tensor  # [B, 2+2K, D]
    image: torch.Tensor  # [B, 3, S, S] the reconstruction (from the tuned generator when tuned)
    seg: torch.Tensor  # [B, K, S, S] its segmentation logits
    losses: list = field(default_factory=list)  # total loss before each step, then of the latent returned
    generator: nn.Module | None = None  # the pivotally tuned copy of G, if tuned
    finetune_losses: list = field(default_factory=list)  # total loss per tuning step


def _check_images(G, images):
    S = G.cfg.size
    if images.ndim != 4 or images.shape[1:] != (3, S, S):
        raise ValueError(f"images must be [B, 3, {S}, {S}] for this model, got {tuple(images.shape)}")


def invert(G, images, mode="w+", steps=400, lr=0.1, loss=None, w_reg=1.0, noise_mode="const", init=None,
           finetune_steps=0, finetune_lr=1e-4, callback=None):  # fmt: skip
    """Fit latents to images [B, 3, S, S] in [-1, 1]. mode "w+" fits every W+ slot, "w" one vector per image.

    loss: a ReconstructionLoss (default: pixel MSE only). init: a starting latent (W or W+), default w_avg.
    callback(step, loss_value) is called every step. Returns an InversionResult."""
    if mode not in INVERSION_MODES:
        raise ValueError(f"mode must be one of {', '.join(INVERSION_MODES)}, got {mode!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _check_images(G, images)
    cfg = G.cfg
    device = G.local.weight.device
    images = images.to(device)
    loss = ReconstructionLoss() if loss is None else loss
    w_avg = G.mean_latent().detach()  # [1, D]
    B = images.shape[0]
    if init is None:
        start = w_avg.expand(B, -1) if mode == "w" else as_w_plus(cfg, w_avg).expand(B, -1, -1)
    else:
        start, _ = batched(cfg, init.to(device), ("w",) if mode == "w" else ("w", "w+"), B, "init latent")
        start = as_w_plus(cfg, start) if mode == "w+" else start
        if start.shape[0] != B:
            raise ValueError(f"init must hold {B} latents of the {mode} space, got {tuple(init.shape)}")
    w = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    losses = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = projector_lr(step, steps, lr)
        out = G(w=w, noise_mode=noise_mode)
        # Summed over samples, so that (with Adam) each image's latent moves as if inverted alone.
        total = loss(out.image, images).sum() + w_reg * (w - w_avg).square().mean() * B
        opt.zero_grad(set_to_none=True)
        total.backward(inputs=[w])
        opt.step()
        losses.append(total.item() / B)
        if callback is not None:
            callback(step, losses[-1])
    if steps > 0:  # the loss of the latent returned, after the last update (losses[i] is the loss before update i)
        with torch.no_grad():
            out = G(w=w, noise_mode=noise_mode)
            losses.append((loss(out.image, images).sum() + w_reg * (w - w_avg).square().mean() * B).item() / B)
    w_plus = as_w_plus(cfg, w.detach())
    result = InversionResult(w_plus.clone(), None, None, losses)
    if finetune_steps > 0:
        result.generator, result.finetune_losses = pivotal_tuning(
            G, w_plus, images, finetune_steps, finetune_lr, loss, noise_mode
        )
    with torch.no_grad():
        out = (G if result.generator is None else result.generator)(w=w_plus, noise_mode=noise_mode)
    result.image, result.seg = out.image, out.seg
    return result


def pivotal_tuning(G, w_plus, images, steps, lr=1e-4, loss=None, noise_mode="const", callback=None):
    """Fit a copy of G (all weights, Adam lr) to images with the pivot latents w_plus held fixed.

    Returns (tuned copy, loss per step); G itself is left unchanged."""
    _check_images(G, images)
    loss = ReconstructionLoss() if loss is None else loss
    tuned = copy.deepcopy(G)
    tuned.requires_grad_(True)
    pivot = as_w_plus(G.cfg, w_plus).detach()
    opt = torch.optim.Adam(tuned.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        total = loss(tuned(w=pivot, noise_mode=noise_mode).image, images).mean()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        losses.append(total.item())
        if callback is not None:
            callback(step, losses[-1])
    return tuned.requires_grad_(False), losses


def save_labels(labels, path):
    """Class labels [H, W] -> a single-channel PNG whose pixel values are the class indices."""
    from PIL import Image

    labels = np.asarray(labels)
    if labels.max() > 255:
        raise ValueError("a label PNG holds class indices up to 255")
    save_image(Image.fromarray(labels.astype(np.uint8)), path)
