"""Inversion of real faces: image loading, the loss falls, W mode, pivotal tuning, feature loss, the CLI."""
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ssgan import editing as E
from ssgan import inversion as I
from ssgan.cli import main

from conftest import shared_path


@pytest.fixture(scope="module")
def G(official_small):
    return official_small[0].g_ema


def face(i=0):
    return shared_path("data", "faces", f"{i}.png")


# --- images ---------------------------------------------------------------------------------------


def test_load_image_resizes_to_model_size():
    x = I.load_image(face(), 128)
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32
    assert -1 <= x.min() < x.max() <= 1
    assert I.load_image(face(), 256).shape == (3, 256, 256)


def test_load_image_converts_grey_and_palette(tmp_path):
    Image.fromarray(np.full((64, 64), 200, np.uint8)).save(tmp_path / "grey.png")
    x = I.load_image(tmp_path / "grey.png", 32)
    torch.testing.assert_close(x, torch.full((3, 32, 32), 200 / 127.5 - 1))
    Image.open(face()).convert("P").save(tmp_path / "pal.png")
    assert I.load_image(tmp_path / "pal.png", 64).shape == (3, 64, 64)


def test_bad_images(tmp_path):
    Image.new("RGB", (128, 96)).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match=r"wide.png: image is 128x96; inversion needs square"):
        I.load_image(tmp_path / "wide.png", 128)
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(ValueError, match="corrupt.png: not a readable image"):
        I.load_image(tmp_path / "corrupt.png", 128)
    Image.fromarray(np.zeros((8, 8), np.float32), mode="F").save(tmp_path / "float.tif")
    with pytest.raises(ValueError, match="float.tif: image mode 'F' cannot be converted"):
        I.load_image(tmp_path / "float.tif", 8)
    with pytest.raises(ValueError, match=r"0.png: image is 256x256 but the model makes 128x128"):
        I.load_image(face(), 128, resize=False)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        I.load_image(tmp_path / "missing.png", 128)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        I.list_images(tmp_path / "empty")


def test_projector_lr_schedule():
    lrs = [I.projector_lr(s, 100, 0.1) for s in range(100)]
    assert 0 < lrs[0] < 0.02 and max(lrs) == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(0.1) and 0 < lrs[99] < 0.001
    assert I.projector_lr(0, 1, 0.1) == pytest.approx(0.1)  # one step is the whole run: it moves (it was 0)
    assert all(I.projector_lr(s, 3, 0.1) > 0 for s in range(3))
    assert all(a >= b for a, b in zip(lrs[75:], lrs[76:]))


# --- inversion ------------------------------------------------------------------------------------


def test_inversion_loss_falls(G):
    target = I.load_images([face(1)], G.cfg.size)
    result = I.invert(G, target, steps=20)
    assert len(result.losses) == 21  # before each of the 20 steps, then of the latent returned
    assert result.losses[-1] < 0.6 * result.losses[0]
    # The first loss is the pixel MSE at w_avg (the regulariser is zero there).
    assert (result.image - target).square().mean() < 0.6 * result.losses[0]
    assert result.w_plus.shape == (1, G.cfg.n_latent, G.cfg.style_dim)
    assert result.seg.shape == (1, G.cfg.num_classes, 128, 128) and result.generator is None
    assert not result.w_plus.requires_grad and not any(p.grad is not None for p in G.parameters())


def test_w_mode_and_pivotal_tuning(G):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    target = I.load_images([face(2)], G.cfg.size)
    result = I.invert(G, target, mode="w", steps=1, finetune_steps=2, finetune_lr=1e-3)
    assert torch.equal(result.w_plus, result.w_plus[:, :1].expand_as(result.w_plus))  # one w in every slot
    assert len(result.finetune_losses) == 2 and result.finetune_losses[-1] < result.finetune_losses[0]
    tuned = result.generator
    assert tuned is not G and any(not torch.equal(p, before[k]) for k, p in tuned.state_dict().items())
    assert all(torch.equal(p, before[k]) for k, p in G.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(result.image, tuned(w=result.w_plus).image)


def test_invert_rejects_bad_input(G):
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 128, 128\].*\(1, 3, 64, 64\)"):
        I.invert(G, torch.zeros(1, 3, 64, 64), steps=1)
    with pytest.raises(ValueError, match="mode must be"):
        I.invert(G, torch.zeros(1, 3, 128, 128), mode="z", steps=1)
    with pytest.raises(ValueError, match="latent must be"):
        I.invert(G, torch.zeros(1, 3, 128, 128), init=torch.zeros(1, 13, 64), steps=1)


