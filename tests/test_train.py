"""Training recipe: losses, metrics math, snapshots, exact resume, NaN stop, image-only/freeze-local, CLI."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, shared_path
from hypothesis import given
from hypothesis import strategies as st
from ssgan.train import losses, metrics
from ssgan.train.loop import (GeneratorStep, Trainer, TrainingDiverged, TrainOptions, lr_rampdown_scale, resume_options,
                              sample_grid, train)
from ssgan.train.snapshot import (
    SnapshotError,
    capture_rng,
    list_snapshots,
    load_snapshot,
    restore_rng,
    save_snapshot,
)  # fmt: skip

import ssgan
from ssgan.io import DamagedFileError

TINY = ssgan.SSGConfig(**TINY_CONFIG)


class TinyData(torch.utils.data.Dataset):
    """Deterministic random images and label maps of TINY's size and classes."""

    def __init__(self, n=12, size=16, num_classes=3):
        self.n, self.size, self.k = n, size, num_classes

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        labels = torch.randint(0, self.k, (self.size, self.size), generator=g)
        image = torch.rand(3, self.size, self.size, generator=g) * 2 - 1
        mask = torch.nn.functional.one_hot(labels, self.k).permute(2, 0, 1).float() * 2 - 1
        return {"image": image, "mask": mask}


def tiny_options(tmp_path, **kw):
    base = {"out": str(tmp_path / "runs"), "kimg": 0.016, "batch": 2, "d_reg_every": 2, "g_reg_every": 2,
            "path_reg": 0.5, "tick_kimg": 0.004, "snap": 1, "metrics": (), "keep_snapshots": 0, "ema_kimg": 0.01,
            "lr": 0.002, "lr_rampdown": 0.0}  # fmt: skip
    return TrainOptions(**(base | kw))


def quiet(*args, **kwargs):
    pass


pytestmark = pytest.mark.usefixtures("one_thread")


# --- losses -------------------------------------------------------------------------------------
def test_logistic_losses_match_formulas():
    real, fake = torch.randn(6, 1), torch.randn(6, 1)
    expected_d = torch.log1p(torch.exp(-real)).mean() + torch.log1p(torch.exp(fake)).mean()
    torch.testing.assert_close(losses.d_logistic(real, fake), expected_d)
    torch.testing.assert_close(losses.g_nonsaturating(fake), torch.log1p(torch.exp(-fake)).mean())


