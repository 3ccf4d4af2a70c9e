"""`ssgan train` on your own data: the model's shape from the command line, class names from the data, size checks,
--dry-run, resuming from a renamed snapshot, SIGINT/SIGTERM, the progress bar and float32 regularisation."""
import json
import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from ssgan.train.loop import Trainer, TrainingInterrupted, TrainOptions, resume_options, train
from ssgan.train.snapshot import list_snapshots, load_snapshot

import ssgan
from ssgan.cli import main

from conftest import TINY_CONFIG

CLASSES = ("backdrop", "skin", "hair", "lens", "lips")  # not a preset's, with one transparent class
# A tiny 32-px model on top of the demo preset, from the command line.
TINY_ARGS = ["--preset", "demo", "--size", "32", "--style-dim", "16", "--local-channel", "16", "--local-layers", "4",
             "--depth-layers", "3", "--coarse-channel", "16", "--coarse-size", "16", "--min-feat-size", "8",
             "--channel-base", "16", "--batch", "2", "--metrics", "none", "--grid", "2", "--mixing", "0"]  # fmt: skip
TINY = ssgan.SSGConfig(**TINY_CONFIG, local_layers=4, depth_layers=3)

pytestmark = pytest.mark.usefixtures("one_thread")


def make_folder(root, count=4, size=32, num_classes=len(CLASSES)):
    """images/ and masks/ (PNG label maps) of random pixels and labels."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        labels = rng.integers(0, num_classes, (size, size), dtype=np.uint8)
        Image.fromarray(labels, mode="L").save(root / "masks" / f"{i}.png")
    return root


class NamedData(torch.utils.data.Dataset):
    """Random 16-px rows that record their class names, as a prepared dataset does (class_names=None: they don't)."""

    def __init__(self, class_names=("background", "a", "b"), n=8, size=16, num_classes=3):
        self.class_names, self.n, self.size = class_names, n, size
        self.num_classes = num_classes if class_names is None else len(class_names)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        labels = torch.randint(0, self.num_classes, (self.size, self.size), generator=g)
        mask = torch.nn.functional.one_hot(labels, self.num_classes).permute(2, 0, 1).float() * 2 - 1
        return {"image": torch.rand(3, self.size, self.size, generator=g) * 2 - 1, "mask": mask}


def tiny_options(tmp_path, **kw):
    base = {"out": str(tmp_path / "runs"), "kimg": 0.008, "batch": 2, "d_reg_every": 2, "g_reg_every": 2,
            "path_reg": 0.5, "tick_kimg": 0.002, "snap": 1, "metrics": (), "keep_snapshots": 0, "ema_kimg": 0.01,
            "lr": 0.002, "grid": 2}  # fmt: skip
    return TrainOptions(**(base | kw))


def quiet(*args, **kwargs):
    pass


# --- the model's shape ---------------------------------------------------------------------------------------------
def test_derive_keeps_the_config_consistent():
    demo, celeba = ssgan.preset("demo"), ssgan.preset("celebamask-256")
    assert celeba.derive(size=512) == ssgan.preset("celebamask-512")
    demo = ssgan.preset("demo")  # its 4 positional octaves are set, not the log2(size) rule: a new size keeps them
    assert demo.derive(size=128).pos_frequencies == 4 and demo.derive(pos_frequencies=5).pos_frequencies == 5
    assert demo.derive(size=32).render_channels == {32: 64}
    assert demo.derive(size=128).render_channels == {32: 64, 64: 32, 128: 16}  # halved per doubling
    assert demo.derive(min_feat_size=4).render_channels == {8: 64, 16: 64, 32: 64, 64: 32}
    assert demo.derive(channel_base=16).disc_channels == {64: 16, 32: 16, 16: 16, 8: 16, 4: 16}
    assert demo.derive(channel_multiplier=1).render_channels == {32: 512, 64: 256}  # StyleGAN2's table
    # new class names keep the transparent classes that are still there, by name
    assert celeba.derive(class_names=("background", "face", "hat", "glasses")).transparent == (3,)
    assert celeba.derive(class_names=("background", "face"), transparent=()).transparent == ()
    with pytest.raises(KeyError, match="unknown class 'lens'"):
        demo.derive(transparent=("lens",))
    with pytest.raises(ValueError, match="size=48 must be a power of two"):
        demo.derive(size=48)


def test_class_names_come_from_the_data_unless_given(tmp_path):
    def cfg(data, **kw):
        return Trainer(tiny_options(tmp_path, **kw), dataset=data, config=TINY, log=quiet).cfg

    sky = ("sky", "sea", "sand")
    assert cfg(NamedData(sky)).class_names == sky
    assert cfg(NamedData(sky), classes="3").class_names == sky  # a count that fits takes the data's names
    assert cfg(NamedData(sky), classes="air,water,land").class_names == ("air", "water", "land")
    with pytest.raises(ValueError, match=r"--classes 4 disagrees with the data .* records 3 classes \(sky, sea, s"):
        cfg(NamedData(sky), classes="4")
    with pytest.raises(ValueError, match=r"masks of 3 classes but the model has 2"):
        cfg(NamedData(None), classes="air,land")  # data without recorded names: the masks tell
    assert cfg(NamedData(None), classes="3", transparent="2").transparent == (2,)


def test_the_data_is_reopened_when_its_class_names_set_the_count(tmp_path, monkeypatch):
    """open_dataset needs a class count before the data's names are known; the names then decide."""
    from ssgan.train import data

    calls = []

    def fake_open_dataset(spec, size, num_classes, **kw):
        calls.append((spec, size, num_classes, kw["resize"]))
        return NamedData(("sky", "sea", "sand", "rock"), size=size)

    monkeypatch.setattr(data, "open_dataset", fake_open_dataset)
    trainer = Trainer(tiny_options(tmp_path, data="prepared", transparent="rock"), config=TINY, log=quiet)
    assert calls == [("prepared", 16, 3, False), ("prepared", 16, 4, False)]
    assert trainer.cfg.class_names == ("sky", "sea", "sand", "rock") and trainer.cfg.transparent == (3,)


def test_config_file_and_options_on_top_of_a_preset(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"style_dim": 8, "class_names": ["bg", "x", "y"]}))
    trainer = Trainer(tiny_options(tmp_path, config=str(tmp_path / "model.json"), local_channel=8, transparent="y"),
                      dataset=NamedData(), config=TINY, log=quiet)  # fmt: skip
    assert (trainer.cfg.style_dim, trainer.cfg.local_channel, trainer.cfg.class_names, trainer.cfg.transparent) == (
        8, 8, ("bg", "x", "y"), (2,))  # fmt: skip
    (tmp_path / "bad.json").write_text(json.dumps({"style_dims": 8}))
    with pytest.raises(ValueError, match=r"--config .*bad.json: unknown SSGConfig fields: \['style_dims'\]"):
        Trainer(tiny_options(tmp_path, config=str(tmp_path / "bad.json")), dataset=NamedData(), config=TINY, log=quiet)


