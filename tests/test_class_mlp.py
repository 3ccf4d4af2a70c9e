"""class_mlp: the fused Triton MLP against its reference (forward, gradients, double backward)."""
import importlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import rel_err
from ssgan.kernels.class_mlp import class_mlp, class_mlp_reference

TILE = 16  # pixels per program in these tests: small maps then span several tiles
class_mlp_module = importlib.import_module("ssgan.kernels.class_mlp")  # the package exports a function of that name
NAMES = ("pos", "weight", "bias", "styles", "depth_weight", "depth_bias")


@pytest.fixture(autouse=True, scope="module")
def small_tiles():
    saved = class_mlp_module.INTERPRETER_BLOCK_P
    class_mlp_module.INTERPRETER_BLOCK_P = TILE
    yield
    class_mlp_module.INTERPRETER_BLOCK_P = saved


def make_inputs(B, K, L, C, P, dtype, seed):
    """Inputs on the scale the generator feeds: unit positions, styles near 1, class 0 without depth."""
    gen = torch.Generator().manual_seed(seed)
    randn = lambda *shape: torch.randn(shape, generator=gen, dtype=torch.float64)  # noqa: E731
    depth_weight = randn(K, C) / math.sqrt(C)
    depth_weight[0] = 0
    styles = 1 + 0.5 * randn(B, K, L, C)
    tensors = (randn(P, C), randn(K, L, C, C), 0.2 * randn(K, L, C), styles, depth_weight, randn(K))
    return [t.to(dtype) for t in tensors]


@st.composite
def problems(draw, max_maps, max_tiles):
    """(B, K, L, C, P, depth_layer, detach) with B * K kept small: the interpreter pays per program."""
    K = draw(st.integers(1, 16))
    B = draw(st.integers(1, max(1, min(5, max_maps // K))))
    L = draw(st.integers(2, 10))
    C = draw(st.sampled_from([16, 32]))
    P = draw(st.integers(1, max_tiles * TILE).filter(lambda p: p % TILE != 0))
    return B, K, L, C, P, draw(st.integers(0, L - 1)), draw(st.booleans())


DTYPES = st.sampled_from([torch.float32, torch.float16])
SEEDS = st.integers(0, 2**31)
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-2}
GRAD_TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-2}


@settings(max_examples=12)
@given(problem=problems(max_maps=16, max_tiles=3), dtype=DTYPES, seed=SEEDS)
def test_forward_matches_reference(problem, dtype, seed):
    B, K, L, C, P, depth_layer, detach = problem
    inputs = make_inputs(B, K, L, C, P, dtype, seed)
    with torch.no_grad():
        hidden, depth = class_mlp(*inputs, depth_layer, detach, impl="triton")
        # float16 is held against float32 math on the same (rounded) inputs
        ref_hidden, ref_depth = class_mlp_reference(*[t.float() for t in inputs], depth_layer, detach)
    assert hidden.shape == (B, K, P, C) and depth.shape == (B, K, P)
    assert hidden.dtype == depth.dtype == dtype
    assert rel_err(hidden, ref_hidden) < TOLERANCE[dtype]
    assert rel_err(depth, ref_depth) < TOLERANCE[dtype]


def close(out, ref, tol):
    """Relative error below tol; exact zeros (a detached or depth-less case) must match as zeros."""
    return (out.double() - ref.double()).norm() <= tol * ref.double().norm() + 1e-30


def gradients(fn, inputs, depth_layer, detach, grad_hidden, grad_depth):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    outputs = fn(*leaves, depth_layer, detach)
    # with detach_texture and the depth taken after the last layer, the reference's hidden needs no grad
    pairs = [(out, grad.to(out.dtype)) for out, grad in zip(outputs, (grad_hidden, grad_depth)) if out.requires_grad]
    outputs, grad_outputs = zip(*pairs)
    return torch.autograd.grad(outputs, leaves, grad_outputs, allow_unused=True)


@settings(max_examples=10)
@given(problem=problems(max_maps=6, max_tiles=2), dtype=DTYPES, seed=SEEDS)
def test_gradients_match_reference(problem, dtype, seed):
    B, K, L, C, P, depth_layer, detach = problem
    inputs = make_inputs(B, K, L, C, P, dtype, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    grad_hidden, grad_depth = torch.randn(B, K, P, C, generator=gen), torch.randn(B, K, P, generator=gen)
    triton_mlp = lambda *args: class_mlp(*args, impl="triton")  # noqa: E731
    found = gradients(triton_mlp, inputs, depth_layer, detach, grad_hidden, grad_depth)
    expected = gradients(class_mlp_reference, [t.float() for t in inputs], depth_layer, detach, grad_hidden, grad_depth)
    for name, grad, ref in zip(NAMES, found, expected):
        assert grad.dtype == dtype, name
        assert close(grad, torch.zeros_like(grad) if ref is None else ref, GRAD_TOLERANCE[dtype]), name


def test_gradients_without_pos_grad():
    """The position gradient is skipped when pos needs none; the others are unchanged."""
    inputs = make_inputs(2, 3, 4, 16, 21, torch.float64, seed=0)
    leaves = [t.clone().requires_grad_(i > 0) for i, t in enumerate(inputs)]
    hidden, depth = class_mlp(*leaves, 2, impl="triton")
    found = torch.autograd.grad(hidden.sum() + depth.sum(), leaves[1:])
    ref = [t.clone().requires_grad_() for t in inputs[1:]]
    hidden, depth = class_mlp_reference(inputs[0], *ref, 2)
    for name, grad, expected in zip(NAMES[1:], found, torch.autograd.grad(hidden.sum() + depth.sum(), ref)):
        assert rel_err(grad, expected) < 1e-12, name


def test_gradcheck():
    """The Triton backward. (detach_texture is no true gradient, so it is only compared with the reference.)"""
    inputs = [t.requires_grad_() for t in make_inputs(2, 2, 3, 16, TILE - 1, torch.float64, seed=1)]
    fn = lambda *args: class_mlp(*args, 1, impl="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_gradgradcheck():
    """Double backward runs the reference under autograd; this checks the wiring."""
    inputs = [t.requires_grad_() for t in make_inputs(1, 2, 3, 16, TILE - 1, torch.float64, seed=2)]
    fn = lambda *args: class_mlp(*args, 1, impl="triton")  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_channels_outside_the_kernel_use_the_reference():
    inputs = make_inputs(2, 2, 3, 24, 10, torch.float32, seed=3)
    for out, ref in zip(class_mlp(*inputs, 1, impl="triton"), class_mlp_reference(*inputs, 1)):
        assert torch.equal(out, ref)


def test_bad_inputs_are_named():
    inputs = make_inputs(2, 3, 4, 16, 10, torch.float32, seed=4)
    with pytest.raises(ValueError, match="depth_layer"):
        class_mlp(*inputs, 4)
    with pytest.raises(ValueError, match="styles"):
        class_mlp(inputs[0], *inputs[1:3], inputs[3][:, :2], *inputs[4:], 1)
    with pytest.raises(ValueError, match="pos"):
        class_mlp(inputs[0][:, :8], *inputs[1:], 1)
    with pytest.raises(ValueError, match="one floating dtype"):
        class_mlp(inputs[0].double(), *inputs[1:], 1, impl="triton")
