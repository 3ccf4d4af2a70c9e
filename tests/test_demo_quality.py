"""The main job's end-of-run report (train/demo_quality.py) and a guard on the demo recipe."""
import json
import math

import pytest
import torch
from ssgan.train import demo_quality
from ssgan.train.loop import TrainOptions, train

import ssgan

TINY = ssgan.SSGConfig(
    size=16, style_dim=16, n_mlp=2, class_names=("background", "a", "b"), transparent=(), local_channel=16,
    coarse_channel=16, coarse_size=8, min_feat_size=4, render_channels={8: 16, 16: 16},
    disc_channels={4: 16, 8: 16, 16: 16}, pos_frequencies=3,
)  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    assert set(depth) == {"a", "b", "mean"} and all(0 <= v <= 1 for v in depth.values())
    assert set(local) == set(TINY.class_names)
    for r in local.values():
        assert 0 <= r["pairs"] <= 4 and set(r) == {"inside", "outside", "ratio", "seg_iou_outside", "pairs"}
    text = demo_quality.format_locality(local)
    assert all(name in text for name in TINY.class_names)