# --- the command line end to end -----------------------------------------------------------------------------------
def test_cli_trains_a_five_class_folder_with_its_own_names(tmp_path, capsys):
    data = make_folder(tmp_path / "data")
    out = tmp_path / "runs"
    argv = ["train", "--data", str(data), "--out", str(out), "--classes", ",".join(CLASSES), "--transparent", "lens",
            *TINY_ARGS, "--kimg", "0.008", "--tick-kimg", "0.004", "--snap", "1"]  # fmt: skip
    assert main(argv + ["--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "model: 32x32, 5 classes (backdrop, skin, hair, lens, lips), transparent: lens" in printed
    assert f"data {data}: 4 rows, 32x32, 5 classes" in printed and '"style_dim": 16' in printed
    assert not out.exists()  # a dry run writes nothing

    assert main(argv) == 0
    assert "%|" not in capsys.readouterr().out  # no progress bar when stdout is not a terminal
    (run,) = out.iterdir()
    info = json.loads((run / "training_options.json").read_text())
    cfg = ssgan.SSGConfig.from_dict(info["config"])
    assert (cfg.size, cfg.class_names, cfg.transparent, cfg.style_dim, cfg.local_layers) == (32, CLASSES, (3,), 16, 4)
    assert info["options"]["classes"] == ",".join(CLASSES)
    for snap in list_snapshots(run):
        assert ssgan.SSGConfig.from_dict(json.loads(load_snapshot(snap)["config"])) == cfg
    final = ssgan.load_checkpoint(run / "network-final.safetensors")
    assert final.config == cfg and final.g_ema(z=torch.randn(1, 16)).seg.shape == (1, 5, 32, 32)

    # Ctrl-C in a resumed run: a final snapshot, a message saying how to resume, exit status 128 + SIGINT
    done = threading.Event()
    watcher = threading.Thread(target=interrupt_at_tick, args=(out, run, 3, done))
    watcher.start()
    try:
        status = main(["train", "--resume", str(run), "--kimg", "1", "--no-progress"])
    finally:
        done.set()
        watcher.join()
    assert status == 128 + signal.SIGINT
    captured = capsys.readouterr()
    err = captured.err
    assert "interrupted by SIGINT" not in captured.out and err.count("interrupted by SIGINT") == 1  # once, stderr
    (interrupted,) = set(out.iterdir()) - {run}
    assert f"Resume with: ssgan train --resume {interrupted}" in err
    snapshot = list_snapshots(interrupted)[-1]  # the final one (the signal comes a step or so after tick 3)
    step = load_snapshot(snapshot)["step"]
    assert step >= 4 + 6 and f"(step {step})" in err
    # ... and the snapshot resumes under any name, keeping the model
    shutil.copy(snapshot, tmp_path / "my_model.pth")
    assert main(["train", "--resume", str(tmp_path / "my_model.pth"), "--kimg", str((step + 2) * 2 / 1000)]) == 0
    (last,) = set(out.iterdir()) - {run, interrupted}
    info = json.loads((last / "training_options.json").read_text())
    assert info["start_step"] == step and ssgan.SSGConfig.from_dict(info["config"]) == cfg
    assert load_snapshot(list_snapshots(last)[-1])["step"] == step + 2

    # images of another size are an error naming both sizes, before any run directory is made ...
    argv64 = ["train", "--data", str(data), "--out", str(tmp_path / "runs64"), "--classes", ",".join(CLASSES),
              *TINY_ARGS, "--size", "64"]  # fmt: skip
    assert main(argv64) == 2
    err = capsys.readouterr().err
    assert "image is 32x32 but the model's size is 64x64" in err and "0.png" in err
    assert not (tmp_path / "runs64").exists()
    assert main(argv64 + ["--resize", "--dry-run"]) == 0  # ... unless asked to resize
    assert "(resized and centre-cropped)" in capsys.readouterr().out


def interrupt_at_tick(out, old_run, tick, done, timeout=60):
    """Send this process SIGINT once a new run under `out` has logged `tick` (its signal handlers are in place)."""
    deadline = time.time() + timeout
    while time.time() < deadline and not done.is_set():
        for log in out.glob("*/log.txt"):
            if log.parent != old_run and f"tick {tick} " in log.read_text():
                os.kill(os.getpid(), signal.SIGINT)
                return
        time.sleep(0.02)


def test_resume_from_a_renamed_snapshot(tmp_path):
    run = train(tiny_options(tmp_path, kimg=0.004), dataset=NamedData(), config=TINY, log=quiet)
    renamed = tmp_path / "my_model.pth"
    shutil.copy(list_snapshots(run)[-1], renamed)
    opts = resume_options(str(renamed), {"kimg": 0.008})
    assert opts.kimg == 0.008 and opts.d_reg_every == 2  # the snapshot's options came with it
    resumed = train(opts, dataset=NamedData(), log=quiet)
    state = load_snapshot(list_snapshots(resumed)[-1])
    assert state["step"] == 4 and json.loads((resumed / "training_options.json").read_text())["start_step"] == 2
    # a model checkpoint under any name starts from its weights; a shape option that differs is refused
    shutil.copy(run / "network-final.safetensors", tmp_path / "weights.bin")
    weights = Trainer(tiny_options(tmp_path, resume=str(tmp_path / "weights.bin")), dataset=NamedData(), log=quiet)
    assert weights.cfg == TINY and weights.step == 0
    with pytest.raises(ValueError, match=r"would change \(style_dim 16 -> 32"):
        Trainer(resume_options(str(renamed), {"style_dim": 32}), dataset=NamedData(), log=quiet)
    (tmp_path / "junk.pth").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="neither a training snapshot nor a model checkpoint"):
        Trainer(tiny_options(tmp_path, resume=str(tmp_path / "junk.pth")), dataset=NamedData(), log=quiet)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_writes_a_final_snapshot_and_the_run_resumes(tmp_path, capsys, stop):
    """With the lr ramp-down over the last half, which the resumed half runs through."""
    full = train(tiny_options(tmp_path, lr_rampdown=0.5), dataset=NamedData(), config=TINY, log=quiet)

    def interrupt_after_tick_1(line):
        if line.startswith("tick 1 "):
            os.kill(os.getpid(), stop)  # delivered to the handler between two steps

    handler = signal.getsignal(stop)
    with pytest.raises(TrainingInterrupted, match=rf"{stop.name} at 0.002 kimg \(step 1\).*Resume with: ssgan train "
                       r"--resume .*00001") as stopped:  # fmt: skip
        train(tiny_options(tmp_path, snap=100, lr_rampdown=0.5), dataset=NamedData(), config=TINY, log=interrupt_after_tick_1,
              progress=True)  # fmt: skip
    assert stopped.value.signal == stop
    assert signal.getsignal(stop) is handler  # put back
    bar = capsys.readouterr().out
    assert "/0.008 kimg [" in bar and "s/kimg" in bar and "d_loss=" in bar  # the progress bar
    (interrupted,) = [p for p in (tmp_path / "runs").iterdir() if p != full]
    assert [p.name for p in list_snapshots(interrupted)] == ["snapshot-000000002.pt"]
    assert f"interrupted by {stop.name}" in (interrupted / "log.txt").read_text()
    resumed = train(resume_options(str(interrupted), {}), dataset=NamedData(), log=quiet)
    a, b = (load_snapshot(list_snapshots(run)[-1]) for run in (full, resumed))
    assert a["step"] == b["step"] == 4
    for key in ("G", "G_ema", "D"):  # the interrupted and resumed run continues the uninterrupted one
        for name, t in a[key].items():
            torch.testing.assert_close(b[key][name], t, rtol=1e-6, atol=1e-6, msg=f"{key}.{name}")


def test_a_run_failing_before_its_first_step_leaves_no_run_directory(tmp_path):
    class BrokenAfterRowZero(NamedData):
        def __getitem__(self, i):
            if i > 0:
                raise OSError(f"row {i}: disk gone")
            return super().__getitem__(i)

    with pytest.raises(OSError, match="disk gone"):
        train(tiny_options(tmp_path), dataset=BrokenAfterRowZero(), config=TINY, log=quiet)
    assert list((tmp_path / "runs").iterdir()) == []


def test_bf16_regularisation_runs_in_float32(tmp_path):
    """Under autocast the adversarial forwards run bf16 layers, but the R1 and path-length passes (and so the
    gradients they penalise and take) are all float32. CPU autocast stands in for CUDA's."""
    trainer = Trainer(tiny_options(tmp_path), dataset=NamedData(), config=TINY, log=quiet)
    trainer.autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    passes = {"D": [], "G": []}  # per forward of D / of the generator step: did any layer compute in bf16?

    def watch(name, network):
        network.register_forward_pre_hook(lambda *_: passes[name].append(False))
        for layer in network.modules():
            layer.register_forward_hook(lambda m, i, out: passes[name].__setitem__(
                -1, passes[name][-1] or getattr(out, "dtype", None) == torch.bfloat16))  # fmt: skip

    watch("D", trainer.D)
    watch("G", trainer.g_step)
    real = NamedData()[0]
    stats = trainer.train_step(real["image"][None].repeat(2, 1, 1, 1), real["mask"][None].repeat(2, 1, 1, 1))
    assert passes["D"] == [True, True, False, True]  # fake and real, R1, the G step's
    assert passes["G"] == [True, True, False]  # fakes for D, the G step, path length
    assert all(np.isfinite(v) for v in stats.values()) and "r1_seg" in stats and "path_penalty" in stats


# --- the data's recorded class names, relative data paths, Ctrl-C --------------------------------------------------
def test_a_folder_with_id2label_trains_with_its_names_without_classes(tmp_path, capsys, monkeypatch):
    from ssgan.train.data import write_class_names

    data = make_folder(tmp_path / "data", count=2, num_classes=4)
    write_class_names(data, ("sky", "sea", "sand", "rock"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    argv = ["train", "--data", "data", "--out", str(out), *TINY_ARGS, "--kimg", "0.002", "--tick-kimg", "0.002"]
    assert main(argv + ["--dry-run"]) == 0  # the preset has 7 classes: the data's 4 names decide
    assert "4 classes (sky, sea, sand, rock)" in capsys.readouterr().out
    assert main(argv + ["--no-progress"]) == 0
    (run,) = out.iterdir()
    info = json.loads((run / "training_options.json").read_text())
    assert ssgan.SSGConfig.from_dict(info["config"]).class_names == ("sky", "sea", "sand", "rock")
    assert info["options"]["data"] == str(data.resolve())  # stored absolute: --resume works from any directory
    # a real mismatch still names both numbers
    assert main(argv + ["--classes", "5", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--classes 5 disagrees with the data" in err and "records 4 classes (sky, sea, sand, rock)" in err
    monkeypatch.chdir(tmp_path / "data")
    assert main(["train", "--resume", str(run), "--kimg", "0.004", "--no-progress"]) == 0


def test_ctrl_c_before_the_first_step_prints_one_line_and_leaves_no_run(tmp_path, capsys, monkeypatch):
    data = make_folder(tmp_path / "data", count=2)
    out = tmp_path / "runs"

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_step", interrupted)  # Ctrl-C before the first step ends
    argv = ["train", "--data", str(data), "--out", str(out), "--classes", ",".join(CLASSES), *TINY_ARGS,
            "--no-progress"]  # fmt: skip
    assert main(argv) == 130
    captured = capsys.readouterr()
    assert captured.err == "ssgan train: interrupted (SIGINT)\n" and "Traceback" not in captured.out
    assert list(out.iterdir()) == []
    monkeypatch.setattr(Trainer, "__init__", interrupted)  # ... or while the data is still being opened
    assert main(argv) == 130 and capsys.readouterr().err == "ssgan train: interrupted (SIGINT)\n"
    import ssgan.cli

    monkeypatch.setattr(ssgan.cli, "build_parser", lambda: interrupted(None))  # ... or while the commands are being imported
    assert main(argv) == 130 and capsys.readouterr().err == "ssgan: interrupted (SIGINT)\n"


def test_train_help_gives_each_recipe_default_per_preset(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("demo 6.0 / celebamask 4800.0", "demo 0.01 / celebamask 0.002", "demo 0.3 / celebamask 0.0",
                    "demo 100.0 / celebamask 1000.0", "demo 0.9 / celebamask 0.3", "demo 0.25 / celebamask 10.0"):
        assert f"(default: {default})" in text, default
