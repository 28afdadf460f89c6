"""AMAT: adaptive-margin adversarial training (Ma & Liang, arXiv 2206.01736), as its authors' code does it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from monai.networks.utils import eval_mode

from monai_dpaat.attacks import PGDL2
from monai_dpaat.attacks.base import restore_model_state

from .base import AdversarialIteration, PerSampleEpsilonMixin, attack_eps_value
from monai_dpaat.conventions import per_sample_correct, primary_output

from .utils import AdvKeys, attack_network

__all__ = ["AMATIteration", "loss_reduction", "subset_scale"]


def _rows(pred: Any, rows: slice | torch.Tensor) -> Any:
    """``pred``'s samples ``rows``, a slice or indices (of each entry of a deep-supervision list)."""
    return [p[rows] for p in pred] if isinstance(pred, (list, tuple)) else pred[rows]


def _norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.reshape(delta.shape[0], -1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def loss_reduction(loss_function: Callable) -> str:
    """``"mean"``, ``"sum"`` or ``"none"``: the ``reduction`` of a torch/MONAI loss (a string or MONAI's
    ``LossReduction``); ``"mean"`` for a callable without one (the batch mean, as the AMAT authors' loss)."""
    reduction = getattr(loss_function, "reduction", "mean")
    return str(getattr(reduction, "value", reduction)).lower()


def subset_scale(loss_function: Callable, n: int, k: int) -> float:
    """Factor that puts ``loss_function`` over a ``k``-sample subset of an ``n``-sample batch on the batch's
    scale, so that the AMAT total is ``(1 - beta) * L(batch) + beta * n / k * sum(subset) / n`` whatever the
    reduction: ``n / k`` for a sum-reduced loss (its value over ``n`` samples is ``n`` times the mean),
    ``1`` for a mean-reduced one (or ``"none"``, whose elements are averaged). Then a ``sum`` total is exactly
    ``n`` times the ``mean`` total, as the clean term is, and beta keeps the authors' weighting."""
    return n / k if loss_reduction(loss_function) == "sum" else 1.0


class AMATIteration(PerSampleEpsilonMixin, AdversarialIteration):
    """AMAT as a ``SupervisedTrainer(iteration_update=...)`` callable.

    Each training sample keeps its own margin ``eps_i`` (initially ``eps_step``). Per mini-batch:

    1. attack every sample inside ``eps_i`` (step ``alpha_fraction * eps_i``) -> ``x_adv``;
    2. loss ``(1 - beta) * L(f(x), y) + beta * L(f(x_adv), y)``, the adversarial term over the samples the
       model gets right on clean input (as the authors' code; 0 when there are none). With a sum-reduced
       loss (``CrossEntropyLoss(reduction="sum")``) the subset's sum is scaled by ``N / k`` (:func:`subset_scale`),
       so the total is exactly ``N`` times the mean-reduced one and beta weighs the two terms as the authors do;
    3. margin update for clean-correct samples: no adversarial example found (``x_adv`` still correct)
       -> ``eps_i += eps_step``; one found -> ``eps_i`` = the perturbation size
       at which the prediction first flips along the found direction ``delta``: the smallest of
       ``t * ||delta||``, ``t in {1/R, ..., 1}`` (``R = refine_steps``, extra no-grad eval-mode forwards on the
       flipped samples only; the authors stop their PGD at the crossing, this recovers that size from our
       fixed-step attack). ``eps_i`` is clipped to ``[0, eps_max]``. Clean-wrong samples keep their margin.

    "Correct" and "flipped" in step 3 are judged in the mode the attack ran the network in (its ``model_mode``,
    ``"eval"`` by default, as a plain callable attack is assumed to; ``None``: the network's mode during
    training), not on the training forward: with BatchNorm or Dropout the train-mode prediction on ``x_adv``
    is not the one the attack fought, so a train-mode judgement grows margins of samples the attack did flip
    (and shrinks others). Cost for an eval-mode attack: one extra no-grad forward of the clean and adversarial
    batch together (``2N`` samples, no backward), run before the training forward (BatchNorm buffers and train
    flags restored by :func:`~monai_dpaat.attacks.base.restore_model_state`); for a train-mode attack none (the
    training forwards are reused). The adversarial loss term keeps its subset of samples the training forward
    gets right.

    Args:
        num_samples: training list length. attack: training adversary (default 7-step L-inf PGD, eps 8/255,
            the DPAAT paper's comparison setting; the AMAT authors use 20-step L2 PGD: pass ``PGDL2``).
        beta: weight of the adversarial term; 0.5 as the authors.
        eps_max: largest margin; default the attack's eps, so AMAT never exceeds AT's budget.
        eps_step: the margin increment Delta (also the initial margin); default ``eps_max / 4``: a sample the
            model keeps right reaches ``eps_max`` after four visits (epochs).
        alpha_fraction: attack step as a fraction of ``eps_i``; default the attack's alpha / eps.
        refine_steps: ``R`` above; 1 takes the full ``||delta||``. Default 4.
        norm: ``"linf"`` or ``"l2"`` for the perturbation size; default from the attack (L2 for ``PGDL2``).
        dice_threshold: segmentation "correct" threshold (see :func:`~monai_dpaat.conventions.per_sample_correct`).
        correct_function: optional ``(pred, target) -> (N,) bool`` replacing :func:`~monai_dpaat.conventions.per_sample_correct`.

    Logged: ``loss_clean``, ``loss_adv``, ``eps_mean/min/max`` of the batch, ``attack_success`` (fraction
    of clean-correct samples whose adversarial example flipped, both judged in the attack's mode).
    ``state_dict()``: ``{"epsilon": (num_samples,)}``.

    Every derived bound is visible: ``repr(iteration)`` lists them with their values (and the attack), and the
    first iteration logs them at INFO on ``logging.getLogger("monai_dpaat.training")`` with where each default
    came from (:meth:`bounds`).
    """

    method = "amat"

    def __init__(
        self,
        num_samples: int,
        attack: Any = None,
        beta: float = 0.5,
        eps_max: float | None = None,
        eps_step: float | None = None,
        alpha_fraction: float | None = None,
        refine_steps: int = 4,
        norm: str | None = None,
        dice_threshold: float = 0.5,
        correct_function: Callable | None = None,
        index_key: str = "index",
    ) -> None:
        super().__init__(attack=attack, index_key=index_key)
        attack_eps = attack_eps_value(self.attack)
        attack_alpha = attack_eps_value(self.attack, "alpha")
        self._defaults = {"eps_max": eps_max is None, "eps_step": eps_step is None}
        if eps_max is None:
            if attack_eps is None:
                raise ValueError("eps_max is required when the attack has no scalar eps")
            eps_max = attack_eps
        self.eps_max = float(eps_max)
        self.eps_step = float(self.eps_max / 4 if eps_step is None else eps_step)
        if not 0 < self.eps_step <= self.eps_max:
            raise ValueError(f"need 0 < eps_step <= eps_max, got eps_step={self.eps_step}, eps_max={self.eps_max}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self._alpha_note = ""
        if alpha_fraction is None:
            from_attack = bool(attack_eps) and attack_alpha is not None
            alpha_fraction = attack_alpha / attack_eps if from_attack else 0.25
            self._alpha_note = "default: the attack's alpha / eps" if from_attack else "default 0.25"
        if not (alpha_fraction > 0 and math.isfinite(alpha_fraction)):
            raise ValueError(f"alpha_fraction must be finite and > 0, got {alpha_fraction}")
        if int(refine_steps) != refine_steps or refine_steps < 1:
            raise ValueError(f"refine_steps must be an integer >= 1, got {refine_steps}")
        norm = norm or ("l2" if isinstance(self.attack, PGDL2) else "linf")
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        self.beta = float(beta)
        self.alpha_fraction = float(alpha_fraction)
        self.refine_steps = int(refine_steps)
        self.norm = norm
        self.dice_threshold = float(dice_threshold)
        self.correct_function = correct_function
        self._budgets_checked = self.check_budgets()  # a fixed value range: now; "data": on the first batch
        self._init_table(num_samples, self.eps_step)

    def budgets(self) -> dict[str, tuple[Any, str]]:
        """The largest margin ``eps_max`` and the margin step ``eps_step``."""
        return {"eps_max": (self.eps_max, "default: the attack's eps" if self._defaults["eps_max"] else ""),
                "eps_step": (self.eps_step, "default eps_max / 4" if self._defaults["eps_step"] else "")}

    def bounds(self) -> dict[str, tuple[Any, str]]:
        """:meth:`budgets` (largest margin, margin step = initial margin) and ``alpha_fraction`` (each sample's
        attack step as a fraction of its margin)."""
        return {**self.budgets(), "alpha_fraction": (self.alpha_fraction, self._alpha_note)}

    def is_correct(self, pred: Any, targets: Any) -> torch.Tensor:
        if self.correct_function is not None:
            return torch.as_tensor(self.correct_function(pred, targets)).reshape(-1).bool()
        return per_sample_correct(pred, targets, self.dice_threshold)

    def judge_mode(self, engine: Any) -> str:
        """``"eval"`` or ``"train"``: the mode the attack ran the network in, in which flips are judged (an
        attack's ``model_mode``; ``"eval"`` for a callable without one, the default of this package's attacks
        and torchattacks'; ``None``: the network's own mode, train while training)."""
        mode = getattr(self.attack, "model_mode", "eval")
        if mode is None:
            mode = "train" if engine.network.training else "eval"
        return mode

    def prepare_step(self, engine: Any, batchdata: Any, step: dict) -> dict:
        """The per-sample attack, and for an eval-mode attack the correctness of ``x`` and ``x_adv`` ``(N,)`` in
        that mode (one no-grad forward of both, before the training forward: no autograd graph yet, so the
        buffers can be restored in place)."""
        out = super().prepare_step(engine, batchdata, step)
        if self.judge_mode(engine) == "eval":
            net = attack_network(engine, step["args"], step["kwargs"])
            x, x_adv, n = step["inputs"], out["x_adv"], step["inputs"].shape[0]
            with torch.no_grad(), restore_model_state(net, "eval"):
                if step["args"] or step["kwargs"]:  # inferer arguments may be per sample: one batch at a time
                    preds = [net(x), net(x_adv)]
                else:
                    both = net(torch.cat([x, x_adv]))
                    preds = [_rows(both, slice(0, n)), _rows(both, slice(n, 2 * n))]
            out["judged_ok"] = tuple(self.is_correct(p, step["targets"]) for p in preds)
        return out

    def step_loss(self, engine: Any, pred: Any, targets: Any, step: dict, loss_function: Callable) -> torch.Tensor:
        pred_adv = self.adversarial_forward(engine, step)
        loss_clean = loss_function(pred, targets).mean()
        clean_ok = self.is_correct(pred, targets)  # the adversarial term's subset: on the training forward
        # the margin update: judged in the attack's mode (prepare_step), else on the training forwards
        judged = step.get("judged_ok")
        judged_ok, adv_ok = judged if judged is not None else (clean_ok, self.is_correct(pred_adv, targets))
        judged_ok, adv_ok = judged_ok.to(clean_ok.device), adv_ok.to(clean_ok.device)
        if clean_ok.any():
            sel = clean_ok.nonzero().reshape(-1)
            sub = _rows(pred_adv, sel)
            # on the clean term's scale: a sum over k samples counts as N / k times as much (see subset_scale)
            scale = subset_scale(loss_function, clean_ok.numel(), sel.numel())
            loss_adv = loss_function(sub, targets[sel]).mean() * scale
        else:
            loss_adv = primary_output(pred_adv).sum() * 0.0
        flipped = judged_ok & ~adv_ok
        step.update(clean_ok=judged_ok, flipped=flipped, size=self._found_size(engine, step, flipped))
        self.publish(
            engine,
            {
                AdvKeys.LOSS_CLEAN: loss_clean,
                AdvKeys.LOSS_ADV: loss_adv,
                AdvKeys.SUCCESS: flipped.float().sum() / judged_ok.float().sum().clamp_min(1.0),
                **self.eps_stats(step["eps"]),
            },
        )
        return (1.0 - self.beta) * loss_clean + self.beta * loss_adv

    @torch.no_grad()
    def _found_size(self, engine: Any, step: dict, flipped: torch.Tensor) -> torch.Tensor:
        """``(N,)`` perturbation size at the first flip along ``x_adv - x`` (meaningful where ``flipped``)."""
        x, x_adv = step["inputs"], step["x_adv"]
        delta = (x_adv - x).detach()
        size = _norm(delta, self.norm)
        sel = flipped.nonzero().reshape(-1)
        if self.refine_steps == 1 or sel.numel() == 0:
            return size
        net = attack_network(engine, step["args"], step["kwargs"])
        targets = step["targets"][sel]
        found = torch.ones(sel.numel(), dtype=torch.bool, device=x.device)
        best = torch.ones(sel.numel(), dtype=x.dtype, device=x.device)
        # eval_mode only flips train flags (eval forwards leave BatchNorm buffers alone): restoring buffers by
        # an in-place copy here, between the training forward and its backward, would break autograd.
        with eval_mode(net):
            for k in range(self.refine_steps - 1, 0, -1):  # t = (R-1)/R, ..., 1/R: keep the smallest flipping t
                t = k / self.refine_steps
                wrong = ~self.is_correct(net(x[sel] + t * delta[sel]), targets)
                best = torch.where(wrong & found, torch.full_like(best, t), best)
                found = found & wrong  # a smaller t only counts while every larger one flipped too
        size = size.clone()
        size[sel] = best * size[sel]
        return size

    def finish_step(self, engine: Any, step: dict) -> None:
        if "clean_ok" not in step:
            return
        idx = step["idx"]
        eps = self.epsilon[idx].to(step["eps"].device, torch.float64)
        grown = eps + self.eps_step
        found = step["size"].to(torch.float64)
        new = torch.where(step["flipped"], found, torch.where(step["clean_ok"], grown, eps)).clamp(0.0, self.eps_max)
        self.write_epsilon(idx.to(new.device), new)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._table_state()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._load_table(state_dict)
