"""Compile every Triton kernel for real GPUs without a GPU, and read its registers, spills and shared memory.

    python -m ssgan.kernel_check            # full sweep: every preset, batch and dtype mode, every autotune config,
                                            # sm_90 and sm_80; rewrites benchmarks/kernel_resources.md
    python -m ssgan.kernel_check --quick    # CI subset: celebamask-256 at batch 16, one config per autotuned
                                            # kernel, sm_90, fp32 and bf16; checks against the table

How: the model (generator and discriminator, forward and backward of a training step, plus a forward with a
composition mask) and a few direct op calls at sizes off the tile sizes run on the `meta` device, once with every
op forced onto its Triton path and once dispatched as impl="auto" is on CUDA. Each `kernel[grid](...)` the
library's own launchers make is recorded instead of launched (for autotuned kernels: every config). The record goes through Triton's own argument binder for the
target (pointer alignment and integers divisible by 16 become `tt.divisibility` hints, integers equal to 1
constants), then `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`, which runs Triton's
passes and the bundled ptxas; registers and spill bytes are read from ptxas's verbose log. Launching, warm-up and
Triton's AOT tool need a driver; none of this does. It must run without TRITON_INTERPRET (the module refuses).

Fails (exit status 1) on a compile error, on shared memory over the card's per-block limit, on spills over the
kernel's budget (`SPILL_BUDGETS`, zero unless a reason is written there) or when the checked-in table is stale.
Results are cached by compile key (~/.cache/ssgan/kernel_check.json), so a rerun only compiles what changed.
"""
import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import math
import os
import re
import sys
import time
import types
from pathlib import Path

import torch

KERNEL_MODULES = ("bias_act", "class_mlp", "depth_fusion", "modulated_conv2d", "upfirdn2d")
TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_resources.md"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ssgan" / "kernel_check.json"


@dataclasses.dataclass(frozen=True)
class Card:
    """What the occupancy and shared-memory checks need of an architecture (limits per compute capability from
    NVIDIA's CUDA C++ Programming Guide)."""

    name: str
    arch: int
    sms: int  # the card the launch sizes are taken for (H100 SXM, A100)
    regs_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_blocks_per_sm: int = 32
    shared_per_sm: int = 0  # bytes
    shared_per_block: int = 0  # bytes, opt-in maximum
    shared_reserved_per_block: int = 1024


CARDS = {
    90: Card("sm_90 (H100)", 90, sms=132, shared_per_sm=228 * 1024, shared_per_block=227 * 1024),
    80: Card("sm_80 (A100)", 80, sms=108, shared_per_sm=164 * 1024, shared_per_block=163 * 1024),
}

# Dtype modes: the model's dtype and torch's TF32 switches (matmul for the class MLP and the fusion, cuDNN for
# the convolutions; torch's own default is matmul off, cuDNN on, i.e. "fp32" for the first and "tf32" for the second).
MODES = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "fp16": (torch.float16, False),
    "bf16": (torch.bfloat16, False),
}

# Spill budgets in bytes of spill stores, per kernel name; zero for any kernel not listed. Each entry says why
# the spill is left. (Empty: no kernel spills at the shapes checked.)
SPILL_BUDGETS = {}

PRESET_BATCHES = {"celebamask-256": (1, 4, 16), "celebamask-512": (1, 4, 16), "demo": (16,)}


def _kernel_module(name):
    return importlib.import_module(f"ssgan.kernels.{name}")


# ---------------------------------------------------------------------------------------------------------------
# Capturing launches


@dataclasses.dataclass
class Launch:
    kernel: str  # the @triton.jit function's name
    fn: object  # its JITFunction
    args: tuple  # positional arguments, tensors replaced by `_Pointer`s
    kwargs: dict  # keyword arguments: constexprs and launch options
    configs: list  # autotune configs (each a dict of constexprs and options); [{}] for a plain launch
    where: str  # what made the launch, for messages


