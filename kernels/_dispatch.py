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
# auto runs the reference. impl="triton" (or SSGAN_KERNELS=triton) runs every Triton path regardless. The
# discriminator's convolutions call torch's conv2d (cuDNN) directly, with the Triton bias_act and upfirdn2d.
AUTO_ON_CUDA = {
    # op: (impl, evidence). "work model": benchmarks/work_model.py, in RESULTS.md; no GPU measurement exists yet.
    "class_mlp": ("triton", "work model: the eager MLP writes and re-reads [B, K, P, C] ~4 times per layer "
                            "(9.4 GB vs 0.2 GB per forward at celebamask-256, batch 16; 6.6x predicted)"),
    "depth_fusion": ("triton", "work model: same FLOPs (compute-bound in float32 either way), 4x fewer bytes, and "
                               "no [B, P, K*C] weighted copies kept for autograd"),
    "bias_act": ("triton", "work model: one read and one write instead of three read-write passes (3x fewer bytes)"),
    "upfirdn2d": ("triton", "work model: the same bytes and FLOPs as the reference's depthwise conv at the model's "
                            "paddings; kept on Triton (one kernel for every up/down/padding), unmeasured"),
    "modulated_conv2d": ("reference", "cuDNN: the Triton conv does the same FLOPs (4x for up=2) and is not yet "
                                      "measured against cuDNN; benchmarks/run_gpu.sh (render_convs) decides"),
    "styled_conv2d": ("reference", "cuDNN conv, as modulated_conv2d; its blur (up=2) and bias + leaky ReLU "
                                   "epilogue run on the Triton upfirdn2d and bias_act (2 of 6 epilogue passes saved)"),
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
