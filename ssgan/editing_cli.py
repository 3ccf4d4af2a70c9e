"""`ssgan edit`, `ssgan interpolate`, `ssgan components`, `ssgan invert` and `ssgan fit-direction`."""
import argparse
import re
import sys
from pathlib import Path

import numpy as np
import torch

from ssgan import editing as E
from ssgan.editing import SEEDS_HELP
from ssgan.latents import known_batch, read_latent
from ssgan.model_cli import (MODEL_HELP, NOISE_HELP, check_out_folder, finite_float, load_model, nonnegative_float,
                             positive_float)


def _model(args):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(args.ckpt).g_ema.to(device).eval().requires_grad_(False)


def _read(G, path, pair_with=None, what="--latent"):
    """Latents [B, 2+2K, D] from a file; a note when a code came without its batch dimension."""
    latent = read_latent(G.cfg, E.load_latents(path), ("w", "w+"), pair_with, what=f"{what} {path}")
    if latent.note:
        print(f"note: {latent.note}", file=sys.stderr)
    return E.as_w_plus(G.cfg, latent.w.to(G.local.weight.device))


def _latents(G, seeds, latent_file, psi, pair_with=None, what="--latent"):
    """W+ [B, 2+2K, D] from a seed list or a latent file (W or W+, see `ssgan.latents`); None when neither is given.
    pair_with: the batch size these latents must pair with, which decides an ambiguous [2+2K, D] file."""
    if seeds is not None:
        return E.as_w_plus(G.cfg, E.w_from_seeds(G, E.parse_seeds(seeds), psi))
    if latent_file is None:
        return None
    return _read(G, latent_file, pair_with, what)


def _file_batch(G, path):
    """The batch size a latent file has under every reading (None if it depends on the reading)."""
    return known_batch(G.cfg, E.load_latents(path))


def _add_common(p, latents=True):
    p.add_argument("--ckpt", required=True, help=MODEL_HELP)
    p.add_argument("--out", default=None, help="output folder (default out/<command>; made when missing)")
    p.add_argument("--noise-mode", default="const", choices=("const", "random", "none"), help=NOISE_HELP)
    if latents:
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--seeds", help=SEEDS_HELP)
        src.add_argument("--latent", help="latent file (.npy or .safetensors): [D] or [B, D] W, or [B, 2+2K, D] W+")
        p.add_argument("--psi", type=nonnegative_float, default=0.7, help="truncation for seeds (default 0.7)")


def _check_out(args):
    """The --out check every command makes before any work."""
    return check_out_folder(args.out or Path("out") / args.command)


