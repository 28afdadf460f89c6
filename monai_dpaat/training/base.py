"""The wrapper every adversarial training method shares: a callable for
``SupervisedTrainer(iteration_update=...)`` that keeps MONAI's own ``_iteration`` in charge.

Design (the pattern of ``monai.apps.deepedit.interaction.Interaction``): per iteration the method

1. runs the engine's ``prepare_batch`` and builds the adversarial batch ``x_adv`` with its attack
   (outside autocast, in float32; the attack leaves the network's modes, buffers and ``.grad`` as found);
2. swaps, for the duration of the call only, ``engine.loss_function`` (and for AT ``engine.inferer``) for
   a closure that computes the method's total loss from ``(pred on x, target)``, running the
   adversarial forward through ``engine.inferer``/``engine.network`` inside it (so under the same
   autocast as the clean forward);
3. returns ``engine._iteration(engine, batchdata)``.

So zero_grad, amp + GradScaler, gradient accumulation, the IterationEvents, decollate, postprocessing,
metrics and every handler work exactly as in plain MONAI training. ``engine.state.output[PRED]`` is the
prediction on the clean batch (on the adversarial batch for AT, whose only forward it is).

Per-iteration numbers (see :class:`~monai_dpaat.training.utils.AdvKeys`) are written as detached 0-d
tensors into ``engine.state.output`` (decollate copies them into every item as floats, like ``loss``, so
``from_engine(["loss_adv"], first=True)`` works) and as floats into ``engine.state.adversarial``;
:class:`monai_dpaat.handlers.adversarial_stats.AdversarialStatsHandler` turns them into epoch metrics.
A non-finite total loss raises ``ValueError`` before backward, so the optimizer never steps on it. The
method's own budgets (DPAAT's ``eps_max``, AMAT's margins: :meth:`AdversarialIteration.budgets`) are checked
against the attack's value range like the attack's ``eps`` (:func:`monai_dpaat.attacks.check_budget`): at
construction for a fixed ``(lo, hi)``, on the first batch for ``"data"``, before the first attack and step. They
are in the attack's units: with :func:`monai_dpaat.attacks.base.with_eps_units` ``"range"`` every budget (and each
per-sample epsilon the method passes) is a fraction of the sample's intensity range, checked against ``(0, 1)``.

Cost: AT is the attack plus one training pass; SAT, AMAT and DPAAT need a second training pass (their
losses have a clean term), about STD/AT more time than AT (12-18 % with 7-step PGD on the CNNs of
``benchmarks/training.py``); DPAAT's own bookkeeping (per-sample losses, sync term, all-reduce, epsilon
update) costs about as much as SAT's mixing, i.e. nothing measurable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from monai_dpaat.attacks import Attack, check_budget
from monai_dpaat.attacks.base import LARGE_BUDGET_FRACTION
from monai_dpaat.conventions import plain_tensor

from .utils import AdvKeys, all_gather_cat, attack_network, batch_indices, resolve_attack, unpack_batch

__all__ = ["AdversarialIteration", "NonFiniteLossError", "PerSampleEpsilonMixin", "StandardIteration", "attack_eps_value"]

#: where the first iteration of every method logs its budgets (INFO)
logger = logging.getLogger("monai_dpaat.training")


class NonFiniteLossError(ValueError):
    """The total training loss is NaN/Inf: the step is refused before backward and the optimizer step."""


def attack_eps_value(attack: Any, name: str = "eps") -> float | None:
    """The attack's scalar ``eps`` (or ``alpha``) as a float, or None when absent / per-sample."""
    value = getattr(attack, name, None)
    if value is None:
        return None
    t = torch.as_tensor(value)
    return float(t) if t.ndim == 0 else None


def _number(value: Any) -> str:
    """``0.0313725`` for a float (6 significant digits), ``repr`` for anything else."""
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


