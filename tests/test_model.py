"""Model behaviour beyond the golden vectors: locality, latent layout, mixing, bad input, layering."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ssgan
from conftest import ROOT


@pytest.fixture(scope="module")
def small(official_small):
    return official_small[0].g_ema.eval()


def local_outputs(g, w_plus):
    """Hidden states [B, K, P, C] and depths of the local generators for a W+ code."""
    from ssgan.kernels.class_mlp import class_mlp_reference

    captured = {}
    import ssgan.generator as generator

    original = generator.class_mlp

    def spy(*args, **kwargs):
        captured["hidden"], captured["depth"] = class_mlp_reference(*args)
        return captured["hidden"], captured["depth"]

    generator.class_mlp = spy
    try:
        with torch.no_grad():
            out = g(w=w_plus)
    finally:
        generator.class_mlp = original
    return captured["hidden"], out


@pytest.mark.parametrize("k", [1, 3, 5])
def test_texture_code_is_local(small, k):
    cfg = small.cfg
    w = small.layout(small.mapping(torch.randn(2, cfg.style_dim)))
    edited = w.clone()
    edited[:, 3 + 2 * k] = small.mapping(torch.randn(2, cfg.style_dim))
    h0, a = local_outputs(small, w)
    h1, b = local_outputs(small, edited)
    assert torch.equal(a.depths, b.depths) and torch.equal(a.coarse_seg, b.coarse_seg)
    others = [j for j in range(cfg.num_classes) if j != k]
    assert torch.equal(h0[:, others], h1[:, others])
    assert not torch.allclose(h0[:, k], h1[:, k])


@pytest.mark.parametrize("k", [1, 4])
def test_shape_code_moves_only_its_depth(small, k):
    cfg = small.cfg
    w = small.layout(small.mapping(torch.randn(2, cfg.style_dim)))
    edited = w.clone()
    edited[:, 2 + 2 * k] = small.mapping(torch.randn(2, cfg.style_dim))
    _, a = local_outputs(small, w)
    _, b = local_outputs(small, edited)
    others = [j for j in range(cfg.num_classes) if j != k]
    assert torch.equal(a.depths[:, others], b.depths[:, others])
    assert not torch.allclose(a.depths[:, k], b.depths[:, k])


def test_expansion_layout():
    cfg = ssgan.preset("celebamask-256")
    index = ssgan.Generator._expand_index(cfg).reshape(cfg.num_classes, cfg.local_layers)
    assert index[0].tolist() == [2] * 6 + [3] * 4  # background: no base code
    assert index[7].tolist() == [0, 1] + [16] * 4 + [17] * 4  # hair: base, shape 16, texture 17
    assert cfg.n_latent == 28 and cfg.n_latent_expand == 130


def test_style_mixing_rule(small):
    torch.manual_seed(0)
    cfg = small.cfg
    w0, w1 = torch.zeros(4000, cfg.style_dim), torch.ones(4000, cfg.style_dim)
    mixed = small.mix(w0, w1)[..., 0]  # [B, 2+2K]: 0 from w0, 1 from w1
    assert torch.all(mixed[:, : cfg.base_layers] == 0)
    shape, texture = mixed[:, cfg.base_layers :: 2], mixed[:, cfg.base_layers + 1 :: 2]
    assert not torch.any((shape == 1) & (texture == 0))  # "shape from w1, texture from w0" is never drawn
    freq = torch.stack([(shape == 0) & (texture == 0), (shape == 0) & (texture == 1), shape == 1]).float().mean((1, 2))
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.02)


def test_noise_modes(small):
    z = torch.randn(2, small.cfg.style_dim)
    with torch.no_grad():
        const = [small(z=z).image for _ in range(2)]
        random = [small(z=z, noise_mode="random").image for _ in range(2)]
        none = small(z=z, noise_mode="none").image
    assert torch.equal(const[0], const[1])
    assert not torch.equal(random[0], random[1])
    assert not torch.equal(none, const[0])


def test_truncation_psi_zero_gives_the_average(small):
    w_avg = small.mean_latent(n=500)
    with torch.no_grad():
        a = small(z=torch.randn(2, small.cfg.style_dim), psi=0.0, w_avg=w_avg)
        b = small(w=w_avg.expand(2, -1))
    assert torch.allclose(a.image, b.image, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(z=torch.randn(2, 63)), r"z must be \[B, 64\]"),
        (dict(w=torch.randn(2, 13, 64)), r"W\+ \[B, 14, 64\]"),
        (dict(w=torch.randn(2, 14)), "w must be"),
        (dict(), "exactly one of z and w"),
        (dict(z=torch.randn(2, 64), w=torch.randn(2, 64)), "exactly one of z and w"),
        (dict(z=torch.randn(2, 64), composition_mask=torch.ones(2, 5)), r"composition_mask must be \[B, K\]"),
        (dict(z=torch.randn(2, 64), noise_mode="loud"), "noise_mode"),
    ],
)
def test_bad_generator_input(small, kwargs, message):
    with pytest.raises(ValueError, match=message):
        small(**kwargs)


def test_bad_discriminator_input(official_small):
    d = official_small[0].d
    with pytest.raises(ValueError, match="image must be"):
        d(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="seg must be"):
        d(torch.randn(2, 3, 128, 128), torch.randn(2, 5, 128, 128))
    with pytest.raises(ValueError, match="divisible"):
        d(torch.randn(6, 3, 128, 128))


def test_unknown_class_name_and_preset():
    cfg = ssgan.preset("celebamask-512")
    assert cfg.class_index("hair") == 7
    with pytest.raises(KeyError, match="unknown class 'beard'.*background, face"):
        cfg.class_index("beard")
    with pytest.raises(KeyError, match="unknown preset"):
        ssgan.preset("celebamask-1024")


def test_invalid_config():
    with pytest.raises(ValueError, match="transparent"):
        ssgan.SSGConfig(transparent=(13,))
    with pytest.raises(ValueError, match="power of two"):
        ssgan.SSGConfig(size=300)


def test_demo_preset_runs():
    cfg = ssgan.preset("demo")
    g, d = ssgan.Generator(cfg), ssgan.Discriminator(cfg)
    out = g(z=torch.randn(2, cfg.style_dim), noise_mode="random")
    assert out.image.shape == (2, 3, 64, 64) and out.seg.shape == (2, 7, 64, 64)
    assert out.coarse_seg.shape == (2, 7, 32, 32)
    assert d(out.image, out.seg).shape == (2, 1)


def imports_of(path):
    tree = ast.parse(Path(path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield ("." * node.level) + (node.module or "")


def test_layering():
    """ssgan.kernels imports nothing from ssgan; ssgan (outside its CLI) never imports ssgan.train."""
    for path in (ROOT / "kernels").glob("*.py"):
        bad = [m for m in imports_of(path) if m.startswith(("ssgan", "..", "train"))]
        assert not bad, f"{path.name} imports {bad}"
    for path in (ROOT / "ssgan").glob("*.py"):
        if path.name != "cli.py":
            bad = [m for m in imports_of(path) if m.startswith(("ssgan.train", "train"))]
            assert not bad, f"{path.name} imports {bad}"
    code = "import sys, ssgan; print(any(m.startswith('ssgan.train') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_cli_convert_and_generate(tmp_path):
    from conftest import shared_path
    from ssgan.cli import main

    converted = tmp_path / "small.safetensors"
    assert main(["convert", str(shared_path("fixtures", "official_small", "checkpoint.pt")), str(converted)]) == 0
    assert main(["generate", "--ckpt", str(converted), "--seeds", "0-1", "--out", str(tmp_path / "out"), "--psi", "1"]) == 0
    from PIL import Image

    image = Image.open(tmp_path / "out" / "seed000001_img.png")
    assert image.size == (128, 128) and image.mode == "RGB"
    assert (tmp_path / "out" / "seed000001_seg.png").exists() and (tmp_path / "out" / "seed000000_w.npy").exists()
    assert main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "x.safetensors")]) == 2
