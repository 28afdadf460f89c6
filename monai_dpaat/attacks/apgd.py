"""Auto-PGD (APGD, Croce & Hein 2020), the step-size-free PGD of AutoAttack, for classifiers.

APGD differs from PGD in four ways (Croce & Hein, "Reliable evaluation of adversarial robustness with
an ensemble of diverse parameter-free attacks", ICML 2020, Algorithm 1):

- the step size starts at ``2 * eps`` and is halved at checkpoints ``w_j`` (``p_0 = 0``, ``p_1 = 0.22``,
  ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, as fractions of the iteration budget) when either
  fewer than ``rho = 75%`` of the steps since the last checkpoint increased the loss, or the step size
  was not halved at the last checkpoint and the best loss has not improved since; after a halving the
  iterate restarts from the best point found so far;
- a momentum step ``x <- x + a * (z - x) + (1 - a) * (x - x_prev)`` with ``a = 0.75`` (1 on the first step);
- the highest-loss point steers the search (the restarts after a halving); the attack returns, per
  sample, the last misclassified point found, and the clean input where none was found (as the reference
  code, whose ``x_best_adv`` is only copied out for fooled samples);
- ``n_restarts`` random restarts on the samples still classified correctly.

The step-size checks follow the reference code (fra31/auto-attack ``autopgd_base.py``, torchattacks
``APGD``) exactly, including a detail of its first check: the losses are recorded in a zero-initialised
``(steps, N)`` buffer and the first window starts at index ``-1``, its unfilled last row, so the first
iteration's loss is compared with 0 rather than with the start point's loss (with CE it always counts as
an increase; with DLR it counts only where the sample is already misclassified).

CE and the DLR loss ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (shift and scale invariant, needs at
least 3 classes) are supported. The default budget is 100 iterations, as AutoAttack (torchattacks'
``APGD`` defaults to 10). Unlike the reference code the attack works on N-D inputs ``(N, C, *spatial)``,
takes per-sample ``eps`` and does not assume images in [0, 1] (``value_range`` as :class:`Attack`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from monai_dpaat.conventions import primary_output

from .base import Attack, l2_norm

__all__ = ["APGD", "APGDDLR", "APGDT", "dlr_loss", "dlr_targeted_loss", "ce_loss", "apgd_checkpoints"]


def ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy. ``logits`` ``(N, K)``, ``target`` ``(N,)`` class indices -> ``(N,)``."""
    return F.cross_entropy(logits, target, reduction="none")


