"""upfirdn2d: the Triton path and the fast reference against the literal definition, gradients, errors."""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from ssgan.kernels.upfirdn2d import make_kernel, upfirdn2d, upfirdn2d_naive, upfirdn2d_reference

TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-3}

# The model's uses: Blur after the up-conv, Upsample of the skip branches, the discriminator's blurs.
MODEL_CASES = [
    {"taps": (1, 3, 3, 1), "gain": 4, "up": 1, "down": 1, "padding": (1, 1)},
    {"taps": (1, 3, 3, 1), "gain": 4, "up": 2, "down": 1, "padding": (2, 1)},
    {"taps": (1, 3, 3, 1), "gain": 1, "up": 1, "down": 1, "padding": (2, 2)},
    {"taps": (1, 3, 3, 1), "gain": 1, "up": 1, "down": 2, "padding": (1, 1)},
]


@st.composite
def cases(draw, max_up=2):
    case = {
        "n": draw(st.integers(1, 2)),
        "c": draw(st.integers(1, 3)),
        "h": draw(st.integers(1, 12)),
        "w": draw(st.integers(1, 12)),
        "kh": draw(st.integers(1, 5)),
        "kw": draw(st.integers(1, 5)),
        "up": draw(st.integers(1, max_up)),
        "down": draw(st.integers(1, 2)),
        "padding": tuple(draw(st.integers(-3, 4)) for _ in range(4)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }
    px0, px1, py0, py1 = case["padding"]
    assume(case["h"] * case["up"] + py0 + py1 >= case["kh"] and case["w"] * case["up"] + px0 + px1 >= case["kw"])
    return case


def make_inputs(case, dtype, requires_grad=False):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["n"], case["c"], case["h"], case["w"], generator=g).to(dtype).requires_grad_(requires_grad)
    kernel = torch.rand(case["kh"], case["kw"], generator=g) + 0.1
    return x, kernel, {"up": case["up"], "down": case["down"], "padding": case["padding"]}


@given(case=cases(max_up=3))
def test_reference_is_the_definition(case):
    x, kernel, kwargs = make_inputs(case, torch.float64)
    kernel = kernel.double()
    want = upfirdn2d_naive(x, kernel, **kwargs)
    torch.testing.assert_close(upfirdn2d_reference(x, kernel, **kwargs), want, rtol=1e-12, atol=1e-12)


@given(case=cases())
def test_reference_gradients_are_the_definitions(case):
    """Gradients w.r.t. x and the kernel, and a second-order term, through both torch formulations."""
    x, kernel, kwargs = make_inputs(case, torch.float64, requires_grad=True)
    kernel = kernel.double().requires_grad_()
    dy = torch.randn_like(upfirdn2d_naive(x, kernel, **kwargs))
    results = []
    for fn in (upfirdn2d_reference, upfirdn2d_naive):
        dx, dk = torch.autograd.grad(fn(x, kernel, **kwargs), [x, kernel], dy, create_graph=True)
        results.append((dx, dk, *torch.autograd.grad(dx.square().sum(), [kernel])))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@given(case=cases())
def test_triton_forward_matches_reference(case, dtype):
    x, kernel, kwargs = make_inputs(case, dtype)
    out = upfirdn2d(x, kernel, **kwargs, impl="triton")
    ref = upfirdn2d_naive(x.float(), kernel, **kwargs)
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref, rtol=TOL[dtype], atol=TOL[dtype])


@given(case=cases())
def test_triton_backward_matches_reference(case):
    x, kernel, kwargs = make_inputs(case, torch.float32, requires_grad=True)
    y = upfirdn2d(x, kernel, **kwargs, impl="triton")
    dy = torch.randn_like(y)
    (got,) = torch.autograd.grad(y, x, dy)
    (want,) = torch.autograd.grad(upfirdn2d_reference(x, kernel, **kwargs), x, dy)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", MODEL_CASES, ids=lambda c: f"up{c['up']}-down{c['down']}-pad{c['padding']}")
@pytest.mark.parametrize("impl", ["triton", "reference"])
def test_model_cases(case, impl):
    x = torch.randn(2, 3, 8, 8)
    kernel = make_kernel(case["taps"], case["gain"])
    kwargs = {"up": case["up"], "down": case["down"], "padding": case["padding"]}
    want = upfirdn2d_naive(x, kernel, **kwargs)
    torch.testing.assert_close(upfirdn2d(x, kernel, **kwargs, impl=impl), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "up, down, padding",
    [(1, 1, (1, 1)), (2, 1, (2, 1)), (1, 2, (-1, 2, 0, 1)), (2, 2, (1, -1, 3, 0))],
)
def test_gradcheck_and_gradgradcheck(up, down, padding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    kernel = torch.rand(2, 3, generator=g, dtype=torch.float64)

    def fn(x):
        return upfirdn2d(x, kernel, up=up, down=down, padding=padding, impl="triton")

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)  # full mode: ~100 interpreted launches


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize(
    "x_shape, k_shape, kwargs, message",
    [
        ((2, 3, 4), (4, 4), {}, "NCHW"),
        ((1, 1, 4, 4), (4,), {}, "2-d"),
        ((1, 1, 4, 4), (4, 4), {"up": 0}, "up must be"),
        ((1, 1, 4, 4), (4, 4), {"down": 1.5}, "down must be"),
        ((1, 1, 2, 2), (4, 4), {"padding": 0}, "no output pixels"),
        ((1, 1, 4, 4), (4, 4), {"padding": (1, 2, 3)}, "padding must be"),
    ],
)
def test_bad_arguments(impl, x_shape, k_shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        upfirdn2d(torch.zeros(x_shape), torch.ones(k_shape), **kwargs, impl=impl)


def test_triton_refuses_a_trainable_kernel():
    with pytest.raises(ValueError, match="FIR kernel"):
        upfirdn2d(torch.zeros(1, 1, 4, 4), torch.ones(2, 2, requires_grad=True), impl="triton")