class _Pointer:
    """Stands in for a tensor argument: its dtype and an address with the tensor's offset into its storage.

    Fresh CUDA allocations are aligned to at least 256 bytes, so only the storage offset decides whether Triton
    sees the pointer as divisible by 16."""

    def __init__(self, tensor):
        self.dtype = tensor.dtype
        self._address = 4096 + tensor.storage_offset() * tensor.element_size()

    def data_ptr(self):
        return self._address

    def ptr_range(self):
        return 0


def _freeze(value):
    return _Pointer(value) if isinstance(value, torch.Tensor) else value


@contextlib.contextmanager
def capture(card, where, dispatch="triton"):
    """Within the block, ops are dispatched as on a CUDA device (`dispatch`: "triton", every op on its Triton path,
    or "auto", what impl="auto" picks there), and every kernel launch is appended to the yielded list."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    launches = []
    label = [where]

    def jit_run(self, *args, grid, warmup, **kwargs):
        launches.append(Launch(self.__name__, self, tuple(map(_freeze, args)), kwargs, [{}], label[0]))

    def tuned_run(self, *args, grid, warmup, **kwargs):
        configs = [config.all_kwargs() for config in self.configs]
        launches.append(Launch(self.fn.__name__, self.fn, tuple(map(_freeze, args)), kwargs, configs, label[0]))

    patches = [(JITFunction, "run", jit_run), (Autotuner, "run", tuned_run)]
    props = types.SimpleNamespace(multi_processor_count=card.sms, name=card.name)
    patches.append((torch.cuda, "get_device_properties", lambda *_: props))
    from ssgan.kernels._dispatch import AUTO_ON_CUDA

    def resolve_impl(impl, *tensors, op=None):
        if dispatch == "triton" or impl == "triton":
            return "triton"
        return AUTO_ON_CUDA.get(op, ("triton",))[0] if impl == "auto" else impl

    for name in KERNEL_MODULES:
        patches.append((_kernel_module(name), "resolve_impl", resolve_impl))
    class_mlp = _kernel_module("class_mlp")
    patches.append((class_mlp, "_resident_programs", lambda device: 4 * card.sms))
    # The model's transparent classes are known to exist whenever it passes them; on `meta` .any() cannot be read.
    fusion = _kernel_module("depth_fusion")
    patches.append((fusion, "_transparent_flags", lambda t: None if t is None else t.to(torch.int8).contiguous()))
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in patches]
    try:
        for owner, attr, value in patches:
            setattr(owner, attr, value)
        yield launches, label
    finally:
        for owner, attr, value in saved:
            setattr(owner, attr, value)


@contextlib.contextmanager
def dtype_mode(mode):
    """torch's TF32 switches as the mode sets them (restored afterwards)."""
    _, tf32 = MODES[mode]
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def model_launches(preset, batch, mode, card):
    """The launches of one training step (G forward, D forward, backward to everything) and of a forward with a
    composition mask, for a preset model at a batch size, on `meta` tensors, with every op on its Triton path and
    with what impl="auto" runs on CUDA."""
    import ssgan

    cfg = ssgan.preset(preset)
    dtype, _ = MODES[mode]
    with torch.device("meta"):
        g = ssgan.Generator(cfg).to(dtype)
        d = ssgan.Discriminator(cfg).to(dtype)
        w = torch.empty(batch, cfg.n_latent_expand, cfg.style_dim, dtype=dtype, requires_grad=True)
        keep = torch.ones(batch, cfg.num_classes, dtype=dtype)
    launches = []
    for dispatch in ("triton", "auto"):
        with capture(card, f"{preset} batch {batch}", dispatch) as (found, _), dtype_mode(mode):
            out = g.synthesis(w)
            (d(out.image, out.seg).sum() + out.image.sum()).backward()
            with torch.no_grad():
                g.synthesis(w, composition_mask=keep)
        launches += found
    return launches


