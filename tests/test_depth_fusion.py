"""depth_fusion: the Triton kernels (interpreter on CPU) against the PyTorch reference."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import rel_err
from ssgan.kernels.depth_fusion import check_inputs, depth_fusion, depth_fusion_naive, depth_fusion_reference

TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.float64: 1e-12}


def make_inputs(seed, B, K, P, C, F, dtype, transparent_kind, cmask_kind, requires_grad=False):
    """Random depth/hidden/feature heads, plus the transparent flags and composition mask of the given kinds."""
    gen = torch.Generator().manual_seed(seed)
    depth = 2 * torch.randn(B, K, P, generator=gen)  # [B, K, P]
    hidden = torch.randn(B, K, P, C, generator=gen)  # [B, K, P, C]
    feat_weight = torch.randn(K, F, C, generator=gen) / C**0.5  # [K, F, C], already scaled
    feat_bias = torch.randn(K, F, generator=gen)  # [K, F]
    tensors = [t.to(dtype).requires_grad_(requires_grad) for t in (depth, hidden, feat_weight, feat_bias)]
    transparent = {
        "none": None,
        "random": torch.rand(K, generator=gen) < 0.4,
        "all": torch.ones(K, dtype=torch.bool),
    }[transparent_kind]
    one_hot = torch.zeros(B, K)
    one_hot[torch.arange(B), torch.randint(K, (B,), generator=gen)] = 1  # drop all but one class
    random_keep = (torch.rand(B, K, generator=gen) < 0.6).float()
    random_keep[:, 0] = 1  # at least one class stays
    composition_mask = {"none": None, "random": random_keep, "one": one_hot, "bool": random_keep.bool()}[cmask_kind]
    return tensors, transparent, composition_mask


shapes = dict(
    seed=st.integers(0, 2**31 - 1),
    B=st.integers(1, 5),
    K=st.integers(1, 16),
    P=st.integers(1, 150),  # the kernels tile P by 64
    C=st.sampled_from([16, 32]),
    F=st.sampled_from([16, 48]),
    transparent_kind=st.sampled_from(["none", "random", "all"]),
    cmask_kind=st.sampled_from(["none", "random", "one", "bool"]),
)


def close(out, ref, tol):
    """Relative error in norm, with a floor so that gradients that are zero up to the 1e-8 epsilon compare as equal."""
    err = (out.double() - ref.double()).norm()
    return bool(err <= tol * (ref.double().norm() + 1e-3 * ref.numel() ** 0.5))


def upcast(tensors):
    return [t.detach().double() for t in tensors]


@given(dtype=st.sampled_from([torch.float32, torch.float16]), **shapes)
def test_forward_matches_reference(seed, B, K, P, C, F, transparent_kind, cmask_kind, dtype):
    tensors, transparent, cmask = make_inputs(seed, B, K, P, C, F, dtype, transparent_kind, cmask_kind)
    features, mask = depth_fusion(*tensors, transparent, cmask, impl="triton")
    ref_features, ref_mask = depth_fusion_reference(*upcast(tensors), transparent, cmask)
    assert features.shape == (B, F, P) and mask.shape == (B, K, P)
    assert features.dtype == dtype and mask.dtype == dtype
    assert rel_err(features, ref_features) < TOL[dtype]
    assert rel_err(mask, ref_mask) < TOL[dtype]


@settings(max_examples=10)
@given(dtype=st.sampled_from([torch.float32, torch.float16]), outputs=st.sampled_from(["both", "features", "mask"]),
       **shapes)
def test_gradients_match_reference(seed, B, K, P, C, F, transparent_kind, cmask_kind, dtype, outputs):
    tensors, transparent, cmask = make_inputs(seed, B, K, P, C, F, dtype, transparent_kind, cmask_kind, True)
    reference = [t.requires_grad_() for t in upcast(tensors)]
    gen = torch.Generator().manual_seed(seed + 1)
    grad_features = torch.randn(B, F, P, generator=gen)
    grad_mask = torch.randn(B, K, P, generator=gen)

    def loss(features, mask):
        terms = {"features": (features * grad_features.to(features.dtype)).sum(),
                 "mask": (mask * grad_mask.to(mask.dtype)).sum()}
        return sum(terms.values()) if outputs == "both" else terms[outputs]

    grads = torch.autograd.grad(loss(*depth_fusion(*tensors, transparent, cmask, impl="triton")), tensors,
                                allow_unused=True)
    ref_grads = torch.autograd.grad(loss(*depth_fusion_reference(*reference, transparent, cmask)), reference,
                                    allow_unused=True)
    for name, grad, ref in zip(["depth", "hidden", "feat_weight", "feat_bias"], grads, ref_grads):
        if ref is None or not ref.any():  # e.g. a loss on the mask alone reaches depth only
            assert grad is None or not grad.any(), name
            continue
        assert grad.dtype == dtype and grad.shape == ref.shape, name
        assert close(grad, ref, 3 * TOL[dtype]), name


@pytest.mark.parametrize("transparent_kind,cmask_kind", [("none", "none"), ("random", "random")])
def test_gradcheck_float64(transparent_kind, cmask_kind):
    tensors, transparent, cmask = make_inputs(1, 2, 3, 20, 16, 16, torch.float64, transparent_kind, cmask_kind, True)
    if transparent is not None:
        transparent[1] = True
    fn = lambda *t: depth_fusion(*t, transparent, cmask, impl="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, tensors, fast_mode=True)


def test_gradgradcheck_float64():
    tensors, transparent, cmask = make_inputs(2, 2, 3, 8, 16, 16, torch.float64, "random", "random", True)
    transparent[1] = True
    fn = lambda *t: depth_fusion(*t, transparent, cmask, impl="triton")  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, tensors, fast_mode=True)


def test_composition_mask_gets_no_gradient():
    tensors, transparent, cmask = make_inputs(3, 2, 3, 10, 16, 16, torch.float32, "none", "random", True)
    cmask.requires_grad_()
    features, mask = depth_fusion(*tensors, transparent, cmask, impl="triton")
    (features.sum() + mask.sum()).backward()
    assert cmask.grad is None and tensors[0].grad is not None


def test_naive_formulation_matches_reference():
    tensors, transparent, cmask = make_inputs(4, 2, 5, 30, 16, 48, torch.float64, "random", "random")
    for out, ref in zip(depth_fusion_naive(*tensors, transparent, cmask),
                        depth_fusion_reference(*tensors, transparent, cmask)):
        assert rel_err(out, ref) < 1e-12


@pytest.mark.parametrize("field,bad,message", [
    ("depth", torch.zeros(2, 3), "depth must be"),
    ("hidden", torch.zeros(2, 3, 9, 16), "hidden must be"),
    ("feat_weight", torch.zeros(3, 16, 32), "feat_weight must be"),
    ("feat_bias", torch.zeros(3, 17), "feat_bias must be"),
    ("transparent", torch.zeros(4, dtype=torch.bool), "transparent must be"),
    ("composition_mask", torch.ones(2, 4), "composition_mask must be"),
])
def test_bad_shapes_are_named(field, bad, message):
    (depth, hidden, feat_weight, feat_bias), _, _ = make_inputs(5, 2, 3, 10, 16, 16, torch.float32, "none", "none")
    args = dict(depth=depth, hidden=hidden, feat_weight=feat_weight, feat_bias=feat_bias, transparent=None,
                composition_mask=None)
    args[field] = bad
    with pytest.raises(ValueError, match=message):
        check_inputs(**args)
    with pytest.raises(ValueError, match=message):
        depth_fusion(**args, impl="triton")


def test_mixed_dtypes_are_refused():
    (depth, hidden, feat_weight, feat_bias), _, _ = make_inputs(6, 1, 2, 10, 16, 16, torch.float32, "none", "none")
    with pytest.raises(ValueError, match="share a dtype"):
        depth_fusion(depth, hidden.half(), feat_weight, feat_bias, impl="triton")
