"""A small ReStyle-style iterative encoder into W+, trained on the generator's own samples.

Starting from w_avg and its image, the encoder sees the target beside the current reconstruction and
predicts a residual: w_{t+1} = w_t + E(x, G(w_t)). Generated samples come with their true W+ codes, so
training fits the latents directly (optionally also the pixels, back through the frozen generator).
Its output is a good starting point for optimisation (`ssgan invert --encoder`).
"""
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from torch import nn

from ssgan.config import SSGConfig
from ssgan.editing import as_w_plus
from ssgan.io import load_safetensors, save_safetensors

FORMAT = "ssgan-encoder"


class LatentEncoder(nn.Module):
    """(target, reconstruction) images [B, 3, S, S] x2 -> a W+ residual [B, 2+2K, D].

    A strided conv trunk down to a 16x16 map, then one pooled feature vector per W+ slot and a per-slot
    linear head. The head starts at zero, so the first prediction is exactly the starting latent."""

    def __init__(self, cfg: SSGConfig, width=32, max_width=256, slot_width=64, feature_size=16, input_size=256):
        super().__init__()
        self.cfg = cfg
        self.hparams = dict(width=width, max_width=max_width, slot_width=slot_width, feature_size=feature_size,
                            input_size=input_size)  # fmt: skip
        self.input_size = min(input_size, cfg.size)
        if self.input_size < 2 * feature_size:
            raise ValueError(f"the encoder needs images of at least {2 * feature_size} pixels, got {self.input_size}")
        layers, ch, res = [nn.Conv2d(6, width, 3, padding=1), nn.LeakyReLU(0.2)], width, self.input_size
        while res > feature_size:
            out = min(2 * ch, max_width)
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch, res = out, res // 2
        self.trunk = nn.Sequential(*layers)
        N, D = cfg.n_latent, cfg.style_dim
        self.slots = nn.Conv2d(ch, N * slot_width, 3, stride=2, padding=1)
        self.head_weight = nn.Parameter(torch.zeros(N, slot_width, D))
        self.head_bias = nn.Parameter(torch.zeros(N, D))

    def forward(self, target, current):  # [NCHW] x2 -> [B, N, D]
        x = torch.cat([target, current], 1)
        if x.shape[-1] != self.input_size:
            x = F.adaptive_avg_pool2d(x, self.input_size)
        feats = F.leaky_relu(self.slots(self.trunk(x)), 0.2).mean((2, 3))  # [B, N*H]
        feats = rearrange(feats, "b (n h) -> b n h", n=self.cfg.n_latent)
        feats = F.layer_norm(feats, feats.shape[-1:])  # unit-scale slot features keep Adam steps stable
        return einsum(feats, self.head_weight, "b n h, n h d -> b n d") / math.sqrt(feats.shape[-1]) + self.head_bias


@torch.no_grad()
def starting_point(G):
    """Where every refinement starts: w_avg laid out in W+ [1, N, D] and its image [1, 3, S, S]."""
    w = as_w_plus(G.cfg, G.mean_latent())
    return w, G(w=w, noise_mode="const").image


def _expand(start, batch):
    w, image = start
    return w.expand(batch, -1, -1), image.expand(batch, -1, -1, -1)


@torch.no_grad()
def encode(encoder, G, images, iters=5):
    """images [B, 3, S, S] in [-1, 1] -> (W+ [B, N, D], reconstruction [B, 3, S, S]) after `iters` refinements."""
    _check_pair(encoder, G)
    w, current = _expand(starting_point(G), images.shape[0])
    for _ in range(iters):
        w = w + encoder(images, current)
        current = G(w=w, noise_mode="const").image
    return w, current


def _check_pair(encoder, G):
    mine, theirs = encoder.cfg, G.cfg
    if (mine.size, mine.n_latent, mine.style_dim) != (theirs.size, theirs.n_latent, theirs.style_dim):
        raise ValueError(
            f"the encoder was made for {mine.size}px images and W+ [{mine.n_latent}, {mine.style_dim}], "
            f"the generator has {theirs.size}px and [{theirs.n_latent}, {theirs.style_dim}]"
        )


