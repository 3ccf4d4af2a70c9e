"""Triton modulated convolution vs the PyTorch reference (runs in the Triton interpreter on the CPU)."""

import pytest
import torch
from conftest import rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from ssgan.kernels.modulated_conv2d import (
    modulated_conv2d,
    styled_conv2d,
)


@st.composite
def conv_cases(draw):
    """Shapes that are not multiples of the blocks (32 pixels, 32 outputs, 16 inputs), odd sizes included."""
    up = draw(st.sampled_from([1, 2]))
    demodulate = draw(st.booleans())
    return dict(
        batch=draw(st.integers(1, 5)),
        # A demodulated conv with one input channel is scale-invariant in it: d/dstyles is exactly zero
        # and both implementations return only rounding noise, which no relative tolerance can compare.
        in_ch=draw(st.integers(2 if demodulate else 1, 20)),
        out_ch=draw(st.integers(1, 36)),
        height=draw(st.integers(1, 7)),
        width=draw(st.integers(1, 7)),
        kernel=3 if up == 2 else draw(st.sampled_from([1, 3])),
        up=up,
        shared=draw(st.booleans()),
        demodulate=demodulate,
        styled=draw(st.booleans()),
        noise_batch=draw(st.sampled_from([0, 1, -1])),  # none, shared, per sample
    )


def assert_close(out, ref, tol, name=""):
    """Relative error, with an absolute floor for gradients close to zero."""
    err = (out.double() - ref.double()).norm().item()
    assert err <= tol * (ref.double().norm().item() + 1e-2 * ref.numel() ** 0.5), (name, err)


def make_inputs(case, dtype=torch.float32, requires_grad=False):
    n, i, o, k, up = case["batch"], case["in_ch"], case["out_ch"], case["kernel"], case["up"]
    out_h, out_w = case["height"] * up, case["width"] * up
    x = torch.randn(n, i, case["height"], case["width"])
    weight = torch.randn(o, i, k, k)
    styles = torch.randn(i) if case["shared"] else torch.randn(n, i)
    tensors = dict(x=x, weight=weight, styles=styles)
    if case["styled"]:
        tensors["bias"] = torch.randn(o)
        if case["noise_batch"]:
            tensors["noise"] = torch.randn(n if case["noise_batch"] < 0 else 1, 1, out_h, out_w)
            tensors["noise_strength"] = torch.randn(())
    return {name: t.to(dtype).requires_grad_(requires_grad) for name, t in tensors.items()}


def run(case, tensors, impl):
    if case["styled"]:
        return styled_conv2d(**tensors, demodulate=case["demodulate"], up=case["up"], impl=impl)
    return modulated_conv2d(**tensors, demodulate=case["demodulate"], up=case["up"], impl=impl)


