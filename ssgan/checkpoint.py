"""Checkpoints: ssgan's own format (safetensors + JSON config) and the original SemanticStyleGAN `.pt`.

The original format is read with `torch.load(weights_only=True)` only; every width is inferred from
the tensors' shapes, and every tensor of the original state dicts is used exactly once.
"""
import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ssgan.config import CELEBAMASK_CLASSES, SSGConfig, default_class_names
from ssgan.discriminator import Discriminator
from ssgan.generator import Generator
from ssgan.io import DamagedFileError, load_safetensors, read_torch_file, save_safetensors
from ssgan.kernels import make_kernel
from ssgan.layers import BLUR_TAPS

FORMAT = "ssgan"
FORMAT_VERSION = "1"
MODULES = ("g", "g_ema", "d")
SNAPSHOT_FORMAT = "ssgan-snapshot"  # the "format" entry of a training snapshot (ssgan.train.loop.Trainer.state_dict)
FINAL_MODEL = "network-final.safetensors"  # what a finished training run leaves in its directory
SNAPSHOT_FILE = re.compile(r"snapshot-(\d+)\.pt")
# Names that wrappers put into state-dict keys: DataParallel and DistributedDataParallel hold the model as
# `.module`, torch.compile as `._orig_mod`, FSDP and activation checkpointing as `._fsdp_wrapped_module` and
# `._checkpoint_wrapped_module` (any of them may wrap a submodule, so they may sit anywhere in a key).
WRAPPER_SEGMENTS = ("module", "_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


class DamagedCheckpointError(CheckpointError, DamagedFileError):
    """A checkpoint file cut short or garbled (the message names it)."""


@dataclass
class Checkpoint:
    config: SSGConfig
    g_ema: Generator
    g: Generator | None = None
    d: Discriminator | None = None
    source: Path | None = None  # the file read (for a run directory: its final model or newest snapshot)


# --- wrapped models -----------------------------------------------------------------------------
def unwrap_model(module):
    """The model inside DataParallel / DistributedDataParallel / torch.compile wrappers, nested in any order."""
    while True:
        if isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):  # torch.compile's OptimizedModule
            module = module._orig_mod
        else:
            return module


def strip_wrapper_prefixes(state, what="state dict"):
    """State-dict keys without the names wrappers add (`module.`, `_orig_mod.`, FSDP's), so a model saved while wrapped
    loads into the bare model. Raises CheckpointError if two keys become one."""
    out = {}
    for key, t in state.items():
        bare = ".".join(p for p in key.split(".") if p not in WRAPPER_SEGMENTS)  # no model of ours has such names
        if bare in out:
            raise CheckpointError(f"{what}: two tensors are named {bare!r} once wrapper prefixes are removed")
        out[bare] = t
    return out


# --- the original format ------------------------------------------------------------------------
def _flat(t):
    return t.reshape(-1)


def _scalar(t):
    return t.reshape(())


def _matrix(t):
    return t.reshape(t.shape[0], -1)


class _Converter:
    """Moves tensors from an original state dict into ours, consuming each exactly once."""

    def __init__(self, source, what):
        self.source = dict(source)
        self.what = what
        self.out = {}

    def take(self, key, reshape=None):
        if key not in self.source:
            raise CheckpointError(f"{self.what}: missing tensor {key!r}")
        t = self.source.pop(key)
        return reshape(t) if reshape else t

    def put(self, ours, key, reshape=None):
        self.out[ours] = self.take(key, reshape)

    def check_kernel(self, key, gain):
        expected = make_kernel(BLUR_TAPS, gain)
        t = self.take(key)
        if t.shape != expected.shape or not torch.allclose(t.float(), expected):
            raise CheckpointError(f"{self.what}: {key!r} is not the standard [1,3,3,1] blur kernel")

    def finish(self):
        if self.source:
            raise CheckpointError(f"{self.what}: unexpected tensors {sorted(self.source)[:8]}")
        return self.out


def _count(keys, pattern, start=0):
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if found != set(range(start, start + len(found))):
        raise CheckpointError(f"non-contiguous layer indices for {pattern!r}: {sorted(found)}")
    return len(found)


