"""The main job's end-of-run report (train/demo_quality.py) and a guard on the demo recipe."""
import json
import math

import numpy as np
import pytest
import torch
from ssgan.train import demo_quality
from ssgan.train.loop import TrainOptions, train

import ssgan

from conftest import TINY_CONFIG

TINY = ssgan.SSGConfig(**TINY_CONFIG, pos_frequencies=3)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_high_frequency_share_separates_shapes_from_stripes():
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = ((x - 16) ** 2 + (y - 12) ** 2 < 64).float()
    stripes = torch.sin(2 * math.pi * x / 3)
    share = demo_quality.high_frequency_share(torch.stack([disc, stripes, torch.zeros(32, 32)]))
    assert share.shape == (3,)
    assert share[0] < 0.2 and share[1] > 0.9 and share[2] == 0
    # only the mean is removed: the share does not depend on the map's offset or scale
    torch.testing.assert_close(demo_quality.high_frequency_share(3 * disc + 5), share[0])
    with pytest.raises(ValueError, match=r"expected maps \[..., H, W\], got shape \(5,\)"):
        demo_quality.high_frequency_share(torch.zeros(5))


def test_pos_frequencies_default_to_the_originals_rule_and_round_trip():
    assert ssgan.preset("celebamask-256").pos_frequencies == 8 and ssgan.preset("celebamask-512").pos_frequencies == 9
    assert TINY.pos_frequencies == 3 and ssgan.SSGConfig.from_dict(TINY.to_dict()) == TINY
    old = TINY.to_dict()
    del old["pos_frequencies"]  # configs saved before the field existed
    assert ssgan.SSGConfig.from_dict(old).pos_frequencies == 4
    G = ssgan.Generator(TINY)
    assert G.local.pos_weight.shape == (TINY.local_channel, 2 * (2 * 3 + 1))
    with pytest.raises(ValueError, match="pos_frequencies=0 must be >= 1"):
        ssgan.SSGConfig(pos_frequencies=0)


def test_final_report_measures_every_class():
    torch.manual_seed(0)
    report = demo_quality.final_report(ssgan.Generator(TINY), num_pairs=4, num_samples=4)
    depth, local = report["depth_high_frequency"], report["locality"]
    assert set(report["depth_region_iou"]) == {"a", "b", "mean"}
    assert set(depth) == {"a", "b", "mean"} and all(0 <= v <= 1 for v in depth.values())
    assert set(local) == set(TINY.class_names)
    for r in local.values():
        assert 0 <= r["pairs"] <= 4 and set(r) == set(demo_quality._EMPTY)
    text = demo_quality.format_locality(local)
    assert all(name in text for name in TINY.class_names)


def test_top_area_iou_scores_a_depth_peak_on_its_region():
    region = torch.zeros(2, 6, 6, dtype=torch.bool)
    region[:, 1:3, 1:4] = True  # 6 cells
    peak = region.float() + 0.01 * torch.rand(2, 6, 6)
    bands = torch.zeros(2, 6, 6)
    bands[:, 1:3, :] = 1  # a horizontal band through the region: its 12 highest cells hold the region's 6 and 6 more
    bands += 0.01 * region.float()
    assert torch.equal(demo_quality.top_area_iou(peak, region), torch.ones(2))
    assert demo_quality.top_area_iou(bands, region).tolist() == [1.0, 1.0]  # ties broken by the region's own lift
    bands -= 0.02 * region.float()  # now the region is the band's low part
    assert demo_quality.top_area_iou(bands, region).tolist() == [0.0, 0.0]
    assert demo_quality.top_area_iou(peak, torch.zeros_like(region)).isnan().all()


def test_colour_spread_is_the_spread_of_region_means():
    labels = torch.zeros(3, 4, 4, dtype=torch.long)
    labels[:2, :2] = 1  # class 1 in two samples, class 2 in none
    images = torch.zeros(3, 3, 4, 4)
    images[0] = 0.5  # sample 0: every pixel 0.5
    spread = demo_quality.colour_spread(images, labels, 3)
    assert spread[1] == pytest.approx(torch.tensor([0.5, 0.0]).std().item()) and spread[2] is None
    assert spread[0] == pytest.approx(torch.tensor([0.5, 0.0, 0.0]).std().item())


