"""CosPGD (Agnihotri & Keuper, ICML 2024 / arXiv 2023): PGD for dense prediction whose per-pixel loss is
scaled by the cosine similarity between the pixel's predicted distribution and its one-hot target,

    L = mean_pixels[ cos(softmax(z), onehot(y)).detach() * CE(z, y) ],

so pixels that are already wrong (low similarity) get less weight and the attack spreads over the
image instead of over-driving a few pixels. L-inf steps ``x <- Proj(x + alpha * sign(grad L))``.
"""

from __future__ import annotations

import torch

from .segpgd import DenseAttack, pixel_terms

__all__ = ["CosPGD"]


class CosPGD(DenseAttack):
    """CosPGD (untargeted). Images ``(N, C, H, W)`` or ``(N, C, D, H, W)``; outputs ``(N, K, *spatial)``
    (softmax) or one-channel / multi-label sigmoid, where the distribution of an element is ``(1 - s, s)``.
    Defaults eps 8/255, alpha 2/255, 10 steps, random start. Targets as
    :func:`~monai_dpaat.attacks.segpgd.pixel_terms`."""

    def step_loss(self, prediction, target, t):
        loss, _, cos = pixel_terms(prediction, target, self.activation)
        return (cos.detach() * loss).mean()

    @staticmethod
    def scale(prediction: torch.Tensor, target: torch.Tensor, activation: str = "auto") -> torch.Tensor:
        """The detached per-element weights ``(N, *spatial)`` (softmax) / ``(N, K, *spatial)`` (sigmoid)."""
        return pixel_terms(prediction, target, activation)[2].detach()
