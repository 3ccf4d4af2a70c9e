"""bias_act: the Triton path against the reference, gradients to second order, errors."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ssgan.kernels.bias_act import bias_act, bias_act_reference

TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.float64: 1e-12}


@st.composite
def cases(draw):
    shape = draw(st.lists(st.integers(1, 13), min_size=1, max_size=4))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return {
        "shape": shape,
        "dim": dim,
        "has_bias": draw(st.booleans()),
        "act": draw(st.sampled_from(["lrelu", "linear"])),
        "alpha": draw(st.sampled_from([0.2, 0.1])),
        "gain": draw(st.sampled_from([None, 1.0, 0.5])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def make_inputs(case, dtype, requires_grad=False):
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["shape"], generator=g).to(dtype).requires_grad_(requires_grad)
    bias = None
    if case["has_bias"]:
        bias = torch.randn(case["shape"][case["dim"]], generator=g).to(dtype).requires_grad_(requires_grad)
    kwargs = {"dim": case["dim"], "act": case["act"], "alpha": case["alpha"], "gain": case["gain"]}
    return x, bias, kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@given(case=cases())
def test_forward_matches_reference(case, dtype):
    x, bias, kwargs = make_inputs(case, dtype)
    out = bias_act(x, bias, **kwargs, impl="triton")
    ref = bias_act_reference(x.float(), None if bias is None else bias.float(), **kwargs)
    assert out.dtype == dtype and out.shape == x.shape
    torch.testing.assert_close(out.float(), ref, rtol=TOL[dtype], atol=TOL[dtype])


@given(case=cases())
def test_backward_matches_reference(case):
    x, bias, kwargs = make_inputs(case, torch.float32, requires_grad=True)
    dy = torch.randn(x.shape)
    inputs = [x] if bias is None else [x, bias]
    got = torch.autograd.grad(bias_act(x, bias, **kwargs, impl="triton"), inputs, dy)
    want = torch.autograd.grad(bias_act_reference(x, bias, **kwargs), inputs, dy)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act", ["lrelu", "linear"])
@pytest.mark.parametrize("dim", [1, -1])
def test_gradcheck_and_gradgradcheck(act, dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(x.shape[dim], generator=g, dtype=torch.float64, requires_grad=True)

    def fn(x, bias):
        return bias_act(x, bias, dim=dim, act=act, impl="triton")

    assert torch.autograd.gradcheck(fn, (x, bias))
    assert torch.autograd.gradgradcheck(fn, (x, bias))


def test_second_order_matches_reference():
    """Gradient of a function of the gradient (the R1 / path-length pattern)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, 3, generator=g, requires_grad=True)
    bias = torch.randn(6, generator=g, requires_grad=True)
    results = []
    for fn in (lambda *a: bias_act(*a, impl="triton"), bias_act_reference):
        (dx,) = torch.autograd.grad((fn(x, bias) ** 3).sum(), x, create_graph=True)
        results.append(torch.autograd.grad(dx.square().sum(), [x, bias]))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_mixed_dtypes_promote_like_the_reference():
    x = torch.randn(2, 5, dtype=torch.float16, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    out = bias_act(x, bias, dim=-1, impl="triton")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, bias_act_reference(x, bias, dim=-1))
    dx, db = torch.autograd.grad(out.sum(), [x, bias])
    assert dx.dtype == torch.float16 and db.dtype == torch.float32


def test_empty_tensor():
    x = torch.randn(0, 3)
    assert bias_act(x, torch.randn(3), impl="triton").shape == (0, 3)


@pytest.mark.parametrize("impl", ["triton", "reference"])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"act": "relu"}, "act must be"),
        ({"bias": torch.zeros(4)}, "does not match dim"),
        ({"dim": 3}, "out of range"),
    ],
)
def test_bad_arguments(impl, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bias_act(torch.zeros(2, 3, 5), **kwargs, impl=impl)
