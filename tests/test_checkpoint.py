"""Checkpoint conversion (original format, full-size key lists) and ssgan's own format."""
import argparse
import csv

import pytest
import torch

import ssgan
from conftest import rel_err, shared_path
from ssgan.checkpoint import CheckpointError, config_from_original, convert_discriminator, convert_generator
from ssgan.kernels import make_kernel


def original_state_dicts(tsv):
    """Fake original state dicts with every key and shape of a released model (blur kernels real)."""
    sds = {}
    with open(tsv) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            shape = [int(n) for n in row["shape"].split("x")] if row["shape"] else []
            if row["key"].endswith("kernel"):
                gain = 1 if row["module"] == "d" else 4
                t = make_kernel((1, 3, 3, 1), gain)
            else:
                t = torch.randn(shape)
            sds.setdefault(row["module"], {})[row["key"]] = t
    return sds


@pytest.mark.parametrize("size", [256, 512])
def test_released_architecture_converts_every_tensor(size):
    sds = original_state_dicts(shared_path("fixtures", f"official_{size}_state_dict.tsv"))
    cfg = config_from_original(sds["g_ema"], sds["d"])
    assert cfg == ssgan.preset(f"celebamask-{size}")
    g_state = convert_generator(sds["g_ema"], cfg)  # raises on any unused or missing tensor
    d_state = convert_discriminator(sds["d"], cfg)
    assert set(g_state) == set(ssgan.Generator(cfg).state_dict())
    assert set(d_state) == set(ssgan.Discriminator(cfg).state_dict())
    used = sum(t.numel() for t in g_state.values()) + sum(t.numel() for t in d_state.values())
    kernels = sum(t.numel() for sd in sds.values() for k, t in sd.items() if k.endswith("kernel"))
    assert used + kernels == sum(t.numel() for sd in sds.values() for t in sd.values())


def test_presets_have_the_original_parameter_counts():
    counts = {
        "celebamask-256": (20_208_020, 51_169_793),
        "celebamask-512": (20_320_358, 51_406_593),
    }
    for name, (g_count, d_count) in counts.items():
        cfg = ssgan.preset(name)
        assert sum(p.numel() for p in ssgan.Generator(cfg).parameters()) == g_count
        assert sum(p.numel() for p in ssgan.Discriminator(cfg).parameters()) == d_count


def test_small_fixture_config(official_small):
    ckpt, _ = official_small
    cfg = ckpt.config
    assert (cfg.size, cfg.style_dim, cfg.num_classes, cfg.transparent) == (128, 64, 6, (4,))
    # a class count other than CelebAMask-HQ's: named as `ssgan train --classes 6` names them
    assert cfg.class_names == ssgan.config.default_class_names(6) == ("background", "class1", "class2", "class3",
                                                                      "class4", "class5")  # fmt: skip
    assert cfg.render_channels == {32: 40, 64: 32, 128: 24}
    assert cfg.disc_channels == {128: 24, 64: 32, 32: 40, 16: 48, 8: 48, 4: 48}


def test_own_format_round_trip(official_small, tmp_path):
    ckpt, v = official_small
    path = ssgan.save_checkpoint(tmp_path / "model.safetensors", ckpt.config, ckpt.g_ema, g=ckpt.g, d=ckpt.d)
    again = ssgan.load_checkpoint(path)
    assert again.config == ckpt.config
    for name in ("g", "g_ema", "d"):
        a, b = getattr(ckpt, name).state_dict(), getattr(again, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert rel_err(again.g_ema(z=v["z"]).image, v["z.image"]) < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp files left


def _write_original(path, data):
    torch.save(data, path)
    return path


@pytest.fixture
def original_data():
    torch.serialization.add_safe_globals([argparse.Namespace])
    return torch.load(shared_path("fixtures", "official_small", "checkpoint.pt"), map_location="cpu", weights_only=True)


def test_missing_tensor_is_named(original_data, tmp_path):
    del original_data["g_ema"]["local_nets.3.linears.7.conv.weight"]
    with pytest.raises(CheckpointError, match=r"local_nets\.3\.linears\.7\.conv\.weight"):
        ssgan.load_checkpoint(_write_original(tmp_path / "bad.pt", original_data))


def test_extra_tensor_is_named(original_data, tmp_path):
    original_data["d"]["surprise.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="surprise.weight"):
        ssgan.load_checkpoint(_write_original(tmp_path / "bad.pt", original_data))


def test_misshaped_tensor_is_named(original_data, tmp_path):
    original_data["g"]["render_net.convs.1.activate.bias"] = torch.zeros(41)
    with pytest.raises(CheckpointError, match="render.convs.1.bias"):
        ssgan.load_checkpoint(_write_original(tmp_path / "bad.pt", original_data))


def test_truncated_files(official_small, tmp_path):
    raw = shared_path("fixtures", "official_small", "checkpoint.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        ssgan.load_checkpoint(tmp_path / "cut.pt")
    ckpt, _ = official_small
    own = ssgan.save_checkpoint(tmp_path / "own.safetensors", ckpt.config, ckpt.g_ema).read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(own[: len(own) - 1000])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        ssgan.load_checkpoint(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ssgan.load_checkpoint(tmp_path / "absent.pt")


def test_own_checkpoint_that_does_not_fit(official_small, tmp_path):
    ckpt, _ = official_small
    other = ssgan.preset("demo")
    path = ssgan.save_checkpoint(tmp_path / "m.safetensors", other, ckpt.g_ema)  # config says demo, tensors say 128px
    with pytest.raises(CheckpointError, match="g_ema"):
        ssgan.load_checkpoint(path)


class Payload:
    """Stands for arbitrary code a malicious pickle would run."""


def test_pickled_code_is_refused(tmp_path):
    torch.save({"g_ema": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        ssgan.load_checkpoint(tmp_path / "evil.pt")
