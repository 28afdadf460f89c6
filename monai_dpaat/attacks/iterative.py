"""I-FGSM / BIM (Kurakin et al. 2016) and L-inf PGD (Madry et al. 2018)."""

from __future__ import annotations

import torch

from .base import Attack

__all__ = ["IFGSM", "PGD"]


class PGD(Attack):
    """L-inf projected gradient ascent: ``x <- Proj_{B_inf(x0, eps)} (x + alpha * sign(grad))``, clamped to
    the value range after every step. ``random_start=True`` (default, as Madry et al.) starts from
    ``U(-eps, eps)``. Defaults as torchattacks: eps 8/255, alpha 2/255, 10 steps."""

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, loss_function=None, value_range="data",
                 random_start=True, model_mode="eval", generator=None):
        super().__init__(eps=eps, alpha=alpha, steps=steps, loss_function=loss_function, value_range=value_range,
                         random_start=random_start, model_mode=model_mode, generator=generator)

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        adv = self.uniform_start(x, eps, lo, hi) if self.random_start else x.clone()
        for _ in range(self.steps):
            grad = self.gradient(network, adv, y)
            # adv + alpha * sign(grad) in one fused op (sign * alpha is exact, so values match torchattacks')
            adv = self.project(torch.addcmul(adv, grad.sign(), alpha), x, eps, lo, hi)
        return adv


class IFGSM(PGD):
    """Iterative FGSM / BIM: PGD without random start (torchattacks' ``BIM``)."""

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, loss_function=None, value_range="data",
                 model_mode="eval", generator=None, random_start=False):
        if random_start:
            raise ValueError("I-FGSM has no random start; use PGD")
        super().__init__(eps=eps, alpha=alpha, steps=steps, loss_function=loss_function, value_range=value_range,
                         random_start=False, model_mode=model_mode, generator=generator)