class AdversarialIteration:
    """Base class of the ``iteration_update`` callables (AT, SAT, AMAT, DPAAT).

    Args:
        attack: the training adversary: an :class:`~monai_dpaat.attacks.Attack` (``PGD(eps=8 / 255, steps=7)``;
            in a bundle config ``{"_target_": "monai_dpaat.attacks.PGD", "eps": "$8/255", "steps": 7}``), any
            callable with the attack signature, or None for a 7-step L-inf PGD as in the DPAAT paper (eps 8/255,
            alpha 2/255 and random start are ours, Madry et al.'s setting; docs/paper_choices.md). Names and dicts are refused with a ValueError saying so.
        index_key: key of the sample id in every batch (methods with per-sample state).

    Subclasses implement :meth:`prepare_step` (make ``x_adv``) and :meth:`step_loss` (total loss), and
    may override :meth:`finish_step` (update state after the optimizer stepped).
    """

    method: str = ""
    # whether budgets() passed the range check (a "data" range needs the first batch), and its warning was given
    _budgets_checked = False
    _warned_large_budget = False
    _bounds_logged = False

    def __init__(self, attack: Any = None, index_key: str = "index") -> None:
        self.attack = resolve_attack(attack)
        self.index_key = index_key

    def __repr__(self) -> str:
        bounds = ", ".join(f"{name}={_number(value)}" for name, (value, _) in self.bounds().items())
        return f"{type(self).__name__}(attack={self.attack!r}{', ' + bounds if bounds else ''})"

    # ------------------------------------------------------------------ ignite entry point
    def __call__(self, engine: Any, batchdata: Any) -> Any:
        # Free AT (attacks.FreeAT): the batch is trained on `replays` times, each replay an optimizer step whose
        # backward also moves the adversary's carried perturbation; MONAI's IterationEvents fire per replay, ignite's
        # ITERATION_* once per batch, and handlers see the last replay's output
        for replay in range(max(1, int(getattr(self.attack, "replays", 1)))):
            if replay:  # MONAI decollated the batch in the previous replay: the next one starts from the collated one
                engine.state.batch = batchdata
            output = self.train_step(engine, batchdata)
        return output

    def train_step(self, engine: Any, batchdata: Any) -> Any:
        """One optimizer step on the batch: attack, MONAI's ``_iteration`` with the method's loss, state update."""
        inputs, targets, args, kwargs = unpack_batch(engine, batchdata)
        if not self._budgets_checked:  # before the first attack and optimizer step
            self._budgets_checked = self.check_budgets(inputs)
        if not self._bounds_logged:
            self._bounds_logged = True
            logger.info("%s", self.describe_bounds())
        step: dict[str, Any] = {"inputs": inputs, "targets": targets, "args": args, "kwargs": kwargs}
        step.update(self.prepare_step(engine, batchdata, step))
        free = getattr(self.attack, "uses_training_gradient", False)
        if free:  # the training backward gives the input gradient too (kept in float32 under autocast)
            step["x_adv"] = step["x_adv"].detach().requires_grad_(True)
        engine.state.adversarial = {}
        patches = self.patches(engine, step)
        saved = {name: getattr(engine, name) for name in patches}
        # a step refused for a non-finite loss must not leave the diverged batch's BatchNorm statistics behind
        buffers = [(b, b.detach().clone()) for b in engine.network.buffers()]
        try:
            for name, value in patches.items():
                setattr(engine, name, value)
            output = engine._iteration(engine, batchdata)
        except NonFiniteLossError:
            with torch.no_grad():
                for b, saved_value in buffers:
                    b.copy_(saved_value)
            raise
        finally:
            for name, value in saved.items():
                setattr(engine, name, value)
        if free:
            self.attack.update(step["x_adv"])
        self.finish_step(engine, step)
        return output

    # ------------------------------------------------------------------ hooks
    def prepare_step(self, engine: Any, batchdata: Any, step: dict) -> dict:
        """Return extra entries for ``step`` (at least ``"x_adv"``)."""
        raise NotImplementedError

    def step_loss(self, engine: Any, pred: Any, targets: Any, step: dict, loss_function: Callable) -> torch.Tensor:
        """Total loss of the method from the clean prediction ``pred``; call :meth:`publish` for the logs."""
        raise NotImplementedError

    def finish_step(self, engine: Any, step: dict) -> None:
        """Update per-sample state once the iteration completed (default: nothing)."""

    def patches(self, engine: Any, step: dict) -> dict[str, Any]:
        """Engine attributes replaced during ``engine._iteration`` (default: the loss function)."""
        original = engine.loss_function

        def loss_closure(pred: Any, targets: Any) -> torch.Tensor:
            total = self.step_loss(engine, pred, targets, step, original)
            self.check_finite(engine, total)
            return total

        return {"loss_function": loss_closure}

    # ------------------------------------------------------------------ budgets
    def budgets(self) -> dict[str, tuple[Any, str]]:
        """The method's own budgets in the attack's units, ``{name: (value, note)}`` (``note`` says where a
        default came from); the attack checks its own ``eps``. None for fixed-budget methods."""
        return {}

    def bounds(self) -> dict[str, tuple[Any, str]]:
        """Every number that bounds or sizes the method's perturbations, ``{name: (value, note)}`` (``note``: where
        a default came from), shown by ``repr`` and logged at the first iteration: the fixed budget (the
        attack's ``eps``) here; per-sample methods list :meth:`budgets` and their step fraction."""
        eps = attack_eps_value(self.attack)
        return {} if eps is None else {"eps": (eps, "the attack's eps, the fixed budget")}

    def describe_bounds(self) -> str:
        """One line: the method, its :meth:`bounds` with their values and origins, and the attack."""
        parts = [f"{name}={_number(value)}" + (f" ({note})" if note else "")
                 for name, (value, note) in self.bounds().items()]
        return f"{type(self).__name__} budgets: {', '.join(parts) or 'none'}; attack {self.attack!r}"

    def check_budgets(self, x: torch.Tensor | None = None) -> bool:
        """Check :meth:`budgets`: finite and >= 0, and not above the attack's value range (the width, or for
        ``"data"`` the widest sample of the batch ``x``; L2 attacks: the range's diameter), warning once above
        :data:`~monai_dpaat.attacks.base.LARGE_BUDGET_FRACTION` of it. Returns False while a bound still needs
        a batch. A plain callable as attack has no known range: only finiteness is checked."""
        attack = self.attack
        # an attack in eps_units="range" takes every budget as a fraction of each sample's range: bound (0, 1)
        value_range = attack.budget_range if isinstance(attack, Attack) else None
        norm = attack.norm if isinstance(attack, Attack) else "Linf"
        done = True
        for name, (value, note) in self.budgets().items():
            fraction = check_budget(value, name, value_range, x, norm, type(self).__name__,
                                    f" ({note})" if note else "", warn=not self._warned_large_budget)
            if fraction is None:
                done = done and (value_range is None or x is not None)
            elif fraction > LARGE_BUDGET_FRACTION:
                self._warned_large_budget = True
        return done

    # ------------------------------------------------------------------ helpers
    def adversarial_forward(self, engine: Any, step: dict) -> Any:
        """Prediction on ``step["x_adv"]`` through the trainer's inferer (network in train mode, with grad)."""
        return engine.inferer(step["x_adv"], engine.network, *step["args"], **step["kwargs"])

    def attack_batch(self, engine: Any, step: dict, eps: Any = None, alpha: Any = None) -> torch.Tensor:
        net = attack_network(engine, step["args"], step["kwargs"])
        return self.attack(net, step["inputs"], step["targets"], eps=eps, alpha=alpha)

    def publish(self, engine: Any, values: Mapping[str, Any]) -> None:
        """Write per-iteration numbers into ``engine.state.output`` (0-d tensors) and ``engine.state.adversarial``."""
        out = engine.state.output if isinstance(engine.state.output, dict) else None
        floats = getattr(engine.state, "adversarial", None)
        if floats is None:
            floats = engine.state.adversarial = {}
        for key, value in values.items():
            t = torch.as_tensor(value).detach().float()
            if out is not None:
                out[key] = t
            floats[key] = float(t)

    def check_finite(self, engine: Any, total: torch.Tensor) -> None:
        if not torch.isfinite(total.detach()).all():
            parts = {k: v for k, v in (getattr(engine.state, "adversarial", None) or {}).items() if "loss" in k}
            raise NonFiniteLossError(
                f"{type(self).__name__}: the training loss is {total.detach().float().mean().item()} "
                f"(not finite) at iteration {engine.state.iteration}; parts: {parts}. Refusing to step the optimizer."
            )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """State to checkpoint (none for fixed-budget methods; per-sample methods override). Having it on
        every method lets a bundle always put the iteration in ``CheckpointSaver``'s ``save_dict``."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if state_dict:
            raise ValueError(f"{type(self).__name__} keeps no state, got keys {sorted(state_dict)}")

    @staticmethod
    def eps_stats(eps: torch.Tensor | float | None) -> dict[str, Any]:
        if eps is None:
            return {}
        t = torch.as_tensor(eps).detach().float()
        return {AdvKeys.EPS_MEAN: t.mean(), AdvKeys.EPS_MIN: t.min(), AdvKeys.EPS_MAX: t.max()}


class StandardIteration(AdversarialIteration):
    """Standard training ("std") as an ``iteration_update``: MONAI's own iteration, plus the same refusal to
    step the optimizer on a non-finite loss that the adversarial methods have (plain ``SupervisedTrainer``
    would step on a NaN loss and turn every weight into NaN). Has no attack and no state."""

    method = "std"
    _bounds_logged = True  # no adversary, no budgets to log

    def __init__(self) -> None:  # no adversary: nothing to resolve
        self.attack = None
        self.index_key = "index"

    def __repr__(self) -> str:
        return "StandardIteration()"

    def prepare_step(self, engine: Any, batchdata: Any, step: dict) -> dict:
        return {}

    def step_loss(self, engine: Any, pred: Any, targets: Any, step: dict, loss_function: Callable) -> torch.Tensor:
        return loss_function(pred, targets)


class PerSampleEpsilonMixin:
    """A per-sample epsilon table ``(num_samples,)`` on CPU, indexed by the batch's sample ids, with
    ``state_dict``/``load_state_dict`` (tensors only: ``torch.load(weights_only=True)`` works, so
    MONAI's ``CheckpointSaver``/``CheckpointLoader`` save and restore it) and rank-consistent updates."""

    epsilon: torch.Tensor
    num_samples: int

    def prepare_step(self, engine: Any, batchdata: Any, step: dict) -> dict:
        """Attack each sample inside its own budget ``eps_i`` with step ``alpha_fraction * eps_i``."""
        inputs = step["inputs"]
        idx = self.batch_ids(batchdata, inputs.shape[0])
        eps = self.batch_epsilon(idx, inputs)
        x_adv = self.attack_batch(engine, step, eps=eps, alpha=self.alpha_fraction * eps)
        return {"idx": idx, "eps": eps, "x_adv": x_adv}

    def _init_table(self, num_samples: int, eps_init: float) -> None:
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer (the training list length), got {num_samples!r}")
        if not math.isfinite(eps_init) or eps_init < 0:
            raise ValueError(f"eps_init must be a finite number >= 0, got {eps_init!r}")
        self.num_samples = int(num_samples)
        self.epsilon = torch.full((self.num_samples,), float(eps_init), dtype=torch.float32)

    def batch_ids(self, batchdata: Any, batch_size: int) -> torch.Tensor:
        return batch_indices(batchdata, self.index_key, self.num_samples, batch_size)  # type: ignore[attr-defined]

    def batch_epsilon(self, idx: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``(N,)`` epsilons of the batch on the device/dtype of ``like``."""
        return self.epsilon[idx].to(device=like.device, dtype=like.dtype)

    def write_epsilon(self, idx: torch.Tensor, new_eps: torch.Tensor) -> None:
        """Store ``new_eps`` for ``idx``; under DDP the (index, eps) pairs of all ranks are all-gathered
        and applied in rank order, so every rank's table stays identical."""
        pairs = torch.stack([idx.to(torch.float64).to(new_eps.device), new_eps.detach().to(torch.float64)], dim=1)
        pairs = all_gather_cat(pairs).cpu()
        self.epsilon[pairs[:, 0].long()] = pairs[:, 1].to(self.epsilon.dtype)

    def _table_state(self) -> dict[str, torch.Tensor]:
        return {"epsilon": plain_tensor(self.epsilon).clone()}

    def _load_table(self, state: Mapping[str, Any]) -> None:
        if "epsilon" not in state:
            raise ValueError(f"state_dict lacks key 'epsilon' (found {sorted(state)})")
        eps = torch.as_tensor(state["epsilon"]).float().cpu()
        if eps.shape != (self.num_samples,):
            raise ValueError(
                f"state_dict['epsilon'] has shape {tuple(eps.shape)}, expected ({self.num_samples},) = num_samples"
            )
        self.epsilon = eps.clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._table_state()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._load_table(state_dict)