def config_from_original(g_sd, d_sd=None, args=None):
    """Infer an SSGConfig from the shapes of an original generator state dict (and D, and args)."""
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    keys = list(g_sd)
    try:
        num_classes = g_sd["render_net.to_segs.0.conv.weight"].shape[0]
        n_mlp = _count(keys, r"style\.(\d+)\.weight$", start=1) if "style.1.weight" in g_sd else 0
        local_channel, style_dim = g_sd["local_nets.0.linears.0.conv.modulation.weight"].shape
        local_layers = _count(keys, r"local_nets\.0\.linears\.(\d+)\.conv\.weight$")
        coarse_channel = g_sd["local_nets.0.to_feat.conv.weight"].shape[0]
        pos_channels = g_sd["pos_embed.weights"].shape[1]
        n_convs = _count(keys, r"render_net\.convs\.(\d+)\.weight$")
        noise_sizes = [g_sd[f"render_net.noises.noise_{i}"].shape[-1] for i in range(0, n_convs, 2)]
        in_widths = [g_sd[f"render_net.convs.{i}.weight"].shape[1] for i in range(0, n_convs, 2)]
        out_widths = [g_sd[f"render_net.convs.{i}.weight"].shape[0] for i in range(0, n_convs, 2)]
    except KeyError as e:
        raise CheckpointError(f"not a SemanticStyleGAN generator: missing tensor {e.args[0]!r}") from None
    if n_mlp != args.get("n_mlp", n_mlp) or num_classes != args.get("seg_dim", num_classes):
        raise CheckpointError(f"checkpoint args {args} disagree with the tensors' shapes")
    size = 2 ** ((pos_channels // 2 - 1) // 2)
    if noise_sizes[-1] != size:
        raise CheckpointError(f"positional encoding implies size {size}, render net ends at {noise_sizes[-1]}")
    # The block whose input gains `coarse_channel` extra channels starts from the coarse grid.
    joins = [res // 2 for res, i, prev in zip(noise_sizes, in_widths, [coarse_channel] + out_widths) if i != prev]
    coarse_size = joins[0] if joins else args.get("coarse_size", 64)
    fields = dict(
        size=size, style_dim=style_dim, n_mlp=n_mlp, local_layers=local_layers, local_channel=local_channel,
        coarse_channel=coarse_channel, coarse_size=coarse_size, min_feat_size=noise_sizes[0] // 2,
        depth_layers=args.get("depth_layers", 6), base_layers=args.get("base_layers", 2),
        residual_refine=args.get("residual_refine", True), detach_texture=args.get("detach_texture", False),
        channel_multiplier=args.get("channel_multiplier", 2),
        render_channels=dict(zip(noise_sizes, out_widths)),
    )  # fmt: skip
    if num_classes == len(CELEBAMASK_CLASSES):
        fields["class_names"] = CELEBAMASK_CLASSES
        fields["transparent"] = tuple(args.get("transparent_dims", (10, 12)))
    else:
        fields["class_names"] = default_class_names(num_classes)  # as `ssgan train --classes K` names them
        fields["transparent"] = tuple(args.get("transparent_dims", ()))
    if d_sd is not None:
        n_blocks = _count(list(d_sd), r"convs_img\.(\d+)\.conv1\.0\.weight$", start=1)
        widths = [d_sd["convs_img.0.0.weight"].shape[0]]
        widths += [d_sd[f"convs_img.{n}.conv2.1.weight"].shape[0] for n in range(1, n_blocks + 1)]
        fields["disc_channels"] = {size >> n: c for n, c in enumerate(widths)}
    else:
        fields["disc_channels"] = None
    try:
        return SSGConfig(**fields)
    except ValueError as e:
        raise CheckpointError(f"inferred configuration is invalid: {e}") from None


def convert_generator(sd, cfg: SSGConfig, what="g_ema"):
    """Original generator state dict -> ssgan Generator state dict."""
    c = _Converter(sd, what)
    for i in range(cfg.n_mlp):
        c.put(f"mapping.layers.{i}.weight", f"style.{i + 1}.weight")
        c.put(f"mapping.layers.{i}.bias", f"style.{i + 1}.bias")
    c.put("local.pos_weight", "pos_embed.weights", _matrix)
    K, L = cfg.num_classes, cfg.local_layers
    stacks = {name: [] for name in ("weight", "style_weight", "style_bias", "bias", "feat_weight", "feat_scale",
                                    "feat_bias", "depth_weight", "depth_scale", "depth_bias")}  # fmt: skip
    for k in range(K):
        net = f"local_nets.{k}"
        for layer in range(L):
            conv = f"{net}.linears.{layer}.conv"
            stacks["weight"].append(c.take(f"{conv}.weight", lambda t: t.reshape(t.shape[1], t.shape[2])))
            stacks["style_weight"].append(c.take(f"{conv}.modulation.weight"))
            stacks["style_bias"].append(c.take(f"{conv}.modulation.bias"))
            stacks["bias"].append(c.take(f"{net}.linears.{layer}.activate.bias"))
        heads = [("feat", "to_feat")] + ([("depth", "to_depth")] if k > 0 else [])
        for ours, theirs in heads:
            stacks[f"{ours}_weight"].append(c.take(f"{net}.{theirs}.conv.weight", _matrix))
            stacks[f"{ours}_scale"].append(c.take(f"{net}.{theirs}.conv.modulation", _flat))
            stacks[f"{ours}_bias"].append(c.take(f"{net}.{theirs}.bias", _flat))
            c.check_kernel(f"{net}.{theirs}.upsample.kernel", gain=4)
    for name, tensors in stacks.items():
        t = torch.stack(tensors)
        if name in ("weight", "style_weight", "style_bias", "bias"):
            t = t.reshape(K, L, *t.shape[1:])
        c.out[f"local.{name}"] = t
    c.out["local.depth_weight"] = c.out["local.depth_weight"].reshape(K - 1, -1)  # [K-1, 1, C] -> [K-1, C]
    c.out["local.depth_bias"] = c.out["local.depth_bias"].reshape(K - 1)
    for i in range(2 * len(cfg.render_resolutions)):
        conv = f"render_net.convs.{i}"
        c.put(f"render.convs.{i}.weight", f"{conv}.weight")
        c.put(f"render.convs.{i}.scale", f"{conv}.modulation", _flat)
        c.put(f"render.convs.{i}.noise_strength", f"{conv}.noise.weight", _scalar)
        c.put(f"render.convs.{i}.bias", f"{conv}.activate.bias")
        c.put(f"render.noise_{i}", f"render_net.noises.noise_{i}")
        if i % 2 == 0:
            c.check_kernel(f"{conv}.blur.kernel", gain=4)
    for i in range(len(cfg.render_resolutions)):
        for head in ("to_rgbs", "to_segs"):
            c.put(f"render.{head}.{i}.weight", f"render_net.{head}.{i}.conv.weight")
            c.put(f"render.{head}.{i}.scale", f"render_net.{head}.{i}.conv.modulation", _flat)
            c.put(f"render.{head}.{i}.bias", f"render_net.{head}.{i}.bias", _flat)
            c.check_kernel(f"render_net.{head}.{i}.upsample.kernel", gain=4)
    return c.finish()


def convert_discriminator(sd, cfg: SSGConfig, what="d"):
    """Original discriminator state dict -> ssgan Discriminator state dict."""
    c = _Converter(sd, what)
    for theirs, ours in (("convs_img", "image_branch"), ("convs_seg", "seg_branch")):
        c.put(f"{ours}.0.conv.weight", f"{theirs}.0.0.weight")
        c.put(f"{ours}.0.bias", f"{theirs}.0.1.bias")
        for n in range(1, len(cfg.disc_resolutions)):
            block, src = f"{ours}.{n}", f"{theirs}.{n}"
            c.put(f"{block}.conv1.conv.weight", f"{src}.conv1.0.weight")
            c.put(f"{block}.conv1.bias", f"{src}.conv1.1.bias")
            c.check_kernel(f"{src}.conv2.0.kernel", gain=1)
            c.put(f"{block}.conv2.conv.weight", f"{src}.conv2.1.weight")
            c.put(f"{block}.conv2.bias", f"{src}.conv2.2.bias")
            c.check_kernel(f"{src}.skip.0.kernel", gain=1)
            c.put(f"{block}.skip.conv.weight", f"{src}.skip.1.weight")
    c.put("final_conv.conv.weight", "final_conv.0.weight")
    c.put("final_conv.bias", "final_conv.1.bias")
    c.put("final_linear.weight", "final_linear.0.weight")
    c.put("final_linear.bias", "final_linear.0.bias")
    c.put("logit.weight", "final_linear.1.weight")
    c.put("logit.bias", "final_linear.1.bias")
    return c.finish()


def _load_into(module, state, what):
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{what}: missing tensors {missing[:8]}, unexpected tensors {extra[:8]}")
    for key, t in state.items():
        if t.shape != expected[key].shape:
            raise CheckpointError(
                f"{what}: tensor {key!r} has shape {tuple(t.shape)}, the model expects {tuple(expected[key].shape)}"
            )
    module.load_state_dict(state)
    return module


def _read_torch(path):
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        data = read_torch_file(path, "a checkpoint")
    except DamagedFileError as e:
        raise DamagedCheckpointError(str(e)) from None
    except ValueError as e:  # not a torch file, or a pickle that needs more than tensors
        raise CheckpointError(str(e)) from None
    return data


def _state_dict(data, key, path):
    """data[key] as a state dict without wrapper prefixes; None when absent."""
    if data.get(key) is None:
        return None
    if not isinstance(data[key], dict):
        raise CheckpointError(f"{path}: {key!r} is a {type(data[key]).__name__}, not a state dict")
    return strip_wrapper_prefixes(data[key], f"{path}: {key}")


def _from_original(path, data):
    g_ema, g, d = (_state_dict(data, key, path) for key in ("g_ema", "g", "d"))
    if g_ema is None:
        raise CheckpointError(f"{path}: 'g_ema' holds no state dict")
    cfg = config_from_original(g_ema, d, data.get("args"))
    ckpt = Checkpoint(config=cfg, g_ema=_load_into(Generator(cfg), convert_generator(g_ema, cfg), "g_ema"))
    if g is not None:
        ckpt.g = _load_into(Generator(cfg), convert_generator(g, cfg, "g"), "g")
    if d is not None:
        ckpt.d = _load_into(Discriminator(cfg), convert_discriminator(d, cfg), "d")
    return ckpt


def _from_snapshot(path, state):
    """A training snapshot (the dict of ssgan.train.loop.Trainer.state_dict): its config and G_ema, G, D."""
    try:
        cfg = SSGConfig.from_dict(json.loads(state["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: training snapshot without a usable model configuration ({e})") from None
    g_ema, g, d = (_state_dict(state, key, path) for key in ("G_ema", "G", "D"))
    if g_ema is None:
        raise CheckpointError(f"{path}: training snapshot without 'G_ema'")
    ckpt = Checkpoint(config=cfg, g_ema=_load_into(Generator(cfg), g_ema, f"{path}: G_ema"))
    if g is not None:
        ckpt.g = _load_into(Generator(cfg), g, f"{path}: G")
    if d is not None:
        ckpt.d = _load_into(Discriminator(cfg), d, f"{path}: D")
    return ckpt


def _from_torch_file(path):
    """An original SemanticStyleGAN .pt or an ssgan training snapshot, told apart by content, never by name."""
    data = _read_torch(path)
    if isinstance(data, dict) and data.get("format") == SNAPSHOT_FORMAT:
        return _from_snapshot(path, data)
    if isinstance(data, dict) and "g_ema" in data:
        return _from_original(path, data)
    found = f"a dict with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else type(data).__name__
    raise CheckpointError(f"{path} is neither a SemanticStyleGAN checkpoint (a dict with a 'g_ema' state dict) "
                          f"nor an ssgan training snapshot; it holds {found}")  # fmt: skip


def load_original(path):
    """Read an original SemanticStyleGAN `.pt` checkpoint into ssgan modules."""
    data = _read_torch(path)
    if not isinstance(data, dict) or "g_ema" not in data:
        raise CheckpointError(f"{path} is not a SemanticStyleGAN checkpoint (no 'g_ema' state dict)")
    return _from_original(path, data)


# --- ssgan's own format -------------------------------------------------------------------------
def save_checkpoint(path, config: SSGConfig, g_ema, g=None, d=None):
    """Write modules and config to one safetensors file, atomically (`ssgan.io.atomic_write`), with a checksum."""
    tensors = {}
    for name, module in (("g", g), ("g_ema", g_ema), ("d", d)):
        if module is not None:
            module = unwrap_model(module)
            kind = Discriminator if name == "d" else Generator
            if not isinstance(module, kind):
                raise TypeError(f"save_checkpoint: {name} must be a {kind.__name__}, got a {type(module).__name__}")
            state = strip_wrapper_prefixes(module.state_dict(), name)  # never write wrapper names
            for key, t in state.items():
                tensors[f"{name}.{key}"] = t.detach().to("cpu").contiguous()
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json()}
    return save_safetensors(path, tensors, metadata)


def _load_own(path):
    try:
        tensors, metadata = load_safetensors(path, "a safetensors checkpoint")
    except DamagedFileError as e:
        raise DamagedCheckpointError(str(e)) from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an ssgan checkpoint (no ssgan metadata)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported ssgan format version {metadata.get('format_version')!r}")
    try:
        cfg = SSGConfig.from_dict(json.loads(metadata["config"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the ssgan metadata holds no valid model configuration ({e})") from None
    parts = {name: {} for name in MODULES}
    for key, t in tensors.items():
        name, _, rest = key.partition(".")
        if name not in parts:
            raise CheckpointError(f"{path}: unexpected tensor {key!r}")
        parts[name][rest] = t
    if not parts["g_ema"]:
        raise CheckpointError(f"{path}: no g_ema tensors")
    parts = {name: strip_wrapper_prefixes(part, f"{path}: {name}") for name, part in parts.items()}
    ckpt = Checkpoint(config=cfg, g_ema=_load_into(Generator(cfg), parts["g_ema"], "g_ema"))
    if parts["g"]:
        ckpt.g = _load_into(Generator(cfg), parts["g"], "g")
    if parts["d"]:
        ckpt.d = _load_into(Discriminator(cfg), parts["d"], "d")
    return ckpt


def _is_run(folder):
    return (folder / FINAL_MODEL).is_file() or any(SNAPSHOT_FILE.fullmatch(p.name) for p in folder.iterdir())


def resolve_model_path(path):
    """The file a model path names: a file itself; a training run directory's final model, or else its newest
    snapshot. Raises CheckpointError when there is no such file."""
    path = Path(path)
    if path.is_dir():
        final = path / FINAL_MODEL
        if final.is_file():
            return final
        snapshots = [(int(m.group(1)), p) for p in path.iterdir() if (m := SNAPSHOT_FILE.fullmatch(p.name))]
        if snapshots:
            return max(snapshots)[1]
        runs = sorted(p.name for p in path.iterdir() if p.is_dir() and _is_run(p))
        hint = f"; it holds the runs {', '.join(runs[-8:])}: name one of them" if runs else ""
        raise CheckpointError(f"{path} is a folder but not a training run: it holds no {FINAL_MODEL} and no "
                              f"snapshot-*.pt{hint}")  # fmt: skip
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def load_checkpoint(path):
    """Load a model from any of the ways ssgan names one, told apart by content (never by file name):
    an ssgan checkpoint (.safetensors), an original SemanticStyleGAN `.pt`, a training snapshot, or a training
    run directory (its final model, or else its newest snapshot). Keys of models saved inside DataParallel,
    DistributedDataParallel or torch.compile wrappers load as those of the bare model.
    Raises CheckpointError naming the file and the problem."""
    path = resolve_model_path(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        ckpt = _load_own(path)
    else:  # a torch zip archive or a legacy pickle (or not a checkpoint at all, which the reader names)
        ckpt = _from_torch_file(path)
    ckpt.source = path
    return ckpt
