"""What people hand the entry points (issue #11): models of every kind and name, wrapped models, latents of every
shape, any class count, seed lists; and no partial output for an error that could be found before writing."""

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import ssgan
from ssgan import editing as E
from ssgan.checkpoint import CheckpointError, strip_wrapper_prefixes, unwrap_model
from ssgan.cli import main
from ssgan.config import SSGConfig
from ssgan.io import CHECKSUM_KEY
from ssgan.latents import LatentShapeNote, read_latent

from conftest import shared_path


def original():
    torch.serialization.add_safe_globals([argparse.Namespace])
    path = shared_path("fixtures", "official_small", "checkpoint.pt")
    return torch.load(path, map_location="cpu", weights_only=True)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def snapshot_dict(ckpt, step=0):
    """A training snapshot as ssgan.train.loop.Trainer.state_dict writes it (test_train checks the two agree)."""
    return {"format": "ssgan-snapshot", "version": 1, "config": ckpt.config.to_json(), "step": step,
            "images_seen": 4 * step, "G": ckpt.g.state_dict(), "G_ema": ckpt.g_ema.state_dict(),
            "D": ckpt.d.state_dict(), "ranks": []}  # fmt: skip


TINY = SSGConfig(size=32, style_dim=8, n_mlp=1, class_names=("class_0", "class_1", "class_2", "class_3"),
                 transparent=(), local_channel=8, coarse_channel=8, coarse_size=8, min_feat_size=4, local_layers=4,
                 depth_layers=3, render_channels={8: 8, 16: 8, 32: 8},
                 disc_channels={32: 8, 16: 8, 8: 8, 4: 8})  # fmt: skip


@pytest.fixture(scope="module")
def tiny():
    return ssgan.Checkpoint(TINY, ssgan.Generator(TINY), ssgan.Generator(TINY), ssgan.Discriminator(TINY))


@pytest.fixture(scope="module")
def models(tiny, tmp_path_factory):
    """One tiny model under every name ssgan writes: {kind: path} (the original format is the fixture's)."""
    root = tmp_path_factory.mktemp("models")
    paths = {"ssgan": ssgan.save_checkpoint(root / "model.safetensors", TINY, tiny.g_ema, g=tiny.g, d=tiny.d)}
    paths["snapshot"] = root / "weights.bin"  # recognised by content, whatever its name
    torch.save(snapshot_dict(tiny), paths["snapshot"])
    run = root / "00003-run"
    run.mkdir()
    torch.save(snapshot_dict(tiny, step=1), run / "snapshot-000000004.pt")
    torch.save(snapshot_dict(tiny, step=2), run / "snapshot-000000008.pt")
    paths["run"] = run
    return paths


class Compiled(torch.nn.Module):
    """Holds a model the way torch.compile's OptimizedModule does (as `_orig_mod`), without importing dynamo (6 s)."""

    def __init__(self, model):
        super().__init__()
        self._orig_mod = model


# --- 1. wrapped models ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module.module."])
def test_original_checkpoint_of_a_wrapped_model_loads(official_small, tmp_path, prefix):
    data = original()
    for name in ("g", "g_ema", "d"):
        data[name] = {prefix + key: t for key, t in data[name].items()}
    torch.save(data, tmp_path / "wrapped.pt")
    ckpt = ssgan.load_checkpoint(tmp_path / "wrapped.pt")
    assert all(same_weights(getattr(ckpt, n), getattr(official_small[0], n)) for n in ("g", "g_ema", "d"))


def test_wrapped_submodules_and_a_genuinely_missing_tensor(tmp_path):
    data = original()
    # torch.compile of a submodule puts `_orig_mod` inside the key
    data["g_ema"] = {k.replace("render_net.", "render_net._orig_mod."): t for k, t in data["g_ema"].items()}
    data["d"] = {"module." + k: t for k, t in data["d"].items()}
    del data["d"]["module.final_linear.0.weight"]
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"missing tensor 'final_linear\.0\.weight'"):
        ssgan.load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="two tensors are named 'a.weight'"):
        strip_wrapper_prefixes({"a.weight": 1, "module.a.weight": 2})


