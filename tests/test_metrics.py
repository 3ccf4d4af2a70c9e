"""Issue #11 item 5: FID/KID with few samples, non-finite metrics, and `ssgan metrics --data` on any image source.

Feature networks here are tiny TorchScript files (any local TorchScript file works as the extractor), so the tests
stay cheap; F is their feature count.
"""
import json
import math

import pytest
import torch
from conftest import TINY_CONFIG, shared_path
from ssgan.train import metrics

import ssgan
from ssgan.cli import main

TINY = ssgan.SSGConfig(**TINY_CONFIG)



pytestmark = pytest.mark.usefixtures("one_thread")


class Images(torch.utils.data.Dataset):
    def __init__(self, n, size=16):
        self.images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(n)) * 2 - 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i]}


class NaNFeatures(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3)) * float("nan")


def feature_net(tmp_path, module=None, name="features.pt"):
    """A TorchScript feature network: 4x4 average pooling, F = 48 features (or `module`)."""
    net = torch.jit.script(module or torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()))
    net.save(str(tmp_path / name))
    return str(tmp_path / name)


def test_fid_of_a_set_with_itself_is_zero_not_negative():
    """The issue's example: FID of a set against itself came out -3.6e-3 at n = 10 (round-off); here n = 10 < F."""
    for seed in range(3):
        x = torch.rand(10, 64, generator=torch.Generator().manual_seed(seed)) * 3
        stats = metrics.feature_statistics(x)
        assert metrics.frechet_distance(*stats, *stats) == 0.0
    # a sibling: two nearly equal sets give a small non-negative value
    y = x + 1e-9
    assert 0.0 <= metrics.frechet_distance(*stats, *metrics.feature_statistics(y)) < 1e-6


