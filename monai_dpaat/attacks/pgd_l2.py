"""L2 PGD (Madry et al. 2018), as torchattacks' ``PGDL2``: normalised-gradient steps, L2-ball projection."""

from __future__ import annotations

import torch

from .base import Attack, l2_norm

__all__ = ["PGDL2"]


class PGDL2(Attack):
    """``x <- Proj_{B_2(x0, eps)} (x + alpha * g / ||g||_2)``. Random start: a direction uniform on the sphere
    scaled by ``U(0, 1) * eps`` (torchattacks' scheme). Defaults: eps 1.0, alpha 0.2, 10 steps.
    ``eps_for_division`` keeps zero gradients/perturbations from dividing by zero."""

    norm = "L2"

    def __init__(self, eps=1.0, alpha=0.2, steps=10, loss_function=None, value_range="data", random_start=True,
                 model_mode="eval", generator=None, eps_for_division=1e-10):
        super().__init__(eps=eps, alpha=alpha, steps=steps, loss_function=loss_function, value_range=value_range,
                         random_start=random_start, model_mode=model_mode, generator=generator)
        self.eps_for_division = eps_for_division

    def project(self, adv, x, eps, lo, hi):
        delta = adv.detach() - x
        factor = torch.clamp(eps / l2_norm(delta).clamp_min(self.eps_for_division), max=1.0)
        return self.clamp_inplace(delta.mul_(factor).add_(x), lo, hi)

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        adv = x.clone()
        if self.random_start:
            delta = self.noise_like(x, "normal")
            r = self.noise_like(eps, "uniform", 0.0, 1.0)
            delta = delta / l2_norm(delta).clamp_min(self.eps_for_division) * r * eps
            adv = self.clamp_inplace(delta.add_(x), lo, hi)
        for _ in range(self.steps):
            grad = self.gradient(network, adv, y)
            step = grad / (l2_norm(grad) + self.eps_for_division)
            adv = self.project(step.mul_(alpha).add_(adv), x, eps, lo, hi)
        return adv
