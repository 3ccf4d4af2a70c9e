import os

# Triton kernels run on the CPU in the interpreter; this must be set before any kernel module is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

import ssgan.kernels._dispatch as _dispatch  # noqa: E402

_dispatch.FILL_OUTPUTS_WITH_NAN = True

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# "ci" (the default) draws the same examples on every run, so CI is reproducible; HYPOTHESIS_PROFILE=explore draws fresh
# examples each run and more of them, for hunting bugs locally.
settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=50, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def shared_path(*parts):
    """A file under ../shared; fails (never skips) when it is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"test data {path} is missing: clone the project beside its shared/ folder (../shared)")
    return path


@pytest.fixture(scope="session")
def official_small():
    """The small checkpoint in the original format and its golden vectors."""
    from safetensors.torch import load_file

    import ssgan

    ckpt = ssgan.load_checkpoint(shared_path("fixtures", "official_small", "checkpoint.pt"))
    vectors = load_file(shared_path("fixtures", "official_small", "vectors.safetensors"))
    return ckpt, vectors


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every test draws the same random tensors on every run, so a CI failure can be reproduced."""
    import torch

    torch.manual_seed(0)
