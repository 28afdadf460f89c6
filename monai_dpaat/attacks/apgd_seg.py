"""APGD on a segmentation loss: AutoAttack's step-size-free PGD for dense outputs, 2D and 3D.

The iteration is :class:`~monai_dpaat.attacks.apgd.APGD`'s own (its checkpoints, momentum and restarts from the best
point are reused, not copied); two things change for dense outputs:

- the loss is the per-sample mean over pixels (voxels) of the per-element CE (softmax outputs) or BCE (sigmoid,
  one channel or multi-label) of :func:`~monai_dpaat.attacks.segpgd.pixel_terms`, or a given per-sample callable;
- there is no "misclassified" to stop at: the attack returns, per sample, the point of the lowest mean foreground Dice
  it visited (:func:`monai_dpaat.conventions.per_sample_dice`, the metric the benchmark reports), and over
  ``n_restarts`` the lowest of the restarts (each restart runs on every sample).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from monai_dpaat.conventions import per_sample_dice

from .apgd import APGD, _take
from .segpgd import _dense_output, pixel_terms

__all__ = ["APGDSeg", "pixel_loss"]


def pixel_loss(prediction: torch.Tensor, target: torch.Tensor, activation: str = "auto") -> torch.Tensor:
    """``(N,)`` mean per-element CE/BCE of logits ``(N, K, *spatial)`` against ``target`` (as :func:`pixel_terms`)."""
    loss = pixel_terms(prediction, target, activation)[0]
    return loss.reshape(loss.shape[0], -1).mean(1)


class APGDSeg(APGD):
    """APGD on the mean per-pixel CE/BCE of a segmentation network (outputs ``(N, K, *spatial)``; ``K = 1``: a
    sigmoid foreground channel). Images ``(N, C, H, W)`` or ``(N, C, D, H, W)``; targets label maps
    ``(N, 1, *spatial)`` / ``(N, *spatial)`` or one-hot ``(N, K, *spatial)``.

    Args:
        eps, steps (default 100), n_restarts, norm, rho, momentum, eot_iter, value_range, model_mode, generator:
            as :class:`APGD`.
        loss: ``"ce"`` (the per-element CE/BCE, :func:`pixel_loss`) or a callable ``(logits, target) -> (N,)``.
        activation: ``"auto"`` (sigmoid for one channel, softmax otherwise), ``"softmax"`` or ``"sigmoid"``
            (multi-label outputs), for the ``"ce"`` loss.

    Returns images ``(N, C, *spatial)``: per sample the lowest-Dice point visited (the clean input when no point
    scored below it). :attr:`dice` keeps that Dice ``(N,)`` of the last call.
    """

    tasks = ("segmentation",)

    def __init__(self, eps=8 / 255, steps: int = 100, n_restarts: int = 1, loss: Any = "ce", activation: str = "auto",
                 norm="Linf", rho=0.75, momentum=0.75, eot_iter=1, value_range="data", model_mode="eval",
                 generator=None, alpha=None, random_start=None, loss_function=None):
        if isinstance(loss, str) and loss.lower() != "ce":
            raise ValueError(f"APGDSeg's loss must be 'ce' (per-pixel CE/BCE) or a callable, got {loss!r}")
        if activation not in ("auto", "softmax", "sigmoid"):
            raise ValueError(f"activation must be 'auto', 'softmax' or 'sigmoid', got {activation!r}")
        per_sample: Callable = loss if callable(loss) else (lambda z, t: pixel_loss(z, t, activation))
        super().__init__(eps=eps, steps=steps, n_restarts=n_restarts, loss=per_sample, norm=norm, rho=rho,
                         momentum=momentum, eot_iter=eot_iter, value_range=value_range, model_mode=model_mode,
                         generator=generator, alpha=alpha, random_start=random_start, loss_function=loss_function)
        self.loss_name = "ce" if not callable(loss) else getattr(loss, "__name__", "custom")
        self.activation = activation
        self.dice: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (f"APGDSeg(eps={self.eps!r}, steps={self.steps}, n_restarts={self.n_restarts}, "
                f"loss={self.loss_name!r}, norm={self.norm!r})")

    @staticmethod
    def logits_of(outputs: Any) -> torch.Tensor:
        """The full-resolution dense output ``(N, K, *spatial)`` (deep supervision: the first)."""
        return _dense_output(outputs)

    # success = a lower Dice than any point so far; the state is that Dice
    def success_start(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_dice(logits, y)

    def success_update(self, state: torch.Tensor, logits: torch.Tensor, y: torch.Tensor):
        dice = per_sample_dice(logits, y)
        lower = dice < state
        return lower, torch.where(lower, dice, state)

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        with torch.no_grad():
            clean = self.logits_of(network(x))
            pixel_terms(clean, y, self.activation)  # targets that do not fit the output: named before any step
            best = per_sample_dice(clean, y)
        adv = x.clone()
        every = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.n_restarts):
            _, dice, _, point = self.attack_single_run(network, x, y, _take(eps, every), _take(lo, every),
                                                       _take(hi, every))
            lower = dice < best
            adv[lower], best = point[lower], torch.where(lower, dice, best)
        self.dice = best
        return adv
