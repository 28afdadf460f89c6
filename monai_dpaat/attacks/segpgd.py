"""SegPGD (Gu et al., ECCV 2022): PGD for dense segmentation that shifts its loss from the correctly to
the wrongly classified pixels as the attack proceeds.

At step ``t = 0 .. T-1`` the loss is

    L_t = mean_pixels[ (1 - l_t) * CE * [pixel correct] + l_t * CE * [pixel wrong] ],   l_t = t / (2T)

so the first steps push the still-correct pixels over the boundary instead of piling loss on pixels
that are already wrong. The step is L-inf PGD: ``x <- Proj(x + alpha * sign(grad L_t))``.

:class:`DenseAttack` holds what SegPGD and :class:`~monai_dpaat.attacks.cospgd.CosPGD` share: per-pixel
losses, correctness and the target's class probability for 2D/3D outputs, multi-class (softmax) or
one-channel / multi-label (sigmoid).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from monai_dpaat.conventions import primary_output

from .base import Attack

__all__ = ["DenseAttack", "SegPGD", "pixel_terms"]


def _dense_output(outputs: Any) -> torch.Tensor:
    """The full-resolution segmentation output ``(N, K, *spatial)``: :func:`monai_dpaat.conventions.primary_output`."""
    outputs = primary_output(outputs)
    if outputs.ndim < 3:
        raise ValueError(
            f"dense attacks need segmentation outputs (N, K, *spatial), got shape {tuple(outputs.shape)}; "
            "use PGD or APGD for classifiers"
        )
    return outputs


def pixel_terms(prediction: torch.Tensor, target: torch.Tensor, activation: str = "auto"):
    """Per-element loss, correctness and cosine similarity to the one-hot target.

    Args:
        prediction: logits ``(N, K, *spatial)``.
        target: class indices ``(N, *spatial)`` / ``(N, 1, *spatial)`` or one-hot ``(N, K, *spatial)``
            (softmax); binary ``(N, K, *spatial)`` / ``(N, *spatial)`` when ``K == 1`` (sigmoid).
        activation: ``"softmax"`` (CE over channels), ``"sigmoid"`` (BCE per channel; multi-label) or
            ``"auto"`` (sigmoid for one channel, softmax otherwise).

    Returns:
        ``(loss, correct, cos)``, each ``(N, *spatial)`` for softmax or ``(N, K, *spatial)`` for sigmoid:
        the per-element CE/BCE, whether the element is classified correctly (bool) and the cosine
        similarity between the predicted distribution and the one-hot target. For a sigmoid element the
        distribution is the two-vector ``(1 - s, s)``, so the cosine is ``s_y / ||(1 - s, s)||``.
    """
    if activation not in ("auto", "softmax", "sigmoid"):
        raise ValueError(f"activation must be 'auto', 'softmax' or 'sigmoid', got {activation!r}")
    k = prediction.shape[1]
    if activation == "auto":
        activation = "sigmoid" if k == 1 else "softmax"
    if activation == "sigmoid":
        y = target.to(prediction.dtype)
        if y.shape != prediction.shape:
            if y.numel() != prediction.numel():
                raise ValueError(
                    f"sigmoid target shape {tuple(target.shape)} does not match prediction {tuple(prediction.shape)}"
                )
            y = y.reshape(prediction.shape)
        loss = F.binary_cross_entropy_with_logits(prediction, y, reduction="none")
        correct = (prediction > 0) == (y > 0.5)
        s = torch.sigmoid(prediction)
        s_y = torch.where(y > 0.5, s, 1.0 - s)
        cos = s_y / torch.sqrt(s**2 + (1.0 - s) ** 2)
        return loss, correct, cos
    if k < 2:
        raise ValueError(f"softmax activation needs >= 2 output channels, got {k}")
    if target.shape == prediction.shape and target.is_floating_point():
        y = target.argmax(1)
    elif target.ndim == prediction.ndim and target.shape[1] == 1:
        y = target[:, 0]
    else:
        y = target
    y = y.round().long() if y.is_floating_point() else y.long()
    if y.shape != (prediction.shape[0], *prediction.shape[2:]):
        raise ValueError(
            f"segmentation target shape {tuple(target.shape)} does not fit prediction {tuple(prediction.shape)}"
        )
    if (y < 0).any() or (y >= k).any():
        raise ValueError(f"segmentation target labels must be in [0, {k - 1}], got values {y.unique().tolist()}")
    loss = F.cross_entropy(prediction, y, reduction="none")
    correct = prediction.argmax(1) == y
    prob = torch.softmax(prediction, dim=1)
    cos = prob.gather(1, y[:, None])[:, 0] / prob.norm(p=2, dim=1).clamp_min(1e-12)
    return loss, correct, cos


class DenseAttack(Attack):
    """L-inf PGD whose loss at step ``t`` is :meth:`step_loss`; the base of SegPGD and CosPGD.

    Args: as :class:`Attack` (defaults eps 8/255, alpha 2/255, 10 steps, random start), plus
    ``activation`` (see :func:`pixel_terms`). ``loss_function`` is not used: the per-pixel CE/BCE is
    part of the method.
    """

    tasks = ("segmentation",)
    accepts_loss_function = False

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, activation: str = "auto", value_range="data",
                 random_start: bool = True, model_mode="eval", generator=None, loss_function=None):
        super().__init__(eps=eps, alpha=alpha, steps=steps, value_range=value_range, random_start=random_start,
                         model_mode=model_mode, generator=generator)
        if loss_function is not None:
            raise ValueError(f"{type(self).__name__} uses its own per-pixel CE/BCE; loss_function must be None")
        if activation not in ("auto", "softmax", "sigmoid"):
            raise ValueError(f"activation must be 'auto', 'softmax' or 'sigmoid', got {activation!r}")
        self.activation = activation

    def step_loss(self, prediction: torch.Tensor, target: Any, t: int) -> torch.Tensor:  # pragma: no cover
        """Scalar loss at step ``t`` (0-based) of ``self.steps``."""
        raise NotImplementedError

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        adv = self.uniform_start(x, eps, lo, hi) if self.random_start else x.clone()
        for t in range(self.steps):
            point = adv.detach().requires_grad_(True)
            loss = self.step_loss(_dense_output(network(point)), y, t)
            (grad,) = torch.autograd.grad(loss, point)
            adv = self.project(adv + alpha * grad.sign(), x, eps, lo, hi)
        return adv


class SegPGD(DenseAttack):
    """SegPGD (Gu et al. 2022): CE of correctly classified pixels weighted by ``1 - l_t``, of wrongly
    classified ones by ``l_t``, ``l_t = t / (2T)``. Images ``(N, C, H, W)`` or ``(N, C, D, H, W)``, outputs
    ``(N, K, *spatial)``; targets as :func:`pixel_terms`."""

    def weight(self, t: int) -> float:
        """``l_t = t / (2T)`` for the 0-based step ``t``: 0 at the first step, just under 1/2 at the last."""
        return t / (2.0 * self.steps)

    def step_loss(self, prediction, target, t):
        loss, correct, _ = pixel_terms(prediction, target, self.activation)
        lam = self.weight(t)
        weights = torch.where(correct, 1.0 - lam, lam).to(loss.dtype)
        return (weights * loss).mean()