def off_tile_launches(mode, card):
    """Direct op calls at sizes that are not multiples of the tile sizes, and with the flags the model leaves off."""
    from ssgan.kernels import bias_act, class_mlp, depth_fusion, styled_conv2d, upfirdn2d, make_kernel

    dtype, _ = MODES[mode]
    meta = dict(device="meta", dtype=dtype)
    grad = dict(meta, requires_grad=True)
    with capture(card, "off-tile sizes") as (launches, label), dtype_mode(mode):
        label[0] = "class_mlp K=3 L=4 C=32 P=23x23 batch 3, detach_texture"
        K, L, C, P, B = 3, 4, 32, 23 * 23, 3
        hidden, depth = class_mlp(torch.empty(P, C, **grad), torch.empty(K, L, C, C, **grad),
                                  torch.empty(K, L, C, **grad), torch.empty(B, K, L, C, **grad),
                                  torch.empty(K, C, **grad), torch.empty(K, **grad), 1, detach_texture=True)
        (hidden.sum() + depth.sum()).backward()
        label[0] = "depth_fusion K=5 P=23x23 C=48 F=100 batch 3, composition mask and transparent class"
        K, C, F_ = 5, 48, 100
        features, mask = depth_fusion(torch.empty(B, K, P, **grad), torch.empty(B, K, P, C, **grad),
                                      torch.empty(K, F_, C, **grad), torch.empty(K, F_, **grad),
                                      torch.tensor([False, True, False, False, False], device="meta"),
                                      torch.empty(B, K, **meta))
        (features.sum() + mask.sum()).backward()
        for up in (1, 2):
            label[0] = f"styled_conv2d 40->24 channels, 23x23, up={up}, per-sample styles, batch 3"
            x = torch.empty(B, 40, 23, 23, **grad)
            y = styled_conv2d(x, torch.empty(24, 40, 3, 3, **grad), torch.empty(B, 40, **grad),
                              torch.empty(24, **grad), torch.empty(B, 1, 23 * up, 23 * up, **meta),
                              torch.empty((), **grad), up=up)
            y.sum().backward()
        label[0] = "bias_act over dim 2 of [3, 5, 7]; upfirdn2d 2x up and 2x down of 23x23"
        x = torch.empty(3, 5, 7, **grad)
        bias_act(x, torch.empty(7, **grad), dim=2).sum().backward()
        fir = make_kernel((1, 3, 3, 1)).to(device="meta", dtype=torch.float32)
        x = torch.empty(B, 5, 23, 23, **grad)
        (upfirdn2d(x, fir, up=2, padding=(2, 1)).sum() + upfirdn2d(x, fir, down=2, padding=1).sum()).backward()
    return launches


# ---------------------------------------------------------------------------------------------------------------
# Compiling