def test_saving_a_wrapped_model_writes_bare_names(tiny, tmp_path):
    g = tiny.g_ema
    for wrapped in (torch.nn.DataParallel(g), Compiled(g), torch.nn.DataParallel(Compiled(g))):
        assert unwrap_model(wrapped) is tiny.g_ema
        path = ssgan.save_checkpoint(tmp_path / "m.safetensors", TINY, wrapped, d=torch.nn.DataParallel(tiny.d))
        assert not [k for k in load_file(path) if "module." in k or "_orig_mod" in k]
        again = ssgan.load_checkpoint(path)
        assert same_weights(again.g_ema, tiny.g_ema) and same_weights(again.d, tiny.d)
    with pytest.raises(TypeError, match="d must be a Discriminator, got a Sequential"):
        ssgan.save_checkpoint(tmp_path / "m.safetensors", TINY, g, d=torch.nn.DataParallel(torch.nn.Sequential(tiny.d)))


def test_ssgan_files_and_snapshots_with_wrapper_names_load(tiny, tmp_path):
    ckpt = tiny
    path = ssgan.save_checkpoint(tmp_path / "m.safetensors", TINY, ckpt.g_ema)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors = {k.replace("g_ema.", "g_ema.module."): t for k, t in load_file(path).items()}
    metadata.pop(CHECKSUM_KEY)  # as written by a tool other than ssgan
    save_file(tensors, str(tmp_path / "wrapped.safetensors"), metadata=metadata)
    assert same_weights(ssgan.load_checkpoint(tmp_path / "wrapped.safetensors").g_ema, ckpt.g_ema)
    state = snapshot_dict(ckpt)
    state["G_ema"] = {"_orig_mod." + k: t for k, t in state["G_ema"].items()}
    torch.save(state, tmp_path / "snap.pt")
    assert same_weights(ssgan.load_checkpoint(tmp_path / "snap.pt").g_ema, ckpt.g_ema)


# --- 2. one way to name a model -------------------------------------------------------------------


def test_every_name_of_a_model_loads(models, tiny, official_small, tmp_path):
    for kind, path in models.items():
        loaded = ssgan.load_checkpoint(path)
        assert all(same_weights(getattr(loaded, n), getattr(tiny, n)) for n in ("g", "g_ema", "d")), kind
    assert ssgan.load_checkpoint(models["run"]).source.name == "snapshot-000000008.pt"  # the newest snapshot
    original = ssgan.load_checkpoint(shared_path("fixtures", "official_small", "checkpoint.pt"))
    assert same_weights(original.g_ema, official_small[0].g_ema)
    finished = tmp_path / "finished"
    finished.mkdir()
    ssgan.save_checkpoint(finished / "network-final.safetensors", TINY, tiny.g_ema)
    torch.save(snapshot_dict(tiny), finished / "snapshot-000000004.pt")
    assert ssgan.load_checkpoint(finished).source.name == "network-final.safetensors"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty is a folder but not a training run"):
        ssgan.load_checkpoint(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="it holds the runs finished: name one of them"):
        ssgan.load_checkpoint(tmp_path)  # the parent of run directories
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"neither .* nor an ssgan training snapshot.*'weights'"):
        ssgan.load_checkpoint(tmp_path / "other.pt")


