"""Fixed-budget adversarial training: Madry et al.'s AT and Goodfellow et al.'s mixed clean/adversarial SAT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from monai_dpaat.attacks import restore_model_state

from .base import AdversarialIteration, attack_eps_value
from .utils import AdvKeys

__all__ = ["ATIteration", "SATIteration"]


class ATIteration(AdversarialIteration):
    """Madry et al. (2018) adversarial training: minimise the loss on the attack's examples only,
    ``L(f(x_adv), y)`` (DPAAT paper eq. 3).

    The trainer's single forward is fed ``x_adv`` (``engine.inferer`` is swapped for the call), so an
    iteration costs the attack plus one forward/backward, and BatchNorm statistics come from adversarial
    batches only, as in Madry et al. ``engine.state.output[PRED]`` is therefore the prediction on ``x_adv``
    (train metrics measure adversarial training accuracy) while ``[IMAGE]`` stays the clean batch.

    Args:
        attack: training adversary (see :class:`AdversarialIteration`), whose ``eps`` is the fixed budget;
            default 7-step L-inf PGD, eps 8/255.
        track_clean_loss: also log ``loss_clean`` from an extra no-grad forward in eval mode (does not
            touch BatchNorm statistics; costs one forward). Default False (AT never needs it).

    Logged per iteration: ``loss_adv`` (= ``loss``), ``eps_mean/min/max`` (the attack's budget) and,
    with ``track_clean_loss``, ``loss_clean``.
    """

    method = "at"

    def __init__(self, attack: Any = None, track_clean_loss: bool = False) -> None:
        super().__init__(attack=attack)
        self.track_clean_loss = bool(track_clean_loss)

    def prepare_step(self, engine: Any, batchdata: Any, step: dict) -> dict:
        extra: dict[str, Any] = {"x_adv": self.attack_batch(engine, step)}
        if self.track_clean_loss:
            with torch.no_grad(), restore_model_state(engine.network, "eval"):
                pred = engine.inferer(step["inputs"], engine.network, *step["args"], **step["kwargs"])
                extra["clean_loss"] = engine.loss_function(pred, step["targets"]).mean().detach()
        return extra

    def patches(self, engine: Any, step: dict) -> dict[str, Any]:
        original_inferer = engine.inferer
        original_loss = engine.loss_function

        def adversarial_inferer(inputs: Any, network: Any, *args: Any, **kwargs: Any) -> Any:
            return original_inferer(step["x_adv"], network, *args, **kwargs)

        def loss_closure(pred: Any, targets: Any) -> torch.Tensor:
            total = self.step_loss(engine, pred, targets, step, original_loss)
            self.check_finite(engine, total)
            return total

        return {"inferer": adversarial_inferer, "loss_function": loss_closure}

    def step_loss(self, engine: Any, pred: Any, targets: Any, step: dict, loss_function: Callable) -> torch.Tensor:
        loss_adv = loss_function(pred, targets).mean()
        values = {AdvKeys.LOSS_ADV: loss_adv, **self.eps_stats(attack_eps_value(self.attack))}
        if "clean_loss" in step:
            values[AdvKeys.LOSS_CLEAN] = step["clean_loss"]
        self.publish(engine, values)
        return loss_adv


class SATIteration(AdversarialIteration):
    """Goodfellow et al. (2015) adversarial training with a mixed objective (DPAAT paper eq. 4):
    ``(1 - weight) * L(f(x), y) + weight * L(f(x_adv), y)``.

    Both forwards run in train mode through the trainer's inferer. (AMAT/IMA papers call PGD training
    "SAT"; here SAT is Goodfellow's mixed loss, the DPAAT paper's usage.)

    Args:
        attack: training adversary, whose ``eps`` is the fixed budget; default 7-step L-inf PGD, eps 8/255
            (Goodfellow used FGSM: pass ``FGSM(eps=...)``).
        weight: weight of the adversarial term, in [0, 1]. Default 0.5, Goodfellow et al.'s value.

    Logged per iteration: ``loss_clean``, ``loss_adv``, ``eps_mean/min/max``.
    """

    method = "sat"

    def __init__(self, attack: Any = None, weight: float = 0.5) -> None:
        super().__init__(attack=attack)
        if not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.weight = float(weight)

    def prepare_step(self, engine: Any, batchdata: Any, step: dict) -> dict:
        return {"x_adv": self.attack_batch(engine, step)}

    def step_loss(self, engine: Any, pred: Any, targets: Any, step: dict, loss_function: Callable) -> torch.Tensor:
        pred_adv = self.adversarial_forward(engine, step)
        loss_clean = loss_function(pred, targets).mean()
        loss_adv = loss_function(pred_adv, targets).mean()
        eps = self.eps_stats(attack_eps_value(self.attack))
        self.publish(engine, {AdvKeys.LOSS_CLEAN: loss_clean, AdvKeys.LOSS_ADV: loss_adv, **eps})
        return (1.0 - self.weight) * loss_clean + self.weight * loss_adv
