"""Choosing between the Triton kernels and the PyTorch reference of each op."""
import os

import torch

IMPLS = ("auto", "triton", "reference")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_impl(impl: str, *tensors: torch.Tensor) -> str:
    """Return "triton" or "reference" for an op called with `impl` on `tensors`.

    The environment variable SSGAN_KERNELS (auto|triton|reference) overrides `impl="auto"`
    for a whole run. "auto" picks Triton for CUDA tensors and the reference elsewhere.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    forced = os.environ.get("SSGAN_KERNELS", "auto")
    if forced not in IMPLS:
        raise ValueError(f"SSGAN_KERNELS must be one of {IMPLS}, got {forced!r}")
    if impl == "auto":
        impl = forced
    if impl == "auto":
        on_cuda = all(t.is_cuda for t in tensors if t is not None)
        return "triton" if on_cuda and triton_available() else "reference"
    if impl == "triton":
        if not triton_available():
            raise RuntimeError("impl='triton' was requested but triton is not installed")
        if not interpreting() and not all(t.is_cuda for t in tensors if t is not None):
            raise RuntimeError(
                "impl='triton' needs CUDA tensors (or TRITON_INTERPRET=1 to run the kernels on the CPU)"
            )
    return impl


# Tests set this so that every output a launcher allocates starts as NaN: unwritten elements then fail.
FILL_OUTPUTS_WITH_NAN = False


def new_output(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """Allocate a kernel output (uninitialised, or NaN-filled under tests)."""
    dtype = dtype or like.dtype
    if FILL_OUTPUTS_WITH_NAN:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)