def dlr_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample Difference of Logits Ratio loss (Croce & Hein 2020, eq. 6).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)`` with ``z_pi`` the logits sorted in decreasing
    order. ``logits`` ``(N, K)`` with ``K >= 3``, ``target`` ``(N,)`` -> ``(N,)``.
    """
    if logits.ndim != 2 or logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs logits (N, K) with K >= 3 classes, got shape {tuple(logits.shape)}")
    sorted_logits, order = logits.sort(dim=1)
    z_y = logits.gather(1, target[:, None])[:, 0]
    top_is_y = (order[:, -1] == target).to(logits.dtype)
    # the reference's order of operations: near-ties make the denominator tiny, so rounding matters
    margin = z_y - sorted_logits[:, -2] * top_is_y - sorted_logits[:, -1] * (1.0 - top_is_y)
    return -margin / (sorted_logits[:, -1] - sorted_logits[:, -3] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, target: torch.Tensor, target_class: torch.Tensor) -> torch.Tensor:
    """Per-sample targeted DLR loss (Croce & Hein 2020, eq. 7): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

    ``logits`` ``(N, K)``, ``target`` (true class) and ``target_class`` (``t``) ``(N,)`` -> ``(N,)``. The
    denominator needs ``K >= 4``; with ``K = 3`` it is ``z_pi1 - z_pi3`` and with ``K = 2`` ``|z_1 - z_2|``
    (ours: the paper defines none for so few classes; it keeps the loss invariant to the logits' scale).
    """
    sorted_logits = logits.sort(dim=1)[0]
    k = logits.shape[1]
    if k >= 4:
        spread = sorted_logits[:, -1] - 0.5 * sorted_logits[:, -3] - 0.5 * sorted_logits[:, -4]
    else:
        spread = sorted_logits[:, -1] - sorted_logits[:, 0]
    z_y = logits.gather(1, target[:, None])[:, 0]
    z_t = logits.gather(1, target_class[:, None])[:, 0]
    return -(z_y - z_t) / (spread + 1e-12)


_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"ce": ce_loss, "dlr": dlr_loss}


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations (0-based, ``< steps``) at which APGD checks whether to halve the step size.

    The first check is after ``max(int(0.22 * steps), 1)`` iterations; the interval then shrinks by
    ``max(int(0.03 * steps), 1)`` down to ``max(int(0.06 * steps), 1)`` (the reference implementation's
    integer form of ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``).
    """
    interval = max(int(0.22 * steps), 1)
    shrink, minimum = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    checks, it = [], interval - 1
    while it < steps:
        checks.append(it)
        interval = max(interval - shrink, minimum)
        it += interval
    return checks


def _take(t: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of a per-sample tensor; scalars and ``None`` pass through."""
    if isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] > 1:
        return t[index]
    if isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == 1 and index.numel() != 1:
        return t.expand(index.numel(), *t.shape[1:])
    return t


class APGD(Attack):
    """Auto-PGD for classification networks (outputs ``(N, K)`` logits, or ``(N, 1)`` for a sigmoid binary
    classifier, which is treated as the two logits ``(0, z)``).

    Args:
        eps: L-inf (or L2) radius, a float or a per-sample ``(N,)`` tensor.
        steps: iterations per restart (default 100, as AutoAttack).
        n_restarts: random restarts; restarts only run on the samples not yet misclassified.
        loss: ``"ce"``, ``"dlr"`` (needs >= 3 classes) or a callable ``(logits (N, K), target (N,)) -> (N,)``.
        norm: ``"Linf"`` or ``"L2"``.
        rho: the fraction of loss-increasing steps below which the step size is halved (0.75).
        momentum: the paper's ``alpha``: ``x <- x + a * (z - x) + (1 - a) * (x - x_prev)`` with ``a = momentum``
            (0.75) weighting the new projected step ``z`` and ``1 - a`` the previous update.
        eot_iter: gradients averaged per step (expectation over transformation, for randomised models).
        value_range, model_mode, generator: as :class:`Attack`. ``alpha`` and ``random_start`` are accepted
            for config compatibility and ignored (APGD always starts from a random point, step ``2 * eps``).

    Targets: class indices ``(N,)`` / ``(N, 1)`` or one-hot / probabilities ``(N, K)`` (argmax is taken).
    Returns images ``(N, C, *spatial)``: misclassified where an adversarial point was found, otherwise the
    clean input (as the reference implementation; :meth:`attack_single_run` gives the highest-loss point).
    """

    tasks = ("classification",)
    accepts_loss_function = False

    def __init__(
        self,
        eps: float | torch.Tensor = 8 / 255,
        steps: int = 100,
        n_restarts: int = 1,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "ce",
        norm: str = "Linf",
        rho: float = 0.75,
        momentum: float = 0.75,
        eot_iter: int = 1,
        value_range="data",
        model_mode: str | None = "eval",
        generator: torch.Generator | None = None,
        alpha: Any = None,
        random_start: Any = None,
        loss_function: Any = None,
    ) -> None:
        norm_key = str(norm).lower().replace("-", "")
        if norm_key not in ("linf", "l2"):
            raise ValueError(f"norm must be 'Linf' or 'L2', got {norm!r}")
        self.norm = "Linf" if norm_key == "linf" else "L2"  # before the base class checks eps in its units
        super().__init__(eps=eps, alpha=0.0, steps=steps, value_range=value_range, random_start=True,
                         model_mode=model_mode, generator=generator)
        if loss_function is not None:
            raise ValueError("APGD takes loss='ce' | 'dlr' or a per-sample callable via `loss`, not loss_function")
        if isinstance(loss, str):
            if loss.lower() not in _LOSSES:
                raise ValueError(f"loss must be 'ce', 'dlr' or a callable, got {loss!r}")
            self.loss_name, self.indiv_loss = loss.lower(), _LOSSES[loss.lower()]
        elif callable(loss):
            self.loss_name, self.indiv_loss = getattr(loss, "__name__", "custom"), loss
        else:
            raise ValueError(f"loss must be 'ce', 'dlr' or a callable, got {loss!r}")
        if int(n_restarts) != n_restarts or n_restarts < 1:
            raise ValueError(f"n_restarts must be an integer >= 1, got {n_restarts}")
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        if int(eot_iter) != eot_iter or eot_iter < 1:
            raise ValueError(f"eot_iter must be an integer >= 1, got {eot_iter}")
        self.n_restarts = int(n_restarts)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.eot_iter = int(eot_iter)

    def __repr__(self) -> str:
        return (f"APGD(eps={self.eps!r}, steps={self.steps}, n_restarts={self.n_restarts}, "
                f"loss={self.loss_name!r}, norm={self.norm!r})")

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def logits_of(outputs: Any) -> torch.Tensor:
        """Network outputs -> ``(N, K)`` logits (deep-supervision lists: the first output; ``(N, 1)`` -> ``(N, 2)``)."""
        outputs = primary_output(outputs)
        if outputs.ndim != 2:
            raise ValueError(
                f"APGD needs classification outputs (N, K), got shape {tuple(outputs.shape)}; "
                "use SegPGD or CosPGD for dense outputs"
            )
        if outputs.shape[1] == 1:
            outputs = torch.cat([torch.zeros_like(outputs), outputs], dim=1)
        return outputs

    @staticmethod
    def class_indices(targets: Any, n: int, n_classes: int, device) -> torch.Tensor:
        y = torch.as_tensor(targets, device=device)
        if y.ndim == 2 and y.shape[1] == n_classes and n_classes > 1 and y.shape != (n, 1):
            y = y.argmax(1)
        elif y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"APGD targets must be class indices (N,) or one-hot (N, K), got shape {tuple(y.shape)}")
        y = y.round().long() if y.is_floating_point() else y.long()
        if (y < 0).any() or (y >= n_classes).any():
            raise ValueError(f"APGD targets must be in [0, {n_classes - 1}], got {sorted(set(y.tolist()))}")
        return y

    def _loss_grad(self, network, adv: torch.Tensor, y: torch.Tensor, loss: Callable | None = None):
        """Per-sample loss ``(N,)``, logits ``(N, K)`` and input gradient (mean over ``eot_iter`` draws)."""
        grad = torch.zeros_like(adv)
        for _ in range(self.eot_iter):
            point = adv.detach().requires_grad_(True)
            logits = self.logits_of(network(point))
            loss_indiv = (loss or self.indiv_loss)(logits, y)
            (g,) = torch.autograd.grad(loss_indiv.sum(), point)
            grad += g
        return loss_indiv.detach(), logits.detach(), grad / self.eot_iter

    # what "adversarial" means (APGDSeg redefines both: the lowest Dice so far)
    def success_start(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The run's success state at its random start: ``(n,)`` bool, misclassified."""
        return logits.argmax(1) != y

    def success_update(self, state: torch.Tensor, logits: torch.Tensor, y: torch.Tensor):
        """``(keep, state)``: the samples whose current point becomes the returned one (misclassified now: the
        reference keeps the last misclassified point) and the updated state (ever misclassified)."""
        wrong = logits.argmax(1) != y
        return wrong, state | wrong

    def _project(self, adv, x, eps, lo, hi) -> torch.Tensor:
        delta = adv - x
        if self.norm == "Linf":
            delta = torch.clamp(delta, min=-eps, max=eps)
        else:
            delta = delta * torch.clamp(eps / l2_norm(delta).clamp_min(1e-12), max=1.0)
        return self.clamp(x + delta, lo, hi)

    def _random_start(self, x, eps, lo, hi) -> torch.Tensor:
        if self.norm == "Linf":
            t = self.noise_like(x, "uniform")
            t = t / t.flatten(1).abs().amax(1).clamp_min(1e-12).reshape(-1, *([1] * (x.ndim - 1)))
        else:
            t = self.noise_like(x, "normal")
            t = t / l2_norm(t).clamp_min(1e-12)
        return self.clamp(x + eps * t, lo, hi)

    def _step(self, adv, grad, step_size) -> torch.Tensor:
        if self.norm == "Linf":
            return adv + step_size * grad.sign()
        return adv + step_size * grad / l2_norm(grad).clamp_min(1e-12)

    # ------------------------------------------------------------------ one run
    def attack_single_run(self, network, x, y, eps, lo, hi, loss: Callable | None = None):
        """One APGD run from a random start on ``x`` ``(n, C, *spatial)``. Returns ``(x_best, fooled,
        loss_best, x_best_adv)``: the highest-loss point, whether a misclassified point was found ``(n,)``,
        the highest loss ``(n,)``, and the last misclassified point (the start point where none was found); what
        counts as success is :meth:`success_start` / :meth:`success_update` (APGDSeg: the lowest Dice, whose
        ``fooled`` is that Dice ``(n,)``).
        ``loss``: this run's per-sample loss instead of the attack's (APGD-T's targeted DLR per target class)."""
        checks = set(apgd_checkpoints(self.steps))
        adv = self._random_start(x, eps, lo, hi)
        loss_indiv, logits, grad = self._loss_grad(network, adv, y, loss)
        fooled = self.success_start(logits, y)
        x_best, grad_best, loss_best = adv.clone(), grad.clone(), loss_indiv.clone()
        x_best_adv = adv.clone()
        step_size = 2.0 * eps.clone()
        # loss after iteration i in row i; row -1 (still 0) opens the first window, as in the reference code
        loss_steps = torch.zeros((self.steps, x.shape[0]), device=x.device, dtype=loss_indiv.dtype)
        last_check, reduced_last = -1, torch.ones_like(loss_best, dtype=torch.bool)
        loss_best_last = loss_best.clone()
        adv_prev = adv.clone()
        for i in range(self.steps):
            a = self.momentum if i > 0 else 1.0
            update_prev = adv - adv_prev
            adv_prev = adv
            z = self._project(self._step(adv, grad, step_size), x, eps, lo, hi)
            adv = self._project(adv + (z - adv) * a + update_prev * (1.0 - a), x, eps, lo, hi)

            loss_indiv, logits, grad = self._loss_grad(network, adv, y, loss)
            keep, fooled = self.success_update(fooled, logits, y)
            x_best_adv[keep] = adv[keep]
            loss_steps[i] = loss_indiv
            improved = loss_indiv > loss_best
            x_best[improved], grad_best[improved] = adv[improved], grad[improved]
            loss_best[improved] = loss_indiv[improved]

            if i in checks:
                rows = torch.arange(last_check, i + 1, device=x.device) % self.steps  # -1 wraps to the last row
                window = loss_steps[rows]
                k = window.shape[0] - 1
                oscillating = (window[1:] > window[:-1]).sum(0) <= k * self.rho
                no_improvement = (~reduced_last) & (loss_best_last >= loss_best)
                halve = oscillating | no_improvement
                reduced_last, loss_best_last, last_check = halve, loss_best.clone(), i
                if halve.any():
                    step_size[halve] /= 2.0
                    adv = adv.clone()
                    grad = grad.clone()
                    adv[halve], grad[halve] = x_best[halve], grad_best[halve]
        return x_best, fooled, loss_best, x_best_adv

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits_of(network(x))
        y = self.class_indices(y, x.shape[0], logits.shape[1], x.device)
        if self.loss_name == "dlr" and logits.shape[1] < 3:
            raise ValueError(f"APGD with the DLR loss needs >= 3 classes, the network outputs {logits.shape[1]}")
        fooled = logits.argmax(1) != y
        adv = x.clone()  # samples never fooled keep the clean input, as the reference implementation
        for _ in range(self.n_restarts):
            todo = (~fooled).nonzero()[:, 0]
            if todo.numel() == 0:
                break
            _, found, _, point = self.attack_single_run(
                network, x[todo], y[todo], _take(eps, todo), _take(lo, todo), _take(hi, todo)
            )
            adv[todo[found]] = point[found]
            fooled[todo[found]] = True
        return adv


class APGDDLR(APGD):
    """APGD with the DLR loss (AutoAttack's untargeted APGD-DLR); needs >= 3 classes."""

    def __init__(self, eps=8 / 255, steps=100, n_restarts=1, norm="Linf", rho=0.75, momentum=0.75, eot_iter=1,
                 value_range="data", model_mode="eval", generator=None, alpha=None, random_start=None,
                 loss_function=None, loss="dlr"):
        if loss != "dlr":
            raise ValueError(f"APGDDLR uses the DLR loss, got loss={loss!r}; use APGD for other losses")
        super().__init__(eps=eps, steps=steps, n_restarts=n_restarts, loss="dlr", norm=norm, rho=rho,
                         momentum=momentum, eot_iter=eot_iter, value_range=value_range, model_mode=model_mode,
                         generator=generator, alpha=alpha, random_start=random_start, loss_function=loss_function)


class APGDT(APGD):
    """Targeted APGD on the targeted DLR loss (AutoAttack's APGD-T): one APGD run per target class, the classes the
    network ranks 2nd, 3rd, ... on the clean image (``n_target_classes`` of them, at most ``K - 1``), each on the
    samples every earlier target left correctly classified. Success is any misclassification, as in the reference.

    Args:
        n_target_classes: how many of the top-ranked wrong classes to target (AutoAttack: 9).
        steps, n_restarts (per target class), the rest: as :class:`APGD` (the loss is fixed).
    """

    def __init__(self, eps=8 / 255, steps=100, n_restarts=1, n_target_classes: int = 9, norm="Linf", rho=0.75,
                 momentum=0.75, eot_iter=1, value_range="data", model_mode="eval", generator=None, alpha=None,
                 random_start=None, loss_function=None, loss="dlr-targeted"):
        if loss != "dlr-targeted":
            raise ValueError(f"APGDT uses the targeted DLR loss, got loss={loss!r}; use APGD for other losses")
        if isinstance(n_target_classes, bool) or not isinstance(n_target_classes, int) or n_target_classes < 1:
            raise ValueError(f"n_target_classes must be an integer >= 1, got {n_target_classes!r}")
        super().__init__(eps=eps, steps=steps, n_restarts=n_restarts, loss="ce", norm=norm, rho=rho,
                         momentum=momentum, eot_iter=eot_iter, value_range=value_range, model_mode=model_mode,
                         generator=generator, alpha=alpha, random_start=random_start, loss_function=loss_function)
        self.loss_name = "dlr-targeted"
        self.n_target_classes = n_target_classes

    def __repr__(self) -> str:
        return (f"APGDT(eps={self.eps!r}, steps={self.steps}, n_restarts={self.n_restarts}, "
                f"n_target_classes={self.n_target_classes}, norm={self.norm!r})")

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        with torch.no_grad():
            logits = self.logits_of(network(x))
        y = self.class_indices(y, x.shape[0], logits.shape[1], x.device)
        ranked = logits.sort(dim=1)[1]  # ascending: column -r is the r-th ranked class
        fooled = logits.argmax(1) != y
        adv = x.clone()
        for rank in range(2, min(self.n_target_classes, logits.shape[1] - 1) + 2):
            for _ in range(self.n_restarts):
                todo = (~fooled).nonzero()[:, 0]
                if todo.numel() == 0:
                    return adv
                target_class = ranked[todo, -rank]  # these rows' rank-th class

                def targeted(z, t, c=target_class):
                    return dlr_targeted_loss(z, t, c)

                _, found, _, point = self.attack_single_run(
                    network, x[todo], y[todo], _take(eps, todo), _take(lo, todo), _take(hi, todo), loss=targeted)
                adv[todo[found]] = point[found]
                fooled[todo[found]] = True
        return adv