def test_r1_is_half_gamma_squared_gradient_norm():
    """For D(x, y) = sum(a*x) + sum(b*y) the gradients are a and b, so R1 is known in closed form."""
    a, b = torch.randn(3, 4, 4), torch.randn(2, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    y = torch.randn(5, 2, 4, 4, requires_grad=True)
    logits = (x * a).sum((1, 2, 3)) + (y * b).sum((1, 2, 3))
    loss, p_img, p_seg = losses.r1_loss(logits[:, None], x, y, 10.0, 1000.0)
    torch.testing.assert_close(p_img, a.square().sum())
    torch.testing.assert_close(p_seg, b.square().sum())
    torch.testing.assert_close(loss.detach(), 5 * a.square().sum() + 500 * b.square().sum())
    loss_img_only, _, zero = losses.r1_loss((x * a).sum((1, 2, 3))[:, None], x, None, 10.0, 1000.0)
    assert zero.item() == 0
    torch.testing.assert_close(loss_img_only.detach(), 5 * a.square().sum())


def test_mask_loss_pools_the_segmentation():
    seg = torch.randn(2, 3, 8, 8)
    coarse = torch.nn.functional.avg_pool2d(seg, 2)
    assert losses.mask_loss(coarse, seg).item() == pytest.approx(0.0, abs=1e-12)
    assert losses.mask_loss(coarse + 0.5, seg).item() == pytest.approx(0.25)


def test_path_length_of_a_linear_map():
    """image = W w: with the 1/sqrt(HW)-scaled Gaussian probe, E[path length^2] = ||W||_F^2 / (HW N)."""
    torch.manual_seed(0)
    B, N, D, S = 256, 4, 8, 4
    weight = torch.randn(3 * S * S, N * D, requires_grad=True)
    w = torch.randn(B, N, D, requires_grad=True)
    image = (w.flatten(1) @ weight.t()).reshape(B, 3, S, S)
    lengths = losses.path_lengths(image, w)
    expected = weight.detach().square().sum() / (S * S * N)
    assert lengths.square().mean().item() == pytest.approx(expected.item(), rel=0.1)
    penalty, new_mean, batch_mean = losses.path_length_penalty(lengths, 0.0, 0.01)
    assert new_mean == pytest.approx(0.01 * batch_mean.item())
    assert penalty.requires_grad


def test_path_length_penalty_differentiates_through_the_running_mean():
    """As in the original and NVlabs StyleGAN2-ADA: a = a0 + decay (mean(l) - a0) is not detached, so
    d/dl_i mean_j (l_j - a)^2 = 2 (l_i - a) / B - decay * 2 mean_j (l_j - a) / B."""
    lengths = torch.tensor([0.5, 0.8, 1.1], dtype=torch.float64, requires_grad=True)
    a0, decay, B = 0.3, 0.01, 3
    penalty, new_mean, batch_mean = losses.path_length_penalty(lengths, a0, decay)
    (grad,) = torch.autograd.grad(penalty, lengths)
    l = lengths.detach()  # noqa: E741
    a = a0 + decay * (l.mean() - a0)
    torch.testing.assert_close(grad, 2 * (l - a) / B - decay * 2 * (l - a).mean() / B)
    assert new_mean == pytest.approx(a.item(), rel=1e-15)
    assert batch_mean.item() == pytest.approx(l.mean().item(), rel=1e-15)


def test_path_step_latents_are_leaves():
    """The path-length step takes its latents from the mapping without gradient, as the original does."""
    G = ssgan.Generator(TINY)
    _, lengths = GeneratorStep(G, mixing=0.5)(2, outputs=("image", "path_lengths"))
    lengths.sum().backward()
    assert all(p.grad is None for p in G.mapping.parameters())
    assert G.local.weight.grad is not None and G.render.convs[0].weight.grad is not None


@given(batch=st.integers(1, 5), mixing=st.sampled_from([0.0, 1.0]))
def test_sample_w_plus_layout_and_mixing_rule(batch, mixing):
    G = ssgan.Generator(TINY)
    with torch.no_grad():
        w_plus = losses.sample_w_plus(G.mapping, G.layout, G.mix, batch, TINY.style_dim, mixing, "cpu")
    assert w_plus.shape == (batch, TINY.n_latent, TINY.style_dim)
    base = w_plus[:, :1]
    assert torch.equal(w_plus[:, 1], w_plus[:, 0])  # both base codes come from w0
    if mixing == 0:
        assert torch.equal(w_plus, base.expand_as(w_plus))
    shape, texture = w_plus[:, 2::2], w_plus[:, 3::2]
    shape_from_w1 = ~(shape == base).all(-1)
    texture_from_w1 = ~(texture == base).all(-1)
    assert not (shape_from_w1 & ~texture_from_w1).any()  # "shape from w1, texture from w0" is never drawn


# --- metrics math -------------------------------------------------------------------------------
def test_fid_of_identical_sets_is_zero():
    x = torch.randn(500, 16, dtype=torch.float64)
    stats = metrics.feature_statistics(x)
    assert abs(metrics.frechet_distance(*stats, *stats)) < 1e-6


def test_fid_of_gaussians_matches_closed_form():
    """Diagonal covariances: FID = |mu1-mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))."""
    mu1, mu2 = torch.randn(8).double(), torch.randn(8).double()
    s1, s2 = torch.rand(8).double() + 0.1, torch.rand(8).double() + 0.1
    fid = metrics.frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2))
    expected = (mu1 - mu2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    assert fid == pytest.approx(expected.item(), rel=1e-9)
    # a rotated pair: FID is invariant to a common orthogonal change of basis
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    rotated = metrics.frechet_distance(q @ mu1, q @ torch.diag(s1) @ q.t(), q @ mu2, q @ torch.diag(s2) @ q.t())
    assert rotated == pytest.approx(expected.item(), rel=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 32, generator=g), torch.randn(400, 32, generator=g)
    same = metrics.kernel_inception_distance(a, b, num_subsets=20, subset_size=200, generator=g)
    shifted = metrics.kernel_inception_distance(a, b + 1, num_subsets=20, subset_size=200, generator=g)
    assert abs(same) < 0.02 < shifted


def test_class_presence():
    seg = torch.full((4, 3, 8, 8), -1.0)
    seg[:, 0] = 1
    seg[:2, 2, :4] = 2  # class 2 covers half of the first two samples
    present, area = metrics.class_presence(seg)
    assert present == [1.0, 0.0, 0.5]
    assert area == pytest.approx([0.75, 0.0, 0.25])


def test_fid_without_a_feature_extractor_reports_and_others_run(tmp_path):
    G = ssgan.Generator(TINY)
    results = metrics.evaluate(G, ("fid", "classes"), num_samples=4, batch=4, dataset=TinyData(),
                               inception=str(tmp_path / "missing.pt"))  # fmt: skip
    assert "no feature extractor" in results["fid"]["error"]
    assert set(results["class_presence"]) == set(TINY.class_names)


def test_fid_with_a_local_torchscript_extractor(tmp_path):
    """Any local TorchScript network works as the feature extractor; real statistics are cached."""
    net = torch.jit.script(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()))
    path = tmp_path / "features.pt"
    net.save(str(path))
    G = ssgan.Generator(TINY)
    kw = {"num_samples": 8, "batch": 4, "dataset": TinyData(), "inception": str(path), "cache_dir": tmp_path / "cache"}
    with pytest.warns(metrics.SmallSampleWarning):  # 8 samples < 48 features
        first = metrics.evaluate(G, ("fid", "kid"), **kw)
        assert metrics.evaluate(G, ("fid", "kid"), **kw) == first
    assert math.isfinite(first["fid"]) and first["fid"] > 0 and math.isfinite(first["kid"])
    assert len(list((tmp_path / "cache").glob("real-features-*.pt"))) == 1