@dataclasses.dataclass
class Result:
    kernel: str
    config: str  # "" for a kernel with one launch configuration
    mode: str
    arch: int
    num_warps: int
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    stack: int = 0
    shared: int = 0
    error: str = ""
    where: str = ""

    def blocks_per_sm(self):
        """Resident blocks per SM that the registers, shared memory and threads allow."""
        card = CARDS[self.arch]
        threads = 32 * self.num_warps
        regs_per_warp = math.ceil(self.registers * 32 / 256) * 256  # allocated per warp in units of 256
        by_regs = (card.regs_per_sm // regs_per_warp) // self.num_warps if regs_per_warp else card.max_blocks_per_sm
        by_shared = card.shared_per_sm // (self.shared + card.shared_reserved_per_block)
        return min(by_regs, by_shared, card.max_threads_per_sm // threads, card.max_blocks_per_sm)

    def occupancy(self):
        """Resident warps over the SM's maximum of 64."""
        return self.blocks_per_sm() * self.num_warps / (CARDS[self.arch].max_threads_per_sm // 32)


def _config_label(config):
    blocks = {k: v for k, v in config.items() if k.isupper()}
    if not blocks:
        return ""
    label = "x".join(str(v) for v in blocks.values())
    return f"{label} w{config.get('num_warps', 4)} s{config.get('num_stages', 3)}"


QUICK_MODES = ("fp32", "bf16")


def sweep_digest():
    """A digest of the compiles of the quick subset in every dtype mode (kernel sources with what they call, Triton,
    the arguments' specialisation, the configs): the table is stale when it changes. Costs captures, no compiles."""
    keys = set()
    for mode in MODES:
        for launch in launches_for(mode, CARDS[90], quick=True):
            keys.update(prepare(launch, config, 90)[-1] for config in launch.configs)
    return hashlib.sha256("".join(sorted(keys)).encode()).hexdigest()[:16]


class Compiler:
    """triton.compile for a target with the ptxas log captured; results cached by compile key."""

    def __init__(self, cache_path=CACHE):
        import triton
        from triton import knobs

        self.triton = triton
        self.cache_path = cache_path
        self.cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        self.compiled = 0
        self.seconds = 0.0
        knobs.nvidia.dump_ptxas_log = True
        knobs.compilation.always_compile = True  # the log is printed only when ptxas runs

    def save(self):
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.cache))
        tmp.replace(self.cache_path)

    def compile(self, launch, config, mode, arch):
        from triton.compiler import ASTSource

        target, signature, constexprs, attrs, options, key = prepare(launch, config, arch)
        result = Result(launch.kernel, _config_label(config), mode, arch, options.num_warps, where=launch.where)
        if key in self.cache:
            return dataclasses.replace(result, **self.cache[key])
        log = io.StringIO()
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(log):
                compiled = self.triton.compile(ASTSource(launch.fn, signature, constexprs, attrs), target=target,
                                               options=options.__dict__)
        except Exception as error:  # noqa: BLE001 - any compiler failure is a finding, reported with its message
            message = str(error).strip().splitlines()
            result.error = f"{type(error).__name__}: {message[0] if message else ''}"[:300]
            return result
        finally:
            self.seconds += time.perf_counter() - start
            self.compiled += 1
        found = _parse_ptxas_log(log.getvalue(), launch.kernel)
        found["shared"] = compiled.metadata.shared
        self.cache[key] = found
        return dataclasses.replace(result, **found)


def prepare(launch, config, arch):
    """What `triton.compile` gets for a launch with one config on an architecture, as the JIT would pass it, and a
    key that changes whenever any of it (or the kernel's source, or Triton) does."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    kwargs = {**launch.kwargs, **config}
    binder = create_function_from_signature(launch.fn.signature, launch.fn.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = launch.fn._pack_args(backend, kwargs, bound, specialization, options)
    portable = sorted((k, v) for k, v in options.__dict__.items() if k != "extern_libs")  # no install paths
    key = hashlib.sha256(repr((launch.fn.cache_key, triton.__version__, arch, signature, sorted(constexprs.items()),
                               sorted(attrs.items()), portable)).encode()).hexdigest()
    return target, signature, constexprs, attrs, options, key


def _parse_ptxas_log(log, kernel):
    frame = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    regs = re.search(r"Used (\d+) registers", log)
    if not (frame and regs):
        raise RuntimeError(f"no ptxas resource report for {kernel} in the compiler's output:\n{log[-2000:]}")
    return dict(registers=int(regs.group(1)), stack=int(frame.group(1)), spill_stores=int(frame.group(2)),
                spill_loads=int(frame.group(3)))


# ---------------------------------------------------------------------------------------------------------------
# The sweep, the table and the checks


def launches_for(mode, card, quick, kernel=None, presets=None, all_configs=False):
    """Every launch of the sweep for one dtype mode (quick: one preset and batch, first autotune config only);
    `kernel` keeps the kernels whose name contains it, `presets` maps preset names to batch sizes."""
    launches = []
    presets = presets or ({"celebamask-256": (16,)} if quick else PRESET_BATCHES)
    for preset, batches in presets.items():
        for batch in batches:
            launches += model_launches(preset, batch, mode, card)
    if not quick:
        launches += off_tile_launches(mode, card)
    launches = [launch for launch in launches if kernel is None or kernel in launch.kernel]
    for launch in launches:
        if quick and not all_configs:
            launch.configs = launch.configs[:1]
    return launches


def _problems(result):
    card = CARDS[result.arch]
    if result.error:
        return [f"compile error: {result.error}"]
    found = []
    if result.shared > card.shared_per_block:
        found.append(f"{result.shared} B shared memory > {card.shared_per_block} B per block on {card.name}")
    budget, _reason = SPILL_BUDGETS.get(result.kernel, (0, ""))
    if result.spill_stores > budget:
        found.append(f"{result.spill_stores} B spill stores > budget {budget} B")
    return found


def sweep(modes, archs, quick, compiler, log=print, **select):
    """Compile every launch (`select`: see `launches_for`); returns the results, one per distinct outcome."""
    results, seen = [], set()
    for arch in archs:
        card = CARDS[arch]
        for mode in modes:
            for launch in launches_for(mode, card, quick, **select):
                for config in launch.configs:
                    result = compiler.compile(launch, config, mode, arch)
                    ident = (result.kernel, result.config, mode, arch, result.registers, result.spill_stores,
                             result.shared, result.error)
                    if ident not in seen:
                        seen.add(ident)
                        results.append(result)
            log(f"sm_{arch} {mode}: {len(results)} distinct results so far, {compiler.compiled} compiles, "
                f"{compiler.seconds:.0f} s compiling")
            compiler.save()
    return results


def summarize(results):
    """One row per (kernel, config, mode, arch): the worst registers, spills, shared memory and occupancy."""
    rows = {}
    for r in results:
        if r.error:
            continue
        key = (r.kernel, r.config, r.mode, r.arch)
        row = rows.setdefault(key, dict(num_warps=r.num_warps, registers=0, spill_stores=0, shared=0, occupancy=1.0))
        row["registers"] = max(row["registers"], r.registers)
        row["spill_stores"] = max(row["spill_stores"], r.spill_stores)
        row["shared"] = max(row["shared"], r.shared)
        row["occupancy"] = min(row["occupancy"], r.occupancy())
    return rows


HEADER = """# Kernel resources (generated; do not edit)

Written by `python -m ssgan.kernel_check` (the full sweep) and checked by `tests/test_kernel_check.py`: every Triton
kernel compiled for sm_90 and sm_80 with Triton {triton} and its bundled ptxas, no GPU involved, as the library's
launchers launch it in one training step and one masked forward of the presets celebamask-256 and -512 (batch 1, 4,
16) and demo (batch 16), plus direct calls at sizes off the tile sizes. Dtype modes: fp32 (TF32 off, torch's matmul
default), tf32 (TF32 on, torch's cuDNN default), fp16, bf16. Each row is the worst over the shapes and flags compiled
for it ({shapes} distinct results in all): registers per thread, spill stores (bytes per thread), shared memory per
block, and the occupancy those allow (resident warps / 64 per SM). The autotuned conv kernels have one row per config
(BLOCK sizes, warps, stages).

Sources digest: `{digest}`

| kernel | config | mode | arch | warps | registers | spill stores (B) | shared (B) | occupancy |
|---|---|---|---|---|---|---|---|---|
"""


def write_table(results, digest, path=TABLE):
    import triton

    rows = summarize(results)
    lines = [HEADER.format(triton=triton.__version__, shapes=len(results), digest=digest)]
    for (kernel, config, mode, arch), row in sorted(rows.items(), key=lambda item: (item[0][0], item[0][1],
                                                                                     item[0][3], item[0][2])):
        lines.append(f"| {kernel} | {config or '-'} | {mode} | sm_{arch} | {row['num_warps']} | {row['registers']} | "
                     f"{row['spill_stores']} | {row['shared']} | {row['occupancy']:.2f} |\n")
    path.write_text("".join(lines))


def read_table(path=TABLE):
    """(digest, rows) of the checked-in table; rows keyed like `summarize`."""
    text = path.read_text()
    digest = re.search(r"Sources digest: `(\w+)`", text).group(1)
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9 or not cells[3].startswith("sm_"):
            continue
        kernel, config, mode, arch, warps, regs, spills, shared, occupancy = cells
        rows[(kernel, "" if config == "-" else config, mode, int(arch[3:]))] = dict(
            num_warps=int(warps), registers=int(regs), spill_stores=int(spills), shared=int(shared),
            occupancy=float(occupancy))
    return digest, rows


def check_against_table(results, digest, path=TABLE):
    """Problems where the table is stale (`digest`: see `sweep_digest`) or does not cover what was compiled."""
    if not path.exists():
        return [f"{path} is missing: run `python -m ssgan.kernel_check` to write it"]
    listed_digest, table = read_table(path)
    problems = []
    if listed_digest != digest:
        problems.append(f"{path.name} was written for other kernels, launches or Triton (digest {listed_digest}, now "
                        f"{digest}): rerun `python -m ssgan.kernel_check`")
    for key, row in summarize(results).items():
        listed = table.get(key)
        name = "/".join(map(str, key))
        if listed is None:
            problems.append(f"{name} is not in {path.name}")
        elif row["registers"] > listed["registers"] or row["spill_stores"] > listed["spill_stores"] \
                or row["shared"] > listed["shared"]:
            problems.append(f"{name}: {row} exceeds the table's {listed}")
    return problems


def driver_report(preset="celebamask-256", batch=4, modes=("fp32", "tf32", "bf16")):
    """On a CUDA machine: run a training step of the preset with every Triton path (and with impl="auto"), then
    compare the registers and local-memory (spill) bytes the driver reports for each compiled kernel with the
    checked-in table. Returns (markdown lines, problems)."""
    import ssgan
    from triton.runtime.jit import JITFunction

    arch = 10 * torch.cuda.get_device_capability()[0] + torch.cuda.get_device_capability()[1]
    _, table = read_table(TABLE) if TABLE.exists() else (None, {})
    kernels = {}
    for name in KERNEL_MODULES:
        for value in vars(_kernel_module(name)).values():
            if isinstance(value, JITFunction):
                kernels[value.__name__] = value
    tuned_keys = {}  # autotuned kernel -> the block names of its configs, in the table's label order
    for value in vars(_kernel_module("modulated_conv2d")).values():
        if isinstance(value, tuple) and len(value) == 2 and hasattr(value[1], "configs"):
            tuned_keys[value[0].__name__] = list(value[1].configs[0].kwargs)
    lines = [f"| kernel | config | mode | sm_{arch} registers (driver / table) | local bytes (driver) / "
             f"spill stores (table) | match |\n", "|---|---|---|---|---|---|\n"]
    problems, seen = [], set()
    cfg = ssgan.preset(preset)
    for mode in modes:
        dtype, _ = MODES[mode]
        torch.manual_seed(0)
        g = ssgan.Generator(cfg).cuda().to(dtype)
        d = ssgan.Discriminator(cfg).cuda().to(dtype)
        for dispatch in ("triton", "auto"):
            os.environ["SSGAN_KERNELS"] = dispatch
            with dtype_mode(mode):
                w = torch.randn(batch, cfg.n_latent_expand, cfg.style_dim, device="cuda", dtype=dtype,
                                requires_grad=True)
                out = g.synthesis(w)
                (d(out.image, out.seg).sum() + out.image.sum()).backward()
        os.environ.pop("SSGAN_KERNELS")
        torch.cuda.synchronize()
        for kernel_name, fn in kernels.items():
            for cache in fn.device_caches.values():
                for compiled in list(cache[0].values()):
                    if id(compiled) in seen:
                        continue
                    seen.add(id(compiled))
                    compiled._init_handles()
                    config = ""
                    if kernel_name in tuned_keys:
                        try:
                            constants = {fn.arg_names[path[0]]: v for path, v in compiled.src.constants.items()}
                            sizes = "x".join(str(constants[k]) for k in tuned_keys[kernel_name])
                            config = f"{sizes} w{compiled.metadata.num_warps} s{compiled.metadata.num_stages}"
                        except (AttributeError, KeyError, IndexError):
                            config = "?"  # matched to no row: reported, never silently passed
                    row = table.get((kernel_name, config, mode, arch))
                    regs, local = compiled.n_regs, compiled.n_spills
                    ok = row is not None and regs <= row["registers"] and (local > 0) == (row["spill_stores"] > 0)
                    listed = "-" if row is None else f"{row['registers']}"
                    spilled = "-" if row is None else f"{row['spill_stores']}"
                    lines.append(f"| {kernel_name} | {config or '-'} | {mode} | {regs} / {listed} | {local} / "
                                 f"{spilled} | {'yes' if ok else 'NO'} |\n")
                    if not ok:
                        problems.append(f"{kernel_name} [{config or '-'}] {mode} sm_{arch}: driver {regs} registers, "
                                        f"{local} local bytes; table {row}")
    return lines, problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ssgan.kernel_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI subset: celebamask-256 batch 16, first autotune config, sm_90, fp32 and bf16")
    parser.add_argument("--arch", type=int, nargs="+", choices=sorted(CARDS), help="architectures (default: all)")
    parser.add_argument("--mode", nargs="+", choices=list(MODES), help="dtype modes (default: all)")
    parser.add_argument("--kernel", help="only kernels whose name contains this (a partial sweep; writes nothing)")
    parser.add_argument("--preset", nargs="+", help="only these presets, as NAME or NAME:BATCH (writes nothing)")
    parser.add_argument("--all-configs", action="store_true", help="with --quick: every autotune config")
    parser.add_argument("--verbose", action="store_true", help="print every distinct result")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite the table after a full sweep")
    parser.add_argument("--driver", metavar="REPORT.md",
                        help="on a CUDA machine: compare what the driver reports for the kernels of a training step "
                             "with the table, and write the comparison here (no compile sweep)")
    args = parser.parse_args(argv)
    if args.driver:
        lines, problems = driver_report()
        Path(args.driver).write_text("".join(lines))
        print("".join(lines))
        for problem in problems:
            print("MISMATCH", problem)
        return 1 if problems else 0
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        parser.error("TRITON_INTERPRET=1 is set: the compile check must run with the compiler; unset it")
    archs = args.arch or ([90] if args.quick else [90, 80])
    modes = args.mode or list(QUICK_MODES if args.quick else MODES)
    compiler = Compiler()
    start = time.perf_counter()
    presets = None
    if args.preset:
        presets = {}
        for item in args.preset:
            name, _, batch = item.partition(":")
            presets.setdefault(name, []).extend([int(batch)] if batch else PRESET_BATCHES[name])
    results = sweep(modes, archs, args.quick, compiler, log=lambda m: print(m, file=sys.stderr, flush=True),
                    kernel=args.kernel, presets=presets, all_configs=args.all_configs)
    if args.verbose:
        for r in results:
            print(f"{r.kernel} [{r.config or '-'}] {r.mode} sm_{r.arch} w{r.num_warps}: {r.registers} regs, "
                  f"{r.spill_stores} B spill stores, {r.shared} B shared, occupancy {r.occupancy():.2f}"
                  f"{' ' + r.error if r.error else ''}")
    problems = [f"{r.kernel} [{r.config or '-'}] {r.mode} sm_{r.arch} ({r.where}): {p}"
                for r in results for p in _problems(r)]
    full = not args.quick and not (args.arch or args.mode or args.kernel or args.preset)
    if full and not args.no_write:
        write_table(results, sweep_digest())
        print(f"wrote {TABLE}")
    elif args.quick and not args.kernel:
        problems += check_against_table(results, sweep_digest())
    print(f"{len(results)} distinct results, {compiler.compiled} compiled in {compiler.seconds:.0f} s "
          f"({time.perf_counter() - start:.0f} s in all)")
    for problem in problems:
        print("FAIL", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
