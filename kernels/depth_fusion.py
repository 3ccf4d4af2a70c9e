"""Softmax-depth fusion of the K local generators with their feature heads applied inside the blend.

    m        = softmax_k(depth)                          (renormalised by the composition mask if given)
    weight_k = m_k renormalised over opaque classes      for opaque k
             = m_k                                       for transparent k (overlaid on the composite)
    f        = sum_k weight_k * (W_k h_k + b_k)

f is computed as one reduction over K*C, so the K feature maps of F channels are never written.
"""
import torch
from einops import einsum, rearrange

from ._dispatch import resolve_impl


def fusion_weights(depth, transparent=None, composition_mask=None):
    """depth: [B, K, P]; transparent: [K] bool or None; composition_mask: [B, K] or None.

    Returns the coarse mask m [B, K, P] and the feature weights [B, K, P].
    """
    mask = torch.softmax(depth, dim=1)
    if composition_mask is not None:
        mask = mask * composition_mask[:, :, None]
        mask = mask / (mask.sum(1, keepdim=True) + 1e-8)
    if transparent is None or not bool(transparent.any()):
        return mask, mask
    opaque = (~transparent).to(mask.dtype)[None, :, None]
    normal = mask * opaque
    normal = normal / (normal.sum(1, keepdim=True) + 1e-8)
    return mask, normal + mask * (1 - opaque)


def depth_fusion_reference(depth, hidden, feat_weight, feat_bias, transparent=None, composition_mask=None):
    """Fuse K classes into one feature map.

    depth:            [B, K, P]    pseudo-depths (logits of the coarse mask)
    hidden:           [B, K, P, C] last hidden layer of each local generator
    feat_weight:      [K, F, C]    feature heads, already scaled
    feat_bias:        [K, F]
    transparent:      [K] bool     classes overlaid on the opaque composite, or None
    composition_mask: [B, K]       classes to keep (others dropped and the rest renormalised), or None
    Returns the fused features [B, F, P] and the coarse mask m [B, K, P].
    """
    mask, weights = fusion_weights(depth, transparent, composition_mask)
    blended = rearrange(hidden * weights[..., None], "b k p c -> b p (k c)")
    features = blended @ rearrange(feat_weight, "k f c -> (k c) f")  # [B, P, F]
    features = features + einsum(weights, feat_bias, "b k p, k f -> b p f")
    return rearrange(features, "b p f -> b f p"), mask


def depth_fusion(depth, hidden, feat_weight, feat_bias, transparent=None, composition_mask=None, impl="auto"):
    """Fused softmax-depth compositing; see `depth_fusion_reference` for shapes."""
    if resolve_impl(impl, depth, hidden, feat_weight) == "triton":
        from ._depth_fusion_triton import depth_fusion_triton

        return depth_fusion_triton(depth, hidden, feat_weight, feat_bias, transparent, composition_mask)
    return depth_fusion_reference(depth, hidden, feat_weight, feat_bias, transparent, composition_mask)
