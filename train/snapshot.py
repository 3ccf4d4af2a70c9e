"""Training snapshots: everything needed to continue a run exactly where it stopped.

A snapshot is one `torch.save` file of tensors and plain Python values (no classes), written atomically
(`ssgan.io.atomic_write`) and read back with `torch.load(weights_only=True)` after a CRC check, so loading one never
runs pickled code and a damaged one is reported by name. The RNG states of torch, numpy and Python are stored as
tensors and tuples.
"""
import random
import re
from pathlib import Path

import numpy as np
import torch

from ssgan.checkpoint import SNAPSHOT_FORMAT
from ssgan.io import DamagedFileError, read_torch_file, torch_save

SNAPSHOT_PATTERN = re.compile(r"snapshot-(\d{9})\.pt$")


class SnapshotError(ValueError):
    """A snapshot that cannot be read or does not fit this run."""


def snapshot_name(images_seen):
    return f"snapshot-{images_seen:09d}.pt"


def capture_rng():
    """The states of every random generator the loop draws from, as tensors and tuples."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state):
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_snapshot(path, state):
    """Write a training state (a dict of tensors, state dicts and plain values) atomically."""
    return torch_save(state, path)


def load_snapshot(path):
    """Read a snapshot written by `save_snapshot` without unpickling anything but tensors and containers.
    Raises DamagedFileError (naming the file) for a damaged one, SnapshotError for anything else that is not one."""
    path = Path(path)
    if not path.is_file():
        raise SnapshotError(f"no snapshot at {path}")
    try:
        state = read_torch_file(path, "a training snapshot")
    except DamagedFileError:
        raise
    except ValueError as e:  # not a torch.save file, or one that needs more than tensors
        raise SnapshotError(str(e)) from None
    if not isinstance(state, dict) or state.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path} is not an ssgan training snapshot")
    return state


def sniff_snapshot(path):
    """The training snapshot in file `path`, recognised by its content whatever the file is called (a renamed
    `my_model.pth` works); None when the file holds something else, such as a model checkpoint.

    Snapshots are torch zip archives; one is memory-mapped first, so that telling a large original checkpoint
    apart costs no read of its tensors, then read in full by `load_snapshot`.
    """
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return None
    try:
        peek = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 (not loadable as plain tensors and containers, so not a snapshot)
        return None
    if not isinstance(peek, dict) or peek.get("format") != SNAPSHOT_FORMAT:
        return None
    del peek
    return load_snapshot(path)


def list_snapshots(run_dir):
    """Snapshots of a run directory, oldest first."""
    run_dir = Path(run_dir)
    found = [(int(m.group(1)), p) for p in run_dir.glob("snapshot-*.pt") if (m := SNAPSHOT_PATTERN.search(p.name))]
    return [p for _, p in sorted(found)]


def latest_snapshot(run_dir):
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise SnapshotError(f"{run_dir} has no snapshot-*.pt to resume from")
    return snaps[-1]


def load_latest_snapshot(run_dir):
    """The newest snapshot of a run directory. When it is damaged, the error names it and the newest older snapshot,
    which --resume can take instead."""
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise SnapshotError(f"{run_dir} has no snapshot-*.pt to resume from")
    try:
        return load_snapshot(snaps[-1])
    except DamagedFileError as e:
        hint = f"; the previous snapshot is {snaps[-2]} (pass it to --resume)" if len(snaps) > 1 else ""
        raise DamagedFileError(f"{e}{hint}") from None


def prune_snapshots(run_dir, keep):
    """Delete all but the newest `keep` snapshots (keep <= 0 keeps all)."""
    if keep <= 0:
        return
    for path in list_snapshots(run_dir)[:-keep]:
        path.unlink(missing_ok=True)
