"""The training adversary of a bundle by name (bundle key ``adversary``): multi-step PGD, a single-step attack or
Free AT's replayed perturbation."""

from __future__ import annotations

import difflib

import torch

from .base import Attack
from .free import FreeAT
from .iterative import PGD
from .single_step import FGSMRS, NFGSM

__all__ = ["TRAINING_ADVERSARIES", "training_adversary"]

#: the names :func:`training_adversary` takes, with what each costs per batch (forward + backward passes)
TRAINING_ADVERSARIES = {
    "pgd": "k-step L-inf PGD from a random start (Madry et al. 2018): k passes",
    "fgsm-rs": "FGSM from a random start, step 1.25 eps (Wong et al. 2020): 1 pass",
    "n-fgsm": "N-FGSM, noise U(-2 eps, 2 eps) and a step of eps, no projection (de Jorge et al. 2022): 1 pass",
    "free": "Free AT, each batch replayed m times, the perturbation moved by the training backward's input "
            "gradient (Shafahi et al. 2019): 0 passes (train 1/m of the epochs)",
}


def training_adversary(name: str = "pgd", eps: float | torch.Tensor = 8 / 255, value_range="data",
                       pgd_alpha: float | None = None, pgd_steps: int = 7, step_fraction: float | None = None,
                       generator: torch.Generator | None = None, free_replays: int = 4) -> Attack:
    """The attack adversarial training runs on each batch, chosen by ``name`` (:data:`TRAINING_ADVERSARIES`).

    Args:
        name: ``"pgd"``, ``"fgsm-rs"``, ``"n-fgsm"`` or ``"free"``.
        eps: the budget (AMAT/DPAAT replace it per sample at every call; the single-step attacks scale their
            noise and step with each sample's own budget).
        value_range: as every attack's (``"data"``, ``(lo, hi)`` or ``None``).
        pgd_alpha, pgd_steps: PGD's step (default ``eps / 4``) and step count; not used by the single-step
            adversaries, whose steps are their papers' (FGSM-RS ``1.25 eps``, N-FGSM and Free AT ``eps``).
        step_fraction: a single-step adversary's step as a fraction of ``eps`` instead of its paper's; ``None``
            (default) keeps the paper's. Not used by ``pgd``.
        free_replays: ``free`` only: how many times each batch is trained on (default 4; every replay is an
            optimizer step, so train ``1 / free_replays`` of the epochs for standard training's cost).
        generator: the attack's random generator (default torch's global one).

    Raises:
        ValueError: an unknown name (with the closest known one), or a bad budget or step.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in TRAINING_ADVERSARIES:
        close = difflib.get_close_matches(key, list(TRAINING_ADVERSARIES), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"adversary must be one of {list(TRAINING_ADVERSARIES)}, got {name!r}{hint}")
    if step_fraction is not None and not (isinstance(step_fraction, (int, float)) and 0 < step_fraction < float("inf")):
        raise ValueError(f"step_fraction must be None or a finite number > 0, got {step_fraction!r}")
    if key == "pgd":
        return PGD(eps=eps, alpha=eps / 4 if pgd_alpha is None else pgd_alpha, steps=pgd_steps,
                   value_range=value_range, random_start=True, generator=generator)
    alpha = None if step_fraction is None else step_fraction * eps
    if key == "free":
        return FreeAT(eps=eps, alpha=alpha, replays=free_replays, value_range=value_range, generator=generator)
    cls = FGSMRS if key == "fgsm-rs" else NFGSM
    return cls(eps=eps, alpha=alpha, value_range=value_range, generator=generator)
