"""Training throughput: full iterations (D step, G step, and the lazy R1 / path-length steps in their
proportion) per second. The demo preset runs on the CPU; the celebamask presets need a GPU.

Run: pytest benchmarks/bench_train.py --benchmark-enable
"""
import pytest
import torch
from conftest import requires_cuda, synchronized
from ssgan.train.loop import RECIPES, Trainer, TrainOptions

import ssgan


class RandomPairs(torch.utils.data.Dataset):
    """Random images and one-hot masks: the data never limits the measured speed."""

    def __init__(self, cfg, n=64):
        self.cfg, self.n = cfg, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        S, K = self.cfg.size, self.cfg.num_classes
        labels = torch.randint(0, K, (S, S), generator=g)
        return {"image": torch.rand(3, S, S, generator=g) * 2 - 1,
                "mask": torch.nn.functional.one_hot(labels, K).permute(2, 0, 1).float() * 2 - 1}  # fmt: skip


def make_cycle(preset, batch, device, tmp_path, precision="fp32"):
    """A timed call is one training iteration; the trainer's step counter advances, so the lazy R1 runs
    on 1 call in 16 and the path-length step (if the recipe has it) on 1 in 4, as in training."""
    cfg = ssgan.preset(preset)
    opts = TrainOptions(preset=preset, out=str(tmp_path), batch=batch, metrics=(), precision=precision)
    trainer = Trainer(opts, device=device, dataset=RandomPairs(cfg), log=lambda *a, **k: None)
    data = RandomPairs(cfg)
    image = torch.stack([data[i]["image"] for i in range(batch)]).to(device)
    seg = torch.stack([data[i]["mask"] for i in range(batch)]).to(device)

    def iteration():
        trainer.train_step(image, seg)

    return synchronized(iteration)


def test_train_demo_cpu(benchmark, record, tmp_path):
    step = make_cycle("demo", 8, "cpu", tmp_path)
    step()  # warm-up
    record.update(preset="demo", batch=8, device="cpu", threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=16, iterations=1)
    if benchmark.stats:  # None under --benchmark-disable
        record["kimg_per_hour"] = 3600 * 8 / 1000 / benchmark.stats.stats.mean


def test_train_demo_recipe_cpu(benchmark, record, tmp_path):
    """The main job's iteration (`ssgan train --preset demo`: the demo recipe's batch), with the seconds per kimg
    and the minutes its whole length takes at that rate (metric evaluations not counted)."""
    recipe = RECIPES["demo"]
    step = make_cycle("demo", recipe["batch"], "cpu", tmp_path)
    step()  # warm-up
    record.update(preset="demo", batch=recipe["batch"], device="cpu", threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=32, iterations=1)
    if benchmark.stats:
        record["sec_per_kimg"] = benchmark.stats.stats.median * 1000 / recipe["batch"]  # median: robust to a busy machine
        record["recipe_minutes"] = record["sec_per_kimg"] * recipe["kimg"] / 60


@requires_cuda
@pytest.mark.parametrize("preset", ["celebamask-256", "celebamask-512"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kernels", ["triton", "reference"])
def test_train_celebamask_gpu(benchmark, record, tmp_path, monkeypatch, kernels, preset, precision):
    """Issue #3's whole-iteration target compares the kernels="triton" and "reference" rows of one preset."""
    monkeypatch.setenv("SSGAN_KERNELS", kernels)
    step = make_cycle(preset, 4, "cuda", tmp_path, precision)
    for _ in range(3):
        step()  # warm-up: cuDNN autotuning and Triton compilation
    record.update(preset=preset, batch=4, precision=precision, kernels=kernels, device=torch.cuda.get_device_name())
    benchmark.pedantic(step, rounds=16, iterations=1)
    if benchmark.stats:
        record["kimg_per_hour"] = 3600 * 4 / 1000 / benchmark.stats.stats.mean
