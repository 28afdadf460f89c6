"""DPAAT: Dynamic Perturbation-Adaptive Adversarial Training (Li et al. 2024, arXiv 2403.06798)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .base import AdversarialIteration, PerSampleEpsilonMixin, attack_eps_value
from .losses import symmetric_kl
from monai_dpaat.conventions import per_sample_losses, plain_tensor, primary_output

from .utils import AdvKeys, all_reduce_sum, unwrap_parallel

__all__ = ["DPAATIteration", "PAPER_STEP_FRACTION", "UPDATE_TIMINGS", "dpaat_epsilon_update"]

#: when a sample's adapted epsilon is first used: on its next visit (the next epoch), or in the same iteration
UPDATE_TIMINGS = ("next_visit", "same_iteration")

#: the paper's "step size of 0.15" (Sec. IV-A) read as the PGD step per unit of eps (docs/paper_choices.md)
PAPER_STEP_FRACTION = 0.15


def dpaat_epsilon_update(
    eps: torch.Tensor,
    loss_change: torch.Tensor,
    criterion: float | torch.Tensor,
    scale: float | torch.Tensor,
    step_size: float,
    eps_min: float,
    eps_max: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """DPAAT's perturbation adaptation (paper eq. 15, constants ours).

    ``eps_i <- clip(eps_i - sign(dL_i - mu) * step_size * tanh(|dL_i - mu| / (temperature * scale)), eps_min, eps_max)``

    Samples whose adversarial loss change ``dL_i`` exceeds the criterion ``mu`` (fragile) shrink, the
    others (stable) grow; the adaptive length grows with ``|dL_i - mu|`` measured in units of ``scale``
    (the running standard deviation of ``dL``), is tiny near ``mu`` and never exceeds ``step_size``;
    the result is clipped to ``[eps_min, eps_max]`` so epsilon neither collapses nor explodes.

    Args:
        eps, loss_change: ``(N,)`` current epsilons and ``dL_i = L(x_adv_i) - L(x_i)``.
        criterion: ``mu``, the batch mean of ``dL`` (global over ranks).
        scale: positive spread of ``dL`` (values <= 0 are treated as 1e-12).

    Returns:
        ``(N,)`` new epsilons.
    """
    diff = loss_change.to(eps.dtype) - torch.as_tensor(criterion, dtype=eps.dtype, device=eps.device)
    s = torch.as_tensor(scale, dtype=eps.dtype, device=eps.device).clamp_min(1e-12)
    length = step_size * torch.tanh(diff.abs() / (temperature * s))
    return (eps - torch.sign(diff) * length).clamp(min=eps_min, max=eps_max)


class DPAATIteration(PerSampleEpsilonMixin, AdversarialIteration):
    """DPAAT as a ``SupervisedTrainer(iteration_update=...)`` callable.

    Per mini-batch (paper Alg. 1, eqs. 11-16):

    1. each sample ``i`` (id from ``batch[index_key]``) is attacked inside its own budget ``eps_i`` with
       step ``alpha_i = alpha_fraction * eps_i`` -> ``x_adv``;
    2. total loss ``L_clean + L_adv + lambda_sync * L_sync``; ``L_sync`` is the symmetric KL between the
       softmax (sigmoid for one channel) outputs on ``x`` and ``x_adv``, per pixel for segmentation
       (:func:`~monai_dpaat.training.losses.symmetric_kl`); ``L_clean``/``L_adv`` are the trainer's
       ``loss_function``;
    3. per-sample loss changes ``dL_i = L(x_adv_i) - L(x_i)`` (the trainer loss per sample: a mean over
       pixels/voxels for segmentation); the criterion ``mu`` is the batch mean of ``dL``, all-reduced over
       DDP ranks so every rank adapts from the same global distribution; running mean/variance of ``dL``
       (momentum ``momentum``) are kept across steps, the "dynamic environment";
    4. ``eps_i`` moves by :func:`dpaat_epsilon_update` (fragile ``dL_i > mu`` shrink, stable grow) and the
       (index, eps) pairs are all-gathered so every rank's table agrees. When depends on ``update_timing``.

    The paper's equations lost their symbols in extraction; the unstated constants are parameters (each one,
    with the paper's words and our reading: ``docs/paper_choices.md``):

    Args:
        num_samples: length of the training list (size of the epsilon table). Ids must be in ``[0, num_samples)``.
        attack: training adversary (an Attack, or None = 7-step L-inf PGD with random start, eps 8/255,
            alpha 2/255). The paper states "7-step PGD training adversary" and "step size of 0.15"; its eps was
            lost in extraction, and 8/255 with step 2/255 is Madry et al.'s setting, ours, not the paper's.
            Its per-call eps/alpha are overridden (see ``alpha_fraction``).
        lambda_sync: weight of ``L_sync`` (eq. 12, "a tuneable hyper-parameter"); 0.5: the paper trains "with 0.5
            of [...]" (symbol lost).
        adapt_eps: adapt per-sample epsilon (False: fixed ``eps_init``, the ablation D-B).
        sync_loss: add ``lambda_sync * L_sync`` (False: ablation D-A). Both True: D-(A+B) = DPAAT.
        eps_init: starting epsilon of every sample. Default: the attack's eps (8/255), so DPAAT starts
            where AT trains.
        eps_min: lower bound; default ``eps_init / 4``, so no sample ever drops out of adversarial training.
        eps_max: upper bound; default ``2 * eps_init``, so stable samples can take up to twice the AT
            budget but a robust-accuracy comparison at ``eps_init`` stays meaningful.
        alpha_fraction: the training step size: each sample's PGD step as a fraction of its eps,
            ``alpha_i = alpha_fraction * eps_i``. The paper states "7-step PGD training adversary, with
            [L-inf]-norm, [eps], and step size of 0.15"; it calls the ``alpha`` of its PGD (eq. 9) "step size
            of the iterative attack", so 0.15 is the adversary's step, not the adaptive length (``step_size``
            here). An absolute 0.15 would exceed any usual L-inf budget (8/255 = 0.031) nearly fivefold, so
            its only reading as a step is relative: ``alpha_fraction=0.15`` (1.2/255 at 8/255). We use, by
            default, the attack's alpha / eps (0.25 for the default PGD: Madry et al.'s 2/255 per 8/255), so
            DPAAT steps exactly like the AT, SAT and AMAT it is compared with (they use the attack's alpha);
            to run the paper's reading, give every method's attack ``alpha=0.15 * eps``.
        step_size: DPAAT's adaptive length bound (eq. 15, "an adaptive length during adaptation processes";
            the paper gives no value): the largest change of ``eps_i`` per update. Default ``eps_init / 8``:
            a sample needs at least 8 visits (epochs) to travel from ``eps_init`` to a bound, slow against
            the paper's 50-60 epochs but visible within a few.
        temperature: ``|dL_i - mu|`` (in running standard deviations) at which the length reaches
            ``tanh(1) = 76 %`` of ``step_size``. Default 1.0: a one-sigma outlier moves most of a step. The
            paper says only "For [dL] close to the central loss tendency, the length was tiny. Instead, the
            length could be large".
        momentum: momentum of the running mean/variance of ``dL``; 0.9 (a memory of ~10 mini-batches,
            BatchNorm's convention).
        update_timing: when a sample's adapted epsilon is first used.

            - ``"next_visit"`` (default): the batch is attacked once at the current ``eps_i``; after the
              optimizer step ``eps_i`` moves, and the new value is used on the sample's next visit (next
              epoch). Cost: one attack per iteration, as AT.
            - ``"same_iteration"``: the batch is attacked at the current ``eps_i``, ``dL`` is measured with two
              forwards without grad (train mode; BatchNorm statistics restored), ``eps_i`` moves, and the
              batch is attacked again at the new ``eps_i`` before the loss; the training step uses that
              second ``x_adv``. Cost: one more attack per iteration (with 7-step PGD about 7 more
              forward/backward passes) plus two forwards: close to twice AT's time.

            The paper's Fig. 1 text reads: "the classification loss and adversarial loss were calculated and
            passed forward to dynamically update [mu] and [eps]; After forward calculation, new [x_adv?] were
            put into [the loss?] to update the network parameters of the CNN classifier." The symbols after
            "new" and "into" were lost in extraction (Alg. 1 is not in the extracted text), so it may mean
            new adversarial examples in the same iteration or just the new loss: ``same_iteration`` is
            that reading, ``next_visit`` stays the default. Without ``adapt_eps`` both are the same.
        index_key: batch key with the sample ids.
        sample_loss_function: optional ``(pred, target) -> (N, ...)`` per-sample loss for ``dL``; default: the
            trainer's loss on each sample (see :func:`~monai_dpaat.conventions.per_sample_losses`).

    Logged per iteration: ``loss_clean``, ``loss_adv``, ``loss_sync`` (computed without grad when
    ``sync_loss=False``), ``eps_mean/min/max`` of the batch (the budgets the training ``x_adv`` was made with),
    ``fragile_fraction`` (this rank's samples with ``dL_i > mu``) and ``loss_change_mean`` (``mu``), both of the
    ``dL`` that drove the update.

    ``state_dict()``: ``epsilon (num_samples,)``, ``running_mean``, ``running_var``, ``num_updates`` (tensors).

    Every derived bound and option is visible: ``repr(iteration)`` lists them with their values (and the
    attack), and the first iteration logs them at INFO on ``logging.getLogger("monai_dpaat.training")`` with
    where each default came from (:meth:`bounds`).
    """

    method = "dpaat"

    def __init__(
        self,
        num_samples: int,
        attack: Any = None,
        lambda_sync: float = 0.5,
        adapt_eps: bool = True,
        sync_loss: bool = True,
        eps_init: float | None = None,
        eps_min: float | None = None,
        eps_max: float | None = None,
        alpha_fraction: float | None = None,
        step_size: float | None = None,
        temperature: float = 1.0,
        momentum: float = 0.9,
        update_timing: str = "next_visit",
        index_key: str = "index",
        sample_loss_function: Callable | None = None,
    ) -> None:
        super().__init__(attack=attack, index_key=index_key)
        attack_eps = attack_eps_value(self.attack)
        attack_alpha = attack_eps_value(self.attack, "alpha")
        eps_init_given = eps_init
        if eps_init is None:
            if attack_eps is None:
                raise ValueError("eps_init is required when the attack has no scalar eps")
            eps_init = attack_eps
        eps_init = float(eps_init)
        self.eps_init = eps_init
        self.eps_min = float(eps_init / 4 if eps_min is None else eps_min)
        self.eps_max = float(2 * eps_init if eps_max is None else eps_max)
        if not 0 <= self.eps_min <= eps_init <= self.eps_max:
            raise ValueError(
                "need 0 <= eps_min <= eps_init <= eps_max, got "
                f"eps_min={self.eps_min}, eps_init={eps_init}, eps_max={self.eps_max}"
            )
        self._alpha_note = ""
        if alpha_fraction is None:
            from_attack = bool(attack_eps) and attack_alpha is not None
            alpha_fraction = attack_alpha / attack_eps if from_attack else 0.25
            self._alpha_note = "default: the attack's alpha / eps" if from_attack else "default 0.25"
            self._alpha_note += "; the paper's 'step size of 0.15' read as a fraction is 0.15"
        elif math.isclose(float(alpha_fraction), PAPER_STEP_FRACTION):
            self._alpha_note = "the paper's 'step size of 0.15' read as a fraction of eps"
        self.alpha_fraction = float(alpha_fraction)
        self.step_size = float(eps_init / 8 if step_size is None else step_size)
        if not (self.alpha_fraction > 0 and math.isfinite(self.alpha_fraction)) or not self.step_size >= 0:
            raise ValueError(
                f"alpha_fraction must be finite and > 0 and step_size >= 0, got {self.alpha_fraction}, {self.step_size}"
            )
        self._defaults = {"eps_init": eps_init_given is None, "eps_min": eps_min is None, "eps_max": eps_max is None,
                          "step_size": step_size is None}
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if update_timing not in UPDATE_TIMINGS:
            raise ValueError(f"update_timing must be one of {list(UPDATE_TIMINGS)}, got {update_timing!r}")
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.update_timing = update_timing
        self.lambda_sync = float(lambda_sync)
        self.adapt_eps = bool(adapt_eps)
        self.sync_loss = bool(sync_loss)
        self.sample_loss_function = sample_loss_function
        self._budgets_checked = self.check_budgets()  # a fixed value range: now; "data": on the first batch
        self._init_table(num_samples, eps_init)
        self.running_mean = torch.zeros((), dtype=torch.float64)
        self.running_var = torch.zeros((), dtype=torch.float64)
        self.num_updates = torch.zeros((), dtype=torch.int64)
        #: ``(N,)`` this rank's ``dL_i`` of the latest mini-batch (for inspection and tests)
        self.last_loss_change: torch.Tensor | None = None

    def budgets(self) -> dict[str, tuple[Any, str]]:
        """``eps_init``, ``eps_min``, ``eps_max`` (by default twice the attack's budget: it must fit the value
        range too) and ``step_size``."""
        notes = {"eps_min": "default eps_init / 4", "eps_max": "default 2 * eps_init",
                 "step_size": "default eps_init / 8"}
        values = {"eps_init": self.eps_init, "eps_min": self.eps_min, "eps_max": self.eps_max,
                  "step_size": self.step_size}
        return {k: (v, notes.get(k, "") if self._defaults.get(k) else "") for k, v in values.items()}

    def bounds(self) -> dict[str, tuple[Any, str]]:
        """:meth:`budgets` (start, bounds and largest change per update of each sample's eps), ``alpha_fraction``
        (each sample's PGD step as a fraction of its eps), ``temperature`` and ``update_timing`` (when an
        adapted eps is first used)."""
        out = self.budgets()
        out["eps_init"] = (self.eps_init, "default: the attack's eps" if self._defaults["eps_init"] else "")
        out["alpha_fraction"] = (self.alpha_fraction, self._alpha_note)
        out["temperature"] = (self.temperature, "")
        out["update_timing"] = (self.update_timing, self._timing_note())
        return out

    def _timing_note(self) -> str:
        if not self.adapt_eps:
            return "no effect: adapt_eps=False"
        if self.update_timing == "same_iteration":
            return "re-attacks each batch at its updated eps before the loss: one more attack per iteration"
        return "an updated eps is used on the sample's next visit"

    # ------------------------------------------------------------------ steps
    def prepare_step(self, engine: Any, batchdata: Any, step: dict) -> dict:
        """Attack at each sample's eps; with ``update_timing="same_iteration"`` also measure ``dL`` on that
        ``x_adv``, adapt the epsilons and attack again at the new ones (``step["x_adv"]`` is the second)."""
        out = super().prepare_step(engine, batchdata, step)
        if self.update_timing != "same_iteration" or not self.adapt_eps:
            return out
        dl = self.probe_loss_change(engine, step, out["x_adv"])
        mean, var = self.loss_change_moments(dl)
        self.adapt(out["idx"], dl, mean, var)
        eps = self.batch_epsilon(out["idx"], step["inputs"])
        x_adv = self.attack_batch(engine, step, eps=eps, alpha=self.alpha_fraction * eps)
        return {**out, "eps": eps, "x_adv": x_adv, "loss_change": dl, "criterion": mean, "batch_var": var,
                "adapted": True}

    def probe_loss_change(self, engine: Any, step: dict, x_adv: torch.Tensor) -> torch.Tensor:
        """``(N,)`` ``dL_i = L(f(x_adv_i)) - L(f(x_i))`` from two forwards without grad through the trainer's
        inferer, in train mode (as the training forward measures it); BatchNorm-style buffers are restored
        afterwards, so the probe leaves no trace in the network."""
        network = unwrap_parallel(engine.network)
        was_training = network.training
        buffers = [(b, b.detach().clone()) for b in network.buffers()]
        network.train()
        try:
            with torch.no_grad():
                pred = engine.inferer(step["inputs"], network, *step["args"], **step["kwargs"])
                pred_adv = engine.inferer(x_adv, network, *step["args"], **step["kwargs"])
                targets, loss_function = step["targets"], engine.loss_function
                return (per_sample_losses(loss_function, pred_adv, targets, self.sample_loss_function)
                        - per_sample_losses(loss_function, pred, targets, self.sample_loss_function))
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)
            network.train(was_training)

    @staticmethod
    def loss_change_moments(dl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (the criterion ``mu``) and variance of the ``(N,)`` loss changes over all ranks (0-d float64)."""
        d = dl.detach().double()
        sums = all_reduce_sum(torch.stack([d.sum(), (d**2).sum(), d.new_tensor(float(d.numel()))]))
        count = sums[2].clamp_min(1.0)
        mean = sums[0] / count
        return mean, (sums[1] / count - mean**2).clamp_min(0.0)

    def step_loss(self, engine: Any, pred: Any, targets: Any, step: dict, loss_function: Callable) -> torch.Tensor:
        pred_adv = self.adversarial_forward(engine, step)
        loss_clean = loss_function(pred, targets).mean()
        loss_adv = loss_function(pred_adv, targets).mean()
        if self.sync_loss:
            loss_sync = symmetric_kl(primary_output(pred), primary_output(pred_adv)).mean()
        else:
            with torch.no_grad():
                loss_sync = symmetric_kl(primary_output(pred), primary_output(pred_adv)).mean()
        total = loss_clean + loss_adv + (self.lambda_sync * loss_sync if self.sync_loss else 0.0)

        if not step.get("adapted"):
            # dL_i = L(x_adv_i) - L(x_i), detached; its global batch mean is the fragile/stable criterion
            dl = per_sample_losses(loss_function, pred_adv, targets, self.sample_loss_function)
            dl = dl - per_sample_losses(loss_function, pred, targets, self.sample_loss_function)
            mean, var = self.loss_change_moments(dl)
            step.update(loss_change=dl.detach(), criterion=mean, batch_var=var)
        dl, mean = step["loss_change"], step["criterion"]
        self.last_loss_change = dl.detach()
        self.publish(
            engine,
            {
                AdvKeys.LOSS_CLEAN: loss_clean,
                AdvKeys.LOSS_ADV: loss_adv,
                AdvKeys.LOSS_SYNC: loss_sync,
                AdvKeys.FRAGILE: (dl.double() > mean.to(dl.device)).float().mean(),
                AdvKeys.CRITERION: mean,
                **self.eps_stats(step["eps"]),
            },
        )
        return total

    def finish_step(self, engine: Any, step: dict) -> None:
        # the loss closure never ran (e.g. a custom iteration skipped it), or same_iteration adapted already
        if "criterion" not in step or step.get("adapted"):
            return
        self.adapt(step["idx"], step["loss_change"], step["criterion"], step["batch_var"])

    def adapt(self, idx: torch.Tensor, loss_change: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Fold the batch's ``dL`` moments into the running ones and (with ``adapt_eps``) move the ``(N,)``
        epsilons of the samples ``idx`` by :func:`dpaat_epsilon_update`; every rank's table gets the same values."""
        mean, var = mean.cpu(), var.cpu()
        if int(self.num_updates) == 0:
            self.running_mean, self.running_var = mean.clone(), var.clone()
        else:
            m = self.momentum
            self.running_mean = m * self.running_mean + (1 - m) * mean
            self.running_var = m * self.running_var + (1 - m) * var
        self.num_updates = self.num_updates + 1
        if self.adapt_eps:
            new_eps = dpaat_epsilon_update(
                self.epsilon[idx].double(),
                loss_change.cpu().double(),
                mean,
                self.running_var.sqrt(),
                self.step_size,
                self.eps_min,
                self.eps_max,
                self.temperature,
            )
            self.write_epsilon(idx.to(loss_change.device), new_eps.to(loss_change.device))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            **self._table_state(),
            "running_mean": plain_tensor(self.running_mean).clone(),
            "running_var": plain_tensor(self.running_var).clone(),
            "num_updates": plain_tensor(self.num_updates).clone(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._load_table(state_dict)
        missing = [k for k in ("running_mean", "running_var", "num_updates") if k not in state_dict]
        if missing:
            raise ValueError(f"DPAAT state_dict lacks {missing} (found {sorted(state_dict)})")
        self.running_mean = torch.as_tensor(state_dict["running_mean"], dtype=torch.float64).clone().reshape(())
        self.running_var = torch.as_tensor(state_dict["running_var"], dtype=torch.float64).clone().reshape(())
        self.num_updates = torch.as_tensor(state_dict["num_updates"], dtype=torch.int64).clone().reshape(())
