"""Gaussian noise (GN): the no-gradient baseline of the attack tables."""

from __future__ import annotations

import math

import torch

from .base import Attack

__all__ = ["GaussianNoise"]


class GaussianNoise(Attack):
    """``x + std * N(0, 1)``, clamped to the value range; targets and gradients are ignored.

    Args:
        std: noise standard deviation (torchattacks' default 0.1, in the data's units).
        eps: optional L-inf budget; the noise is clipped to ``[-eps, eps]`` so GN can be compared
            like-for-like with gradient attacks of the same budget. ``None`` leaves the noise unbounded
            (stored as ``eps = inf``); an ``eps`` given at call time always bounds it.
        value_range, generator: as :class:`~monai_dpaat.attacks.base.Attack`.
    """

    uses_gradient = False

    def __init__(self, std: float = 0.1, eps=None, value_range="data", generator=None, **unused):
        unknown = sorted(set(unused) - {"alpha", "steps", "loss_function", "random_start", "decay", "model_mode"})
        if unknown:
            raise TypeError(f"GaussianNoise got unexpected keyword arguments {unknown}")
        if not (std >= 0 and math.isfinite(std)):
            raise ValueError(f"std must be a finite number >= 0, got {std}")
        super().__init__(eps=0.0 if eps is None else eps, alpha=0.0, steps=1, value_range=value_range,
                         model_mode=None, generator=generator)
        if eps is None:  # no budget: set after the base class's budget checks, which an inf eps would fail
            self.eps = math.inf
        self.std = float(std)

    @property
    def bounded(self) -> bool:
        return not (isinstance(self.eps, float) and math.isinf(self.eps))

    def __repr__(self) -> str:
        return f"GaussianNoise(std={self.std}, eps={self.eps if self.bounded else None})"

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        noise = self.noise_like(x, "normal").mul_(self.std)
        torch.minimum(noise, eps, out=noise)  # no-op for eps = inf
        torch.maximum(noise, -eps, out=noise)
        return self.clamp_inplace(noise.add_(x), lo, hi)