def test_fid_matches_the_general_eigenvalue_formula_for_singular_covariances():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(12, 32, generator=g).double(), torch.randn(20, 32, generator=g).double() + 0.3
    (mu1, s1), (mu2, s2) = metrics.feature_statistics(a), metrics.feature_statistics(b)
    trace_sqrt = torch.linalg.eigvals(s1 @ s2).real.clamp(min=0).sqrt().sum()
    expected = ((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * trace_sqrt).item()
    assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_an_error_not_a_linalg_crash(bad):
    x = torch.randn(8, 4)
    x[3, 1] = bad
    with pytest.raises(metrics.MetricError, match="NaN or Inf"):
        metrics.feature_statistics(x)
    with pytest.raises(metrics.MetricError, match="NaN or Inf"):
        metrics.kernel_inception_distance(x, torch.randn(8, 4))
    mu, sigma = torch.zeros(4), torch.eye(4)
    with pytest.raises(metrics.MetricError, match="NaN or Inf"):
        metrics.frechet_distance(mu, sigma * bad, mu, sigma)
    with pytest.raises(metrics.MetricError, match="at least 2"):
        metrics.feature_statistics(torch.randn(1, 4))


def test_few_samples_warn_and_counts_are_recorded(tmp_path):
    kw = {"num_samples": 8, "batch": 4, "inception": feature_net(tmp_path), "cache_dir": tmp_path / "cache"}
    G = ssgan.Generator(TINY)
    with pytest.warns(metrics.SmallSampleWarning, match="8 real and 8 generated samples, fewer than the 48") as rec:
        results = metrics.evaluate(G, ("fid", "kid", "classes"), dataset=Images(20), **kw)
    (warning,) = [w for w in rec if w.category is metrics.SmallSampleWarning]
    assert "KID is unbiased" in str(warning.message)
    assert results["samples"] == {"generated": 8, "real": 8}
    assert math.isfinite(results["fid"]) and results["fid"] >= 0 and math.isfinite(results["kid"])
    metrics.append_results(tmp_path, results, kimg=1.0)
    for name in ("fid", "kid", "class_presence"):
        (line,) = (tmp_path / f"metric-{name}.jsonl").read_text().splitlines()
        assert json.loads(line)["samples"] == {"generated": 8, "real": 8}
    # a sibling: a data set of 2 images against 8 generated samples, 4x apart
    with pytest.warns(metrics.SmallSampleWarning, match="2 real with 8 generated samples, 4.0x apart"):
        results = metrics.evaluate(G, ("fid", "kid"), dataset=Images(2), **kw)
    assert results["samples"] == {"generated": 8, "real": 2} and math.isfinite(results["kid"])


def test_non_finite_and_undefined_metrics_are_errors_never_numbers(tmp_path):
    G = ssgan.Generator(TINY)
    nan_net = feature_net(tmp_path, NaNFeatures(), "nan.pt")
    results = metrics.evaluate(G, ("fid", "kid", "classes"), num_samples=4, batch=4, dataset=Images(4),
                               inception=nan_net)  # fmt: skip
    assert "NaN or Inf" in results["fid"]["error"] and "NaN or Inf" in results["kid"]["error"]
    assert set(metrics.metric_errors(results)) == {"fid", "kid"}
    metrics.append_results(tmp_path, results)
    assert "NaN" not in (tmp_path / "metric-fid.jsonl").read_text().replace("NaN or Inf", "")
    assert "failed" in metrics.format_results(results)
    # a sibling: one real image, where FID and KID are undefined
    with pytest.warns(metrics.SmallSampleWarning):
        results = metrics.evaluate(G, ("fid", "kid"), num_samples=4, batch=4, dataset=Images(1),
                                   inception=feature_net(tmp_path))  # fmt: skip
    assert "at least 2" in results["fid"]["error"] and "at least 2" in results["kid"]["error"]


def _checkpoint(tmp_path):
    return str(ssgan.save_checkpoint(tmp_path / "model.safetensors", TINY, ssgan.Generator(TINY)))


def test_cli_metrics_on_a_plain_folder_of_images(tmp_path, capsys):
    """The issue's example: `ssgan metrics --data FOLDER_OF_IMAGES` was refused with advice meant for Python."""
    faces = str(shared_path("data", "faces"))
    argv = ["metrics", _checkpoint(tmp_path), "--data", faces, "--metrics", "fid,kid", "--num", "4", "--batch", "4",
            "--inception", feature_net(tmp_path), "--out", str(tmp_path / "results")]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert results["samples"] == {"generated": 4, "real": 4} and results["fid"] >= 0
    assert "ssgan metrics: warning: FID from 4 real and 4 generated samples" in captured.err
    assert "image_only" not in captured.err
    line = json.loads((tmp_path / "results" / "metric-fid.jsonl").read_text())
    assert line["samples"] == {"generated": 4, "real": 4}


def test_cli_metrics_on_other_image_sources(tmp_path, capsys, monkeypatch):
    """Siblings: a folder with images/ but no masks/, and the builtin data for a model of another class count."""
    from PIL import Image

    monkeypatch.setenv("SSGAN_CACHE", str(tmp_path / "builtin-cache"))
    (tmp_path / "data" / "images").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (20, 24), (40 * i, 90, 200)).save(tmp_path / "data" / "images" / f"{i}.jpg")
    common = ["--metrics", "kid", "--num", "3", "--batch", "3", "--inception", feature_net(tmp_path)]
    assert main(["metrics", _checkpoint(tmp_path), "--data", str(tmp_path / "data")] + common) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == {"generated": 3, "real": 3}
    # the builtin data for a model of 3 classes, not its 7: all metrics that apply (agreement does not)
    argv = ["metrics", _checkpoint(tmp_path), "--data", "builtin:3", "--num", "3", "--batch", "3",
            "--inception", feature_net(tmp_path), "--cache", str(tmp_path / "cache")]  # fmt: skip
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["samples"] == {"generated": 3, "real": 3} and math.isfinite(results["kid"])
    assert results["agreement"]["unavailable"] and set(results["class_presence"]) == set(TINY.class_names)


def test_cli_metrics_fails_on_a_non_finite_metric(tmp_path, capsys):
    argv = ["metrics", _checkpoint(tmp_path), "--data", str(shared_path("data", "faces")), "--metrics", "fid,classes",
            "--num", "2", "--batch", "2", "--inception", feature_net(tmp_path, NaNFeatures(), "nan.pt"),
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "ssgan metrics: fid: " in captured.err and "NaN or Inf" in captured.err
    assert "error" in json.loads(captured.out)["fid"]
    assert "error" in json.loads((tmp_path / "metric-fid.jsonl").read_text())["value"]
    # without a feature network FID is only unavailable: the other metrics ran, so the command succeeds
    argv[argv.index("--inception") + 1] = str(tmp_path / "absent.pt")
    assert main(argv) == 0
    with pytest.raises(SystemExit):
        main(["metrics", _checkpoint(tmp_path), "--num", "0"])
    assert "--num: must be a positive integer" in capsys.readouterr().err


def test_progress_line_prints_class_presence_and_area_in_percent():
    results = {"agreement": 0.95, "class_presence": {"background": 1.0, "face": 0.984},
               "class_area": {"background": 0.5934, "face": 0.152}, "samples": {"generated": 256}}  # fmt: skip
    assert metrics.format_results(results) == ("agreement 0.95, class_presence % (background 100, face 98), "
                                               "class_area % (background 59.3, face 15.2) [samples: 256 generated]")
