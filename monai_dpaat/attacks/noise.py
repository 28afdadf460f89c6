"""Gaussian noise (GN): the no-gradient baseline of the attack tables."""

from __future__ import annotations

import torch

from .base import Attack

__all__ = ["GaussianNoise"]


class GaussianNoise(Attack):
    """``x + std * N(0, 1)``, clamped to the value range; targets and gradients are ignored.

    Args:
        std: noise standard deviation (torchattacks' default 0.1, in the data's units).
        eps: optional L-inf budget; the noise is clipped to ``[-eps, eps]`` so GN can be compared
            like-for-like with gradient attacks of the same budget. ``None`` leaves the noise unbounded.
    """

    uses_gradient = False

    def __init__(self, std: float = 0.1, eps=None, value_range="data", generator=None, **unused):
        unknown = sorted(set(unused) - {"alpha", "steps", "loss_function", "random_start", "decay", "model_mode"})
        if unknown:
            raise TypeError(f"GaussianNoise got unexpected keyword arguments {unknown}")
        if not std >= 0:
            raise ValueError(f"std must be >= 0, got {std}")
        super().__init__(eps=0.0 if eps is None else eps, alpha=0.0, steps=1, value_range=value_range,
                         generator=generator)
        self.std = float(std)
        self.bounded = eps is not None

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self.std}, eps={self.eps if self.bounded else None})"

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        noise = torch.empty_like(x).normal_(generator=self.generator) * self.std
        if self.bounded:
            noise = torch.clamp(noise, min=-eps, max=eps)
        return self.clamp(x + noise, lo, hi)