@torch.no_grad()
def sample_batch(G, batch, generator, mixing=0.5, psi=1.0):
    """Generated training pairs: (W+ [B, N, D], images [B, 3, S, S]). A `mixing` share of the codes
    are style-mixed (G.mix) so the encoder sees W+ codes whose slots differ."""
    D = G.cfg.style_dim
    device = G.local.weight.device
    z = torch.randn(2, batch, D, generator=generator).to(device)
    w0, w1 = G.mapping(z[0]), G.mapping(z[1])
    if psi != 1:
        w_avg = G.mean_latent()
        w0, w1 = w_avg + psi * (w0 - w_avg), w_avg + psi * (w1 - w_avg)
    mixed = G.mix(w0, w1, generator=generator if device == torch.device("cpu") else None)
    use_mix = (torch.rand(batch, generator=generator) < mixing).to(device)[:, None, None]
    w_plus = torch.where(use_mix, mixed, G.layout(w0))
    return w_plus, G(w=w_plus, noise_mode="const").image


def encoder_step(encoder, G, optimizer, w_true, images, iters=3, pixel_weight=0.0, start=None):
    """One ReStyle training step: `iters` refinements from w_avg (`start`: starting_point(G), cached by
    the caller), each with its own loss mean((w - w_true)^2) [+ pixel_weight * MSE through G];
    gradients summed, one optimiser step. Returns the mean loss over the refinements."""
    w, current = _expand(starting_point(G) if start is None else start, images.shape[0])
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for it in range(iters):
        w = w.detach() + encoder(images, current)
        loss = (w - w_true).square().mean()
        if pixel_weight:
            rendered = G(w=w, noise_mode="const").image
            loss = loss + pixel_weight * (rendered - images).square().mean()
            current = rendered.detach()
        elif it + 1 < iters:
            with torch.no_grad():
                current = G(w=w, noise_mode="const").image
        loss.backward(inputs=list(encoder.parameters()))
        total += loss.item()
    optimizer.step()
    return total / iters


def train_encoder(G, steps, batch=8, iters=3, lr=1e-4, pixel_weight=0.0, mixing=0.5, seed=0, encoder=None,
                  callback=None, **encoder_args):  # fmt: skip
    """Train a LatentEncoder (new, or `encoder`) on `steps` fresh batches of G's samples with Adam.
    callback(step, loss) is called every step. G is left untouched."""
    encoder = LatentEncoder(G.cfg, **encoder_args) if encoder is None else encoder
    _check_pair(encoder, G)
    encoder = encoder.to(G.local.weight.device).train()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    start = starting_point(G)
    for step in range(steps):
        w_true, images = sample_batch(G, batch, generator, mixing)
        loss = encoder_step(encoder, G, optimizer, w_true, images, iters, pixel_weight, start)
        if callback is not None:
            callback(step, loss)
    return encoder.eval()


def save_encoder(path, encoder):
    """Write an encoder as safetensors (atomically, with a checksum) with its hyper-parameters and the generator
    config as metadata."""
    meta = {"format": FORMAT, "config": encoder.cfg.to_json(), "hparams": json.dumps(encoder.hparams)}
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    return save_safetensors(path, tensors, meta)


def load_encoder(path):
    """Read an encoder written by save_encoder. Raises FileNotFoundError, DamagedFileError for a file cut short or
    garbled, ValueError for another kind of safetensors file; each names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no encoder file {path}")
    tensors, meta = load_safetensors(path, "an ssgan encoder")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an ssgan encoder (format {meta.get('format')!r})")
    try:
        cfg = SSGConfig.from_dict(json.loads(meta["config"]))
        encoder = LatentEncoder(cfg, **json.loads(meta["hparams"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: the encoder's metadata is not valid ({type(e).__name__}: {e})") from None
    try:
        encoder.load_state_dict(tensors)
    except RuntimeError as e:  # tensors missing, unexpected or mis-shaped for the recorded hyper-parameters
        raise ValueError(f"{path}: the encoder's tensors do not fit its recorded hyper-parameters: {e}") from None
    return encoder.eval()
