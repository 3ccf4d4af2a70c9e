"""The SemanticStyleGAN training loop (spec section 7): one process, or one per GPU under torchrun (DDP).

Per iteration i, in the original's order:
  1. D step on fake and real pairs (logistic loss);
  2. if i % d_reg_every == 0: a D step with lazy R1 on image and segmentation (one autograd.grad call);
  3. G step: non-saturating loss + lambda_mask * mask loss;
  4. if i % g_reg_every == 0: a G step with path-length regularisation w.r.t. the expanded latents;
  5. EMA of G's parameters into G_ema.
Everything random (latents, noise, mixing, flips) comes from torch's global generator, which is snapshotted
with the rest of the state, so a resumed run continues the uninterrupted trajectory.
"""
import copy
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from ssgan.train import losses
from ssgan.train import metrics as metrics_mod
from ssgan.train.snapshot import (
    SnapshotError,
    capture_rng,
    load_latest_snapshot,
    prune_snapshots,
    restore_rng,
    save_snapshot,
    snapshot_name,
    sniff_snapshot,
)  # fmt: skip
from torch import nn

import ssgan
from ssgan.checkpoint import FINAL_MODEL, SNAPSHOT_FORMAT
from ssgan.config import default_class_names
from ssgan.editing import palette
from ssgan.io import append_line, save_image, write_text

PRECISIONS = ("fp32", "tf32", "bf16")

# Per-preset defaults of the options left unset. The celebamask ones are the original's (batch 4 per GPU,
# EMA half-life 10 kimg at batch 32, R1 gamma 1000 on the segmentation, style mixing 0.3). The demo's are tuned to
# learn every part on 2 CPU cores in <= 10 minutes (1500 iterations): lr 0.01 (at 0.002-0.003 the masks barely move
# in that time, at 0.02 they collapse to one class) ramped down over the last 30 % (without, the parts learnt by
# 5 kimg could drop out again by 6); R1 gamma 100 on the segmentation (at 1000 the discriminator's mask branch is so
# smooth that the masks lag the image by about a kimg: agreement 0.04 instead of 0.68 at 1 kimg); style mixing 0.9,
# StyleGAN2's (per class, as `Generator.mix`): the generator sees regions from two samples side by side in most
# steps, as an edit puts them (seed 3: parts learnt a kimg earlier, hair edits local, 0.049 instead of 0.119).
RECIPES = {
    "demo": {"batch": 4, "kimg": 6.0, "lr": 0.01, "lr_rampdown": 0.3, "r1_seg": 100.0, "ema_kimg": 0.25,
             "path_reg": 0.0, "mixing": 0.9, "tick_kimg": 0.25, "snap": 4, "metric_samples": 256},
    "celebamask-256": {"batch": 4, "kimg": 4800.0, "lr": 0.002, "lr_rampdown": 0.0, "r1_seg": 1000.0, "ema_kimg": 10.0,
                       "path_reg": 0.5, "mixing": 0.3, "tick_kimg": 4.0, "snap": 50, "metric_samples": 10000},
}  # fmt: skip
RECIPES["celebamask-512"] = RECIPES["celebamask-256"]

# Options that change the model's shape (SSGConfig fields of the same name), on top of the preset or --config.
MODEL_WIDTHS = ("size", "style_dim", "local_channel", "local_layers", "depth_layers", "coarse_channel", "coarse_size",
                "min_feat_size", "channel_multiplier")  # fmt: skip


