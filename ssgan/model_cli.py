"""`ssgan convert` and `ssgan generate`, and the option checks every command shares."""
import argparse
import json
import math
import sys
from pathlib import Path

import torch

from ssgan.checkpoint import load_checkpoint, save_checkpoint
from ssgan.editing import SEEDS_HELP, colorize_seg, parse_seeds, save_latents, save_png, to_uint8
from ssgan.io import write_text

MODEL_HELP = ("the model: an ssgan checkpoint (.safetensors), an original SemanticStyleGAN .pt, a training snapshot, "
              "or a training run directory (its final model, else its newest snapshot)")  # fmt: skip


def check_out_folder(path, option="--out"):
    """The one check of an output folder, made before any work: missing (it is made later) or a folder, not a file.
    Returns the Path (None for None)."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder; pass a folder (it is made when missing)")
    return path


def _number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def finite_float(text):
    """argparse type: a finite number (nan and inf refused)."""
    return _number(text)


def nonnegative_float(text):
    """argparse type: a finite number >= 0."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; it must be 0 or more")
    return value


def positive_int(text):
    """argparse type: a whole number >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    """argparse type: a finite number > 0."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value

NOISE_HELP = "per-layer noise: const (fixed buffers, the default), random (fresh each render) or none"


def load_model(name):
    """ssgan.load_checkpoint, saying which file a run directory resolved to."""
    ckpt = load_checkpoint(name)
    if Path(name).is_dir():
        print(f"model: {ckpt.source}", file=sys.stderr)  # stderr: stdout may be data (ssgan metrics prints JSON)
    return ckpt


def run_convert(args):
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"output {out} is a folder; name the .safetensors file to write, "
                         f"e.g. {out / 'model.safetensors'}")  # fmt: skip
    if out.suffix != ".safetensors":
        raise ValueError(f"output {out}: a converted model is written as safetensors; name it .safetensors "
                         f"(e.g. {out.with_suffix('.safetensors')})")  # fmt: skip
    ckpt = load_model(args.original)
    out = save_checkpoint(args.out, ckpt.config, ckpt.g_ema, g=None if args.ema_only else ckpt.g,
                          d=None if args.ema_only else ckpt.d)  # fmt: skip
    print(f"wrote {out} ({ckpt.config.size}px, {ckpt.config.num_classes} classes: {', '.join(ckpt.config.class_names)})")


def run_generate(args):
    seeds = parse_seeds(args.seeds)  # everything that can be checked is checked before the first file is written
    out = check_out_folder(args.out)
    ckpt = load_model(args.ckpt)
    g = ckpt.g_ema.to(args.device).eval()
    for seed in seeds:
        z = torch.randn(1, ckpt.config.style_dim, generator=torch.Generator().manual_seed(seed)).to(args.device)
        with torch.no_grad():
            result = g(z=z, psi=args.psi, noise_mode=args.noise_mode)
            w = g.mapping(z)
        if args.psi != 1:
            w = g.mean_latent() + args.psi * (w - g.mean_latent())
        save_png(to_uint8(result.image)[0], out / f"seed{seed:06d}_img.png")
        save_png(colorize_seg(result.seg)[0], out / f"seed{seed:06d}_seg.png")
        save_latents(out / f"seed{seed:06d}_w.npy", w)  # W [1, D], truncated as rendered
    write_text(out / "classes.json", json.dumps(list(ckpt.config.class_names)))
    print(f"wrote {len(seeds)} samples to {out}")


def register(sub):
    p = sub.add_parser("convert", help="convert a model (original .pt, snapshot, run) to an ssgan checkpoint")
    p.add_argument("original", help=MODEL_HELP)
    p.add_argument("out", help="output file, named .safetensors")
    p.add_argument("--ema-only", action="store_true", help="keep only g_ema (for inference)")
    p.set_defaults(run=run_convert)

    p = sub.add_parser("generate", help="write images, colourised segmentations and latents for seeds")
    p.add_argument("--ckpt", required=True, help=MODEL_HELP)
    p.add_argument("--seeds", default="0-7", help=SEEDS_HELP)
    p.add_argument("--psi", type=nonnegative_float, default=0.7, help="truncation (1 = none; default 0.7)")
    p.add_argument("--noise-mode", default="const", choices=("const", "random", "none"), help=NOISE_HELP)
    p.add_argument("--out", default="samples", help="output folder (default samples; made when missing)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default cuda when available, else cpu)")
    p.set_defaults(run=run_generate)