def face_folder(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    Image.open(shared_path("data", "faces", "0.png")).convert("RGB").resize((32, 32)).save(folder / "a.png")
    return folder


# Each command with a model name of another kind (all kinds load through ssgan.load_checkpoint, tested above).
COMMANDS = {
    "generate": ("snapshot", ["generate", "--seeds", "3", "--device", "cpu"]),
    "edit": ("run", ["edit", "--seeds", "0", "--source-seeds", "1", "--regions", "class_1"]),
    "interpolate": ("snapshot", ["interpolate", "--seeds", "0", "--regions", "class_1", "--keys", "1", "--frames",
                                 "2"]),
    "components": ("run", ["components", "--seeds", "0", "--order", "class_1"]),
    "invert": ("snapshot", ["invert", "--steps", "1"]),
    "train-encoder": ("run", ["train-encoder", "--steps", "1", "--batch", "1", "--iters", "1", "--width", "8"]),
    "fit-direction": ("snapshot", ["fit-direction"]),
    "metrics": ("run", ["metrics", "--metrics", "classes", "--num", "2", "--batch", "2"]),
    "convert": ("snapshot", ["convert"]),
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_takes_every_model_name(models, tmp_path, command, capsys):
    kind, argv = COMMANDS[command]
    model, out = str(models[kind]), tmp_path / "out"
    if command == "metrics":
        argv = argv[:1] + [model] + argv[1:]
    elif command == "convert":
        argv = argv + [model, str(tmp_path / "converted.safetensors")]
    elif command == "fit-direction":
        x = torch.randn(8, TINY.n_latent, TINY.style_dim)
        E.save_latents(tmp_path / "lat.npy", x)
        np.savetxt(tmp_path / "labels.txt", (x[:, 0, 0] > 0).int().numpy(), fmt="%d")
        argv = argv + ["--ckpt", model, "--latents", str(tmp_path / "lat.npy"), "--labels",
                       str(tmp_path / "labels.txt"), "--out", str(tmp_path / "d.npy")]  # fmt: skip
    elif command == "train-encoder":
        argv = argv + ["--ckpt", model, "--out", str(tmp_path / "enc.safetensors")]
    else:
        argv = argv + ["--ckpt", model, "--out", str(out)]
        if command == "invert":
            argv += ["--images", str(face_folder(tmp_path))]
    assert main(argv) == 0, capsys.readouterr().err
    if kind == "run":
        assert "snapshot-000000008.pt" in capsys.readouterr().err  # says which file of the run it read


# --- 3. latent shapes -----------------------------------------------------------------------------

CFG = SSGConfig(size=64, style_dim=8, class_names=("bg", "face", "hair", "eyes"), transparent=(), coarse_size=32,
                min_feat_size=8)  # fmt: skip
NC = CFG.n_latent  # 10


def test_a_w_plus_code_without_batch_dimension_is_one_code():
    code = torch.randn(NC, 8)
    with pytest.warns(LatentShapeNote, match=r"read as one W\+ code W\+ \[1, 10, 8\]"):
        w = E.as_w_plus(CFG, code)
    assert torch.equal(w, code[None])
    with pytest.warns(LatentShapeNote):
        assert E.swap_regions(CFG, code, torch.randn(3, 8), "hair").shape == (3, NC, 8)  # one code, three sources
    with pytest.warns(LatentShapeNote):
        assert E.apply_direction(CFG, code, torch.randn(8), 1.0, "hair").shape == (1, NC, 8)
    with pytest.warns(LatentShapeNote):  # a single W code too
        assert E.as_w_plus(CFG, torch.randn(8)).shape == (1, NC, 8)
    explicit = torch.randn(NC, 1, 8)  # NC W codes, written so that no other reading fits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(E.as_w_plus(CFG, explicit), explicit.expand(-1, NC, -1))


def test_an_array_with_two_readings_is_refused_naming_both():
    code = torch.randn(NC, 8)
    both = r"ambiguous: 10 W codes or 1 W\+ code; write 10 W codes as \[10, 1, 8\] or 1 W\+ code as \[1, 10, 8\]"
    with pytest.raises(ValueError, match=both):
        E.swap_regions(CFG, code, torch.randn(NC, NC, 8), "hair")  # pairs with 10 sources either way
    with pytest.raises(ValueError, match=both):
        E.apply_direction(CFG, code, torch.randn(8), torch.ones(NC), "hair")
    with pytest.raises(ValueError, match=both):
        read_latent(CFG, code, pair_with=NC)


@pytest.mark.parametrize("shape, words", [
    ((2, 9, 8), r"got \(2, 9, 8\)$"),
    ((1, 12, 8), r"12 slots is a W\+ code of a model with 5 classes, this model has 4"),
    ((NC, 8 + 1), r"last dimension 9 is not this model's style_dim 8"),
    ((1, NC, 16), "style_dim 8"),
    ((8, NC), "transposed"),
    ((1, 1, NC, 8), "at most 3 dimensions"),
])  # fmt: skip
def test_wrong_shapes_name_expected_and_given(shape, words):
    with pytest.raises(ValueError, match=r"must be W \[B, 8\] or W\+ \[B, 10, 8\] for this model"):
        E.as_w_plus(CFG, torch.zeros(shape))
    with pytest.raises(ValueError, match=words):
        E.as_w_plus(CFG, torch.zeros(shape))


def test_generator_reads_latents_the_same_way(tiny):
    G = tiny.g_ema
    code = torch.randn(TINY.n_latent, 8)
    with torch.no_grad():
        with pytest.warns(LatentShapeNote):
            one = G(w=code).image
        assert one.shape[0] == 1 and torch.equal(one, G(w=code[None]).image)
        with pytest.raises(ValueError, match=r"expanded \[B, 16, 8\].*12 slots is a W\+ code of a model with 5"):
            G(w=torch.randn(1, 12, 8))


def test_w_plus_and_expanded_of_equal_size_mean_w_plus():
    cfg = SSGConfig(size=16, style_dim=8, n_mlp=1, class_names=("a", "b"), transparent=(), local_channel=8,
                    coarse_channel=8, coarse_size=8, min_feat_size=4, local_layers=3, depth_layers=3,
                    render_channels={8: 8, 16: 8}, disc_channels={16: 8, 8: 8, 4: 8})  # fmt: skip
    assert cfg.n_latent == cfg.n_latent_expand == 6
    assert read_latent(cfg, torch.zeros(2, 6, 8), ("w", "w+", "expanded")).form == "w+"


def test_cli_reads_an_unbatched_code_as_one_and_refuses_ambiguous_pairs(models, tmp_path, capsys):
    ckpt, n = str(models["ssgan"]), TINY.n_latent
    np.save(tmp_path / "code.npy", np.random.randn(n, 8).astype(np.float32))
    np.save(tmp_path / "dir.npy", np.random.randn(1, 8).astype(np.float32))  # a direction with a batch dim of 1
    assert main(["edit", "--ckpt", ckpt, "--latent", str(tmp_path / "code.npy"), "--direction",
                 str(tmp_path / "dir.npy"), "--regions", "class_1", "--out", str(tmp_path / "one")]) == 0  # fmt: skip
    assert "read as one W+ code" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["edit_000.png", "edited_latents.npy"]
    assert np.load(tmp_path / "one" / "edited_latents.npy").shape == (1, n, 8)  # written with its batch dim
    assert main(["edit", "--ckpt", ckpt, "--latent", str(tmp_path / "code.npy"), "--source-seeds", f"0-{n - 1}",
                 "--regions", "class_1", "--out", str(tmp_path / "two")]) == 2  # fmt: skip
    assert f"ambiguous: {n} W codes or 1 W+ code" in capsys.readouterr().err
    np.save(tmp_path / "other.npy", np.random.randn(1, 12, 8).astype(np.float32))
    assert main(["components", "--ckpt", ckpt, "--latent", str(tmp_path / "other.npy"), "--out",
                 str(tmp_path / "three")]) == 2  # fmt: skip
    assert "12 slots is a W+ code of a model with 5 classes, this model has 4" in capsys.readouterr().err
    assert not (tmp_path / "two").exists() and not (tmp_path / "three").exists()
    (tmp_path / "labels.txt").write_text("0 1 " * 5)
    assert main(["fit-direction", "--ckpt", ckpt, "--latents", str(tmp_path / "other.npy"), "--labels",
                 str(tmp_path / "labels.txt"), "--out", str(tmp_path / "d.npy")]) == 2  # fmt: skip
    assert "a model with 5 classes" in capsys.readouterr().err
    assert not (tmp_path / "d.npy").exists()


# --- 4. any number of classes, no partial output --------------------------------------------------


def test_one_palette_for_any_class_count():
    from ssgan.train.loop import sample_grid

    big = E.palette(300)
    assert len({tuple(c) for c in big}) == 300 and (big[:20] == E.PALETTE).all()
    assert (E.palette(25) == big[:25]).all()  # a class keeps its colour whatever the class count
    labels = np.arange(30).reshape(1, 5, 6)
    assert (E.colorize_labels(labels) == big[labels]).all()
    seg = torch.nn.functional.one_hot(torch.arange(25).reshape(1, 5, 5), 25).permute(0, 3, 1, 2).float()
    out = ssgan.GeneratorOutput(torch.zeros(1, 3, 5, 5), seg, seg, torch.zeros(1, 25, 5, 5), None)
    grid = sample_grid(out, 25)  # the training grids use the same colours as every command
    assert (grid[5:10] == E.colorize_seg(seg)[0]).all()


def test_generate_with_21_classes(tmp_path):
    cfg = SSGConfig(size=16, style_dim=8, n_mlp=1, class_names=tuple(f"part{k}" for k in range(21)), transparent=(),
                    local_channel=8, coarse_channel=8, coarse_size=8, min_feat_size=4, local_layers=4, depth_layers=3,
                    render_channels={8: 8, 16: 8}, disc_channels={16: 8, 8: 8, 4: 8})  # fmt: skip
    G = ssgan.Generator(cfg)
    ssgan.save_checkpoint(tmp_path / "k21.safetensors", cfg, G)
    assert main(["generate", "--ckpt", str(tmp_path / "k21.safetensors"), "--seeds", "0-1", "--out",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0  # fmt: skip
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["classes.json"] + [f"seed00000{s}_{k}" for s in (0, 1) for k in ("img.png", "seg.png", "w.npy")]
    assert len(json.loads((tmp_path / "out" / "classes.json").read_text())) == 21
    assert np.load(tmp_path / "out" / "seed000001_w.npy").shape == (1, 8)


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError), E.atomic_path(tmp_path / "a.png") as tmp:
        tmp.write_bytes(b"half a file")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []

    def broken_save(self, fp, *args, **kwargs):  # fp: a path or an open file
        (fp.write if hasattr(fp, "write") else Path(fp).write_bytes)(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        E.save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / "b.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [
    ["generate", "--seeds", "0,x"],
    ["interpolate", "--seeds", "0", "--regions", "class_1", "--frames", "0"],
    ["edit", "--seeds", "0", "--source-seeds", "1", "--regions", "class_1,nose"],
    ["components", "--seeds", "0", "--order", "class_0"],
    ["invert", "--images", "MISSING", "--steps", "1"],
])  # fmt: skip
def test_errors_found_before_writing_leave_no_output(models, tmp_path, argv, capsys):
    ckpt = str(models["ssgan"])
    argv = [a.replace("MISSING", str(tmp_path / "missing")) for a in argv]
    assert main(argv + ["--ckpt", ckpt, "--out", str(tmp_path / "out")]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- 8. seeds and ranges --------------------------------------------------------------------------


def test_parse_seeds():
    assert E.parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert E.parse_seeds(" 4 - 6 , 9") == [4, 5, 6, 9]
    assert E.parse_seeds("5-5") == [5]


@pytest.mark.parametrize("text, reason", [
    ("5-2", r"range '5-2' runs backwards \(did you mean 2-5\?\)"), ("", "empty item"), ("1,,2", "empty item"),
    ("3,", "empty item"), ("-3", "negative"), ("2--4", "negative"), ("-4-2", "negative"),
    ("0-100000000000", "more than 100000 seeds"), ("1e3", "not a seed or a range"), ("0x10", "not a seed"),
    ("3-", "not a seed"), (str(2**64), "above the largest seed"), ("3,3", "seed 3 given more than once"),
    ("0-4,2-3", "seeds 2, 3 given more than once"),
])  # fmt: skip
def test_bad_seed_lists_have_one_message(text, reason):
    message = rf"^bad seed list '{text}': .*{reason}.*; write seeds and ranges like 0,3,10-12$"
    with pytest.raises(ValueError, match=message):
        E.parse_seeds(text)


@pytest.mark.parametrize("command", [["generate"], ["edit", "--source-seeds", "1", "--regions", "class_1"],
                                     ["components"], ["interpolate", "--regions", "class_1"]])  # fmt: skip
def test_every_command_refuses_a_backward_range_alike(models, tmp_path, command, capsys):
    ckpt = str(models["ssgan"])
    assert main(command + ["--ckpt", ckpt, "--seeds", "5-2", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"ssgan {command[0]}: error: bad seed list '5-2': range '5-2' runs backwards (did you mean 2-5?); " \
                  "write seeds and ranges like 0,3,10-12\n"  # fmt: skip
    assert not (tmp_path / "out").exists()


# --- 9. what a newcomer hands the commands --------------------------------------------------------

OUT_COMMANDS = {
    "generate": ["generate", "--seeds", "0", "--device", "cpu"],
    "edit": ["edit", "--seeds", "0", "--source-seeds", "1", "--regions", "class_1"],
    "interpolate": ["interpolate", "--seeds", "0", "--regions", "class_1", "--keys", "1", "--frames", "2"],
    "components": ["components", "--seeds", "0"],
    "invert": ["invert", "--steps", "1", "--images", "FACES"],
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(OUT_COMMANDS) + ["metrics", "train"])
def test_out_that_is_a_file_is_refused_alike(models, tmp_path, command, capsys):
    gfile = tmp_path / "gfile"
    gfile.write_text("keep me")
    ckpt = str(models["ssgan"])
    if command == "metrics":
        argv = ["metrics", ckpt, "--metrics", "classes", "--num", "2", "--batch", "2"]
    elif command == "train":
        argv = ["train", "--data", str(tmp_path / "nodata")]
    else:
        argv = [a.replace("FACES", str(tmp_path)) for a in OUT_COMMANDS[command]] + ["--ckpt", ckpt]
    assert main(argv + ["--out", str(gfile)]) == 2
    assert capsys.readouterr().err == f"ssgan {command}: error: --out {gfile} is a file, not a folder; pass a folder " \
                                      "(it is made when missing)\n"  # fmt: skip
    assert gfile.read_text() == "keep me"


def test_convert_refuses_a_folder_and_a_non_safetensors_name(models, tmp_path, capsys):
    folder = tmp_path / "existing_folder"
    folder.mkdir()
    assert main(["convert", str(models["ssgan"]), str(folder)]) == 2
    assert f"output {folder} is a folder; name the .safetensors file" in capsys.readouterr().err
    assert main(["convert", str(models["ssgan"]), str(tmp_path / "out.pt")]) == 2
    assert "name it .safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists() and list(folder.iterdir()) == []


@pytest.mark.parametrize("fill, words", [(None, "is empty: it holds no codes"), (float("nan"), "non-finite"),
                                         (float("inf"), "non-finite")])  # fmt: skip
def test_read_latent_refuses_empty_and_non_finite(fill, words):
    if fill is None:
        w = torch.zeros(0, NC, 8)
    else:
        w = torch.zeros(2, NC, 8)
        w[1, 3, :3] = fill
    with pytest.raises(ValueError, match=rf"my latent of shape \({w.shape[0]}, {NC}, 8\) .*{words}") as e:
        read_latent(CFG, w, what="my latent")
    if fill is not None:
        assert "3 non-finite values" in str(e.value)
    with pytest.raises(ValueError, match=words):
        read_latent(CFG, torch.zeros(0, 8) if fill is None else torch.full((8,), fill), what="w")


@pytest.mark.parametrize("command", [["edit", "--source-seeds", "1", "--regions", "class_1"], ["components"],
                                     ["interpolate", "--regions", "class_1", "--keys", "1", "--frames", "2"]])
@pytest.mark.parametrize("kind", ["empty", "nan", "inf"])
def test_commands_refuse_empty_and_non_finite_latents(models, tmp_path, command, kind, capsys):
    w = {"empty": torch.zeros(0, TINY.n_latent, 8), "nan": torch.full((1, TINY.n_latent, 8), float("nan")),
         "inf": torch.full((2, 8), float("inf"))}[kind]  # fmt: skip
    E.save_latents(tmp_path / "w.npy", w)
    out = tmp_path / "out"
    argv = command + ["--ckpt", str(models["ssgan"]), "--latent", str(tmp_path / "w.npy"), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--latent {tmp_path / 'w.npy'} of shape {tuple(w.shape)}" in err
    assert ("is empty" if kind == "empty" else f"{w.numel()} non-finite values") in err
    assert not out.exists()


@pytest.mark.parametrize("argv, words", [
    (["generate", "--psi", "nan"], "'nan' is not a finite number"),
    (["generate", "--psi", "-1"], "'-1' is negative"),
    (["edit", "--seeds", "0", "--regions", "class_1", "--direction", "d.npy", "--strength", "inf"],
     "'inf' is not a finite number"),
    (["invert", "--images", "x", "--lr", "0"], "'0' must be more than 0"),
    (["components", "--seeds", "0", "--psi", "abc"], "'abc' is not a number"),
])  # fmt: skip
def test_cli_floats_must_be_finite(models, argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--ckpt", str(models["ssgan"])])
    assert e.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize("seeds", ["3,3", "0-2,1"])
def test_generate_refuses_repeated_seeds(models, tmp_path, seeds, capsys):
    assert main(["generate", "--ckpt", str(models["ssgan"]), "--seeds", seeds, "--device", "cpu",
                 "--out", str(tmp_path / "out")]) == 2  # fmt: skip
    assert "given more than once; give each seed once" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("given, words", [
    (["--seeds", "0-2", "--source-seeds", "5-6"], "--seeds '0-2' gives 3 seeds and --source-seeds '5-6' gives 2 seeds"),
    (["--latent", "LAT", "--source-seeds", "5-6"], "holds 3 latents and --source-seeds '5-6' gives 2 seeds"),
])  # fmt: skip
def test_unpaired_swap_names_the_options_given(models, tmp_path, given, words, capsys):
    E.save_latents(tmp_path / "w.npy", torch.zeros(3, TINY.n_latent, 8))
    given = [a.replace("LAT", str(tmp_path / "w.npy")) for a in given]
    assert main(["edit", "--ckpt", str(models["ssgan"]), "--regions", "class_1", "--out", str(tmp_path / "o")]
                + given) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert words in err and "do not pair up" not in err and "target latent" not in err


def test_locality_report_says_when_a_region_is_absent():
    nan = torch.tensor([float("nan"), 0.5])
    report = E.Locality(nan, torch.tensor([0.1, 0.1]), torch.tensor([1.0, 1.0])).report("hair")
    assert "region absent in this sample" in report.splitlines()[2] and "nan" not in report
    assert "0.200" in report.splitlines()[3]  # outside / inside


@pytest.mark.parametrize("keys", [["--keys", "5"], ["--keys", "1"]])
def test_interpolate_refuses_keys_with_key_latent(models, tmp_path, keys, capsys):
    E.save_latents(tmp_path / "k.npy", torch.zeros(2, TINY.n_latent, 8))
    assert main(["interpolate", "--ckpt", str(models["ssgan"]), "--seeds", "0", "--regions", "class_1",
                 "--key-latent", str(tmp_path / "k.npy"), "--out", str(tmp_path / "o")] + keys) == 2  # fmt: skip
    assert "--keys and --key-latent both given" in capsys.readouterr().err


def test_help_texts(capsys):
    from ssgan.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    wanted = {"generate": ("--out", "--device", "--noise-mode", "--psi"),
              "edit": ("--out", "--noise-mode"), "interpolate": ("--out", "--frames", "--fps", "--method"),
              "components": ("--out", "--noise-mode"), "invert": ("--out", "--steps", "--lr", "--mode", "--batch")}
    for command, options in wanted.items():
        actions = {o: a for a in sub.choices[command]._actions for o in a.option_strings}
        for option in options:
            assert actions[option].help, f"{command} {option} has no help"
    frames = {o: a for a in sub.choices["interpolate"]._actions for o in a.option_strings}["--frames"]
    assert "total" in frames.help
    text = sub.choices["fit-direction"].format_help()
    assert "(default: None)" not in text and "(default: svm)" in text
