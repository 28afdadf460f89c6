"""Single-step training adversaries: FGSM with a random start (Wong et al. 2020) and N-FGSM (de Jorge et al. 2022).

One forward and one backward pass per batch, against PGD-k's k: AT then costs about twice standard training, DPAAT
(a clean and an adversarial training pass) about three times (``benchmarks/fast_training.py``). Both scale their
noise and step with each sample's own ``eps`` (a ``(N,)`` budget from AMAT or DPAAT), so a per-sample adaptive
budget keeps its meaning.
"""

from __future__ import annotations

import torch

from .base import Attack
from .fgsm import _reject_unknown

__all__ = ["FGSMRS", "NFGSM"]


def _require_random_start(name: str, random_start: bool) -> None:
    if not random_start:  # the random start is what makes these single-step attacks train robustly
        raise ValueError(f"{name} always starts from a random point (random_start=True); for one step from the clean "
                         "image use FGSM")


class FGSMRS(Attack):
    """FGSM from a random start ("Fast is better than free", Wong, Rice & Kolter 2020; torchattacks' ``FFGSM``):
    ``x0 = clip(x + U(-eps, eps))``, ``x_adv = Proj_{B_inf(x, eps)}(x0 + alpha * sign(grad L(x0)))``, clamped to
    the value range.

    Args:
        eps: L-inf budget (float or ``(N,)``).
        alpha: step size; default ``1.25 * eps`` (the paper's choice; larger steps overfit catastrophically sooner).
        loss_function, value_range, model_mode, generator: as :class:`~monai_dpaat.attacks.base.Attack`.
        random_start: must be True (a ValueError otherwise: that is FGSM).
        ``steps`` and ``decay``, which configs pass to every attack, are accepted and ignored (one step), as
        :class:`~monai_dpaat.attacks.FGSM` does.
    """

    def __init__(self, eps=8 / 255, alpha=None, loss_function=None, value_range="data", model_mode="eval",
                 generator=None, random_start=True, **unused):
        _reject_unknown(type(self).__name__, unused, allowed=("steps", "decay"))
        _require_random_start(type(self).__name__, random_start)
        super().__init__(eps=eps, alpha=1.25 * eps if alpha is None else alpha, steps=1, loss_function=loss_function,
                         value_range=value_range, random_start=True, model_mode=model_mode, generator=generator)

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        start = self.uniform_start(x, eps, lo, hi)
        grad = self.gradient(network, start, y)
        return self.project(torch.addcmul(start, grad.sign(), alpha), x, eps, lo, hi)


class NFGSM(Attack):
    """N-FGSM (de Jorge et al. 2022, "Make some noise"): a stronger noise and no projection,
    ``x_adv = clip(x + delta0 + alpha * sign(grad L(x + delta0)))`` with ``delta0 ~ U(-k eps, k eps)``, clamped
    to the value range only; with ``clip``, the perturbation is first clipped to ``[-clip * eps, clip * eps]``.
    A sample with ``eps_i = 0`` is returned clean.

    Without the projection the perturbation reaches ``(k + 1) * eps`` in L-inf (``3 eps`` by default): N-FGSM
    trains against a larger neighbourhood than ``eps``, which is what avoids catastrophic overfitting at
    single-step cost. It is a training adversary: an evaluation's worst case leaves out its samples, whose
    measured perturbation exceeds ``eps``.

    Args:
        eps: the budget the noise and step scale with (float or ``(N,)``).
        alpha: step size; default ``eps`` (the paper's).
        noise_magnitude: ``k``, the noise's half-width as a multiple of ``eps`` (default 2, the paper's).
        clip: ``None`` (default, the paper's: no clipping) or a multiple of ``eps`` that bounds the perturbation.
        loss_function, value_range, model_mode, generator: as :class:`~monai_dpaat.attacks.base.Attack`;
            ``random_start`` must be True; ``steps`` and ``decay`` are accepted and ignored, as by :class:`FGSMRS`.
    """

    def __init__(self, eps=8 / 255, alpha=None, noise_magnitude=2.0, clip=None, loss_function=None,
                 value_range="data", model_mode="eval", generator=None, random_start=True, **unused):
        _reject_unknown(type(self).__name__, unused, allowed=("steps", "decay"))
        _require_random_start(type(self).__name__, random_start)
        if not (isinstance(noise_magnitude, (int, float)) and 0 <= noise_magnitude < float("inf")):
            raise ValueError(f"noise_magnitude must be a finite number >= 0, got {noise_magnitude!r}")
        if clip is not None and not (isinstance(clip, (int, float)) and 0 < clip < float("inf")):
            raise ValueError(f"clip must be None or a finite number > 0 (a multiple of eps), got {clip!r}")
        super().__init__(eps=eps, alpha=eps if alpha is None else alpha, steps=1, loss_function=loss_function,
                         value_range=value_range, random_start=True, model_mode=model_mode, generator=generator)
        self.noise_magnitude = float(noise_magnitude)
        self.clip = None if clip is None else float(clip)

    def perturbation_bound(self, eps, alpha=None):
        """``clip * eps`` with ``clip``, else ``noise_magnitude * eps + alpha`` (``3 eps`` by default)."""
        if self.clip is not None:
            return self.clip * eps
        return self.noise_magnitude * eps + (self.alpha if alpha is None else alpha)

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        noisy = self.clamp_inplace(self.noise_like(x, "uniform").mul_(self.noise_magnitude * eps).add_(x), lo, hi)
        grad = self.gradient(network, noisy, y)
        adv = torch.addcmul(noisy, grad.sign(), alpha)
        # no projection onto the eps ball; with clip, onto the (clip * eps) one
        adv = self.clamp_inplace(adv, lo, hi) if self.clip is None else self.project(adv, x, self.clip * eps, lo, hi)
        # eps_i = 0 is no attack on sample i, whatever alpha is (AMAT/DPAAT give a zero budget that meaning)
        return torch.where(eps > 0, adv, x)
