"""Issue #11 items 6 and 9: saves that work on every OS (Windows simulated), and damaged files ssgan wrote.

Every writer goes through ssgan.io.atomic_write; every reader of ssgan's own files names a damaged file in a clear
error, and caches (metric features, the builtin dataset) are silently recomputed instead.
"""
import errno
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, shared_path
from ssgan.train import builtin as builtin_module
from ssgan.train import metrics
from ssgan.train.data import DataError, open_dataset
from ssgan.train.loop import save_png
from ssgan.train.snapshot import load_snapshot, save_snapshot, snapshot_name

import ssgan
from ssgan import editing as E
from ssgan import io
from ssgan.cli import main
from ssgan.encoder import LatentEncoder, load_encoder, save_encoder

TINY = ssgan.SSGConfig(**TINY_CONFIG)


pytestmark = pytest.mark.usefixtures("one_thread")


def truncated(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def garbled(path, at=0.6, length=64):
    """Overwrite `length` bytes at fraction `at` of the file (inside the tensor data for every format here)."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    data[start : start + length] = bytes(255 - b for b in data[start : start + length])
    path.write_bytes(bytes(data))
    return path


# --- item 9: atomic saves on every OS -----------------------------------------------------------
@pytest.fixture
def windows_like(monkeypatch):
    """os.open on a folder raises PermissionError, and os.fsync on a descriptor opened read-only raises EBADF: what
    Windows does, which the old atomic saves ran into."""
    import fcntl

    real_open, real_fsync = os.open, os.fsync
    calls = {"fsync": 0}

    def open_(path, flags, *args, **kw):
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)

    def fsync(fd):
        fd = fd if isinstance(fd, int) else fd.fileno()
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, "Bad file descriptor")
        calls["fsync"] += 1
        return real_fsync(fd)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def _writers(tmp_path):
    """(name, write(path), read(path)) for every kind of file ssgan writes."""
    G = ssgan.Generator(TINY)
    encoder = LatentEncoder(TINY, width=8, slot_width=8, feature_size=4)
    w = torch.randn(1, 2 + 2 * TINY.num_classes, TINY.style_dim)

    def features_cache(path):  # the metric cache writer, through real_features
        extractor = _FlatFeatures()
        metrics.real_features(_Images(4), extractor, 4, 2, path.parent, "key")
        return next(path.parent.glob("real-features-*.pt"))

    return [
        ("checkpoint", lambda p: ssgan.save_checkpoint(p / "m.safetensors", TINY, G), ssgan.load_checkpoint),
        ("snapshot", lambda p: save_snapshot(p / snapshot_name(4), {"format": "ssgan-snapshot", "w": w}),
         load_snapshot),
        ("latents.npy", lambda p: E.save_latents(p / "w.npy", w), E.load_latents),
        ("latents.safetensors", lambda p: E.save_latents(p / "w.safetensors", w), E.load_latents),
        ("encoder", lambda p: save_encoder(p / "enc.safetensors", encoder), load_encoder),
        ("metric cache", lambda p: features_cache(p / "x"), lambda p: io.read_torch_file(p, "features")),
        ("png", lambda p: E.save_png(np.zeros((4, 4, 3), np.uint8), p / "a.png") or p / "a.png", None),
        ("grid png", lambda p: save_png(np.zeros((4, 4, 3), np.uint8), p / "g.png") or p / "g.png", None),
        ("json", lambda p: io.write_text(p / "training_options.json", "{}"), lambda p: json.loads(p.read_text())),
        ("jsonl", lambda p: io.append_line(p / "metric-fid.jsonl", "{}") or p / "metric-fid.jsonl", None),
    ]  # fmt: skip


class _FlatFeatures:
    tag = "flat"

    def __call__(self, images):
        return images.flatten(1).double()


class _Images:
    def __init__(self, n, size=8):
        self.images = torch.rand(n, 3, size, size) * 2 - 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i]}


def test_every_writer_works_where_folders_cannot_be_opened_and_read_only_fsync_fails(tmp_path, windows_like):
    """The issue's example (os.open on a folder, fsync on a read-only handle: both fail on Windows) for every writer:
    checkpoints, snapshots, latents, encoders, metric caches, images, JSON, logs."""
    for name, write, read in _writers(tmp_path):
        calls = windows_like["fsync"]
        path = write(tmp_path)
        assert path.is_file(), name
        assert windows_like["fsync"] > calls, f"{name}: the file was not fsynced through its writing handle"
        if read is not None:
            read(path)
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"


def test_folder_fsync_is_skipped_on_windows_and_tolerated_where_unsupported(tmp_path, monkeypatch):
    def no_open(*args, **kw):
        raise AssertionError("a folder must not be opened on Windows")

    with monkeypatch.context() as m:
        m.setattr(os, "name", "nt")
        m.setattr(os, "open", no_open)
        io.fsync_directory(tmp_path)
    # a file system that cannot fsync a folder (EINVAL) is fine; an I/O error on the file itself is not
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert io.write_text(tmp_path / "a.txt", "new").read_text() == "new"

    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="Input/output"):
        io.write_text(tmp_path / "a.txt", "newer")
    assert (tmp_path / "a.txt").read_text() == "new"
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = io.write_bytes(tmp_path / "m.bin", b"old")
    with pytest.raises(OSError, match="No space"), io.atomic_write(path) as f:
        f.write(b"half of the new ")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.bin"]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = io.write_text(tmp_path / "a.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


# --- item 6: damaged files ssgan wrote ----------------------------------------------------------
@pytest.mark.parametrize("damage", [truncated, garbled, lambda p: p.write_bytes(b"") or p])
def test_damaged_files_are_named_in_a_clear_error(tmp_path, damage):
    """Checkpoints, snapshots, latents (also direction files), encoder weights: cut short, garbled or empty.
    (.npy has no checksum, so bytes garbled inside its array cannot be noticed; its header and length can.)"""
    for name, write, read in _writers(tmp_path):
        if read is None or name in ("metric cache", "json") or (name == "latents.npy" and damage is garbled):
            continue
        path = damage(write(tmp_path))
        with pytest.raises(io.DamagedFileError, match=f"cannot read {path}.*damaged") as caught:
            read(path)
        assert "Traceback" not in str(caught.value), name


def test_original_checkpoint_garbled_inside_a_tensor_is_refused(tmp_path):
    """torch.load does not check the zip CRCs; a garbled original .pt used to load with wrong weights."""
    path = tmp_path / "garbled.pt"
    path.write_bytes(shared_path("fixtures", "official_small", "checkpoint.pt").read_bytes())
    garbled(path)
    with pytest.raises(ssgan.checkpoint.CheckpointError, match="garbled.pt .*damaged"):
        ssgan.load_checkpoint(path)


def test_commands_report_damaged_files_by_name(tmp_path, capsys):
    ckpt = ssgan.save_checkpoint(tmp_path / "m.safetensors", TINY, ssgan.Generator(TINY))
    truncated(ckpt)
    assert main(["generate", "--ckpt", str(ckpt), "--seeds", "0", "--out", str(tmp_path / "gen")]) == 2
    assert f"cannot read {ckpt}" in capsys.readouterr().err
    older = save_snapshot(tmp_path / "run" / snapshot_name(4), {"format": "ssgan-snapshot", "w": torch.ones(9)})
    snapshot = save_snapshot(tmp_path / "run" / snapshot_name(8), {"format": "ssgan-snapshot", "w": torch.ones(9)})
    truncated(snapshot)
    for argv in (["metrics", str(snapshot), "--metrics", "classes"], ["train", "--resume", str(tmp_path / "run")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"cannot read {snapshot}" in err and "damaged" in err and "Traceback" not in err
    assert f"the previous snapshot is {older} (pass it to --resume)" in err  # resuming a run names the way out
    latent = E.save_latents(tmp_path / "w.npy", torch.randn(1, 8, 16))
    truncated(latent)
    small = str(shared_path("fixtures", "official_small", "checkpoint.pt"))
    edit = ["edit", "--ckpt", small, "--regions", "base", "--out", str(tmp_path / "e")]
    assert main(edit + ["--latent", str(latent), "--source-seeds", "1"]) == 2
    assert f"cannot read {latent}" in capsys.readouterr().err
    direction = garbled(E.save_latents(tmp_path / "d.safetensors", torch.randn(1, 64)), at=0.9, length=16)
    assert main(edit + ["--seeds", "0", "--direction", str(direction)]) == 2
    assert f"cannot read {direction}" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("damage", [truncated, garbled, lambda p: p.write_bytes(b"") or p,
                                    lambda p: torch.save(torch.full((4, 192), float("nan")), p) or p])  # fmt: skip
def test_a_damaged_metric_cache_is_recomputed(tmp_path, damage):
    data, extractor = _Images(4), _FlatFeatures()
    fresh = metrics.real_features(data, extractor, 4, 2, tmp_path, "key")
    (cache,) = tmp_path.glob("real-features-*.pt")
    damage(cache)
    again = metrics.real_features(data, extractor, 4, 2, tmp_path, "key")
    assert torch.equal(again, fresh)
    assert torch.equal(io.read_torch_file(cache, "features"), fresh)  # rewritten whole


def test_a_damaged_metric_cache_found_mid_training_is_recomputed(tmp_path):
    from ssgan.train.loop import Trainer, TrainOptions

    net = torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()))
    net.save(str(tmp_path / "features.pt"))
    opts = TrainOptions(out=str(tmp_path / "runs"), batch=2, metrics=("fid", "kid"), metric_samples=4, image_only=True,
                        inception=str(tmp_path / "features.pt"), metric_cache=str(tmp_path / "cache"))  # fmt: skip
    trainer = Trainer(opts, dataset=_Images(6, 16), config=TINY, log=lambda *a, **k: None)
    trainer.run_dir = tmp_path
    first = trainer.evaluate()
    for damage in (truncated, garbled):
        (cache,) = (tmp_path / "cache").glob("real-features-*.pt")
        damage(cache)
        assert trainer.evaluate() == first
    assert len((tmp_path / "metric-fid.jsonl").read_text().splitlines()) == 3


def test_an_unwritable_metric_cache_does_not_stop_the_metric(tmp_path, monkeypatch):
    def full_disk(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(metrics, "torch_save", full_disk)
    with pytest.warns(UserWarning, match="could not cache"):
        features = metrics.real_features(_Images(2), _FlatFeatures(), 2, 2, tmp_path, "key")
    assert features.shape == (2, 192)


def test_a_damaged_builtin_cache_is_drawn_again(tmp_path, monkeypatch):
    def raw_images(ds):
        return [row["image"]["bytes"] for row in ds.cast_column("image", __import__("datasets").Image(decode=False))]

    expected = raw_images(builtin_module.builtin_dataset(8, 16, seed=1, cache_dir=tmp_path))
    (folder,) = tmp_path.glob("builtin-*")
    (arrow,) = folder.glob("*.arrow")
    damages = [lambda: truncated(arrow), lambda: garbled(arrow, at=0.5, length=4000),
               lambda: (folder / "state.json").write_text("{"), lambda: (folder / "ssgan-manifest.json").unlink(),
               lambda: arrow.unlink()]  # fmt: skip
    draws = []
    real_generate = builtin_module.generate_builtin
    monkeypatch.setattr(builtin_module, "generate_builtin", lambda *a: draws.append(a) or real_generate(*a))
    for damage in damages:
        damage()
        assert raw_images(builtin_module.builtin_dataset(8, 16, seed=1, cache_dir=tmp_path)) == expected
    assert len(draws) == len(damages)
    assert builtin_module.builtin_dataset(8, 16, seed=1, cache_dir=tmp_path) is not None and len(draws) == len(damages)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no damaged or temporary folders left


def test_a_log_line_cut_short_stays_one_bad_line(tmp_path):
    """metric-*.jsonl and stats.jsonl: appending after a crash mid-line must not merge the next record into it."""
    results = {"samples": {"generated": 4}, "agreement": 0.5}
    metrics.append_results(tmp_path, results, kimg=1)
    log = tmp_path / "metric-agreement.jsonl"
    log.write_bytes(log.read_bytes()[:-9])  # a crash mid-write
    metrics.append_results(tmp_path, results, kimg=2)
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["kimg"] == 2
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_prepare_writes_a_dataset_all_or_nothing_and_a_damaged_one_is_named(tmp_path, monkeypatch):
    import datasets

    out = tmp_path / "prepared"
    argv = ["prepare", "builtin", str(out), "--num-images", "4", "--size", "16"]
    real_save = datasets.Dataset.save_to_disk

    def full_disk(self, folder, **kw):
        (Path(folder) / "data-00000-of-00001.arrow").parent.mkdir(parents=True, exist_ok=True)
        (Path(folder) / "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", full_disk)
    with pytest.raises(OSError, match="No space"):
        main(argv)
    assert list(tmp_path.iterdir()) == []  # neither a half-written dataset nor a temporary folder
    monkeypatch.setattr(datasets.Dataset, "save_to_disk", real_save)
    out.mkdir()  # an empty folder may be named as the output
    assert main(argv) == 0
    assert len(open_dataset(str(out), 16, 7)) == 4
    (out / "state.json").write_text("{")
    with pytest.raises(DataError, match=f"cannot read the save_to_disk folder {out}: it is damaged"):
        open_dataset(str(out), 16, 7)