@dataclass
class TrainOptions:
    """Every hyper-parameter of a run. None means "the preset's recipe default" (see RECIPES)."""

    data: str = "builtin"
    preset: str = "demo"
    out: str = "runs"
    # The model: the preset's config, then the fields of `config` (a JSON file of SSGConfig fields), then these
    # (None keeps them; see model_config). classes: comma-separated names or a count; transparent: names or "none".
    config: str | None = None
    size: int | None = None
    classes: str | None = None
    transparent: str | None = None
    style_dim: int | None = None
    local_channel: int | None = None
    local_layers: int | None = None
    depth_layers: int | None = None
    coarse_channel: int | None = None
    coarse_size: int | None = None
    min_feat_size: int | None = None
    channel_multiplier: int | None = None
    channel_base: int | None = None
    resize: bool = False  # resize and centre-crop images of another size (else they are an error)
    kimg: float | None = None  # total length in thousands of real images shown to D
    batch: int | None = None  # per process (per GPU)
    lr: float | None = None
    lr_rampdown: float | None = None  # fraction of the run at its end over which the lr falls to 0 (cosine); 0: none
    r1_img: float = 10.0
    r1_seg: float | None = None  # 1000 (the original's), 100 in the demo recipe
    lambda_mask: float | None = None  # 100, or 0 in image-only mode
    path_reg: float | None = None
    path_batch_shrink: int = 2
    path_decay: float = 0.01
    mixing: float | None = None
    ema_kimg: float | None = None  # EMA half-life in kimg; decay per step = 0.5 ** (global batch / (1000 * ema_kimg))
    d_reg_every: int = 16
    g_reg_every: int = 4
    tick_kimg: float | None = None  # progress line and stats every tick
    snap: int | None = None  # ticks between snapshots, sample grids and metrics
    keep_snapshots: int = 2
    metrics: tuple | None = None  # default: agreement and classes on the builtin data, none otherwise
    metric_samples: int | None = None
    inception: str | None = None
    metric_cache: str | None = None
    grid: int = 8  # samples in a grid
    seed: int = 0
    resume: str | None = None
    image_only: bool = False
    allow_lossy_masks: bool = False  # accept label maps stored as JPEG, lossy WebP... (refused by default)
    freeze_local: bool = False
    xflip: bool = False
    precision: str = "fp32"
    workers: int = 0
    tensorboard: bool = False
    device: str = "auto"

    def resolved(self):
        """A copy with every None filled from the recipe of the preset."""
        recipe = RECIPES.get(self.preset, RECIPES["celebamask-256"])
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in recipe.items():
            if values[key] is None:
                values[key] = value
        if values["metrics"] is None:
            values["metrics"] = ("agreement", "classes") if is_builtin(self.data) and not self.image_only else ()
        values["metrics"] = tuple(values["metrics"])
        data = str(values["data"])
        if not is_builtin(data) and not data.startswith("hf:") and Path(data).exists():
            values["data"] = str(Path(data).resolve())  # a folder: stored absolute, so --resume works from anywhere
        if values["lambda_mask"] is None:
            values["lambda_mask"] = 0.0 if self.image_only else 100.0
        return TrainOptions(**values)

    def validate(self):
        def need(ok, message):
            if not ok:
                raise ValueError(f"invalid training option: {message}")

        need(self.kimg > 0, f"--kimg must be > 0, got {self.kimg}")
        need(self.batch >= 1, f"--batch must be >= 1, got {self.batch}")
        need(self.batch % min(self.batch, 4) == 0, f"--batch {self.batch} must be divisible by min(batch, 4) "
             "(the discriminator's minibatch-stddev groups)")  # fmt: skip
        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(0 <= self.lr_rampdown <= 1, f"--lr-rampdown must lie in [0, 1], got {self.lr_rampdown}")
        for name in ("r1_img", "r1_seg", "lambda_mask", "path_reg", "path_decay", "ema_kimg"):
            need(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        need(0 <= self.mixing <= 1, f"--mixing must lie in [0, 1], got {self.mixing}")
        for name in ("d_reg_every", "g_reg_every", "path_batch_shrink", "snap", "grid"):
            need(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        need(self.tick_kimg > 0, f"--tick-kimg must be > 0, got {self.tick_kimg}")
        need(self.precision in PRECISIONS, f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        bad = sorted(set(self.metrics) - set(metrics_mod.METRICS))
        need(not bad, f"unknown metrics {bad}; choose from {', '.join(metrics_mod.METRICS)}")
        return self


def resume_options(resume, given):
    """Options of a resumed run: those of the snapshot it continues, overridden by the ones `given` (a dict
    of explicitly set fields), so `ssgan train --resume RUN --kimg 8` keeps the run's hyper-parameters.
    A model checkpoint (not a snapshot) has no options: `given` alone decides."""
    path = Path(resume)
    if path.is_dir():
        state = load_latest_snapshot(path)
    elif path.is_file():
        state = sniff_snapshot(path)
    else:
        raise FileNotFoundError(f"--resume {resume}: no such run directory or file")
    if state is None:
        return TrainOptions(**given)
    saved = json.loads(state["options"])
    saved["metrics"] = tuple(saved["metrics"])
    return TrainOptions(**(saved | given | {"resume": str(resume)}))


def _names(text):
    """A comma-separated list (or a sequence) as a tuple of stripped names."""
    items = text.split(",") if isinstance(text, str) else text
    return tuple(str(item).strip() for item in items if str(item).strip())


def read_config_file(path):
    """The SSGConfig fields in a JSON file: a config (SSGConfig.to_json, possibly only some fields) or a run's
    training_options.json (its "config")."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--config {path}: cannot read a JSON model config: {e}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of SSGConfig fields, got {type(data).__name__}")
    return data


def model_config(opts, base=None, data_class_names=None, use_config_file=True):
    """The model of a run: `base` (default: the preset's), then the fields of opts.config (a JSON file), then the
    shape options (opts.size, opts.style_dim, ...), applied with SSGConfig.derive.

    Class names come from opts.classes (names, or a count), else from the config file, else from the data
    (`data_class_names`, the names a prepared dataset records), else from the base. A count that matches the
    data's names takes them. A class count given both ways that differs from the data's raises ValueError
    naming both. opts.transparent names the transparent classes ("none" for none); without it they carry over
    by name from the base.
    """
    cfg = base if base is not None else ssgan.preset(opts.preset)
    names_given = False
    if use_config_file and opts.config:
        fields_ = read_config_file(opts.config)
        names_given = "class_names" in fields_
        try:
            cfg = cfg.derive(**fields_)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--config {opts.config}: {e.args[0] if e.args else e}") from None
    data_names = tuple(data_class_names) if data_class_names else None
    classes = opts.classes
    if isinstance(classes, str) and classes.strip().isdigit():
        classes = int(classes)
    if isinstance(classes, int):
        count = classes
        names = (data_names if data_names and len(data_names) == count
                 else cfg.class_names if cfg.num_classes == count else default_class_names(count))  # fmt: skip
        given = f"--classes {count}"
    elif classes:
        names = _names(classes)
        count, given = len(names), f"--classes ({len(names)} names)"
    elif names_given:
        names, count, given = cfg.class_names, cfg.num_classes, f"--config {opts.config} ({cfg.num_classes} classes)"
    else:
        names, count, given = data_names or cfg.class_names, None, None
    if data_names and count is not None and count != len(data_names):
        raise ValueError(f"{given} disagrees with the data {opts.data}, which records {len(data_names)} classes "
                         f"({', '.join(data_names)})")  # fmt: skip
    changes = {name: getattr(opts, name) for name in MODEL_WIDTHS if getattr(opts, name) is not None}
    if names != cfg.class_names:
        changes["class_names"] = names
    if opts.transparent is not None:
        none = str(opts.transparent).strip().lower() in ("", "none")
        changes["transparent"] = () if none else _names(opts.transparent)
    if opts.channel_base is not None:
        changes["channel_base"] = opts.channel_base
    return cfg.derive(**changes) if changes else cfg


def is_builtin(spec):
    return str(spec) == "builtin" or str(spec).startswith("builtin:")


class TrainingDiverged(RuntimeError):
    """A loss became NaN or Inf; the run stops and its last snapshot stays the last good state."""


class StopRequest:
    """Once installed (in the main thread) and until restored, SIGINT and SIGTERM are recorded in `.signal`
    instead of stopping the process, so the loop can finish its step and snapshot; the handler then gives the
    signal back its previous handler, so a second one acts at once (Ctrl-C twice abandons the step). A signal the
    process ignores (a background job's SIGINT, nohup) stays ignored."""

    def __init__(self):
        self.signal, self._previous = None, {}

    def install(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame):
        self.signal = self.signal or number
        signal.signal(number, self._previous.get(number) or signal.SIG_DFL)

    def restore(self):
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


class TrainingInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the run after a final snapshot; `signal` is the signal's number."""

    def __init__(self, message, signal_number):
        super().__init__(message)
        self.signal = signal_number


# --- the modules DDP wraps: one forward per optimiser step kind ---------------------------------
class GeneratorStep(nn.Module):
    """Latents (with style mixing) -> random-noise synthesis; returns only the outputs asked for, so that
    DDP's unused-parameter search sees exactly the parameters the step's loss depends on. The output
    "path_lengths" is computed inside the forward: DDP hands back copies of the outputs, so a gradient
    w.r.t. the latents must be taken before they leave it."""

    def __init__(self, G, mixing):
        super().__init__()
        self.G, self.mixing = G, mixing

    def forward(self, batch, outputs=("image", "seg", "coarse_seg")):
        G = self.G
        device = G.local.weight.device
        path_step = "path_lengths" in outputs
        with torch.no_grad() if path_step else nullcontext():
            w_plus = losses.sample_w_plus(G.mapping, G.layout, G.mix, batch, G.cfg.style_dim, self.mixing, device)
            w_expanded = G.expand(w_plus)
        if path_step:  # as in the original, the latents are leaves: the penalty does not train the mapping network
            w_expanded.requires_grad_(True)
        out = G.synthesis(w_expanded, noise_mode="random")
        values = {name: getattr(out, name) for name in outputs if name != "path_lengths"}
        if path_step:
            values["path_lengths"] = losses.path_lengths(out.image.float(), out.w_expanded)
        return tuple(values[name] for name in outputs)


class DiscriminatorStep(nn.Module):
    """D on one or more (image, seg) pairs in a single forward (seg ignored in image-only mode)."""

    def __init__(self, D, image_only):
        super().__init__()
        self.D, self.image_only = D, image_only

    def forward(self, *pairs):
        return tuple(self.D(image, None if self.image_only else seg) for image, seg in pairs)


# --- data ---------------------------------------------------------------------------------------
class ResumableSampler(torch.utils.data.Sampler):
    """An endless stream of dataset indices, a fresh permutation per epoch (seeded by seed and epoch),
    dealt round-robin to the ranks and started at `start`, the number of indices all ranks consumed."""

    def __init__(self, size, seed, rank=0, world_size=1, start=0):
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start

    def __iter__(self):
        position = self.start
        while True:
            epoch, offset = divmod(position, self.size)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
            for index in order[offset:].tolist():
                if position % self.world_size == self.rank:
                    yield index
                position += 1


def ignore_stop_signals(worker_id):
    """DataLoader workers leave Ctrl-C and SIGTERM (sent to the whole process group) to the main process, which
    finishes its step and snapshots; a worker stopped under it would fail that step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset, opts, rank, world_size, start):
    sampler = ResumableSampler(len(dataset), opts.seed, rank, world_size, start)
    return iter(torch.utils.data.DataLoader(
        dataset, batch_size=opts.batch, sampler=sampler, num_workers=opts.workers, drop_last=True,
        pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(opts.seed),
        persistent_workers=opts.workers > 0, worker_init_fn=ignore_stop_signals if opts.workers > 0 else None,
    ))  # fmt: skip


# --- helpers ------------------------------------------------------------------------------------
def set_requires_grad(module, flag):
    for p in module.parameters():
        p.requires_grad_(flag)


def lr_rampdown_scale(progress, rampdown):
    """The learning-rate factor at `progress` (the share of the run done, 0..1): 1, then over the last `rampdown` of
    the run a half cosine from 1 to 0 (the ramp-down of StyleGAN2's projector). The demo recipe's short, high-lr run
    then ends in a settled generator instead of at a random point of the oscillation between G and D."""
    remaining = 1 - progress
    if rampdown <= 0 or remaining >= rampdown:
        return 1.0
    return 0.5 - 0.5 * math.cos(math.pi * max(0.0, remaining) / rampdown)


@torch.no_grad()
def update_ema(ema, model, decay, skip_prefixes=()):
    """ema <- decay * ema + (1 - decay) * model, parameters only (buffers such as noise maps stay as they are)."""
    params = dict(model.named_parameters())
    for name, p_ema in ema.named_parameters():
        if not name.startswith(skip_prefixes):
            p_ema.lerp_(params[name].detach(), 1 - decay)


def new_run_dir(out, preset, data):
    """out/NNNNN-preset-data, numbered one past the highest existing run; never reuses a directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(str(data)).name or str(data))
    numbers = [int(p.name.split("-")[0]) for p in out.iterdir() if p.name.split("-")[0].isdigit()]
    number = max(numbers, default=-1) + 1
    while True:
        path = out / f"{number:05d}-{preset}-{tag}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


def sample_grid(out, num_classes):
    """Rows of tiles, one column per sample: image, segmentation argmax, coarse mask argmax, then the depth of
    every foreground class (normalised per map). Returns a uint8 [H, W, 3] array."""
    size = out.image.shape[-1]
    colours = torch.from_numpy(palette(num_classes))  # the class colours of every ssgan command

    def upsample(t):  # [B, C, g, g] -> [B, C, S, S]
        return torch.nn.functional.interpolate(t.float(), size=(size, size), mode="nearest")

    image = ((out.image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [B, 3, S, S]
    seg = colours[out.seg.argmax(1)].permute(0, 3, 1, 2)
    coarse = colours[upsample(out.coarse_seg).argmax(1)].permute(0, 3, 1, 2)
    rows = [image, seg, coarse]
    depths = upsample(out.depths[:, 1:])  # class 0 (background) has no depth
    for k in range(depths.shape[1]):
        d = depths[:, k]
        lo, hi = d.amin((1, 2), keepdim=True), d.amax((1, 2), keepdim=True)
        grey = ((d - lo) / (hi - lo).clamp(min=1e-8) * 255).round().to(torch.uint8)
        rows.append(grey[:, None].expand(-1, 3, -1, -1))
    grid = torch.stack(rows)  # [R, B, 3, S, S]
    R, B = grid.shape[:2]
    return grid.permute(0, 3, 1, 4, 2).reshape(R * size, B * size, 3).numpy()


def save_png(array, path):
    from PIL import Image

    save_image(Image.fromarray(array), path)


# --- the trainer --------------------------------------------------------------------------------
class Trainer:
    """Holds models, optimisers and counters; `run()` trains to opts.kimg."""

    def __init__(self, opts: TrainOptions, rank=0, world_size=1, device=None, dataset=None, config=None, log=print):
        self.opts = opts = opts.resolved().validate()
        self.rank, self.world_size = rank, world_size
        self.distributed = world_size > 1
        self.log = log if rank == 0 else (lambda *a, **k: None)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if opts.precision != "fp32" and self.device.type != "cuda":
            raise ValueError(f"--precision {opts.precision} needs a CUDA device; this run is on {self.device}")
        if opts.precision == "tf32":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if opts.precision == "bf16"
                         else nullcontext())  # fmt: skip

        resume_state, resume_ckpt = self._read_resume(opts.resume)
        if resume_state is not None:
            resumed = ssgan.SSGConfig.from_dict(json.loads(resume_state["config"]))
        else:
            resumed = resume_ckpt.config if resume_ckpt is not None else None
        # The data's recorded class names are read first (without opening the data), so the model is built with
        # them and the data is then opened and checked once with the right class count; a resumed run keeps its
        # model, and options that would change it are an error.
        if resumed is not None:
            self.cfg = resumed
            self._check_resumed_config(resumed)
        else:
            from ssgan.train.data import source_class_names

            names = None if dataset is not None or opts.image_only else source_class_names(opts.data)
            self.cfg = model_config(opts if names else replace(opts, transparent=None), config, names)  # final below
        self.dataset = dataset if dataset is not None else self._open_dataset()
        data_names = getattr(self.dataset, "class_names", None)
        if resumed is None:
            cfg = model_config(opts, config, data_names)
            reopen = dataset is None and cfg.num_classes != self.cfg.num_classes
            self.cfg = cfg
            if reopen:  # names the data gave only once opened (not found beforehand): they set the class count
                self.dataset = self._open_dataset()
        elif data_names and len(data_names) != resumed.num_classes:
            raise ValueError(f"the resumed model has {resumed.num_classes} classes "
                             f"({', '.join(resumed.class_names)}) but the data {opts.data} records "
                             f"{len(data_names)} ({', '.join(data_names)})")  # fmt: skip
        self._check_data()
        if opts.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError:
                raise ValueError("--tensorboard needs the tensorboard package (pip install tensorboard)") from None

        torch.manual_seed(opts.seed)  # identical initial weights (and noise buffers) on every rank
        self.G = ssgan.Generator(self.cfg).to(self.device)
        self.D = ssgan.Discriminator(self.cfg).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval()
        set_requires_grad(self.G_ema, False)
        g_ratio = opts.g_reg_every / (opts.g_reg_every + 1)
        d_ratio = opts.d_reg_every / (opts.d_reg_every + 1)
        self.g_opt = torch.optim.Adam(self.G.parameters(), lr=opts.lr * g_ratio, betas=(0.0, 0.99**g_ratio))
        self.d_opt = torch.optim.Adam(self.D.parameters(), lr=opts.lr * d_ratio, betas=(0.0, 0.99**d_ratio))
        self.base_lrs = {self.g_opt: opts.lr * g_ratio, self.d_opt: opts.lr * d_ratio}
        self.step = 0
        self.images_seen = 0  # real images shown to D, all ranks together
        self.mean_path_length = 0.0
        self.resumed_from = None
        if resume_ckpt is not None:
            self._load_checkpoint_weights(resume_ckpt)
        if resume_state is not None:
            self._load_state(resume_state)
        else:
            torch.manual_seed(opts.seed * 1000 + rank)  # per-rank randomness from here on
            np.random.seed(opts.seed * 1000 + rank)

        self.g_step = GeneratorStep(self.G, opts.mixing)
        self.d_step = DiscriminatorStep(self.D, opts.image_only)
        if self.distributed:
            ddp = {"broadcast_buffers": False, "find_unused_parameters": True}
            if self.device.type == "cuda":
                ddp["device_ids"] = [self.device]
            with warnings.catch_warnings():  # broadcast_buffers=False is the original setting, keep it
                warnings.filterwarnings("ignore", message=".*broadcast_buffers", category=FutureWarning)
                self.g_step = nn.parallel.DistributedDataParallel(self.g_step, **ddp)
                self.d_step = nn.parallel.DistributedDataParallel(self.d_step, **ddp)

        self.global_batch = opts.batch * world_size
        self.ema_decay = 0.5 ** (self.global_batch / (1000 * opts.ema_kimg)) if opts.ema_kimg > 0 else 0.0
        self.grid_z = torch.randn(opts.grid, self.cfg.style_dim, generator=torch.Generator().manual_seed(opts.seed))
        self.run_dir = None
        self.tb = None

    # --- state ----------------------------------------------------------------------------------
    def _read_resume(self, resume):
        """(snapshot state, None) for a run dir or snapshot file; (None, Checkpoint) for model checkpoints."""
        if not resume:
            return None, None
        path = Path(resume)
        if path.is_dir():
            return load_latest_snapshot(path), None
        if not path.is_file():
            raise FileNotFoundError(f"--resume {resume}: no such run directory or file")
        state = sniff_snapshot(path)
        if state is not None:
            return state, None
        try:
            return None, ssgan.load_checkpoint(path)
        except ssgan.CheckpointError as e:
            what = "is neither a training snapshot nor a model checkpoint"
            raise SnapshotError(f"--resume {resume} {what}: {e}") from None

    def _load_checkpoint_weights(self, ckpt):
        """Start from a model checkpoint (ssgan or original .pt): weights only, fresh optimisers."""
        self.G_ema.load_state_dict(ckpt.g_ema.state_dict())
        self.G.load_state_dict((ckpt.g or ckpt.g_ema).state_dict())
        if ckpt.d is not None:
            self.D.load_state_dict(ckpt.d.state_dict())
        else:
            self.log("warning: the checkpoint has no discriminator; D starts from random weights")
        self.resumed_from = str(self.opts.resume)

    def state_dict(self):
        rank_state = {"rng": capture_rng(), "mean_path_length": self.mean_path_length}
        ranks = [None] * self.world_size
        if self.distributed:
            dist.all_gather_object(ranks, rank_state)
        else:
            ranks = [rank_state]
        return {
            "format": SNAPSHOT_FORMAT,
            "version": 1,
            "config": self.cfg.to_json(),
            "options": json.dumps(asdict(self.opts)),
            "step": self.step,
            "images_seen": self.images_seen,
            "world_size": self.world_size,
            "G": self.G.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "D": self.D.state_dict(),
            "g_opt": self.g_opt.state_dict(),
            "d_opt": self.d_opt.state_dict(),
            "ranks": ranks,
        }

    def _load_state(self, state):
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])
        self.g_opt.load_state_dict(state["g_opt"])
        self.d_opt.load_state_dict(state["d_opt"])
        self.step, self.images_seen = state["step"], state["images_seen"]
        ranks = state["ranks"]
        if len(ranks) == self.world_size:
            restore_rng(ranks[self.rank]["rng"])
            self.mean_path_length = ranks[self.rank]["mean_path_length"]
        else:
            self.log(f"warning: the snapshot was written by {len(ranks)} processes and this run has "
                     f"{self.world_size}; random streams are reseeded, so the trajectory differs")  # fmt: skip
            torch.manual_seed(self.opts.seed * 1000 + self.rank + 7919 * self.step)
            self.mean_path_length = ranks[0]["mean_path_length"]
        self.resumed_from = str(self.opts.resume)
        total = round(self.opts.kimg * 1000)
        if self.images_seen >= total:
            raise ValueError(f"--resume {self.opts.resume}: the run has trained {self.images_seen / 1000:.3f} kimg and "
                             f"--kimg {self.opts.kimg} asks for no more; give a larger --kimg to continue it")  # fmt: skip
        saved = json.loads(state["options"])
        old = self.lr_scale(saved["kimg"], saved.get("lr_rampdown") or 0.0)
        new = self.lr_scale(self.opts.kimg, self.opts.lr_rampdown)
        if abs(new - old) > 1e-6:
            self.log(f"warning: the learning-rate factor jumps from {old:.3f} to {new:.3f} here: the lr ramp-down "
                     f"(--lr-rampdown {self.opts.lr_rampdown}) now ends at --kimg {self.opts.kimg}, not at "
                     f"{saved['kimg']}; --lr-rampdown 0 keeps the lr at its base value")  # fmt: skip

    def _open_dataset(self):
        from ssgan.train.data import open_dataset

        return open_dataset(self.opts.data, self.cfg.size, self.cfg.num_classes, image_only=self.opts.image_only,
                            allow_lossy_masks=self.opts.allow_lossy_masks,  # every row checked here, before step 1
                            resize=self.opts.resize)  # fmt: skip

    def _check_resumed_config(self, resumed):
        """Shape options given with --resume must describe the resumed model (its config travels with it)."""
        wanted = model_config(self.opts, resumed, use_config_file=False)
        if wanted != resumed:
            old, new = resumed.to_dict(), wanted.to_dict()
            changed = [k for k in old if old[k] != new[k]]
            derived = ("render_channels", "disc_channels")  # follow size and the channel options: name those
            diff = ", ".join(f"{k} {old[k]} -> {new[k]}" for k in [k for k in changed if k not in derived] or changed)
            raise ValueError(f"--resume {self.opts.resume} continues a model that the options would change ({diff}); "
                             "a resumed run keeps its model: leave these options out, or start a new run")  # fmt: skip

    def _check_data(self):
        """Fail before the run starts, naming both numbers, when the data does not fit the model (row 0 is read,
        which also applies the dataset's own checks, such as images of another size without --resize)."""
        if len(self.dataset) == 0:
            raise ValueError(f"the data {self.opts.data} has no rows")
        item = self.dataset[0]
        size, classes = self.cfg.size, self.cfg.num_classes
        height, width = item["image"].shape[-2:]
        if (height, width) != (size, size):
            raise ValueError(f"the data {self.opts.data} has {width}x{height} images but the model's size is "
                             f"{size} (--size); --resize resizes and centre-crops them")  # fmt: skip
        if not self.opts.image_only and item["mask"].shape[0] != classes:
            raise ValueError(f"the data {self.opts.data} has masks of {item['mask'].shape[0]} classes but the model "
                             f"has {classes} ({', '.join(self.cfg.class_names)})")  # fmt: skip

    # --- one iteration --------------------------------------------------------------------------
    def _real_batch(self, loader):
        item = next(loader)
        image = item["image"].to(self.device, non_blocking=True)
        seg = None if self.opts.image_only else item["mask"].to(self.device, non_blocking=True)
        if self.opts.xflip:
            flip = (torch.rand(image.shape[0]) < 0.5).to(self.device)[:, None, None, None]
            image = torch.where(flip, image.flip(-1), image)
            seg = None if seg is None else torch.where(flip, seg.flip(-1), seg)
        return image, seg

    def train_step(self, real_image, real_seg):
        """One iteration (steps 1-5). Returns a dict of float losses; raises TrainingDiverged on NaN/Inf."""
        opts, G, B = self.opts, self.G, self.opts.batch
        raw_g = self.g_step.module if self.distributed else self.g_step
        raw_d = self.d_step.module if self.distributed else self.d_step
        stats = {"lr_scale": self.apply_lr_rampdown()}

        # 1. D on fake and real
        set_requires_grad(G, False)
        set_requires_grad(self.D, True)
        with torch.no_grad(), self.autocast:
            fake_image, fake_seg = raw_g(B, outputs=("image", "seg"))
        with self.autocast:
            fake_logits, real_logits = self.d_step((fake_image, fake_seg), (real_image, real_seg))
        d_loss = losses.d_logistic(real_logits.float(), fake_logits.float())
        self._check(d_loss=d_loss)
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        stats.update(d_loss=d_loss, real_score=real_logits.mean(), fake_score=fake_logits.mean())

        # 2. lazy R1 on image and segmentation. Like the path-length pass below it runs in float32 under every
        # --precision: the penalty is a squared gradient norm, and a bf16 forward would make the gradient it
        # differentiates (and its own gradient) bf16 too. Lazy, so the cost is spread over d_reg_every steps.
        if self.step % opts.d_reg_every == 0 and (opts.r1_img > 0 or opts.r1_seg > 0):
            image = real_image.detach().float().requires_grad_(True)
            seg = None if real_seg is None else real_seg.detach().float().requires_grad_(True)
            (logits,) = self.d_step((image, seg))
            r1, r1_img, r1_seg = losses.r1_loss(logits, image, seg, opts.r1_img, opts.r1_seg)
            self._check(r1=r1)
            self.d_opt.zero_grad(set_to_none=True)
            (r1 * opts.d_reg_every + 0 * logits.sum()).backward()  # 0*logits: every D parameter gets a gradient
            self.d_opt.step()
            stats.update(r1_img=r1_img, r1_seg=r1_seg)

        # 3. G: adversarial + mask loss
        set_requires_grad(G, True)
        set_requires_grad(self.D, False)
        outputs = ["image"] + ["seg"] * (not opts.image_only or opts.lambda_mask > 0)
        outputs += ["coarse_seg"] * (opts.lambda_mask > 0)
        with self.autocast:
            out = dict(zip(outputs, self.g_step(B, outputs=tuple(outputs))))
            (logits,) = raw_d((out["image"], out.get("seg")))
        g_loss = losses.g_nonsaturating(logits.float())
        total = g_loss
        if opts.lambda_mask > 0:
            m_loss = losses.mask_loss(out["coarse_seg"].float(), out["seg"].float())
            total = total + opts.lambda_mask * m_loss
            stats["mask_loss"] = m_loss
        self._check(g_loss=g_loss, g_total=total)
        self.g_opt.zero_grad(set_to_none=True)
        total.backward()
        self.g_opt.step()
        stats["g_loss"] = g_loss

        # 4. lazy path-length regularisation (image only, w.r.t. the expanded latents), in float32 (see 2.)
        if opts.path_reg > 0 and self.step % opts.g_reg_every == 0:
            path_batch = max(1, B // opts.path_batch_shrink)
            image, lengths = self.g_step(path_batch, outputs=("image", "path_lengths"))
            penalty, self.mean_path_length, mean_length = losses.path_length_penalty(
                lengths, self.mean_path_length, opts.path_decay
            )
            self._check(path_penalty=penalty)
            self.g_opt.zero_grad(set_to_none=True)
            # 0*image: every parameter the image depends on gets a gradient (DDP needs them all)
            (opts.path_reg * opts.g_reg_every * penalty + 0 * image[0, 0, 0, 0]).backward()
            self.g_opt.step()
            stats.update(path_penalty=penalty, path_length=mean_length)

        # 5. EMA (parameters only; --freeze-local keeps G_ema's local generators fixed)
        update_ema(self.G_ema, G, self.ema_decay, ("local.",) if opts.freeze_local else ())
        self.step += 1
        self.images_seen += self.global_batch
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in stats.items()}

    def lr_scale(self, kimg, rampdown):
        """The learning-rate factor at this point of a run of `kimg` with ramp-down `rampdown` (lr_rampdown_scale)."""
        return lr_rampdown_scale(self.images_seen / (kimg * 1000), rampdown)

    def apply_lr_rampdown(self):
        """Set both optimisers' learning rates for this step; returns the factor."""
        scale = self.lr_scale(self.opts.kimg, self.opts.lr_rampdown)
        for opt, base in self.base_lrs.items():
            for group in opt.param_groups:
                group["lr"] = base * scale
        return scale

    def _check(self, **values):
        """Stop on a non-finite loss before any optimiser applies it (so the weights stay good)."""
        bad = {k: float(v.detach()) for k, v in values.items() if not torch.isfinite(v.detach()).all()}
        flag = torch.tensor([1.0 if bad else 0.0], device=self.device)
        if self.distributed:
            dist.all_reduce(flag)
        if flag.item() > 0:
            what = ", ".join(f"{k}={v}" for k, v in bad.items()) or "a loss on another rank"
            raise TrainingDiverged(f"non-finite loss at step {self.step} ({self.images_seen / 1000:.3f} kimg): {what}")

    # --- outputs ----------------------------------------------------------------------------------
    @torch.no_grad()
    def grid(self):
        out = self.G_ema(z=self.grid_z.to(self.device), noise_mode="const")
        return sample_grid(out, self.cfg.num_classes)

    def save_snapshot(self):
        state = self.state_dict()  # every rank takes part (RNG states are gathered)
        if self.rank != 0:
            return None
        path = save_snapshot(self.run_dir / snapshot_name(self.images_seen), state)
        prune_snapshots(self.run_dir, self.opts.keep_snapshots)
        save_png(self.grid(), self.run_dir / f"samples-{self.images_seen // 1000:06d}kimg.png")
        return path

    def evaluate(self):
        if not self.opts.metrics or self.rank != 0:
            return {}
        results = metrics_mod.evaluate(
            self.G_ema, self.opts.metrics, num_samples=self.opts.metric_samples, batch=max(self.opts.batch, 16),
            device=self.device, dataset=self.dataset, data_key=f"{self.opts.data}|{self.cfg.size}",
            builtin=is_builtin(self.opts.data), inception=self.opts.inception,
            cache_dir=self.opts.metric_cache or (Path(self.opts.out) / ".metric-cache"),
        )  # fmt: skip
        metrics_mod.append_results(self.run_dir, results, kimg=self.images_seen / 1000, step=self.step)
        if self.tb is not None:
            for name, value in results.items():
                if isinstance(value, float):
                    self.tb.add_scalar(f"metrics/{name}", value, self.images_seen)
        return results

    def report_demo_quality(self, say):
        """At the end of a run with metrics: the depth, locality and diversity measures of train/demo_quality.py,
        printed and appended to the run's metric files, and the swaps drawn in swaps.png."""
        if not self.opts.metrics:
            return
        from ssgan.train import demo_quality

        report = demo_quality.final_report(self.G_ema, dataset=None if self.opts.image_only else self.dataset)
        metrics_mod.append_results(self.run_dir, report, kimg=self.images_seen / 1000, step=self.step)
        depth = report["depth_high_frequency"]
        say(f"depth maps: high-frequency energy share {depth['mean']:.3f} (mean over classes; "
            + ", ".join(f"{k} {v:.3f}" for k, v in depth.items() if k != "mean") + ")")
        peaks = report["depth_region_iou"]
        say("depth maps: IoU of each class's region with as many of its depth's highest cells "
            + ", ".join(f"{k} {'n/a' if v is None else f'{v:.2f}'}" for k, v in peaks.items()))
        say(demo_quality.format_locality(report["locality"]))
        if "texture_diversity" in report:
            say(demo_quality.format_diversity(report["texture_diversity"]))
        save_png(demo_quality.swap_sheet(self.G_ema), self.run_dir / "swaps.png")  # G_ema stays in eval mode
        say(f"swaps.png: each class's shape and texture codes swapped between two samples ({self.run_dir})")

    def _setup_run_dir(self):
        name = [None]
        if self.rank == 0:
            name[0] = str(new_run_dir(self.opts.out, self.opts.preset, self.opts.data))
        if self.distributed:
            dist.broadcast_object_list(name, src=0)
        self.run_dir = Path(name[0])
        if self.rank == 0:
            info = {"options": asdict(self.opts), "config": self.cfg.to_dict(), "world_size": self.world_size,
                    "global_batch": self.global_batch, "ema_decay": self.ema_decay, "device": str(self.device),
                    "resumed_from": self.resumed_from, "start_step": self.step, "start_images": self.images_seen,
                    "command": sys.argv}  # fmt: skip
            write_text(self.run_dir / "training_options.json", json.dumps(info, indent=1, default=str))
            if self.opts.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.run_dir))

    # --- the loop -------------------------------------------------------------------------------
    def run(self, progress=False):
        """Train until opts.kimg; snapshot every `snap` ticks and at the end. Returns the run directory.

        progress: a tqdm bar on stdout (rank 0): kimg done / total, ETA, s/kimg and the latest losses.
        SIGINT or SIGTERM (handled when run from the main thread) ends the run after the current step with a
        final snapshot and raises TrainingInterrupted, whose message says how to resume; a second signal acts at
        once. A run that fails before its first step removes its run directory.
        """
        opts = self.opts
        start_step = self.step
        try:
            self._setup_run_dir()
        except BaseException:  # e.g. Ctrl-C while writing training_options.json: leave no half-made run
            if self.rank == 0 and self.run_dir is not None:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        log_file = open(self.run_dir / "log.txt", "a") if self.rank == 0 else None  # noqa: SIM115 (closed in finally)
        bar = self._progress_bar() if progress and self.rank == 0 else None

        def say(line):
            if bar is not None:
                with bar.external_write_mode(file=sys.stdout):
                    self.log(line)
            else:
                self.log(line)
            if log_file is not None:
                log_file.write(line + "\n")
                log_file.flush()

        total_images = round(opts.kimg * 1000)
        tick_images = max(1, round(opts.tick_kimg * 1000))
        say(f"run {self.run_dir}: preset {opts.preset}, data {opts.data}, {self.world_size} process(es) on "
            f"{self.device}, batch {opts.batch}/process, {opts.kimg} kimg, start at {self.images_seen / 1000:.3f} kimg")
        tick, tick_start_images, tick_start_time, sums, counts = 0, self.images_seen, time.time(), {}, {}
        start_time = time.time()
        stop = StopRequest().install()
        try:
            loader = make_loader(self.dataset, opts, self.rank, self.world_size, self.images_seen)
            while self.images_seen < total_images:
                real_image, real_seg = self._real_batch(loader)
                try:
                    stats = self.train_step(real_image, real_seg)
                except TrainingDiverged as e:
                    say(f"stopping: {e}. The last good snapshot stays in {self.run_dir} (or the resumed run).")
                    raise
                if bar is not None:
                    bar.set_postfix({k: f"{stats[k]:.3g}" for k in ("d_loss", "g_loss", "mask_loss") if k in stats},
                                    refresh=False)  # fmt: skip
                    bar.update(self.images_seen / 1000 - bar.n)
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                done = self.images_seen >= total_images
                if self.images_seen - tick_start_images >= tick_images or done:
                    tick += 1
                    means = self._reduce({k: sums[k] / counts[k] for k in sums})
                    elapsed = time.time() - tick_start_time
                    sec_per_kimg = elapsed / max(1e-9, (self.images_seen - tick_start_images) / 1000)
                    entry = {"tick": tick, "kimg": self.images_seen / 1000, "step": self.step,
                             "time": time.time() - start_time, "sec_per_kimg": sec_per_kimg, **means}  # fmt: skip
                    say(f"tick {tick:<4d} kimg {entry['kimg']:<8.3f} step {self.step:<6d} "
                        f"time {entry['time']:7.1f}s  s/kimg {sec_per_kimg:6.1f}  "
                        + "  ".join(f"{k} {v:.4g}" for k, v in means.items()))  # fmt: skip
                    if self.rank == 0:
                        append_line(self.run_dir / "stats.jsonl", json.dumps(entry))
                        if self.tb is not None:
                            for k, v in means.items():
                                self.tb.add_scalar(f"loss/{k}", v, self.images_seen)
                    if tick % opts.snap == 0 or done:
                        path = self.save_snapshot()
                        if path is not None:
                            say(f"snapshot {path.name}")
                        results = self.evaluate()
                        if results:
                            say(f"metrics at {self.images_seen / 1000:.3f} kimg: {metrics_mod.format_results(results)}")
                    tick_start_images, tick_start_time, sums, counts = self.images_seen, time.time(), {}, {}
                signal_number = self._stop_signal(stop)
                if signal_number and not done:
                    path = self.save_snapshot()
                    message = (f"interrupted by {signal.Signals(signal_number).name} at "
                               f"{self.images_seen / 1000:.3f} kimg (step {self.step})"
                               + (f"; final snapshot {path}" if path is not None else "")
                               + f". Resume with: ssgan train --resume {self.run_dir}")  # fmt: skip
                    if log_file is not None:  # the caller prints it (the CLI: once, on stderr)
                        log_file.write(message + "\n")
                        log_file.flush()
                    raise TrainingInterrupted(message, signal_number)
            if self.rank == 0:
                final = ssgan.save_checkpoint(self.run_dir / FINAL_MODEL, self.cfg, self.G_ema,
                                              self.G, self.D)  # fmt: skip
                say(f"done: {self.images_seen / 1000:.3f} kimg in {time.time() - start_time:.1f}s; model {final}")
                self.report_demo_quality(say)
        except BaseException:
            if self.rank == 0 and self.step == start_step:  # nothing trained: leave no empty run behind
                if log_file is not None:
                    log_file.close()
                    log_file = None
                if self.tb is not None:
                    self.tb.close()
                    self.tb = None
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        finally:
            stop.restore()
            if bar is not None:
                bar.close()
            if log_file is not None:
                log_file.close()
            if self.tb is not None:
                self.tb.close()
        return self.run_dir

    def _progress_bar(self):
        from tqdm import tqdm

        return tqdm(total=self.opts.kimg, initial=self.images_seen / 1000, unit="kimg", file=sys.stdout,
                    dynamic_ncols=True, bar_format="{percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} kimg "
                    "[{elapsed}<{remaining}, {rate_inv_fmt}{postfix}]")  # fmt: skip

    def _stop_signal(self, stop):
        """The number of the stop signal any rank received (0: none), agreed on by all ranks."""
        number = stop.signal or 0
        if self.distributed:
            flag = torch.tensor([number], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            number = int(flag.item())
        return number

    def describe(self):
        """The resolved model, recipe and a data summary (what --dry-run prints)."""
        cfg, opts = self.cfg, self.opts
        data_names = getattr(self.dataset, "class_names", None)
        transparent = ", ".join(cfg.class_names[t] for t in cfg.transparent) or "none"
        params = {name: sum(p.numel() for p in module.parameters()) for name, module in (("G", self.G), ("D", self.D))}
        data = (f"data {opts.data}: {len(self.dataset)} rows, {cfg.size}x{cfg.size}"
                + (" (resized and centre-cropped)" if opts.resize else "")
                + (", images only" if opts.image_only else f", {cfg.num_classes} classes")
                + (f", class names recorded: {', '.join(data_names)}" if data_names
                   else ", no class names recorded"))  # fmt: skip
        lines = [f"model: {cfg.size}x{cfg.size}, {cfg.num_classes} classes ({', '.join(cfg.class_names)}), "
                 f"transparent: {transparent}; G {params['G']:,} parameters, D {params['D']:,}",
                 f"model config: {json.dumps(cfg.to_dict())}", f"recipe: {json.dumps(asdict(opts))}", data]  # fmt: skip
        if self.resumed_from:
            lines.append(f"resumes {self.resumed_from} at step {self.step} ({self.images_seen / 1000:.3f} kimg)")
        return "\n".join(lines)

    def _reduce(self, means):
        """Average tick statistics over the ranks."""
        if not self.distributed:
            return means
        keys = sorted(means)
        t = torch.tensor([means[k] for k in keys], device=self.device, dtype=torch.float64)
        dist.all_reduce(t)
        return dict(zip(keys, (t / self.world_size).tolist()))


def train(opts: TrainOptions, dataset=None, device=None, config=None, log=print, progress=None, dry_run=False):
    """Train in this process, or in each process of a torchrun job (WORLD_SIZE > 1, or an initialised
    process group). `dataset` and `config` replace the ones named by opts.data and opts.preset (tests use
    tiny ones; opts' shape options still apply on top of `config`). Returns the run directory.

    progress: a tqdm bar on stdout; None shows it when stdout is a terminal. dry_run: log the resolved model,
    recipe and data summary (`Trainer.describe`) and return None without creating a run directory.
    Raises TrainingDiverged on a non-finite loss and TrainingInterrupted after SIGINT/SIGTERM (see Trainer.run)."""
    world_size, rank = 1, 0
    if dist.is_available() and (dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) > 1):
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
        world_size, rank = dist.get_world_size(), dist.get_rank()
        if device is None and torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", rank))
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
    trainer = Trainer(opts, rank=rank, world_size=world_size, device=device, dataset=dataset, config=config, log=log)
    if dry_run:
        trainer.log(trainer.describe())
        return None
    return trainer.run(progress=sys.stdout.isatty() if progress is None else progress)
