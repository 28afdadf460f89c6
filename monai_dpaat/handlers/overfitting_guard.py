"""Catastrophic-overfitting guard for single-step adversarial training (Wong et al. 2020, Sec. 5).

Single-step adversarial training (FGSM, FGSM-RS, sometimes N-FGSM at large budgets) can collapse within a few
iterations: the network learns to defeat its own one-step attack (single-step robust accuracy rises) while a
multi-step attack breaks it completely (multi-step robust accuracy falls to ~0). The gap between the two on a fixed
batch is the signature; this handler measures it, and on a collapse restores the last healthy weights and trains
with a 2-step PGD for a while.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_dpaat.attacks import FGSMRS, PGD, restore_model_state, with_eps_units
from monai_dpaat.conventions import per_sample_correct, primary_output
from monai_dpaat.training.base import attack_eps_value
from monai_dpaat.training.utils import all_reduce_sum, unwrap_parallel

__all__ = ["CatastrophicOverfittingGuard"]

logger = logging.getLogger(__name__)


def _budget(attack: Any) -> float:
    eps = attack_eps_value(attack)
    if eps is None or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"the training attack's eps must be one finite value > 0, got {attack.eps!r}")
    return eps


class CatastrophicOverfittingGuard:
    """Every ``interval`` iterations, robust accuracy on a fixed batch under the training's own single-step attack and
    under a multi-step PGD; on a collapse (single-step minus multi-step accuracy above ``gap``), restore the network
    and optimizer of the last healthy check and train with ``fallback`` for ``recover_iterations`` iterations.

    Attach to a ``SupervisedTrainer`` whose ``iteration_update`` is ``iteration`` (a classification network: outputs
    ``(N, K)``). Under Free AT (:class:`~monai_dpaat.attacks.FreeAT`, whose perturbation is carried over from
    training, not made for a given batch) the single-step accuracy is FGSM-RS's at the same budget. Writes to ``engine.state.metrics`` after every check (their ``StatsHandler`` /
    ``TensorBoardStatsHandler`` log the epoch's last): ``co_single_acc``, ``co_multi_acc``, ``co_gap``,
    ``co_collapses`` (the count so far); with ``summary_writer`` or ``log_dir`` also the curves per check (tags
    ``co/single_acc``, ``co/multi_acc``, ``co/gap``, ``co/collapse``, x = iteration). :attr:`history` keeps every
    check ``{"iteration", "single_acc", "multi_acc", "gap", "collapsed", "recovering"}`` (a collapse also
    ``"restored_from"``: the iteration whose weights came back, None before any healthy check); a check that finds
    the gap while the fallback trains is recorded, not acted on (the weights are not restored again).

    Under ``torch.distributed`` the counts are summed over ranks, so every rank decides the same and restores the
    same weights (DDP replicas are equal).

    Args:
        iteration: the trainer's method (AT/SAT/AMAT/DPAAT iteration with an ``attack``).
        interval: iterations between checks (and at the first iteration).
        num_samples: size of the fixed batch: the first samples of the first training batch, or of ``data``.
        data: ``(images, labels)`` to check on instead (e.g. held-out images), ``(N, C, *spatial)`` and ``(N,)``.
        multi_step: the multi-step attack; default PGD-10 at the training attack's eps, step eps / 4, same units.
        fallback: the attack trained with after a collapse; default 2-step PGD at the same eps, step eps / 2.
        gap: the collapse threshold on single-step minus multi-step accuracy (Wong et al. saw ~0.9 vs ~0).
        recover_iterations: iterations with ``fallback`` after a collapse, then the single-step attack again.
        summary_writer, log_dir: where the per-check curves go (neither: none).
    """

    def __init__(self, iteration: Any, interval: int = 50, num_samples: int = 64, data: Any = None,
                 multi_step: Any = None, fallback: Any = None, gap: float = 0.3, recover_iterations: int = 200,
                 summary_writer: Any = None, log_dir: str | None = None) -> None:
        attack = getattr(iteration, "attack", None)
        if attack is None:
            raise ValueError("CatastrophicOverfittingGuard needs a method with an attack (AT, SAT, AMAT, DPAAT)")
        for name, value in (("interval", interval), ("num_samples", num_samples),
                            ("recover_iterations", recover_iterations)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 < gap < 1:
            raise ValueError(f"gap must be in (0, 1), got {gap!r}")
        eps, units = _budget(attack), getattr(attack, "eps_units", "absolute")
        value_range = getattr(attack, "value_range", "data")
        self.iteration = iteration
        self.training_attack = attack
        # Free AT's adversary is no attack of a given batch (its perturbation is carried from training): the
        # single-step side is then FGSM-RS at the same budget
        self.single_step = attack if not getattr(attack, "uses_training_gradient", False) else with_eps_units(
            FGSMRS(eps=eps, value_range=value_range), units)
        self.multi_step = multi_step or with_eps_units(
            PGD(eps=eps, alpha=eps / 4, steps=10, value_range=value_range), units)
        self.fallback = fallback or with_eps_units(PGD(eps=eps, alpha=eps / 2, steps=2, value_range=value_range), units)
        self.interval, self.num_samples, self.gap = interval, num_samples, float(gap)
        self.recover_iterations = recover_iterations
        self.data = data
        if summary_writer is None and log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            summary_writer = SummaryWriter(log_dir=log_dir)
        self.summary_writer = summary_writer
        self.history: list[dict[str, Any]] = []
        self.collapses = 0
        self._held: tuple[torch.Tensor, torch.Tensor] | None = None
        self._healthy: tuple[int, dict, dict | None] | None = None  # (iteration, weights, optimizer state)
        self._recover_until = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)

    def iteration_started(self, engine: Engine) -> None:
        if self._held is None:  # the collated batch (MONAI decollates it before ITERATION_COMPLETED handlers)
            self._held = self._fixed_batch(engine)

    # ------------------------------------------------------------------ events
    def iteration_completed(self, engine: Engine) -> None:
        it = engine.state.iteration
        if self._recover_until and it >= self._recover_until:
            self._recover_until = 0
            self.iteration.attack = self.training_attack
            logger.info("catastrophic-overfitting guard: back to %s at iteration %d",
                        type(self.training_attack).__name__, it)
        if it == 1 or it % self.interval == 0:
            self.check(engine)

    def check(self, engine: Engine) -> dict[str, Any]:
        """Measure both accuracies on the fixed batch now; on a collapse restore and switch to ``fallback``."""
        network = unwrap_parallel(engine.network)
        x, y = self._held
        correct = torch.stack([self._correct(network, x, y, self.single_step),
                               self._correct(network, x, y, self.multi_step), torch.tensor(float(len(y)))])
        single, multi, n = all_reduce_sum(correct).tolist()
        single, multi = single / n, multi / n
        recovering = bool(self._recover_until)
        record = {"iteration": engine.state.iteration, "single_acc": single, "multi_acc": multi,
                  "gap": single - multi, "collapsed": single - multi > self.gap, "recovering": recovering}
        self.history.append(record)
        if record["collapsed"] and not recovering:  # while recovering: recorded, the fallback keeps training
            self.collapses += 1
            self._recover(engine, record)
        elif not record["collapsed"]:
            self._healthy = (record["iteration"], copy.deepcopy(network.state_dict()),
                             copy.deepcopy(engine.optimizer.state_dict()) if engine.optimizer is not None else None)
        engine.state.metrics.update({"co_single_acc": single, "co_multi_acc": multi, "co_gap": record["gap"],
                                     "co_collapses": float(self.collapses)})
        if self.summary_writer is not None:
            for key in ("single_acc", "multi_acc", "gap"):
                self.summary_writer.add_scalar(f"co/{key}", record[key], record["iteration"])
            self.summary_writer.add_scalar("co/collapse", float(record["collapsed"]), record["iteration"])
        return record

    # ------------------------------------------------------------------ parts
    def _recover(self, engine: Engine, record: dict[str, Any]) -> None:
        restored, record["restored_from"] = "no healthy check yet: weights kept", None
        if self._healthy is not None:
            record["restored_from"], weights, optimizer = self._healthy
            unwrap_parallel(engine.network).load_state_dict(weights)
            if optimizer is not None:
                engine.optimizer.load_state_dict(optimizer)
            restored = f"weights and optimizer of iteration {record['restored_from']} restored"
        self.iteration.attack = self.fallback
        self._recover_until = engine.state.iteration + self.recover_iterations
        logger.warning("catastrophic overfitting at iteration %d: %s accuracy %.3f, %s accuracy %.3f (gap %.3f > "
                       "%.3f); %s; training with %s until iteration %d", record["iteration"],
                       type(self.single_step).__name__, record["single_acc"], type(self.multi_step).__name__,
                       record["multi_acc"], record["gap"], self.gap, restored, type(self.fallback).__name__,
                       self._recover_until)

    def _fixed_batch(self, engine: Engine) -> tuple[torch.Tensor, torch.Tensor]:
        if self.data is not None:
            x, y = self.data
        else:
            x, y = engine.prepare_batch(engine.state.batch, engine.state.device, engine.non_blocking,
                                        **engine.to_kwargs)[:2]
        # labels as the trainer gives them to its attack (indices, (N, 1) or one-hot)
        x, y = torch.as_tensor(x)[: self.num_samples].detach(), torch.as_tensor(y)[: self.num_samples].detach()
        return x.to(engine.state.device), y.to(engine.state.device)

    @staticmethod
    def _correct(network: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Any) -> torch.Tensor:
        adv = attack(network, x, y)
        with restore_model_state(network, "eval"), torch.no_grad():
            out = primary_output(network(adv))
        if out.ndim != 2:
            raise ValueError(f"CatastrophicOverfittingGuard is for classification networks ((N, K) outputs), "
                             f"got outputs of shape {tuple(out.shape)}")
        return per_sample_correct(out, y).sum().float().cpu()
