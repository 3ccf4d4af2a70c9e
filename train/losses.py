"""Losses and regularisers of the SemanticStyleGAN recipe (spec section 7).

Every function here is plain PyTorch on tensors the caller produced, so that each term can be tested
on its own; the training loop decides when and with what weight each one runs.
"""
import math

import torch
import torch.nn.functional as F


def d_logistic(real_logits, fake_logits):
    """Non-saturating logistic loss of D: softplus(-D(real)) + softplus(D(fake)), each averaged over the batch."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating(fake_logits):
    """Non-saturating logistic loss of G: softplus(-D(fake)) averaged over the batch."""
    return F.softplus(-fake_logits).mean()


def r1_penalties(real_logits, inputs):
    """E ||dD/dx||^2 for each input x (image, segmentation), from one autograd.grad call.

    real_logits: [B, 1] computed from `inputs`, each of which requires grad. Returns a list of scalars.
    The graph is kept (create_graph=True) so that the penalties can be minimised.
    """
    grads = torch.autograd.grad(real_logits.sum(), inputs, create_graph=True)
    return [g.square().flatten(1).sum(1).mean() for g in grads]


def r1_loss(real_logits, image, seg, gamma_image, gamma_seg):
    """(gamma_img/2) E||dD/d image||^2 + (gamma_seg/2) E||dD/d seg||^2; seg may be None (image-only D).

    Returns the weighted loss and the two unweighted penalties (the seg one is 0 without seg).
    """
    inputs = [image] if seg is None else [image, seg]
    penalties = r1_penalties(real_logits, inputs)
    image_penalty = penalties[0]
    seg_penalty = penalties[1] if seg is not None else image_penalty.new_zeros(())
    loss = gamma_image / 2 * image_penalty + gamma_seg / 2 * seg_penalty
    return loss, image_penalty.detach(), seg_penalty.detach()


def mask_loss(coarse_seg, seg):
    """MSE between the coarse mask (2m-1, [B, K, G, G]) and the final segmentation pooled to G x G."""
    return F.mse_loss(coarse_seg, F.adaptive_avg_pool2d(seg, coarse_seg.shape[-2:]))


def path_lengths(image, w_expanded, noise=None):
    """Per-sample Jacobian norm of the image w.r.t. the expanded latents, probed with random image noise.

    image: [B, 3, S, S] computed from w_expanded [B, N, D]. Path length = sqrt(mean over the N vectors of
    the squared gradient summed over D). noise: the probe y [B, 3, S, S], already divided by sqrt(S * S)
    (drawn as randn / sqrt(S * S) when None). The graph is kept so that the result can be regularised. Returns [B].
    """
    if noise is None:
        noise = torch.randn_like(image) / math.sqrt(image.shape[2] * image.shape[3])
    elif noise.shape != image.shape:
        raise ValueError(f"noise must have the image's shape {tuple(image.shape)}, got {tuple(noise.shape)}")
    (grad,) = torch.autograd.grad((image * noise).sum(), w_expanded, create_graph=True)
    return grad.square().sum(2).mean(1).sqrt()  # [B]


def path_length_penalty(lengths, mean_path_length, decay):
    """StyleGAN2 path-length penalty mean((l - a)^2), a = a0 + decay * (mean(l) - a0) the updated running mean.

    lengths: [B] from `path_lengths`; mean_path_length: a0, a float. As in the original (and NVlabs
    StyleGAN2-ADA), a is not detached inside the penalty: part of the gradient flows through mean(l).
    Returns the penalty (a scalar tensor), a as a float (the next step's a0) and the batch's mean length.
    """
    batch_mean = lengths.mean()
    new_mean = mean_path_length + decay * (batch_mean - mean_path_length)
    penalty = (lengths - new_mean).square().mean()
    return penalty, float(new_mean.detach()), batch_mean.detach()


def sample_w_plus(mapping, layout, mix, batch, style_dim, mixing_prob, device):
    """Latents for one G step: W+ [B, 2+2K, D] with style mixing of probability `mixing_prob`.

    `mapping`, `layout` and `mix` are the generator's (z -> w, w -> W+, (w0, w1) -> W+). All randomness
    comes from torch's global generator, so a snapshot of its state fixes the draw.
    """
    z = torch.randn(2, batch, style_dim, device=device)
    if mixing_prob > 0 and torch.rand(()).item() < mixing_prob:
        w = mapping(z.flatten(0, 1))
        return mix(w[:batch], w[batch:])
    return layout(mapping(z[0]))
