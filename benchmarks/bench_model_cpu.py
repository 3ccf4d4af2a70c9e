"""CPU speed and memory of the reference model path (issue #2), at the celebamask-256 preset, batch 2, float32.

Every timing is also given against the compute floor: the model's matmul/conv work (counted analytically from
the config) run at the rate of a 2048^2 float32 matmul timed in the same test. The ratio is what to compare
between machines and runs; the seconds depend on the machine and its load.

    pytest benchmarks/bench_model_cpu.py --benchmark-enable
"""
import json
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import ssgan

PRESET = "celebamask-256"
BATCH = 2
MATMUL_SIZE = 2048

pytestmark = pytest.mark.slow


def generator_gflop(cfg, batch):
    """Multiply-add work of one generator forward from z, in GFLOP (2 per MAC); FIR filters not counted."""
    K, L, C, D, Fc = cfg.num_classes, cfg.local_layers, cfg.local_channel, cfg.style_dim, cfg.coarse_channel
    P = cfg.coarse_size**2
    macs = cfg.n_mlp * D * D  # mapping
    macs += K * L * C * D  # style affines of the local generators
    macs += K * L * P * C * C + K * P * C  # local MLPs and depth heads
    macs += P * K * C * Fc  # feature heads, fused with compositing
    in_ch = Fc
    for res in cfg.render_resolutions:
        out_ch = cfg.render_channels[res]
        if res // 2 == cfg.coarse_size:
            in_ch += Fc  # the fused features join here
        macs += (res // 2) ** 2 * in_ch * out_ch * 9  # 2x-up transposed conv, counted on its input grid
        macs += res**2 * out_ch * out_ch * 9
        macs += res**2 * out_ch * (3 + cfg.num_classes)  # to_rgb, to_seg
        in_ch = out_ch
    return 2 * batch * macs / 1e9


def discriminator_gflop(cfg, batch, with_seg=True):
    """Multiply-add work of one discriminator forward, in GFLOP; FIR filters not counted."""
    ch, res = cfg.disc_channels, cfg.disc_resolutions

    def branch(in_dim):
        macs = res[0] ** 2 * in_dim * ch[res[0]]
        for a, b in zip(res, res[1:]):
            macs += a * a * ch[a] * ch[a] * 9 + b * b * ch[a] * ch[b] * (9 + 1)  # conv1, conv2, 1x1 skip
        return macs

    c4 = ch[4]
    macs = branch(3) + (branch(cfg.num_classes) if with_seg else 0)
    macs += 16 * (c4 + 1) * c4 * 9 + 16 * c4 * c4 + c4  # final conv, linear, logit
    return 2 * batch * macs / 1e9


def matmul_gflops(repeats=10):
    """Best rate of a MATMUL_SIZE^2 float32 matmul on this machine right now, in GFLOP/s."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / 1e9 / best


def report(benchmark, record, gflop, rate_before):
    """extra_info: seconds, GFLOP, achieved GFLOP/s and the ratio to the floor set by the matmul rate.

    The matmul is timed just before and just after the case, and the faster of the two sets the floor: a
    machine that slows down during the run then makes the ratio worse, never better."""
    record.update(preset=PRESET, batch=BATCH, gflop=round(gflop, 1), threads=torch.get_num_threads())
    if benchmark.disabled:
        return
    seconds = benchmark.stats.stats.min
    rate = max(rate_before, matmul_gflops())
    record.update(
        seconds=round(seconds, 3),
        achieved_gflops=round(gflop / seconds, 1),
        matmul_gflops=round(rate, 1),
        floor_seconds=round(gflop / rate, 3),
        ratio_to_floor=round(seconds * rate / gflop, 2),
    )


@pytest.fixture
def rate_before(benchmark):
    """The matmul rate just before a case (not measured when benchmarks are disabled)."""
    return 0.0 if benchmark.disabled else matmul_gflops()


@pytest.fixture(scope="module")
def cfg():
    return ssgan.preset(PRESET)


@pytest.fixture(scope="module")
def generator(cfg):
    torch.manual_seed(0)
    return ssgan.Generator(cfg)


def test_matmul_2048(benchmark, record):
    """The yardstick: a 2048^2 float32 matmul."""
    a, b = torch.randn(MATMUL_SIZE, MATMUL_SIZE), torch.randn(MATMUL_SIZE, MATMUL_SIZE)
    benchmark.pedantic(torch.matmul, args=(a, b), rounds=5, warmup_rounds=1)
    if not benchmark.disabled:
        record.update(gflops=round(2 * MATMUL_SIZE**3 / 1e9 / benchmark.stats.stats.min, 1))


def test_generator_forward(benchmark, record, rate_before, cfg, generator):
    z = torch.randn(BATCH, cfg.style_dim)

    def forward():
        with torch.no_grad():
            return generator(z=z)

    benchmark.pedantic(forward, rounds=3, warmup_rounds=1)
    report(benchmark, record, generator_gflop(cfg, BATCH), rate_before)


def test_generator_forward_backward(benchmark, record, rate_before, cfg, generator):
    """A generator training step's work: forward from W+, backward to the weights and the latent."""
    w = torch.randn(BATCH, cfg.n_latent, cfg.style_dim, requires_grad=True)

    def step():
        out = generator(w=w)
        (out.image.square().mean() + out.seg.square().mean()).backward()

    benchmark.pedantic(step, rounds=2, warmup_rounds=1)
    report(benchmark, record, 3 * generator_gflop(cfg, BATCH), rate_before)
    if not benchmark.disabled:
        record.update(generator_step_peak_memory())


def test_discriminator_forward_backward(benchmark, record, rate_before, cfg):
    torch.manual_seed(0)
    disc = ssgan.Discriminator(cfg)
    image = torch.randn(BATCH, 3, cfg.size, cfg.size)
    seg = torch.randn(BATCH, cfg.num_classes, cfg.size, cfg.size)

    def step():
        disc(image, seg).sum().backward()

    benchmark.pedantic(step, rounds=2, warmup_rounds=1)
    report(benchmark, record, 3 * discriminator_gflop(cfg, BATCH), rate_before)


PEAK_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch, ssgan

    def status(field):  # /proc/self/status values are in kB
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":")) / 1024

    cfg = ssgan.preset(sys.argv[1])
    torch.manual_seed(0)
    generator = ssgan.Generator(cfg)
    w = torch.randn(int(sys.argv[2]), cfg.n_latent, cfg.style_dim, requires_grad=True)
    before = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # restart the peak (VmHWM) from here
    out = generator(w=w)
    (out.image.square().mean() + out.seg.square().mean()).backward()
    peak = status("VmHWM")
    print(json.dumps({"peak_rss_mb": peak, "step_peak_mb": peak - before}))
    """
)


def generator_step_peak_memory():
    """Peak resident memory of one generator forward+backward, in a fresh process (Linux): the process's
    peak during the step, and its growth over the model and inputs alone."""
    if not sys.platform.startswith("linux"):
        return {}
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, PRESET, str(BATCH)], capture_output=True, text=True, check=True
    )
    return {key: round(value) for key, value in json.loads(result.stdout.strip().splitlines()[-1]).items()}