@given(case=conv_cases(), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_forward_matches_reference(case, dtype):
    tensors = make_inputs(case, dtype)
    out = run(case, tensors, "triton")
    ref = run(case, {k: t.float() for k, t in tensors.items()}, "reference")  # the fp16 inputs, computed in fp32
    assert out.dtype == dtype and out.shape == ref.shape
    assert torch.isfinite(out).all()
    assert_close(out, ref, 1e-5 if dtype == torch.float32 else 5e-3)


@settings(max_examples=10)
@given(case=conv_cases(), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_gradients_match_reference(case, dtype):
    tensors = make_inputs(case, dtype, requires_grad=True)
    ref_inputs = {k: t.detach().float().requires_grad_() for k, t in tensors.items()}
    out = run(case, tensors, "triton")
    ref = run(case, ref_inputs, "reference")
    grad = torch.randn_like(ref)
    grads = torch.autograd.grad(out, list(tensors.values()), grad.to(dtype))
    ref_grads = torch.autograd.grad(ref, list(ref_inputs.values()), grad)
    for name, g, r in zip(tensors, grads, ref_grads):
        assert g.dtype == dtype and torch.isfinite(g).all(), name
        # float16: where rounding moves a pre-activation across zero the leaky-ReLU derivative jumps (1 vs
        # 0.2); one such element moves a bias gradient by a percent or more.
        assert_close(g, r, 1e-5 if dtype == torch.float32 else 5e-2, name)


def check_float32_forward_and_gradients(case):
    tensors = make_inputs(case, requires_grad=True)
    ref_inputs = {k: t.detach().clone().requires_grad_() for k, t in tensors.items()}
    out, ref = run(case, tensors, "triton"), run(case, ref_inputs, "reference")
    assert_close(out, ref, 1e-5)
    grad = torch.randn_like(ref)
    grads = torch.autograd.grad(out, list(tensors.values()), grad)
    for name, g, r in zip(tensors, grads, torch.autograd.grad(ref, list(ref_inputs.values()), grad)):
        # The noise strength's gradient is one float32 sum over every output element (~8e4 here): its
        # rounding error alone reaches a few 1e-5 relative, whichever order the two sides add in.
        assert_close(g, r, 1e-4 if name == "noise_strength" else 1e-5, name)


def test_gradients_span_several_tiles():
    """Every grid axis and reduction loop with more than one (partial) block: pixels, outputs, inputs."""
    case = dict(
        batch=2,
        in_ch=35,
        out_ch=33,
        height=9,
        width=9,
        kernel=3,
        up=1,
        shared=False,
        demodulate=True,
        styled=True,
        noise_batch=-1,
    )
    check_float32_forward_and_gradients(case)


def test_large_problem_blocks():
    """Over 256 pixels the interpreter switches to large blocks (as a GPU's autotuner may): check that path too."""
    case = dict(
        batch=2,
        in_ch=20,
        out_ch=9,
        height=17,
        width=16,
        kernel=3,
        up=2,
        shared=True,
        demodulate=True,
        styled=True,
        noise_batch=1,
    )
    check_float32_forward_and_gradients(case)


@pytest.mark.parametrize(
    "case",
    [
        dict(up=1, kernel=3, shared=False, demodulate=True, styled=True, noise_batch=1),
        dict(up=2, kernel=3, shared=True, demodulate=False, styled=True, noise_batch=-1),
    ],
    ids=["3x3-per-sample-styled", "up2-shared-styled-no-demod"],
)
def test_gradcheck(case):
    """Float64 first derivatives of the Triton backward (the 1x1 kernel is covered by the hypothesis tests)."""
    case = dict(case, batch=2, in_ch=3, out_ch=2, height=3, width=2)
    tensors = make_inputs(case, torch.float64, requires_grad=True)
    names = list(tensors)
    assert torch.autograd.gradcheck(
        lambda *args: run(case, dict(zip(names, args)), "triton"), tuple(tensors.values()), fast_mode=True
    )


def test_gradgradcheck():
    """Second derivatives go through the create_graph recompute with the reference."""
    case = dict(
        batch=2,
        in_ch=3,
        out_ch=2,
        height=2,
        width=3,
        kernel=3,
        up=2,
        shared=False,
        demodulate=True,
        styled=True,
        noise_batch=1,
    )
    tensors = make_inputs(case, torch.float64, requires_grad=True)
    names = list(tensors)
    assert torch.autograd.gradgradcheck(
        lambda *args: run(case, dict(zip(names, args)), "triton"), tuple(tensors.values()), fast_mode=True
    )


def test_double_backward_matches_reference():
    """Path-length style: the gradient of a gradient, through the create_graph recompute."""
    case = dict(
        batch=2,
        in_ch=5,
        out_ch=4,
        height=4,
        width=3,
        kernel=3,
        up=2,
        shared=False,
        demodulate=True,
        styled=True,
        noise_batch=1,
    )
    tensors = make_inputs(case, torch.float64, requires_grad=True)

    def penalty(impl):
        out = run(case, tensors, impl)
        (g_styles,) = torch.autograd.grad((out * out.detach().cos()).sum(), tensors["styles"], create_graph=True)
        return torch.autograd.grad(g_styles.square().sum(), list(tensors.values()))

    for name, g, r in zip(tensors, penalty("triton"), penalty("reference")):
        assert_close(g, r, 1e-10, name)


def test_shared_styles_match_per_sample_repeat():
    x, weight, styles = torch.randn(3, 6, 5, 5), torch.randn(4, 6, 3, 3), torch.randn(6)
    shared = modulated_conv2d(x, weight, styles, up=2, impl="triton")
    per_sample = modulated_conv2d(x, weight, styles.expand(3, -1), up=2, impl="triton")
    assert rel_err(shared, per_sample) < 1e-6


def test_bad_inputs_are_named():
    x, weight = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3)
    with pytest.raises(ValueError, match="styles"):
        modulated_conv2d(x, weight, torch.randn(3, 4), impl="triton")
    with pytest.raises(ValueError, match="input channels"):
        modulated_conv2d(torch.randn(2, 5, 5, 5), weight, torch.randn(4), impl="triton")
    with pytest.raises(ValueError, match="up must be 1 or 2"):
        modulated_conv2d(x, weight, torch.randn(4), up=4, impl="triton")
    with pytest.raises(ValueError, match="square odd kernel"):
        modulated_conv2d(x, torch.randn(3, 4, 2, 2), torch.randn(4), impl="triton")
    with pytest.raises(ValueError, match="up=2 only with 3x3"):
        modulated_conv2d(x, torch.randn(3, 4, 1, 1), torch.randn(4), up=2, impl="triton")
    with pytest.raises(ValueError, match="noise of shape"):
        styled_conv2d(x, weight, torch.randn(4), torch.zeros(3), torch.randn(2, 1, 4, 4), torch.ones(()), impl="triton")
    with pytest.raises(ValueError, match="noise_strength"):
        styled_conv2d(x, weight, torch.randn(4), torch.zeros(3), torch.randn(1, 1, 5, 5), impl="triton")
    with pytest.raises(ValueError, match="same dtype"):
        modulated_conv2d(x.half(), weight, torch.randn(4), impl="triton")


def test_float64_backward_to_rounding():
    """In float64 the Triton backward agrees with the reference to rounding (1e-12): no constant of the backward is
    rounded to float32 (the leaky-ReLU slopes were, which gradcheck's 1e-5 tolerance cannot see)."""
    case = dict(batch=2, in_ch=5, out_ch=4, height=4, width=3, kernel=3, up=2, shared=True, demodulate=True,
                styled=True, noise_batch=1)  # fmt: skip
    tensors = make_inputs(case, torch.float64, requires_grad=True)
    weights = torch.randn(case["batch"], case["out_ch"], 8, 6, dtype=torch.float64)
    grads = {}
    for impl in ("triton", "reference"):
        grads[impl] = torch.autograd.grad((run(case, tensors, impl) * weights).sum(), list(tensors.values()))
    for name, ours, ref in zip(tensors, grads["triton"], grads["reference"]):
        assert rel_err(ours, ref) < 1e-12, name


@pytest.mark.parametrize("up", [1, 2])
def test_cudnn_conv_with_triton_blur_and_epilogue_matches_reference(up):
    """impl="auto" on CUDA: torch's conv, then the Triton upfirdn2d (blur) and bias_act (epilogue)."""
    from ssgan.kernels.modulated_conv2d import styled_conv2d_reference

    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    weight = torch.randn(4, 6, 3, 3, requires_grad=True)
    styles, bias = torch.randn(6, requires_grad=True), torch.randn(4, requires_grad=True)
    noise, strength = torch.randn(1, 1, 5 * up, 7 * up), torch.tensor(0.3, requires_grad=True)
    inputs = (x, weight, styles, bias, strength)
    outs = {}
    for parts in ("reference", "triton"):
        y = styled_conv2d_reference(x, weight, styles, bias, noise, strength, up=up, parts_impl=parts)
        outs[parts] = (y, *torch.autograd.grad(y.square().sum(), inputs))
    for out, ref in zip(outs["triton"], outs["reference"]):
        assert rel_err(out, ref) < 1e-5
