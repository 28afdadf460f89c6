"""The momentum-iterative family: MI-FGSM, NI-FGSM, DI-FGSM, TI-FGSM, SI-NI-FGSM and SI-DI-FGSM.

All six are one loop (Dong et al. 2018) with different gradient estimates:

    g_t  = E[ grad L(T(s_i * (x_t + nesterov * decay * alpha * m_t))) ]      (mean over scale copies i)
    g_t  = smooth(g_t)                                                         (TI only)
    m_t+1 = decay * m_t + g_t / mean(|g_t|)                                    (per sample)
    x_t+1 = Proj_{B_inf(x_0, eps)}(x_t + alpha * sign(m_t+1))

with ``T`` DI's random shrink-and-pad (DI, TI, SI-DI), ``s_i = 1 / 2^i`` the scale copies (SI), and
the Nesterov look-ahead for NI/SI-NI. Defaults follow torchattacks 3.5.1 per attack.
"""

from __future__ import annotations

import torch

from .base import Attack, mean_abs_normalize
from .transforms import gaussian_smooth, input_diversity

__all__ = ["MomentumIterative", "MIFGSM", "NIFGSM", "DIFGSM", "TIFGSM", "SINIFGSM", "SIDIFGSM"]


class MomentumIterative(Attack):
    """The shared loop. Args beyond :class:`Attack`:

    decay: momentum factor (mu). nesterov: NI look-ahead. scale_copies: SI's m (1 = off).
    resize_rate, diversity_prob: DI's transform (diversity_prob 0 = off).
    kernel_length, nsig: TI's Gaussian (kernel_length 0 = off).
    """

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0, loss_function=None, value_range="data",
                 random_start=False, model_mode="eval", generator=None, nesterov=False, scale_copies=1,
                 resize_rate=0.9, diversity_prob=0.0, kernel_length=0, nsig=3.0):
        super().__init__(eps=eps, alpha=alpha, steps=steps, loss_function=loss_function, value_range=value_range,
                         random_start=random_start, model_mode=model_mode, generator=generator)
        if not decay >= 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        if int(scale_copies) != scale_copies or scale_copies < 1:
            raise ValueError(f"scale_copies must be >= 1, got {scale_copies}")
        if not 0.0 <= diversity_prob <= 1.0:
            raise ValueError(f"diversity_prob must be in [0, 1], got {diversity_prob}")
        if not resize_rate > 0:
            raise ValueError(f"resize_rate must be > 0 (< 1 shrinks, > 1 enlarges), got {resize_rate}")
        if int(kernel_length) != kernel_length or kernel_length < 0:
            raise ValueError(f"kernel_length must be an integer >= 0 (0 = no smoothing), got {kernel_length}")
        if kernel_length and not nsig > 0:
            raise ValueError(f"nsig must be > 0, got {nsig}")
        self.decay = float(decay)
        self.nesterov = bool(nesterov)
        self.scale_copies = int(scale_copies)
        self.resize_rate = float(resize_rate)
        self.diversity_prob = float(diversity_prob)
        self.kernel_length = int(kernel_length)
        self.nsig = float(nsig)

    @property
    def m(self) -> int:
        """SI's number of scale copies, the ``m`` of the SI-NI-FGSM / SI-DI-FGSM constructors."""
        return self.scale_copies

    def estimate_gradient(self, network, point: torch.Tensor, y) -> torch.Tensor:
        point = point.detach().requires_grad_(True)
        total = None
        for i in range(self.scale_copies):
            scaled = point / (2.0**i) if i else point
            if self.diversity_prob > 0:
                scaled, yi = input_diversity(scaled, y, self.resize_rate, self.diversity_prob, self.generator)
            else:
                yi = y
            (g,) = torch.autograd.grad(self.loss(network, scaled, yi), point)
            total = g if total is None else total + g
        grad = total / self.scale_copies if self.scale_copies > 1 else total
        if self.kernel_length > 0:
            grad = gaussian_smooth(grad, self.kernel_length, self.nsig)
        return grad

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        adv = self.uniform_start(x, eps, lo, hi) if self.random_start else x.clone()
        momentum = torch.zeros_like(x)
        for _ in range(self.steps):
            point = (self.decay * alpha * momentum).add_(adv) if self.nesterov else adv
            grad = self.estimate_gradient(network, point, y)
            momentum = mean_abs_normalize(grad).add_(momentum, alpha=self.decay)  # a fresh tensor each step
            adv = self.project(torch.addcmul(adv, momentum.sign(), alpha), x, eps, lo, hi)
        return adv


