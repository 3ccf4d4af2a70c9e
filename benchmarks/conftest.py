"""Shared helpers for the pytest-benchmark suites. Run: pytest benchmarks/ --benchmark-enable"""
import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "0")

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: Triton kernels are benchmarked on the GPU only")


def device_name():
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def synchronized(fn):
    """Wrap fn so that each timed call waits for the GPU to finish."""

    def run(*args, **kwargs):
        out = fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return out

    return run


@pytest.fixture
def record(benchmark):
    """benchmark.extra_info with the card and versions filled in."""
    benchmark.extra_info.update(device=device_name(), torch=torch.__version__)
    try:
        import triton

        benchmark.extra_info["triton"] = triton.__version__
    except ImportError:
        pass
    return benchmark.extra_info


def measure_peak(record, fn):
    """Warm fn up (compilation, autotuning), then record the peak GPU memory one call allocates above what was
    allocated before it, in MiB."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    record["peak_mib"] = (torch.cuda.max_memory_allocated() - start) / 2**20


def compiled(fn):
    """torch.compile of `fn` with static shapes, compiled on first call: one graph per case, dtype and grad mode."""
    graph = None

    def run(*args, **kwargs):
        nonlocal graph
        if graph is None:
            torch._dynamo.config.recompile_limit = 64  # the default 8 would send later cases back to eager
            graph = torch.compile(fn, dynamic=False)
        return graph(*args, **kwargs)

    return run
