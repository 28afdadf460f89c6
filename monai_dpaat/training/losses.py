"""DPAAT's synchronization loss (Li et al. 2024, eq. 11): a symmetric log-probability term between the
model's probabilities on clean and adversarial inputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["symmetric_kl"]


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``(N, K, *spatial)`` log-probabilities over dim 1: log-softmax for ``K > 1``; for one channel the
    two-class Bernoulli ``[log sigma(z), log(1 - sigma(z))]`` (so ``K = 1`` means a sigmoid output)."""
    if logits.ndim < 2:
        raise ValueError(f"logits must be (N, C, ...), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        return torch.cat([F.logsigmoid(logits), F.logsigmoid(-logits)], dim=1)
    return F.log_softmax(logits, dim=1)


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """DPAAT's ``L_sync`` per sample: the symmetric KL ``0.5 * (KL(p||q) + KL(q||p)) = 0.5 * sum_k (p_k - q_k)(log p_k - log q_k)``,
    ``p = softmax(a)``, ``q = softmax(b)`` over channels, averaged over pixels/voxels.

    The paper (eq. 11, symbols lost in extraction) calls it "a symmetrical log-probability function" of the
    softmax outputs of ``x`` and ``x_adv`` that avoids vanishing gradients; the factor 0.5 makes it equal the
    ordinary KL for small differences (both directions agree to second order), so ``lambda = 0.5`` keeps the
    paper's weighting scale. Gradients flow into both arguments ("mutual supervision").

    Args:
        logits_a, logits_b: ``(N, K)`` or ``(N, K, *spatial)`` raw network outputs (``K = 1``: sigmoid).

    Returns:
        ``(N,)`` non-negative tensor; 0 where the two outputs give identical probabilities, and
        ``symmetric_kl(a, b) == symmetric_kl(b, a)``.
    """
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"logits shapes differ: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}")
    la, lb = _log_probs(logits_a.float()), _log_probs(logits_b.float())
    per_elem = 0.5 * ((la.exp() - lb.exp()) * (la - lb)).sum(dim=1)  # (N, *spatial)
    return per_elem.reshape(per_elem.shape[0], -1).mean(dim=1)
