"""Reading latent arrays: the one place that decides what shape means what.

A model with K classes, style_dim D, `base_layers` base codes and L layers per local generator has three
latent spaces; a batch of B codes is
  W         [B, D]         one w for every slot (also [B, 1, D]),
  W+        [B, N, D]      N = base_layers + 2K slots: the base codes, then (shape, texture) per class,
  expanded  [B, K*L, D]    one code per modulated layer (the generator's input).
ssgan writes every latent with its batch dimension. A single code may come without it ([D], [N, D],
[K*L, D]); it is then read as one code and a note says so. An array that fits two readings (a [N, D] array
is one W+ code or N W codes) is read as the single code unless it has to pair with N other latents, where
both readings give N results: then it is refused with both readings named. In a model whose W+ and expanded
spaces have the same number of slots (K(L-2) = base_layers), such an array is W+; pass expanded latents to
`Generator.synthesis` there.
"""
import warnings
from dataclasses import dataclass

import torch

from ssgan.config import SSGConfig

FORMS = ("w", "w+", "expanded")


class LatentShapeNote(UserWarning):
    """A latent was read in a way its shape alone does not say (one code given without its batch dimension)."""


@dataclass
class Latent:
    w: torch.Tensor  # [B, D] for form "w", [B, slots, D] otherwise
    form: str  # "w", "w+" or "expanded"
    note: str | None  # set when the array had no batch dimension


def _slots(cfg: SSGConfig, form):
    return {"w": 1, "w+": cfg.n_latent, "expanded": cfg.n_latent_expand}[form]


NAMES = {"w": "W", "w+": "W+", "expanded": "expanded"}


def _describe(cfg: SSGConfig, form, batch="B"):
    """The shape of `batch` codes of a space, e.g. "W+ [B, 14, 64]"."""
    slots = "" if form == "w" else f"{_slots(cfg, form)}, "
    return f"{NAMES[form]} [{batch}, {slots}{cfg.style_dim}]"


def _explicit(cfg: SSGConfig, form, batch):
    """The same codes written so that no other reading fits."""
    if form == "w":
        return f"{batch} W code{'s' * (batch != 1)} as [{batch}, 1, {cfg.style_dim}]"
    return f"{batch} {NAMES[form]} code{'s' * (batch != 1)} as [{batch}, {_slots(cfg, form)}, {cfg.style_dim}]"


def _readings(cfg: SSGConfig, shape, forms):
    """Every (form, batch size, batched) under which `shape` is a latent of this model."""
    D = cfg.style_dim
    found = []
    for form in forms:
        code = (D,) if form == "w" else (_slots(cfg, form), D)
        if shape == code:
            found.append((form, 1, False))
        if len(shape) == len(code) + 1 and shape[1:] == code:
            found.append((form, shape[0], True))
        if form == "w" and len(shape) == 3 and shape[1:] == (1, D):
            found.append((form, shape[0], True))
    return list(dict.fromkeys(found))


def _why_not(cfg: SSGConfig, shape):
    """A likely cause for a shape that fits no reading (another model's latent)."""
    D, b = cfg.style_dim, cfg.base_layers
    if not shape:
        return ""
    if shape[-1] != D:
        if len(shape) >= 2 and shape[-2] == D:
            return f"; it looks transposed (style_dim {D} is the last dimension)"
        return f"; its last dimension {shape[-1]} is not this model's style_dim {D}"
    if len(shape) >= 2:
        n = shape[-2]
        if n > b and (n - b) % 2 == 0 and n != cfg.n_latent:
            return (f"; {n} slots is a W+ code of a model with {(n - b) // 2} classes, this model has "
                    f"{cfg.num_classes} ({', '.join(cfg.class_names)})")  # fmt: skip
    if len(shape) > 3:
        return f"; a latent has at most 3 dimensions, this one has {len(shape)}"
    return ""


