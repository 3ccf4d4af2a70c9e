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


# What impl="auto" runs for each op on a CUDA device, and the evidence for it. Only what is proven goes in "triton":
# until a GPU run (benchmarks/run_gpu.sh, recorded in benchmarks/RESULTS.md) shows the Triton batch-shared
# convolution at least as fast as cuDNN on the preset shapes, the convolutions stay on cuDNN. On every other device
# auto runs the reference. impl="triton" (or SSGAN_KERNELS=triton) runs every Triton path regardless.
AUTO_ON_CUDA = {
    # op: (impl, evidence)
    "class_mlp": ("triton", "work model (RESULTS.md): the eager MLP writes and re-reads [B, K, P, C] per layer "
                            "(~20x the fused kernel's bytes at celebamask-256); no GPU measurement yet"),
    "depth_fusion": ("triton", "work model: the eager blend materialises [B, P, K*C] weighted features "
                               "(and autograd keeps them); the fused kernel reads hidden once"),
    "bias_act": ("triton", "work model: one read and one write instead of two elementwise passes"),
    "upfirdn2d": ("triton", "work model: reads x once with no padded or zero-inserted copy; no measurement yet"),
    "modulated_conv2d": ("reference", "cuDNN: the Triton batch-shared conv is not yet measured against cuDNN on a "
                                      "GPU (benchmarks/run_gpu.sh measures the rows that decide this)"),
    "styled_conv2d": ("reference", "cuDNN conv, as modulated_conv2d; its blur (up=2) and bias + leaky ReLU "
                                   "epilogue use the Triton upfirdn2d and bias_act, which save memory passes"),
}


def resolve_impl(impl: str, *tensors: torch.Tensor, op: str = None) -> str:
    """Return "triton" or "reference" for `op` called with `impl` on `tensors`.

    The environment variable SSGAN_KERNELS (auto|triton|reference) overrides `impl="auto"`
    for a whole run. "auto" picks, for CUDA tensors, what AUTO_ON_CUDA lists for the op (Triton
    for an op not listed there), and the reference elsewhere.
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
        if not (on_cuda and triton_available()):
            return "reference"
        return AUTO_ON_CUDA.get(op, ("triton", ""))[0]
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
