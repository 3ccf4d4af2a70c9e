"""Editing toolkit: region specs, region swaps, directions, interpolation, components, locality, colours, CLI."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ssgan import editing as E
from ssgan.cli import main
from ssgan.config import SSGConfig

from conftest import shared_path

CFG = SSGConfig(size=64, style_dim=8, class_names=("bg", "face", "hair"), transparent=(), coarse_size=32,
                min_feat_size=8)


@pytest.fixture(scope="module")
def G(official_small):
    return official_small[0].g_ema


def ckpt():
    return str(shared_path("fixtures", "official_small", "checkpoint.pt"))


# --- region specs ---------------------------------------------------------------------------------


def test_region_slots():
    assert E.region_slots(CFG, "hair") == [6, 7]
    assert E.region_slots(CFG, "hair:shape") == [6]
    assert E.region_slots(CFG, "face:texture") == [5]
    assert E.region_slots(CFG, "base") == [0, 1]
    assert E.region_slots(CFG, "base, bg:texture,hair") == [0, 1, 3, 6, 7]
    assert E.region_slots(CFG, ["face", "face:shape"]) == [4, 5]
    assert E.slot_mask(CFG, "hair:texture").tolist() == [False] * 7 + [True]
    assert E.region_classes(CFG, "base,hair:shape,face") == [1, 2]


@pytest.mark.parametrize("spec, error, words", [
    ("nose", KeyError, "bg, face, hair"), ("hair:colour", ValueError, "shape, texture"),
    ("base:shape", ValueError, "base"), ("hair,,face", ValueError, "empty"), ("", ValueError, "empty"),
])  # fmt: skip
def test_bad_region_specs(spec, error, words):
    with pytest.raises(error, match=words):
        E.region_slots(CFG, spec)


# --- swaps and directions -------------------------------------------------------------------------


def test_swap_regions_batched_and_bit_identical():
    target, source = torch.randn(4, CFG.n_latent, 8), torch.randn(4, CFG.n_latent, 8)
    mixed = E.swap_regions(CFG, target, source, "face:texture,base")
    chosen = E.slot_mask(CFG, "face:texture,base")
    assert torch.equal(mixed[:, chosen], source[:, chosen])
    assert torch.equal(mixed[:, ~chosen], target[:, ~chosen])
    # One W source against many W+ targets, and the other way round.
    w = torch.randn(1, 8)
    assert torch.equal(E.swap_regions(CFG, target, w, "hair")[:, 6:], w[:, None].expand(4, 2, 8))
    assert E.swap_regions(CFG, w, source, "hair").shape == (4, CFG.n_latent, 8)
    with pytest.raises(ValueError, match="do not pair"):
        E.swap_regions(CFG, target, source[:3], "hair")


ITEMS = ["base"] + [f"{c}{p}" for c in CFG.class_names for p in ("", ":shape", ":texture")]


@given(items=st.lists(st.sampled_from(ITEMS), min_size=1, max_size=4), batch=st.integers(1, 3))
def test_swap_of_any_spec_changes_exactly_its_slots(items, batch):
    expected = set()
    for item in items:
        name, _, part = item.partition(":")
        first = 2 + 2 * CFG.class_names.index(name) if name != "base" else 0
        expected |= {first, first + 1} if not part or name == "base" else {first + (part == "texture")}
    target, source = torch.randn(batch, CFG.n_latent, 8), torch.randn(1, CFG.n_latent, 8)
    mixed = E.swap_regions(CFG, target, source, ",".join(items))
    from_source = (mixed == source).all(-1).all(0)
    assert set(torch.nonzero(from_source).flatten().tolist()) == expected
    assert torch.equal(mixed[:, ~from_source], target[:, ~from_source])


def test_latent_of_wrong_shape():
    with pytest.raises(ValueError, match=r"W\+ \[B, 8, 8\].*\(2, 7, 8\)"):
        E.swap_regions(CFG, torch.randn(2, 7, 8), torch.randn(2, 8), "hair")
    with pytest.raises(ValueError, match="latent must be"):
        E.as_w_plus(CFG, torch.randn(2, 9))


def test_apply_direction_only_in_chosen_slots():
    w = torch.randn(3, CFG.n_latent, 8)
    chosen = E.slot_mask(CFG, "hair:texture")
    d = torch.randn(8)
    edited = E.apply_direction(CFG, w, d, torch.tensor([0.0, 1.0, -2.0]), "hair:texture")
    assert torch.equal(edited[:, ~chosen], w[:, ~chosen])
    torch.testing.assert_close(edited[:, chosen], w[:, chosen] + torch.tensor([0.0, 1.0, -2.0])[:, None, None] * d)
    w_plus_dir = torch.randn(CFG.n_latent, 8)
    edited = E.apply_direction(CFG, w, w_plus_dir, 2.0, "face")
    torch.testing.assert_close(edited[:, 4:6], w[:, 4:6] + 2 * w_plus_dir[4:6])
    with pytest.raises(ValueError, match="direction must be"):
        E.apply_direction(CFG, w, torch.randn(7), 1.0, "face")
    with pytest.raises(ValueError, match="strengths"):
        E.apply_direction(CFG, w, d, torch.ones(2), "face")


# --- interpolation --------------------------------------------------------------------------------


@given(keys=st.integers(2, 5), per_segment=st.integers(1, 4), method=st.sampled_from(E.INTERPOLATIONS),
       closed=st.booleans())  # fmt: skip
def test_key_path_passes_through_keys(keys, per_segment, method, closed):
    k = torch.randn(keys, 3, 5, dtype=torch.float64)
    segments = keys if closed else keys - 1
    frames = segments * per_segment + (0 if closed else 1)
    path = E.key_path(k, frames, method, closed)
    assert path.shape == (frames, 3, 5)
    torch.testing.assert_close(path[::per_segment], k)


def test_slerp_keeps_equal_norms_and_falls_back_to_lerp():
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    b = b / b.norm(dim=-1, keepdim=True) * a.norm(dim=-1, keepdim=True)
    mid = E.slerp(a, b, torch.tensor(0.3))
    torch.testing.assert_close(mid.norm(dim=-1), a.norm(dim=-1))
    torch.testing.assert_close(E.slerp(a, 2 * a, torch.tensor(0.5)), 1.5 * a)


def test_interpolate_regions_moves_only_chosen_slots():
    w = torch.randn(1, CFG.n_latent, 8)
    frames = E.interpolate_regions(CFG, w, torch.randn(3, 8), "face:shape", 7, "cubic")
    chosen = E.slot_mask(CFG, "face:shape")
    assert frames.shape == (7, CFG.n_latent, 8)
    assert torch.equal(frames[:, ~chosen], w[:, ~chosen].expand(7, -1, -1))
    assert not torch.equal(frames[0, chosen], frames[3, chosen])
    with pytest.raises(ValueError, match="method"):
        E.key_path(torch.randn(3, 8), 5, "bezier")


# --- colours --------------------------------------------------------------------------------------


def test_palette_and_colour_maps():
    assert len({tuple(c) for c in E.PALETTE}) == len(E.PALETTE) == 20
    seg = torch.zeros(1, 4, 2, 3)
    seg[0, 3, 1, 2] = 1
    rgb = E.colorize_seg(seg)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2, 3, 3)
    assert (rgb[0, 1, 2] == E.PALETTE[3]).all() and (rgb[0, 0, 0] == E.PALETTE[0]).all()
    with pytest.raises(ValueError, match=">= 0, got -1"):
        E.colorize_labels(np.array([[0, -1]]))
    ramp = E.inferno(np.linspace(0, 1, 50))
    assert (ramp[0] == E.INFERNO[0]).all() and (ramp[-1] == E.INFERNO[-1]).all()
    assert np.all(np.diff(ramp.astype(float) @ [0.3, 0.6, 0.1]) >= -1)  # brightness rises along the map
    depth = E.colorize_depth(torch.stack([torch.zeros(4, 4), torch.arange(16.0).reshape(4, 4)]))
    assert (depth[0] == E.INFERNO[0]).all() and (depth[1, 3, 3] == E.INFERNO[-1]).all()


# --- with the generator ---------------------------------------------------------------------------


def test_components(G):
    masks = E.component_masks(G.cfg, "class3,class1")
    assert masks.tolist() == [[1, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0], [1, 1, 0, 1, 0, 0]]
    with pytest.raises(ValueError, match="background"):
        E.component_masks(G.cfg, "background,class1")
    w = E.w_from_seeds(G, [3], psi=0.7)
    out, added = E.render_components(G, w, "class3,class1")
    assert added == [0, 3, 1]
    assert torch.all(out.coarse_seg[0].argmax(0) == 0)  # the background alone covers everything
    sheet = E.components_sheet(out, added)
    assert sheet.shape == (3 * 128, 4 * 128, 3) and sheet.dtype == np.uint8


def test_texture_edit_keeps_coarse_masks_and_locality(G):
    cfg = G.cfg
    w = E.as_w_plus(cfg, E.w_from_seeds(G, [1, 2], psi=0.7))
    edited = E.swap_regions(cfg, w, E.w_from_seeds(G, [7]), "class1:texture")
    out = E.render(G, torch.cat([w, edited]))
    split = lambda s: type(out)(*(getattr(out, f)[s] for f in out.__dataclass_fields__))  # noqa: E731
    before, after = split(slice(2)), split(slice(2, 4))
    torch.testing.assert_close(after.coarse_seg, before.coarse_seg, rtol=0, atol=1e-6)
    torch.testing.assert_close(after.depths, before.depths, rtol=0, atol=1e-6)
    assert not torch.allclose(after.image, before.image)
    loc = E.locality_of(before, after, 1, dilate=1)
    assert loc.inside.shape == (2,) and torch.all(loc.outside > 0) and torch.all(loc.seg_iou_outside <= 1)
    assert "locality of class1" in loc.report("class1")
    same = E.locality_of(before, before, 1)
    assert torch.all(same.outside == 0) and torch.all(same.seg_iou_outside == 1)


def _labelled(labels, image):
    """A GeneratorOutputs-like object with one-hot seg logits of `labels` [B,S,S] and `image` [B,3,S,S]."""
    seg = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    return SimpleNamespace(seg=seg, image=image)


def test_locality_region_is_the_class_before_or_after_a_shape_edit():
    """Class 1 moves one pixel right: the pixels it newly covers belong to the edit (extent "union"); the strict
    reading (extent "before") counts them as outside. The segmentation outside the region is untouched either way
    for "union", and the IoU outside falls for "before", where class 0 lost a pixel to class 1."""
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 1:3, 1] = 1
    moved = labels.roll(1, dims=2)
    before = _labelled(labels, torch.zeros(1, 3, 4, 4))
    after = _labelled(moved, (moved == 1).float()[:, None].expand(1, 3, 4, 4))
    union = E.locality_of(before, after, 1)
    assert union.outside.item() == 0 and union.inside.item() == pytest.approx(2 / 4) and union.seg_iou_outside == 1
    strict = E.locality_of(before, after, 1, extent="before")
    assert strict.inside.item() == 0 and strict.outside.item() == pytest.approx(2 / 14)
    assert strict.seg_iou_outside.item() == pytest.approx(12 / 14)
    with pytest.raises(ValueError, match="extent must be one of"):
        E.locality_of(before, after, 1, extent="after")
    for region in ("hair", 3, -1, 1.0, True):  # a name, indices outside 0..2, not a whole number
        with pytest.raises(ValueError, match=r"region must be a class index in 0..2, got"):
            E.locality_of(before, after, region)
    for dilate in (-1, 1.5):
        with pytest.raises(ValueError, match=r"dilate must be a whole number of pixels >= 0"):
            E.locality_of(before, after, 1, dilate=dilate)
    assert E.locality_of(before, after, np.int64(1)).inside.item() == pytest.approx(2 / 4)
    assert union.outside_over_inside.item() == 0 and "outside/inside" in union.report("class 1")


# --- directions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", E.FIT_METHODS)
def test_fit_direction_recovers_normal(method):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, 6, generator=g) * torch.linspace(0.5, 2, 12).reshape(2, 6)
    true = torch.randn(2, 6, generator=g)
    labels = ((x * true).sum((1, 2)) > 0.3).long()
    d = E.fit_direction(x, labels, method)
    assert d.normal.shape == (2, 6)
    torch.testing.assert_close(d.normal.norm(), torch.tensor(1.0))
    assert torch.nn.functional.cosine_similarity(d.normal.flatten(), true.flatten(), dim=0) > 0.9
    assert d.accuracy > 0.95


def test_fit_direction_bad_labels():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="binary"):
        E.fit_direction(x, torch.arange(10))
    with pytest.raises(ValueError, match="both classes"):
        E.fit_direction(x, torch.ones(10))
    with pytest.raises(ValueError, match="9 labels"):
        E.fit_direction(x, torch.ones(9))


def test_latent_files(tmp_path):
    w = torch.randn(2, 14, 64)
    for name in ("w.npy", "w.safetensors"):
        E.save_latents(tmp_path / name, w)
        assert torch.equal(E.load_latents(tmp_path / name), w)
    with pytest.raises(ValueError, match=".npy or .safetensors"):
        E.save_latents(tmp_path / "w.pt", w)
    with pytest.raises(FileNotFoundError):
        E.load_latents(tmp_path / "missing.npy")


# --- command line ---------------------------------------------------------------------------------


def test_cli_edit_mix_and_direction(tmp_path, capsys):
    assert main(["edit", "--ckpt", ckpt(), "--seeds", "0-1", "--source-seeds", "9", "--regions", "class2:texture",
                 "--out", str(tmp_path / "mix")]) == 0  # fmt: skip
    assert "locality of class2" in capsys.readouterr().out
    with Image.open(tmp_path / "mix" / "edit_001.png") as img:
        assert img.size == (4 * 128, 128)
    edited = E.load_latents(tmp_path / "mix" / "edited_latents.npy")
    assert edited.shape == (2, 14, 64)

    np.save(tmp_path / "dir.npy", np.random.randn(64).astype(np.float32))
    np.save(tmp_path / "w.npy", np.zeros((2, 13, 64), np.float32))  # one slot short of W+
    assert main(["edit", "--ckpt", ckpt(), "--latent", str(tmp_path / "mix" / "edited_latents.npy"), "--direction",
                 str(tmp_path / "dir.npy"), "--regions", "base", "--out", str(tmp_path / "dir")]) == 0  # fmt: skip
    assert "no locality report" in capsys.readouterr().out
    assert main(["edit", "--ckpt", ckpt(), "--latent", str(tmp_path / "w.npy"), "--direction",
                 str(tmp_path / "dir.npy"), "--regions", "class1", "--out", str(tmp_path / "bad")]) == 2  # fmt: skip
    expected = "w.npy must be W [B, 64] or W+ [B, 14, 64] for this model (B may be left out for one code), got (2, 13"
    assert expected in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    assert main(["edit", "--ckpt", ckpt(), "--seeds", "0", "--source-seeds", "1", "--regions", "hair"]) == 2
    assert "unknown class 'hair'; this model's classes are background, class1" in capsys.readouterr().err
    assert main(["edit", "--ckpt", ckpt(), "--seeds", "0", "--regions", "class1"]) == 2
    assert "choose one edit" in capsys.readouterr().err
    assert main(["components", "--ckpt", ckpt(), "--seeds", "0-x"]) == 2
    assert "bad seed list" in capsys.readouterr().err


def test_cli_interpolate_and_components(tmp_path):
    assert main(["interpolate", "--ckpt", ckpt(), "--seeds", "4", "--regions", "class1:shape", "--keys", "2",
                 "--frames", "4", "--method", "spherical", "--out", str(tmp_path)]) == 0  # fmt: skip
    with Image.open(tmp_path / "interp_000_class1-shape.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (256, 128)
    assert main(["components", "--ckpt", ckpt(), "--seeds", "4", "--order", "class1,class5", "--out",
                 str(tmp_path)]) == 0  # fmt: skip
    with Image.open(tmp_path / "components_000.png") as img:
        assert img.size == (4 * 128, 3 * 128)


def test_cli_fit_direction(tmp_path, capsys):
    x = torch.randn(60, 64)
    E.save_latents(tmp_path / "lat.safetensors", x)
    (tmp_path / "labels.txt").write_text("\n".join(str(int(v > 0)) for v in x[:, 0]))
    args = ["--latents", str(tmp_path / "lat.safetensors"), "--labels", str(tmp_path / "labels.txt")]
    assert main(["fit-direction", *args, "--method", "logistic", "--out", str(tmp_path / "d.npy")]) == 0
    d = np.load(tmp_path / "d.npy")
    assert d.shape == (64,) and abs(np.linalg.norm(d) - 1) < 1e-5 and d[0] > 0.5
    assert "training accuracy" in capsys.readouterr().out
