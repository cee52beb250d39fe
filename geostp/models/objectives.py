"""Training objectives as pure functions: masked MSE, TAU's differential divergence and PredRNN-V2's decoupling term.

All of them take an optional boolean ``mask`` (True = valid pixel) shaped like
the target and leave masked pixels out of both the sum and the count, so a
frame with half its pixels outside radar range weighs by its valid half.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["masked_mse", "differential_divergence", "memory_decoupling"]


def _full(t: torch.Tensor) -> torch.Tensor:
    """Losses are computed in at least fp32, also when the model ran under bf16 autocast."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t

# Logit given to masked pixels before a softmax: exp() of it is exactly zero in
# float32, yet it stays finite, so 0 * log(0)-style NaNs never reach autograd.
_MASKED_LOGIT = -1.0e9


def masked_mse(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error over the valid pixels.

    Parameters
    ----------
    prediction, target
        Tensors of the same shape.
    mask
        Optional boolean tensor broadcastable to ``target``; True marks a
        pixel that counts.
    weight
        Optional non-negative float tensor broadcastable to ``target``: each
        pixel's squared error counts that much (e.g. a rain weight); the mean
        is then over the weights.

    Returns
    -------
    torch.Tensor
        Scalar; zero (still attached to the graph) when no pixel is valid.
    """
    error = (_full(prediction) - _full(target)).square()
    if mask is None and weight is None:
        return error.mean()
    w = torch.ones_like(error) if weight is None else _full(weight).to(error.dtype).expand_as(error)
    if mask is not None:
        w = w * mask.to(error.dtype).expand_as(error)
    return (error * w).sum() / w.sum().clamp_min(1.0)


def differential_divergence(
    prediction: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """TAU's differential divergence regulariser (DDR).

    The differences between consecutive frames, ``Δŷ_i = ŷ_{i+1} - ŷ_i`` and
    ``Δy_i``, are turned into distributions over the pixels of a frame with a
    softmax at temperature ``τ``; the regulariser is the Kullback-Leibler
    divergence ``KL(softmax(Δŷ_i/τ) || softmax(Δy_i/τ))`` summed over pixels,
    summed over the pairs and divided by the number of valid pixel pairs.  The
    division by pixels keeps it on the scale of a per-pixel MSE, as in the
    authors' code (their element-wise mean), so ``α = 0.1`` keeps its meaning.

    Parameters
    ----------
    prediction, target
        ``[B, T, C, H, W]``; the softmax runs over ``C x H x W`` of each frame
        difference.
    temperature
        ``τ``; smaller values sharpen the distributions.
    mask
        Optional boolean ``[B, T, C, H, W]``.  A difference pixel is valid when
        the pixel is valid in both frames; invalid ones get zero probability in
        both distributions.

    Returns
    -------
    torch.Tensor
        Scalar, zero when there are fewer than two frames.
    """
    prediction, target = _full(prediction), _full(target)
    if prediction.shape[1] < 2:
        return prediction.sum() * 0.0
    batch, pairs = prediction.shape[0], prediction.shape[1] - 1
    pred_diff = (prediction[:, 1:] - prediction[:, :-1]).reshape(batch, pairs, -1) / temperature
    true_diff = (target[:, 1:] - target[:, :-1]).reshape(batch, pairs, -1) / temperature
    if mask is not None:
        mask = mask.expand_as(target)
        valid = (mask[:, 1:] & mask[:, :-1]).reshape(batch, pairs, -1)
        pred_diff = pred_diff.masked_fill(~valid, _MASKED_LOGIT)
        true_diff = true_diff.masked_fill(~valid, _MASKED_LOGIT)
        count = valid.sum()
    else:
        count = pred_diff.numel()
    log_p = F.log_softmax(pred_diff, dim=-1)
    log_q = F.log_softmax(true_diff, dim=-1)
    terms = log_p.exp() * (log_p - log_q)
    if mask is not None:
        # Pairs with no valid pixel at all have uniform (and equal) p and q, so
        # their terms are zero already; masking keeps that exact.
        terms = terms * valid.to(terms.dtype)
        count = count.clamp_min(1).to(terms.dtype)
    return terms.sum() / count


def memory_decoupling(
    delta_c: torch.Tensor, delta_m: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """PredRNN-V2's memory decoupling loss: mean ``|cos(ΔC, ΔM)|`` per channel.

    For every sample and channel, the increments of the temporal memory
    ``ΔC`` and of the spatiotemporal memory ``ΔM`` (already passed through the
    shared 1x1 adapter) are compared as vectors over the spatial grid; the loss
    is the mean absolute cosine similarity, which pushes the two memories to
    store different things.

    Parameters
    ----------
    delta_c, delta_m
        ``[..., channels, h, w]`` tensors of the same shape (any leading axes:
        steps, layers, batch).
    valid
        Optional boolean ``[..., 1, h, w]`` (broadcast over channels); cells
        that are False are left out of both vectors.

    Returns
    -------
    torch.Tensor
        Scalar in ``[0, 1]``.
    """
    delta_c, delta_m = _full(delta_c), _full(delta_m)
    if valid is not None:
        weight = valid.to(delta_c.dtype)
        delta_c = delta_c * weight
        delta_m = delta_m * weight
    flat_c = delta_c.flatten(-2)
    flat_m = delta_m.flatten(-2)
    # The authors L2-normalise each channel's spatial vector (with a small
    # epsilon) and then take the cosine; F.normalize + dot product is that.
    cosine = (F.normalize(flat_c, dim=-1) * F.normalize(flat_m, dim=-1)).sum(-1)
    return cosine.abs().mean()
