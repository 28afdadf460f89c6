"""Fast Minimum-Norm attack, L-inf (FMN, Pintor et al., NeurIPS 2021), targeted over the top classes: the benchmark
protocol's minimum-norm attack, in the place AutoAttack gives FAB-T.

FMN looks for the *smallest* perturbation that fools the network rather than the strongest one inside a budget: it
takes normalised gradient steps on the logit difference and keeps an adaptive L-inf radius ``epsilon_k`` around the
clean image, shrunk by ``1 - gamma_k`` while the iterate is adversarial (never above the smallest norm found), grown
by ``1 + gamma_k`` while it is not (before the first success: jumped to the current norm plus a linear estimate of the
distance to the boundary); step size ``alpha_k`` and ``gamma_k`` are cosine-annealed. A minimum-norm search probes the
boundary from a different direction than the fixed-budget APGD runs (its steps are L2-normalised gradients, its
radius moves), so it can find points they miss. As a fixed-budget attack it succeeds on a sample when the smallest
adversarial norm it found is within that sample's ``eps``.

The iteration follows the authors' reference (``pralab/Fast-Minimum-Norm-FMN-Attack``; adv_lib's ``fmn``): the same
schedules and defaults (``alpha_init`` 1, ``alpha_final = alpha_init / 100``, ``gamma`` 0.05 -> 0.001), the L1 dual
norm in the distance estimate, the clip of the radius at the largest possible norm. Unlike it, images need not be in
[0, 1]: the step (an L2 length) is scaled by each sample's intensity range, the clip and the clamp use the value
range of :class:`~monai_dpaat.attacks.base.Attack`, and ``eps`` may be per sample.
"""

from __future__ import annotations

import math

import torch

from .apgd import APGD, _take
from .base import Attack, intensity_range

__all__ = ["FMN"]