class MIFGSM(MomentumIterative):
    """MI-FGSM (Dong et al. 2018). Defaults: eps 8/255, alpha 2/255, 10 steps, decay 1.0."""

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0, loss_function=None, value_range="data",
                 random_start=False, model_mode="eval", generator=None):
        super().__init__(eps, alpha, steps, decay, loss_function, value_range, random_start, model_mode, generator)


class NIFGSM(MomentumIterative):
    """NI-FGSM (Lin et al. 2020): the gradient is taken at the Nesterov look-ahead ``x + decay*alpha*m``."""

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0, loss_function=None, value_range="data",
                 random_start=False, model_mode="eval", generator=None):
        super().__init__(eps, alpha, steps, decay, loss_function, value_range, random_start, model_mode, generator,
                         nesterov=True)


class DIFGSM(MomentumIterative):
    """DI-FGSM (Xie et al. 2019): gradients of randomly shrunk-and-padded inputs (prob 0.5, rate 0.9).
    Default decay 0.0 as torchattacks (decay > 0 gives M-DI2-FGSM)."""

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, decay=0.0, resize_rate=0.9, diversity_prob=0.5,
                 loss_function=None, value_range="data", random_start=False, model_mode="eval", generator=None):
        super().__init__(eps, alpha, steps, decay, loss_function, value_range, random_start, model_mode, generator,
                         resize_rate=resize_rate, diversity_prob=diversity_prob)


class TIFGSM(MomentumIterative):
    """TI-FGSM (Dong et al. 2019): DI's input diversity plus Gaussian smoothing of the gradient
    (kernel 15, nsig 3, depthwise over any channel count and 2D/3D). Default decay 0.0 as torchattacks."""

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, decay=0.0, kernel_length=15, nsig=3.0,
                 resize_rate=0.9, diversity_prob=0.5, loss_function=None, value_range="data", random_start=False,
                 model_mode="eval", generator=None):
        super().__init__(eps, alpha, steps, decay, loss_function, value_range, random_start, model_mode, generator,
                         resize_rate=resize_rate, diversity_prob=diversity_prob, kernel_length=kernel_length,
                         nsig=nsig)


class SINIFGSM(MomentumIterative):
    """SI-NI-FGSM (Lin et al. 2020): NI-FGSM with gradients averaged over ``m`` scale copies ``x / 2^i``.
    Defaults as torchattacks: alpha 0.8/255, decay 1.0, m 5. Scaling is towards 0, the data's zero."""

    def __init__(self, eps=8 / 255, alpha=0.8 / 255, steps=10, decay=1.0, m=5, loss_function=None,
                 value_range="data", random_start=False, model_mode="eval", generator=None):
        super().__init__(eps, alpha, steps, decay, loss_function, value_range, random_start, model_mode, generator,
                         nesterov=True, scale_copies=m)


class SIDIFGSM(MomentumIterative):
    """SI-DI-FGSM (Lin et al. 2022): momentum, scale copies and input diversity together (torchattacks has
    no such attack; defaults combine its MI, SI and DI defaults: alpha 2/255, decay 1.0, m 5, p 0.5)."""

    def __init__(self, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0, m=5, resize_rate=0.9, diversity_prob=0.5,
                 loss_function=None, value_range="data", random_start=False, model_mode="eval", generator=None):
        super().__init__(eps, alpha, steps, decay, loss_function, value_range, random_start, model_mode, generator,
                         scale_copies=m, resize_rate=resize_rate, diversity_prob=diversity_prob)