# --- snapshots ----------------------------------------------------------------------------------
def test_snapshot_roundtrip_restores_rng(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    state = {"format": "ssgan-snapshot", "weights": torch.randn(4), "rng": capture_rng(), "step": 7}
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    path = save_snapshot(tmp_path / "snap.pt", state)
    assert not list(tmp_path.glob(".*tmp"))  # the temp file was renamed away
    loaded = load_snapshot(path)
    torch.manual_seed(99)
    restore_rng(loaded["rng"])
    got = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["step"] == 7


def test_snapshot_loading_refuses_pickled_objects_and_foreign_files(tmp_path):
    torch.save({"format": "ssgan-snapshot", "payload": TrainOptions()}, tmp_path / "evil.pt")
    with pytest.raises(SnapshotError, match="objects other than tensors"):
        load_snapshot(tmp_path / "evil.pt")
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(SnapshotError, match="not an ssgan training snapshot"):
        load_snapshot(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DamagedFileError, match="cut.pt as a training snapshot: the file is damaged"):
        load_snapshot(tmp_path / "cut.pt")


def test_a_training_snapshot_is_a_model_whatever_its_name(tmp_path):
    """ssgan.load_checkpoint (every command's way to name a model) reads Trainer.state_dict's format by content;
    tests/test_entry_points.py builds snapshots with the same keys."""
    trainer = Trainer(tiny_options(tmp_path), dataset=TinyData(), config=TINY, log=quiet)
    state = trainer.state_dict()
    assert {"format", "config", "G", "G_ema", "D"} <= set(state) and state["format"] == "ssgan-snapshot"
    ckpt = ssgan.load_checkpoint(save_snapshot(tmp_path / "weights.bin", state))
    assert ckpt.config == TINY
    for ours, theirs in ((ckpt.g_ema, trainer.G_ema), (ckpt.g, trainer.G), (ckpt.d, trainer.D)):
        assert all(torch.equal(t, theirs.state_dict()[k]) for k, t in ours.state_dict().items())
    save_snapshot(tmp_path / "run" / "snapshot-000000008.pt", state)
    assert ssgan.load_checkpoint(tmp_path / "run").source.name == "snapshot-000000008.pt"
    snapshot, model = trainer._read_resume(str(tmp_path / "weights.bin"))  # resumes fully, not weights only
    assert snapshot is not None and model is None


# --- the loop -----------------------------------------------------------------------------------
def final_state(run_dir):
    return load_snapshot(list_snapshots(run_dir)[-1])


def assert_same_weights(a, b, keys=("G", "G_ema", "D")):
    for key in keys:
        for name, t in a[key].items():
            torch.testing.assert_close(b[key][name], t, rtol=1e-6, atol=1e-6, msg=f"{key}.{name}")


def test_resume_continues_the_same_trajectory(tmp_path):
    """train(8 steps) == train(4 steps) + resume + train(4 steps), with R1, path-length and mixing in both halves."""
    data = TinyData()
    full = train(tiny_options(tmp_path, mixing=0.5, xflip=True), dataset=data, config=TINY, log=quiet)
    half = train(tiny_options(tmp_path, mixing=0.5, xflip=True, kimg=0.008), dataset=data, config=TINY, log=quiet)
    resumed = train(tiny_options(tmp_path, mixing=0.5, xflip=True, resume=str(half)), dataset=data, log=quiet)
    assert len({full, half, resumed}) == 3  # every run gets its own numbered directory
    a, b = final_state(full), final_state(resumed)
    assert a["step"] == b["step"] == 8 and a["images_seen"] == b["images_seen"] == 16
    assert_same_weights(a, b)
    for key in ("g_opt", "d_opt"):
        for slot, state in a[key]["state"].items():
            torch.testing.assert_close(b[key]["state"][slot]["exp_avg_sq"], state["exp_avg_sq"], rtol=1e-6, atol=1e-9)
    info = json.loads((resumed / "training_options.json").read_text())
    assert info["start_step"] == 4 and info["resumed_from"] == str(half)
    # the run's outputs: log, stats per tick, grids, and a checkpoint that ssgan.load_checkpoint reads
    stats = [json.loads(line) for line in (full / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [2, 4, 6, 8] and all(math.isfinite(s["d_loss"]) for s in stats)
    assert "r1_seg" in stats[0] and "path_penalty" in stats[0] and "mask_loss" in stats[0]
    assert "tick 4" in (full / "log.txt").read_text()
    assert list(full.glob("samples-*.png"))
    ckpt = ssgan.load_checkpoint(full / "network-final.safetensors")
    for name, t in ckpt.g_ema.state_dict().items():
        torch.testing.assert_close(t, a["G_ema"][name])


def test_lr_rampdown_is_a_half_cosine_over_the_end_of_the_run():
    assert [lr_rampdown_scale(p, 0.3) for p in (0.0, 0.5, 0.7)] == [1.0, 1.0, 1.0]
    assert lr_rampdown_scale(0.85, 0.3) == pytest.approx(0.5) and lr_rampdown_scale(1.0, 0.3) == 0.0
    assert lr_rampdown_scale(0.95, 0.3) == pytest.approx(0.5 - 0.5 * math.cos(math.pi / 6))
    assert lr_rampdown_scale(1.0, 0.0) == 1.0  # no ramp-down: the celebamask recipe, as the original


def test_the_optimisers_follow_the_lr_rampdown(tmp_path):
    """4 steps of batch 2 with the ramp over the last half: the lr of steps 3 and 4 (progress 0.5, 0.75) falls."""
    run = train(tiny_options(tmp_path, kimg=0.008, tick_kimg=0.002, lr_rampdown=0.5), dataset=TinyData(), config=TINY,
                log=quiet)  # fmt: skip
    scales = [json.loads(line)["lr_scale"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert scales == pytest.approx([1.0, 1.0, 1.0, 0.5])
    state = final_state(run)
    assert state["g_opt"]["param_groups"][0]["lr"] == pytest.approx(0.002 * 2 / 3 * 0.5)  # g_reg_every 2: ratio 2/3
    with pytest.raises(ValueError, match=r"--lr-rampdown must lie in \[0, 1\], got 1.5"):
        TrainOptions(lr_rampdown=1.5).resolved().validate()
    assert lr_rampdown_scale(0.0, 1.0) == 1.0 and lr_rampdown_scale(0.5, 1.0) == pytest.approx(0.5)  # the whole run


def test_resuming_names_a_kimg_with_nothing_left_and_a_moved_rampdown(tmp_path):
    """--kimg at or below what the run has trained is an error before any run directory is made; a longer --kimg
    with a ramp-down that had begun says that the learning rate jumps back up."""
    run = train(tiny_options(tmp_path, kimg=0.008, lr_rampdown=0.5), dataset=TinyData(), config=TINY, log=quiet)
    before = sorted((tmp_path / "runs").iterdir())
    for kimg in (0.008, 0.004):
        with pytest.raises(ValueError, match=rf"trained 0.008 kimg and --kimg {kimg} asks for no more"):
            Trainer(resume_options(str(run), {"kimg": kimg}), dataset=TinyData(), log=quiet)
    assert sorted((tmp_path / "runs").iterdir()) == before
    lines = []
    Trainer(resume_options(str(run), {"kimg": 0.016}), dataset=TinyData(), log=lines.append)
    assert any("learning-rate factor jumps from 0.000 to 1.000" in line and "--kimg 0.016" in line for line in lines)


def test_resume_options_keep_the_run_hyper_parameters(tmp_path):
    opts = tiny_options(tmp_path, kimg=0.004, r1_seg=123.0, xflip=True)
    run = train(opts, dataset=TinyData(), config=TINY, log=quiet)
    opts = resume_options(str(run), {"kimg": 0.008, "out": "elsewhere"})
    assert (opts.r1_seg, opts.xflip, opts.kimg, opts.out, opts.resume) == (123.0, True, 0.008, "elsewhere", str(run))
    assert opts.metrics == ()
    model_only = resume_options(str(run / "network-final.safetensors"), {"kimg": 1.0})
    assert model_only.r1_seg is None and model_only.resume is None  # a model checkpoint has no options


def test_resume_from_an_original_checkpoint_takes_its_weights_and_config(tmp_path, official_small):
    ckpt, _ = official_small
    path = shared_path("fixtures", "official_small", "checkpoint.pt")
    trainer = Trainer(tiny_options(tmp_path, resume=str(path)), dataset=TinyData(size=128, num_classes=6), log=quiet)
    assert trainer.cfg == ckpt.config and trainer.step == 0 and trainer.resumed_from == str(path)
    for mine, theirs in ((trainer.G_ema, ckpt.g_ema), (trainer.G, ckpt.g), (trainer.D, ckpt.d)):
        for name, t in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[name], t), name


def test_nan_loss_stops_and_keeps_the_last_good_snapshot(tmp_path, monkeypatch):
    real = losses.g_nonsaturating
    calls = []

    def poisoned(logits):
        calls.append(1)
        return real(logits) * (float("nan") if len(calls) == 4 else 1.0)

    monkeypatch.setattr(losses, "g_nonsaturating", poisoned)
    opts = tiny_options(tmp_path, path_reg=0.0)
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 3.*g_loss=nan"):
        train(opts, dataset=TinyData(), config=TINY, log=quiet)
    run_dir = next((tmp_path / "runs").iterdir())
    snaps = list_snapshots(run_dir)
    assert [p.name for p in snaps] == ["snapshot-000000004.pt"]  # after step 2; nothing written after the NaN
    state = load_snapshot(snaps[-1])
    assert all(torch.isfinite(t).all() for t in state["G"].values())
    assert "stopping: non-finite loss" in (run_dir / "log.txt").read_text()


def test_image_only_with_freeze_local_keeps_the_ema_local_generators(tmp_path):
    trainer = Trainer(tiny_options(tmp_path, image_only=True, freeze_local=True, kimg=0.004), dataset=TinyData(),
                      config=TINY, log=quiet)  # fmt: skip
    assert trainer.opts.lambda_mask == 0
    before = {k: v.clone() for k, v in trainer.G_ema.state_dict().items()}
    seg_branch = {k: v.clone() for k, v in trainer.D.seg_branch.state_dict().items()}
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    trainer.step = 1  # a plain step (no lazy regularisation)
    stats = trainer.train_step(image, None)
    assert "mask_loss" not in stats and math.isfinite(stats["g_loss"])
    after = trainer.G_ema.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith("local."))
    assert not torch.equal(after["mapping.layers.0.weight"], before["mapping.layers.0.weight"])
    assert all(torch.equal(trainer.D.seg_branch.state_dict()[k], v) for k, v in seg_branch.items())


def test_sample_grid_layout():
    G = ssgan.Generator(TINY)
    with torch.no_grad():
        out = G(z=torch.randn(3, TINY.style_dim))
    grid = sample_grid(out, TINY.num_classes)
    rows = 3 + TINY.num_classes - 1  # image, seg, coarse, then one depth row per foreground class
    assert grid.shape == (rows * 16, 3 * 16, 3) and grid.dtype == np.uint8


def test_bad_options_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="--batch 6 must be divisible"):
        Trainer(tiny_options(tmp_path, batch=6), dataset=TinyData(), config=TINY, log=quiet)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        Trainer(tiny_options(tmp_path, precision="bf16"), dataset=TinyData(), config=TINY, log=quiet, device="cpu")
    with pytest.raises(ValueError, match="unknown metrics"):
        Trainer(tiny_options(tmp_path, metrics=("fid", "bogus")), dataset=TinyData(), config=TINY, log=quiet)


# --- the command line ---------------------------------------------------------------------------
def test_cli_train_then_metrics(tmp_path, capsys):
    """`ssgan train` on a folder dataset with the demo preset for one step, then `ssgan metrics` on the run."""
    from PIL import Image

    from ssgan.cli import main

    cfg = ssgan.preset("demo")
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / "data" / "images" / f"{i}.png")
        labels = rng.integers(0, cfg.num_classes, (64, 64), dtype=np.uint8)
        Image.fromarray(labels, mode="L").save(tmp_path / "data" / "masks" / f"{i}.png")
    out = tmp_path / "runs"
    argv = ["train", "--data", str(tmp_path / "data"), "--preset", "demo", "--out", str(out), "--kimg", "0.002",
            "--batch", "2", "--metrics", "none", "--lr", "0.001", "--mixing", "0", "--grid", "2"]  # fmt: skip
    assert main(argv) == 0
    run_dir = out / "00000-demo-data"
    info = json.loads((run_dir / "training_options.json").read_text())
    assert info["options"]["lr"] == 0.001 and info["options"]["batch"] == 2 and info["options"]["r1_seg"] == 100
    assert info["config"]["class_names"] == list(cfg.class_names)
    assert (run_dir / "network-final.safetensors").is_file()
    capsys.readouterr()
    metrics_argv = ["metrics", str(run_dir), "--metrics", "classes", "--num", "2", "--batch", "2"]
    metrics_argv += ["--out", str(run_dir)]
    assert main(metrics_argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results["class_presence"]) == set(cfg.class_names)
    assert (run_dir / "metric-class_area.jsonl").is_file()
    assert main(argv[:-2] + ["--batch", "6"]) == 2  # a bad option is an error that names it
    assert "--batch 6 must be divisible" in capsys.readouterr().err