def _logit_difference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_label - max_{j != label} z_j`` per sample ``(N,)``."""
    others = logits.clone()
    others.scatter_(1, labels[:, None], -float("inf"))
    return logits.gather(1, labels[:, None])[:, 0] - others.amax(1)


class FMN(Attack):
    """L-inf FMN on a classification network (outputs ``(N, K)``), targeted at the network's 2nd, 3rd, ... ranked
    classes on the clean image (``n_target_classes``, at most ``K - 1``; each on the samples every earlier target left
    correctly classified) or untargeted.

    Args:
        eps: the budget a found point must be within to count (float or ``(N,)``).
        steps: iterations per target class (100 in the protocol's standard budget).
        n_target_classes: target classes per sample (AutoAttack's FAB-T: 9); ``targeted=False`` ignores it.
        targeted: targeted (default) or untargeted FMN.
        alpha_init, alpha_final: the step's L2 length at the start and the end (cosine annealing), for an image of
            range 1 (scaled by each sample's intensity range); ``alpha_final`` None: ``alpha_init / 100``.
        gamma_init, gamma_final: the radius' relative change at the start and the end.
        value_range, model_mode, generator: as :class:`Attack` (FMN starts at the clean image: no random draw).

    Returns images ``(N, C, *spatial)``: the smallest adversarial point found where its L-inf norm is within ``eps``,
    the clean input otherwise. :attr:`norms` ``(N,)`` keeps the smallest adversarial norm found per sample (inf: none;
    0: misclassified clean) of the last call.
    """

    tasks = ("classification",)
    #: its search is not bounded by ``eps`` (the radius moves to find the smallest adversarial norm); only the points
    #: it returns are
    minimum_norm = True

    def __init__(self, eps=8 / 255, steps: int = 100, n_target_classes: int = 9, targeted: bool = True,
                 alpha_init: float = 1.0, alpha_final: float | None = None, gamma_init: float = 0.05,
                 gamma_final: float = 0.001, value_range="data", model_mode="eval", generator=None, alpha=None,
                 random_start=None, loss_function=None):
        super().__init__(eps=eps, alpha=0.0, steps=steps, value_range=value_range, random_start=False,
                         model_mode=model_mode, generator=generator)
        if loss_function is not None:
            raise ValueError("FMN minimises the logit difference; loss_function must be None")
        if isinstance(n_target_classes, bool) or not isinstance(n_target_classes, int) or n_target_classes < 1:
            raise ValueError(f"n_target_classes must be an integer >= 1, got {n_target_classes!r}")
        alpha_final = alpha_init / 100 if alpha_final is None else alpha_final
        if not 0 < alpha_final <= alpha_init:
            raise ValueError(f"need 0 < alpha_final <= alpha_init, got {alpha_final!r} and {alpha_init!r}")
        if not 0 < gamma_final <= gamma_init < 1:
            raise ValueError(f"need 0 < gamma_final <= gamma_init < 1, got {gamma_final!r} and {gamma_init!r}")
        self.n_target_classes, self.targeted = n_target_classes, bool(targeted)
        self.alpha_init, self.alpha_final = float(alpha_init), float(alpha_final)
        self.gamma_init, self.gamma_final = float(gamma_init), float(gamma_final)
        self.norms: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (f"FMN(eps={self.eps!r}, steps={self.steps}, targeted={self.targeted}, "
                f"n_target_classes={self.n_target_classes})")

    def min_norm_run(self, network, x, labels, targeted: bool, lo, hi):
        """One FMN run on ``x`` ``(n, C, *spatial)``: ``(smallest adversarial L-inf norm (n,), its point, the last
        iterate)``, the norm inf (and the point clean) where none was found. ``labels`` are the targets when
        ``targeted``."""
        n = x.shape[0]
        view = (n, *([1] * (x.ndim - 1)))
        width = intensity_range(x).reshape(n).clamp_min(1e-12)
        if lo is None:
            worst = torch.full((n,), float("inf"), device=x.device)
        else:
            worst = torch.maximum(x - lo, hi - x).reshape(n, -1).amax(1)
        sign = 1.0 if targeted else -1.0
        delta = torch.zeros_like(x)
        radius = torch.full((n,), float("inf"), device=x.device)
        best_norm = torch.full((n,), float("inf"), device=x.device)
        best_adv = x.clone()
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        for i in range(self.steps):
            cosine = (1 + math.cos(math.pi * i / self.steps)) / 2
            step = (self.alpha_final + (self.alpha_init - self.alpha_final) * cosine) * width
            gamma = self.gamma_final + (self.gamma_init - self.gamma_final) * cosine
            norm = delta.reshape(n, -1).abs().amax(1)
            point = (x + delta).requires_grad_(True)
            logits = APGD.logits_of(network(point))
            loss = sign * _logit_difference(logits, labels)
            (grad,) = torch.autograd.grad(loss.sum(), point)
            predicted = logits.detach().argmax(1)
            adversarial = predicted == labels if targeted else predicted != labels
            smaller = adversarial & (norm < best_norm)
            found |= adversarial
            best_norm = torch.where(smaller, norm, best_norm)
            best_adv[smaller] = point.detach()[smaller]
            # the radius: shrink while adversarial, grow after a first success, else jump to the linear estimate
            boundary = loss.detach().abs() / grad.reshape(n, -1).abs().sum(1).clamp_min(1e-12)
            radius = torch.where(adversarial, torch.minimum(radius * (1 - gamma), best_norm),
                                 torch.where(found, radius * (1 + gamma), norm + boundary))
            radius = torch.minimum(radius, worst)
            g = grad / grad.reshape(n, -1).norm(dim=1).clamp_min(1e-12).reshape(view)
            delta = delta + step.reshape(view) * g
            delta = torch.maximum(torch.minimum(delta, radius.reshape(view)), -radius.reshape(view))
            delta = self.clamp(x + delta, lo, hi) - x
        return best_norm, best_adv, (x + delta).detach()

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        with torch.no_grad():
            logits = APGD.logits_of(network(x))
        y = APGD.class_indices(y, x.shape[0], logits.shape[1], x.device)
        budget = eps.reshape(x.shape[0], -1)[:, 0] * (1 + 1e-6)  # float slack: a norm equal to eps counts
        fooled = logits.argmax(1) != y
        norms = torch.where(fooled, torch.zeros(x.shape[0], device=x.device),
                            torch.full((x.shape[0],), float("inf"), device=x.device))
        adv = x.clone()
        ranked = logits.sort(dim=1)[1]  # ascending: column -r is the r-th ranked class
        targets = range(2, min(self.n_target_classes, logits.shape[1] - 1) + 2) if self.targeted else [None]
        for rank in targets:
            todo = (~fooled).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            labels = y[todo] if rank is None else ranked[todo, -rank]
            norm, point, _ = self.min_norm_run(network, x[todo], labels, rank is not None, _take(lo, todo),
                                               _take(hi, todo))
            norms[todo] = torch.minimum(norms[todo], norm)
            ok = norm <= budget[todo]
            adv[todo[ok]] = point[ok]
            fooled[todo[ok]] = True
        self.norms = norms
        return adv