def _out(args):
    out = _check_out(args)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _safe(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


# --- ssgan edit -----------------------------------------------------------------------------------


def _count(G, seeds, latent_file):
    """How many latents a --seeds/--latent pair of options gives, where that does not depend on a reading."""
    if seeds is not None:
        return len(E.parse_seeds(seeds))
    return None if latent_file is None else _file_batch(G, latent_file)


def _pair_check(G, args):
    """Seeds/latent counts of a region swap that cannot pair, named by the options given."""
    def count(seeds, latent, seeds_opt, latent_opt):
        if seeds is not None:
            n = len(E.parse_seeds(seeds))
            return n, f"{seeds_opt} {seeds!r} gives {n} seed{'s' * (n != 1)}"
        n = _file_batch(G, latent) if latent is not None else None
        return n, f"{latent_opt} {latent} holds {n} latent{'s' * (n != 1)}"

    a, a_text = count(args.seeds, args.latent, "--seeds", "--latent")
    b, b_text = count(args.source_seeds, args.source_latent, "--source-seeds", "--source-latent")
    if a and b and a != b and 1 not in (a, b):
        raise ValueError(f"{a_text} and {b_text}: they pair one to one, so give as many of each "
                         "(or just one of either)")  # fmt: skip


def run_edit(args):
    _check_out(args)
    G = _model(args)
    cfg = G.cfg
    E.region_slots(cfg, args.regions)  # a bad spec fails before any rendering
    mixing = args.source_seeds is not None or args.source_latent is not None
    if mixing == (args.direction is not None):
        raise ValueError("choose one edit: --source-seeds/--source-latent (region swap) or --direction")
    if mixing:
        _pair_check(G, args)
        source_count = _count(G, args.source_seeds, args.source_latent)
        w = _latents(G, args.seeds, args.latent, args.psi, pair_with=source_count)
        source = _latents(G, args.source_seeds, args.source_latent, args.psi, pair_with=w.shape[0],
                          what="--source-latent")  # fmt: skip
        edited = E.swap_regions(cfg, w, source, args.regions)
        w = w.expand_as(edited)
    else:
        w = _latents(G, args.seeds, args.latent, args.psi)
        direction = E.load_latents(args.direction)
        direction = read_latent(cfg, direction, what=f"--direction {args.direction}", single=True).w[0]
        edited = E.apply_direction(cfg, w, direction.to(w), args.strength, args.regions)
    out = _out(args)
    before = E.render(G, w, noise_mode=args.noise_mode)
    after = E.render(G, edited, noise_mode=args.noise_mode)
    sheets = E.side_by_side(E.image_and_seg(before), E.image_and_seg(after))
    for i, sheet in enumerate(sheets):
        E.save_png(sheet, out / f"edit_{i:03d}.png")
    E.save_latents(out / "edited_latents.npy", edited)
    classes = E.region_classes(cfg, args.regions)
    for k in classes:
        print(E.locality_of(before, after, k, args.dilate).report(cfg.class_names[k]))
    if not classes:
        print("locality: the base codes belong to no region; no locality report")
    print(f"wrote {len(sheets)} edits (original | edited, image and seg) and edited_latents.npy to {out}")


# --- ssgan interpolate ----------------------------------------------------------------------------


def run_interpolate(args):
    if args.key_latent is not None and args.keys is not None:
        raise ValueError("--keys and --key-latent both given: --key-latent's file decides the keys; drop --keys")
    if args.keys is None:
        args.keys = 4
    _check_out(args)
    G = _model(args)
    cfg = G.cfg
    E.region_slots(cfg, args.regions)
    for name in ("keys", "frames", "fps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be 1 or more, got {getattr(args, name)}")
    w = _latents(G, args.seeds, args.latent, args.psi)
    if args.key_latent is not None:
        keys = _latents(G, None, args.key_latent, args.psi, what="--key-latent")
    else:
        keys = E.as_w_plus(cfg, E.w_from_seeds(G, range(args.key_seed, args.key_seed + args.keys), args.psi))
    if args.mp4 and not E.mp4_available():
        raise FileNotFoundError("--mp4 needs an ffmpeg executable on PATH")
    out = _out(args)
    for i in range(w.shape[0]):
        # A loop that starts and ends at the latent itself, passing through the keys in the chosen slots.
        path_keys = torch.cat([w[i : i + 1], keys])
        frames = E.interpolate_regions(cfg, w[i : i + 1], path_keys, args.regions, args.frames, args.method, True)
        strip = E.image_and_seg(E.render(G, frames, noise_mode=args.noise_mode))
        name = out / f"interp_{i:03d}_{_safe(args.regions)}"
        E.save_gif(strip, name.with_suffix(".gif"), args.fps)
        if args.mp4:
            E.save_mp4(strip, name.with_suffix(".mp4"), args.fps)
        print(f"wrote {name}.gif ({args.frames} frames{', and .mp4' if args.mp4 else ''})")


# --- ssgan components -----------------------------------------------------------------------------


def run_components(args):
    _check_out(args)
    G = _model(args)
    order = args.order
    E.component_order(G.cfg, order)
    w = _latents(G, args.seeds, args.latent, args.psi)
    out = _out(args)
    for i in range(w.shape[0]):
        result, added = E.render_components(G, w[i : i + 1], order, args.noise_mode)
        E.save_png(E.components_sheet(result, added), out / f"components_{i:03d}.png")
    names = " + ".join(G.cfg.class_names[k] for k in added)
    print(f"wrote {w.shape[0]} sheets (rows: {names}; columns: image | seg | coarse seg | depth) to {out}")


# --- ssgan invert ---------------------------------------------------------------------------------


def run_invert(args):
    from ssgan import inversion as I

    for name in ("batch", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be 1 or more, got {getattr(args, name)}")
    _check_out(args)
    G = _model(args)
    cfg = G.cfg
    paths = I.list_images(args.images)
    for path in paths:  # fail on a bad file before any optimisation
        I.load_image(path, cfg.size, resize=not args.no_resize)
    perceptual = None
    if args.perceptual:
        perceptual = I.FeatureLoss.from_file(args.perceptual, device=G.local.weight.device)
    loss = I.ReconstructionLoss(perceptual, args.pixel_weight)
    encoder = None
    if args.encoder:
        from ssgan.encoder import load_encoder

        if args.mode != "w+":
            raise ValueError("--encoder predicts W+ latents; use it with --mode w+")
        encoder = load_encoder(args.encoder).to(G.local.weight.device)
    out = _out(args)
    suffix = "." + args.latent_format
    for start in range(0, len(paths), args.batch):
        batch = paths[start : start + args.batch]
        images = I.load_images(batch, cfg.size, resize=not args.no_resize)
        log = lambda step, value: (step + 1) % 50 == 0 and print(f"  step {step + 1}: loss {value:.4f}")  # noqa: E731
        print(f"inverting {', '.join(p.name for p in batch)}")
        init = None
        if encoder is not None:
            from ssgan.encoder import encode

            init, _ = encode(encoder, G, images.to(G.local.weight.device), args.encoder_iters)
        result = I.invert(G, images, args.mode, args.steps, args.lr, loss, args.w_reg, args.noise_mode, init,
                          args.finetune_steps, args.finetune_lr, callback=log)  # fmt: skip
        plain = E.render(G, result.w_plus, noise_mode=args.noise_mode) if result.generator is not None else result
        recon, labels = E.to_uint8(plain.image), E.seg_labels(plain.seg)
        for j, path in enumerate(batch):
            E.save_png(recon[j], out / "recon" / f"{path.stem}.png")
            E.save_latents(out / "latents" / f"{path.stem}{suffix}", result.w_plus[j : j + 1])
            E.save_png(E.colorize_labels(labels[j]), out / "masks" / f"{path.stem}.png")
            I.save_labels(labels[j], out / "masks" / f"{path.stem}_labels.png")
            if result.generator is not None:
                E.save_png(E.to_uint8(result.image[j : j + 1])[0], out / "recon_finetune" / f"{path.stem}.png")
        if result.generator is not None and args.save_tuned:
            import ssgan

            ssgan.save_checkpoint(out / "tuned" / f"{batch[0].stem}.safetensors", cfg, result.generator)
        print(f"  loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    print(f"wrote recon/, latents/ and masks/ for {len(paths)} images to {out}")


# --- ssgan train-encoder ---------------------------------------------------------------------------


def run_train_encoder(args):
    from ssgan import encoder as enc

    for name in ("steps", "batch", "iters", "save_every"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be 1 or more, got {getattr(args, name)}")
    if Path(args.out).suffix != ".safetensors":
        raise ValueError(f"--out {args.out}: an encoder is written as a .safetensors file")
    G = _model(args)
    model = enc.LatentEncoder(G.cfg, width=args.width)

    def log(step, loss):
        if (step + 1) % 50 == 0 or step == 0:
            print(f"step {step + 1}: loss {loss:.5f}")
        if (step + 1) % args.save_every == 0:
            enc.save_encoder(args.out, model)

    enc.train_encoder(G, args.steps, args.batch, args.iters, args.lr, args.pixel_weight, args.mixing, args.seed,
                      encoder=model, callback=log)  # fmt: skip
    print(f"wrote {enc.save_encoder(args.out, model)}")


# --- ssgan fit-direction --------------------------------------------------------------------------


def load_labels(path):
    """Binary labels from .npy or a text file of 0/1 values (whitespace or comma separated)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no label file {path}")
    if path.suffix == ".npy":
        return torch.from_numpy(np.load(path, allow_pickle=False)).reshape(-1)
    try:
        return torch.tensor([float(v) for v in re.split(r"[\s,]+", path.read_text().strip())])
    except ValueError:
        raise ValueError(f"{path}: labels must be numbers 0 or 1") from None


def run_fit_direction(args):
    E.check_latent_path(args.out)
    labels = load_labels(args.labels)
    latents = E.load_latents(args.latents, args.key)
    if args.ckpt is not None:  # read the latents as this model's, which catches another model's codes
        G = _model(args)
        latents = read_latent(G.cfg, latents, pair_with=len(labels), what=f"--latents {args.latents}").w
    elif latents.ndim not in (2, 3):
        raise ValueError(f"{args.latents}: latents must be [M, D] or [M, 2+2K, D], got {tuple(latents.shape)}")
    direction = E.fit_direction(latents, labels, args.method)
    E.save_latents(args.out, direction.normal)
    print(f"{args.method} direction {tuple(direction.normal.shape)} -> {args.out}; "
          f"training accuracy {direction.accuracy:.3f}, bias {direction.bias:.4f}")  # fmt: skip


# --- registration ---------------------------------------------------------------------------------


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where an option has a default (not on required options or None defaults)."""

    def _get_help_string(self, action):
        if action.required or action.default is None:
            return action.help
        return super()._get_help_string(action)


def register(sub):
    region_help = "regions by class name: 'hair', 'mouth:texture', 'eyes:shape', 'base'; comma-separated"

    p = sub.add_parser("edit", help="region swap (local style mixing) or a region-restricted direction; "
                       "prints a locality report")  # fmt: skip
    _add_common(p)
    p.add_argument("--regions", required=True, help=region_help)
    p.add_argument("--source-seeds", help="swap the regions in from these seeds (paired with --seeds/--latent)")
    p.add_argument("--source-latent", help="swap the regions in from this latent file")
    p.add_argument("--direction", help="direction file (.npy/.safetensors), [D] or [2+2K, D]")
    p.add_argument("--strength", type=finite_float, default=3.0, help="step along --direction (default 3)")
    p.add_argument("--dilate", type=int, default=0, help="grow the region by this many pixels for the locality report")
    p.set_defaults(run=run_edit)

    p = sub.add_parser("interpolate", help="animate the chosen regions along a path through key latents (GIF)")
    _add_common(p)
    p.add_argument("--regions", required=True, help=region_help)
    p.add_argument("--keys", type=int, default=None, help="random key latents (default 4; not with --key-latent)")
    p.add_argument("--key-seed", type=int, default=1000, help="seed of the first random key (default 1000)")
    p.add_argument("--key-latent", help="key latents from a file instead of random ones")
    p.add_argument("--method", default="cubic", choices=E.INTERPOLATIONS,
                   help="how the path runs through the keys (default cubic)")
    p.add_argument("--frames", type=int, default=60,
                   help="total frames of the whole loop, all keys together (default 60)")
    p.add_argument("--fps", type=int, default=20, help="frames per second of the GIF/MP4 (default 20)")
    p.add_argument("--mp4", action="store_true", help="also write an MP4 (needs ffmpeg on PATH)")
    p.set_defaults(run=run_interpolate)

    p = sub.add_parser("components", help="render with a growing set of classes, with pseudo-depth maps")
    _add_common(p)
    p.add_argument("--order", help="foreground classes in the order they are added (default all)")
    p.set_defaults(run=run_components)

    p = sub.add_parser("invert", help="invert a folder of aligned face images into W+ (or W)")
    _add_common(p, latents=False)
    p.add_argument("--images", required=True, help="an aligned, square image file, or a folder of them")
    p.add_argument("--mode", default="w+", choices=("w+", "w"),
                   help="latent space fitted: w+ (one code per slot, the default) or w (one code)")
    p.add_argument("--steps", type=int, default=400, help="optimisation steps per batch (default 400)")
    p.add_argument("--lr", type=positive_float, default=0.1,
                   help="peak Adam learning rate of the projector ramp (default 0.1)")
    p.add_argument("--w-reg", type=nonnegative_float, default=1.0, help="weight of mean((w - w_avg)^2)")
    p.add_argument("--pixel-weight", type=nonnegative_float, default=None,
                   help="MSE weight (default 1, or 0.1 with --perceptual)")
    p.add_argument("--perceptual", help="TorchScript feature network file for a perceptual loss (pixels only without)")
    p.add_argument("--finetune-steps", type=int, default=0, help="pivotal tuning steps on all G weights")
    p.add_argument("--finetune-lr", type=positive_float, default=1e-4,
                   help="pivotal tuning learning rate (default 1e-4)")
    p.add_argument("--save-tuned", action="store_true", help="save each tuned generator under tuned/")
    p.add_argument("--batch", type=int, default=1, help="images inverted (and tuned) together (default 1)")
    p.add_argument("--latent-format", default="npy", choices=("npy", "safetensors"))
    p.add_argument("--no-resize", action="store_true", help="refuse images that are not already the model size")
    p.add_argument("--encoder", help="start from this trained encoder's prediction (see train-encoder)")
    p.add_argument("--encoder-iters", type=int, default=5, help="encoder refinement iterations")
    p.set_defaults(run=run_invert)

    p = sub.add_parser("train-encoder", help="train a small ReStyle-style W+ encoder on generated samples")
    p.add_argument("--ckpt", required=True, help=MODEL_HELP)
    p.add_argument("--out", required=True, help="encoder file to write (.safetensors)")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=3, help="refinement iterations per step")
    p.add_argument("--lr", type=positive_float, default=1e-4)
    p.add_argument("--pixel-weight", type=nonnegative_float, default=0.0, help="add pixel MSE through G (slower)")
    p.add_argument("--mixing", type=nonnegative_float, default=0.5, help="share of style-mixed training codes")
    p.add_argument("--width", type=int, default=32, help="first conv width of the encoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=1000)
    p.set_defaults(run=run_train_encoder)

    p = sub.add_parser("fit-direction", help="fit an InterFaceGAN-style direction from latents and binary labels",
                       formatter_class=_DefaultsHelp)  # fmt: skip
    p.add_argument("--latents", required=True, help="latents [M, D] or [M, 2+2K, D] (.npy or .safetensors)")
    p.add_argument("--ckpt", help="the model the latents belong to (checked against it); " + MODEL_HELP)
    p.add_argument("--key", help="tensor name in a .safetensors latent file")
    p.add_argument("--labels", required=True, help="binary labels: .npy or a text file of 0/1")
    p.add_argument("--method", default="svm", choices=E.FIT_METHODS, help="linear classifier fitted")
    p.add_argument("--out", required=True, help="direction file to write (.npy or .safetensors)")
    p.set_defaults(run=run_fit_direction)
