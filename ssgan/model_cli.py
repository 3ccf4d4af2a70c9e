"""`ssgan convert` and `ssgan generate`."""
import json
from pathlib import Path

import numpy as np
import torch

from ssgan.checkpoint import load_checkpoint, save_checkpoint
from ssgan.editing import colorize_seg, to_uint8
from ssgan.io import atomic_write, save_image, write_text


def parse_seeds(text):
    """"0-3,7" -> [0, 1, 2, 3, 7]."""
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
        except ValueError:
            raise ValueError(f"bad seed list {text!r}: use numbers and ranges like 0-3,7") from None
    return seeds


def run_convert(args):
    ckpt = load_checkpoint(args.original)
    out = save_checkpoint(args.out, ckpt.config, ckpt.g_ema, g=None if args.ema_only else ckpt.g,
                          d=None if args.ema_only else ckpt.d)  # fmt: skip
    print(f"wrote {out} ({ckpt.config.size}px, {ckpt.config.num_classes} classes: {', '.join(ckpt.config.class_names)})")


def run_generate(args):
    from PIL import Image

    ckpt = load_checkpoint(args.ckpt)
    g = ckpt.g_ema.to(args.device).eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = parse_seeds(args.seeds)
    for seed in seeds:
        z = torch.randn(1, ckpt.config.style_dim, generator=torch.Generator().manual_seed(seed)).to(args.device)
        with torch.no_grad():
            result = g(z=z, psi=args.psi, noise_mode=args.noise_mode)
            w = g.mapping(z)
        save_image(Image.fromarray(to_uint8(result.image)[0]), out / f"seed{seed:06d}_img.png")
        save_image(Image.fromarray(colorize_seg(result.seg)[0]), out / f"seed{seed:06d}_seg.png")
        if args.psi != 1:
            w = g.mean_latent() + args.psi * (w - g.mean_latent())
        with atomic_write(out / f"seed{seed:06d}_w.npy") as f:
            np.save(f, w.detach().cpu().numpy())  # [1, D], truncated as rendered
    write_text(out / "classes.json", json.dumps(list(ckpt.config.class_names)))
    print(f"wrote {len(seeds)} samples to {out}")


def register(sub):
    p = sub.add_parser("convert", help="convert an original SemanticStyleGAN .pt checkpoint to ssgan's format")
    p.add_argument("original", help="original checkpoint (.pt with g, g_ema, d, args)")
    p.add_argument("out", help="output .safetensors file")
    p.add_argument("--ema-only", action="store_true", help="keep only g_ema (for inference)")
    p.set_defaults(run=run_convert)

    p = sub.add_parser("generate", help="write images, colourised segmentations and latents for seeds")
    p.add_argument("--ckpt", required=True, help="ssgan or original checkpoint")
    p.add_argument("--seeds", default="0-7", help="seeds, e.g. 0-7,42")
    p.add_argument("--psi", type=float, default=0.7, help="truncation (1 = none)")
    p.add_argument("--noise-mode", default="const", choices=("const", "random", "none"))
    p.add_argument("--out", default="samples")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(run=run_generate)