def test_feature_loss_from_torchscript(tmp_path):
    net = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3)))
    net.save(str(tmp_path / "feat.pt"))
    loss = I.FeatureLoss.from_file(tmp_path / "feat.pt", size=16)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.all(loss(x, x) == 0) and torch.all(loss(x, y) > 0) and loss(x, y).shape == (2,)
    assert loss.features(x)[0].shape == (2, 5, 12, 12)  # pooled to 16 before the network
    both = I.ReconstructionLoss(loss)
    assert both.pixel_weight == 0.1
    torch.testing.assert_close(both(x, y), 0.1 * (x - y).square().mean((1, 2, 3)) + loss(x, y))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt: not a TorchScript"):
        I.FeatureLoss.from_file(tmp_path / "junk.pt")


# --- command line ---------------------------------------------------------------------------------


def test_cli_invert(tmp_path, capsys):
    images = tmp_path / "faces"
    images.mkdir()
    for i in (3, 4):
        shutil.copy(face(i), images / f"face{i}.png")
    out = tmp_path / "out"
    ck = str(shared_path("fixtures", "official_small", "checkpoint.pt"))
    assert main(["invert", "--ckpt", ck, "--images", str(images), "--out", str(out), "--steps", "1", "--batch", "2",
                 "--finetune-steps", "1", "--latent-format", "safetensors"]) == 0  # fmt: skip
    assert "wrote recon/, latents/ and masks/ for 2 images" in capsys.readouterr().out
    for name in ("face3", "face4"):
        for folder in ("recon", "recon_finetune", "masks"):
            with Image.open(out / folder / f"{name}.png") as img:
                assert img.size == (128, 128) and img.mode == "RGB"
        with Image.open(out / "masks" / f"{name}_labels.png") as img:
            labels = np.asarray(img)
        assert labels.shape == (128, 128) and labels.max() < 6
        assert E.load_latents(out / "latents" / f"{name}.safetensors").shape == (1, 14, 64)
    (images / "face5.png").write_bytes(b"broken")
    assert main(["invert", "--ckpt", ck, "--images", str(images), "--out", str(out), "--steps", "1"]) == 2
    assert "face5.png: not a readable image" in capsys.readouterr().err


@pytest.mark.parametrize("steps", [1, 2])
def test_few_steps_move_the_latent_and_the_last_loss_is_the_saved_ones(G, steps):
    target = I.load_images([face(1)], G.cfg.size)
    result = I.invert(G, target, steps=steps, w_reg=0.5)
    w_avg = E.as_w_plus(G.cfg, G.mean_latent())
    assert not torch.allclose(result.w_plus, w_avg)  # --steps 1 moved nothing: its learning rate was 0
    with torch.no_grad():
        image = G(w=result.w_plus, noise_mode="const").image
        saved = I.ReconstructionLoss()(image, target).sum() + 0.5 * (result.w_plus - w_avg).square().mean()
    assert len(result.losses) == steps + 1 and result.losses[-1] == pytest.approx(saved.item(), rel=1e-4)


@pytest.mark.parametrize("name", ["face.png", "face.jpg"])
def test_cli_invert_takes_one_image_file(tmp_path, name, capsys):
    Image.open(face(3)).convert("RGB").save(tmp_path / name)
    out = tmp_path / "out"
    ck = str(shared_path("fixtures", "official_small", "checkpoint.pt"))
    assert main(["invert", "--ckpt", ck, "--images", str(tmp_path / name), "--out", str(out), "--steps", "1"]) == 0
    text = capsys.readouterr().out
    assert "wrote recon/, latents/ and masks/ for 1 images" in text
    first, last = re.search(r"loss (\S+) -> (\S+)", text).groups()
    assert first != last and (out / "latents" / "face.npy").exists()
    (tmp_path / "notes.txt").write_text("x")
    assert main(["invert", "--ckpt", ck, "--images", str(tmp_path / "notes.txt"), "--out", str(out)]) == 2
    assert "notes.txt is not an image" in capsys.readouterr().err
