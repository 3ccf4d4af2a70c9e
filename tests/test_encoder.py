"""The ReStyle-style encoder: shapes, a zero start, training lowers the loss, files, the CLI."""
import shutil

import pytest
import torch

from ssgan import editing as E
from ssgan import encoder as enc
from ssgan.cli import main
from ssgan.config import preset

from conftest import shared_path


@pytest.fixture(scope="module")
def G(official_small):
    return official_small[0].g_ema


def test_encoder_starts_at_w_avg(G):
    torch.manual_seed(0)
    encoder = enc.LatentEncoder(G.cfg, width=8, slot_width=8)
    images = torch.rand(2, 3, 128, 128) * 2 - 1
    assert encoder(images, images).shape == (2, G.cfg.n_latent, G.cfg.style_dim)
    w, recon = enc.encode(encoder, G, images, iters=1)
    torch.testing.assert_close(w, E.as_w_plus(G.cfg, G.mean_latent()).expand(2, -1, -1))
    assert recon.shape == images.shape


def test_training_steps_lower_the_loss(G):
    torch.manual_seed(0)
    encoder = enc.LatentEncoder(G.cfg, width=8, slot_width=8)
    w_true, images = enc.sample_batch(G, 2, torch.Generator().manual_seed(1), mixing=1.0)
    assert w_true.shape == (2, G.cfg.n_latent, G.cfg.style_dim) and not torch.equal(w_true[:, 2], w_true[:, 3])
    opt = torch.optim.Adam(encoder.parameters(), lr=3e-2)
    start = enc.starting_point(G)
    losses = [enc.encoder_step(encoder, G, opt, w_true, images, iters=1, start=start) for _ in range(10)]
    assert losses[-1] < 0.7 * losses[0]
    # Two refinements with the pixel loss back through G (which gets no gradients).
    assert enc.encoder_step(encoder, G, opt, w_true, images, iters=2, pixel_weight=0.1, start=start) > 0
    assert all(p.grad is None for p in G.parameters())


def test_save_load_and_mismatch(G, tmp_path):
    encoder = enc.LatentEncoder(G.cfg, width=8, slot_width=8)
    torch.nn.init.normal_(encoder.head_weight)
    path = enc.save_encoder(tmp_path / "enc.safetensors", encoder)
    loaded = enc.load_encoder(path)
    x = torch.rand(1, 3, 128, 128)
    torch.testing.assert_close(loaded(x, x), encoder(x, x))
    other = enc.LatentEncoder(preset("demo"), width=8, slot_width=8)
    with pytest.raises(ValueError, match="the encoder was made for 64px"):
        enc.encode(other, G, torch.zeros(1, 3, 64, 64))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read .*junk.safetensors as an ssgan encoder: the file is damaged"):
        enc.load_encoder(tmp_path / "junk.safetensors")


def test_cli_train_encoder_and_invert_from_it(tmp_path):
    ck = str(shared_path("fixtures", "official_small", "checkpoint.pt"))
    out = tmp_path / "enc.safetensors"
    assert main(["train-encoder", "--ckpt", ck, "--out", str(out), "--steps", "1", "--batch", "2", "--iters", "1",
                 "--width", "8"]) == 0  # fmt: skip
    images = tmp_path / "faces"
    images.mkdir()
    shutil.copy(shared_path("data", "faces", "5.png"), images / "a.png")
    assert main(["invert", "--ckpt", ck, "--images", str(images), "--out", str(tmp_path / "inv"), "--steps", "1",
                 "--encoder", str(out), "--encoder-iters", "1"]) == 0  # fmt: skip
    assert E.load_latents(tmp_path / "inv" / "latents" / "a.npy").shape == (1, 14, 64)
    assert main(["invert", "--ckpt", ck, "--images", str(images), "--mode", "w", "--encoder", str(out)]) == 2
