"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps."""

from __future__ import annotations

import torch

from .base import Attack

__all__ = ["FGSM"]


class FGSM(Attack):
    """``x_adv = clip(x + eps * sign(grad_x L))``. ``alpha`` and ``steps`` are ignored (one step of eps)."""

    def __init__(self, eps=8 / 255, loss_function=None, value_range="data", model_mode="eval", generator=None, **unused):
        _reject_unknown(type(self).__name__, unused, allowed=("alpha", "steps", "random_start", "decay"))
        super().__init__(eps=eps, alpha=eps, steps=1, loss_function=loss_function, value_range=value_range,
                         random_start=False, model_mode=model_mode, generator=generator)

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        grad = self.gradient(network, x, y)
        return self.clamp(x + eps * grad.sign(), lo, hi)


def _reject_unknown(name: str, kwargs: dict, allowed: tuple[str, ...]) -> None:
    """Accept the common keyword names a config may pass to every attack; reject anything else."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{name} got unexpected keyword arguments {unknown}")
