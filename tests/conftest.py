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


# A generator and discriminator small enough for a training step in milliseconds (16 px, 3 classes).
TINY_CONFIG = dict(
    size=16, style_dim=16, n_mlp=2, class_names=("background", "a", "b"), transparent=(), local_channel=16,
    coarse_channel=16, coarse_size=8, min_feat_size=4, render_channels={8: 16, 16: 16},
    disc_channels={4: 16, 8: 16, 16: 16},
)  # fmt: skip


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine spinning threads cost a lot."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