def test_texture_diversity_compares_model_and_data():
    torch.manual_seed(0)
    G = ssgan.Generator(TINY).eval()
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(3, TINY.size, TINY.size, generator=g) * 2 - 1,
             "mask": torch.eye(TINY.num_classes)[torch.randint(0, TINY.num_classes, (TINY.size, TINY.size),
                                                                generator=g)].permute(2, 0, 1) * 2 - 1}
            for _ in range(6)]  # fmt: skip
    report = demo_quality.texture_diversity(G, data, num_samples=8, batch=4)
    assert set(report) == set(TINY.class_names)
    for r in report.values():
        assert r["data"] > 0 and (r["ratio"] is None or r["ratio"] == pytest.approx(r["model"] / r["data"]))
    assert "texture diversity" in demo_quality.format_diversity(report)
    with pytest.raises(ValueError, match="the data has 1 rows; the spread needs at least 2"):
        demo_quality.texture_diversity(G, data[:1])


def test_swap_sheet_draws_every_class_swap():
    torch.manual_seed(0)
    G = ssgan.Generator(TINY).eval()
    sheet = demo_quality.swap_sheet(G, num_pairs=2, scale=2)
    tile = 2 * TINY.size
    assert sheet.dtype == np.uint8 and sheet.shape == (2 * 3 * tile, (2 + TINY.num_classes) * tile, 3)
    assert not sheet[2 * tile : 3 * tile, : 2 * tile].any()  # no |Δ| under the target and the source
    assert sheet[2 * tile : 3 * tile, 2 * tile :].any()


def test_a_class_never_drawn_is_reported_absent_not_nan(tmp_path):
    """A class no sample draws has no region to measure: None (JSON has no NaN) and a line saying so."""
    from ssgan.train import metrics

    torch.manual_seed(0)
    G = ssgan.Generator(TINY)
    with torch.no_grad():
        G.local.depth_bias[1] -= 1e4  # class "b" (the second foreground class) loses every pixel's softmax
    local = demo_quality.region_locality(G, num_pairs=2)
    assert local["b"] == demo_quality._EMPTY and local["b"]["pairs"] == 0 and local["b"]["ratio"] is None
    assert "b                0  (absent from every sample" in demo_quality.format_locality(local)
    metrics.append_results(tmp_path, {"locality": local})  # writes JSON without NaN
    assert json.loads((tmp_path / "metric-locality.jsonl").read_text())["value"]["b"]["pairs"] == 0


@pytest.mark.slow
def test_demo_recipe_learns_a_layout_within_one_kimg(tmp_path, monkeypatch):
    """The main job's recipe, cut to its first kimg (a sixth of it): masks and image already agree well above chance
    (1/7). With an earlier recipe (R1 gamma 1000 on the segmentation, 6 octaves) this run ended at 0.04; the full
    recipe is at 0.62-0.84 after its first kimg (seeds 0-4, 1 and 2 threads) and ends at 0.94-0.97. This run, which
    ramps its learning rate down over its own last 0.3 kimg, reaches 0.70. One thread, so that it is the same run on
    every machine of this kind. It also checks that the end-of-run report and swaps.png are written."""
    monkeypatch.setenv("SSGAN_CACHE", str(tmp_path / "cache"))
    opts = TrainOptions(preset="demo", data="builtin", out=str(tmp_path / "runs"), kimg=1.0, tick_kimg=0.25, snap=100,
                        metric_samples=64, grid=2)  # fmt: skip
    run = train(opts, log=lambda *a, **k: None)
    agreement = json.loads((run / "metric-agreement.jsonl").read_text().splitlines()[-1])["value"]
    assert agreement > 0.4, f"the demo recipe's agreement after 1 kimg fell to {agreement:.3f}"
    presence = json.loads((run / "metric-class_presence.jsonl").read_text().splitlines()[-1])["value"]
    assert presence["background"] > 0.9 and presence["face"] > 0.5, presence  # the background was missing before
    local = json.loads((run / "metric-locality.jsonl").read_text())["value"]
    assert set(local) == set(ssgan.preset("demo").class_names)
    diversity = json.loads((run / "metric-texture_diversity.jsonl").read_text())["value"]
    assert set(diversity) == set(local) and (run / "swaps.png").is_file()