def read_latent(cfg: SSGConfig, w, forms=("w", "w+"), pair_with=None, what="latent", single=False):
    """Interpret an array as latents of this model: a `Latent` whose `w` always has a batch dimension.

    w: tensor or array; forms: the spaces accepted, from "w", "w+", "expanded"; pair_with: the batch size the
    result must pair with (equal, or one side 1), used to spot an ambiguous [N, D]; single: exactly one code is
    wanted (a direction): a missing batch dimension is then no news and a batch of several is an error.
    Raises ValueError naming the expected and the given shape, or both readings of an ambiguous array."""
    w = torch.as_tensor(w)
    shape = tuple(w.shape)
    if 0 in shape:
        raise ValueError(f"{what} of shape {shape} is empty: it holds no codes")
    if w.is_floating_point() or w.is_complex():
        bad = int((~torch.isfinite(w)).sum())
        if bad:
            raise ValueError(f"{what} of shape {shape} has {bad} non-finite value{'s' * (bad != 1)} (NaN or inf) "
                             f"of {w.numel()}")  # fmt: skip
    readings = _readings(cfg, shape, forms)
    if cfg.n_latent == cfg.n_latent_expand:  # K(L-2) = base_layers: the two spaces look alike, W+ is meant
        readings = [r for r in readings if r[0] != "expanded" or ("w+", r[1], r[2]) not in readings]
    if pair_with is not None and pair_with > 1:
        readings = [r for r in readings if r[1] in (1, pair_with)]
    if len(readings) > 1 and (pair_with is None or pair_with == 1):
        unbatched = [r for r in readings if not r[2]]
        readings = unbatched if len(unbatched) == 1 else readings
    if single:
        readings = [r for r in readings if r[1] == 1] or readings
    if len(readings) > 1:
        both = " or ".join(f"{b} {NAMES[f]} code{'s' * (b != 1)}" for f, b, _ in readings)
        paired = f" that pairs with {pair_with} latents" if pair_with is not None and pair_with > 1 else ""
        fix = "; write " + " or ".join(_explicit(cfg, f, b) for f, b, _ in readings)
        raise ValueError(f"{what} of shape {shape}{paired} is ambiguous: {both}{fix}")
    if not readings:
        expected = " or ".join(_describe(cfg, f) for f in forms)
        sizes = sorted({b for _, b, _ in _readings(cfg, shape, forms)})
        if sizes:  # a latent of this model, but of a batch size that does not pair
            raise ValueError(f"{what} of shape {shape}: batch sizes {' or '.join(map(str, sizes))} and {pair_with} "
                             "do not pair up (equal, or one of them 1)")  # fmt: skip
        raise ValueError(
            f"{what} must be {expected} for this model (B may be left out for one code), got {shape}"
            f"{_why_not(cfg, shape)}"
        )
    form, batch, has_batch = readings[0]
    if single and batch != 1:
        raise ValueError(f"{what} must be one code, {_describe(cfg, form, 1)} or without the batch dimension; "
                         f"got {batch} codes, shape {shape}")  # fmt: skip
    note = None
    if not has_batch:
        note = f"{what} of shape {shape} read as one {NAMES[form]} code {_describe(cfg, form, 1)}"
        if len(_readings(cfg, shape, forms)) > 1:
            note += f"; write {shape[0]} W codes as [{shape[0]}, 1, {cfg.style_dim}]"
        w = w[None]
    elif form == "w" and w.ndim == 3:
        w = w[:, 0]
    return Latent(w, form, None if single else note)


def batched(cfg: SSGConfig, w, forms=("w", "w+"), pair_with=None, what="latent"):
    """`read_latent(...)` for library calls: the tensor and its form; the note, if any, as a LatentShapeNote."""
    latent = read_latent(cfg, w, forms, pair_with, what)
    if latent.note:
        warnings.warn(latent.note, LatentShapeNote, stacklevel=3)
    return latent.w, latent.form


def known_batch(cfg: SSGConfig, w, forms=("w", "w+")):
    """The batch size an array has under every one of its readings, or None where readings differ or none fits."""
    sizes = {b for _, b, _ in _readings(cfg, tuple(torch.as_tensor(w).shape), forms)}
    return sizes.pop() if len(sizes) == 1 else None
