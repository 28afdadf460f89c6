"""The benchmark's protocols (issue 14): a fixed, versioned AutoAttack-style cascade for classifiers and a worst
case by Dice for segmentation networks.

Classification, protocol ``v2`` (the default; Croce & Hein 2020's "standard" AutoAttack with FMN-T in FAB-T's
place; see :data:`PROTOCOLS`):

1. APGD-CE, 100 iterations, 1 restart;
2. APGD-T (targeted DLR), 100 iterations, the top ``min(9, K - 1)`` wrong classes;
3. FMN-T (L-inf Fast Minimum-Norm, :class:`~monai_dpaat.attacks.FMN`, targeted), 100 iterations, the same top
   classes: the minimum-norm attack (a point counts when its norm is within eps);
4. Square, 5000 queries (score-based, no gradient).

Each attack runs only on the samples every earlier attack failed on (the cascade), so a sample's robustness is the
worst case over all of them; the result says which attack broke how many. ``budget="quick"`` is the recorded CPU
variant (20 iterations, 3 target classes, 500 queries), never to be compared with a ``standard`` row. ``v1`` (kept
so that its rows stay reproducible) is the same cascade without the minimum-norm attack. FMN stands in for FAB-T:
both search the smallest adversarial perturbation from the clean point with a moving radius; FMN needs one backward
per step where FAB needs the Jacobian of the logits (on the tests' networks it breaks at least what torchattacks'
FAB-T breaks, in about a quarter of its time).

A break by Square, after every gradient attack failed on that sample, is the masking signature the protocol flags.

The segmentation protocol ``v1`` (:data:`SEGMENTATION_PROTOCOLS`, :func:`segmentation_protocol`) is the per-sample
worst case, by mean foreground Dice, over SegPGD, CosPGD, APGD on the per-pixel CE (:class:`~monai_dpaat.attacks.
APGDSeg`) and the score-based :class:`~monai_dpaat.attacks.DenseSquare` (the black box), each on every sample (a
segmentation has no "broken" to stop at): 100 iterations and 5000 queries (``quick``: 20 and 200). SegPGD and CosPGD
take Madry et al.'s step ``2.5 eps / steps``; APGD needs none. It first appears in ``v2`` (``v1`` had none).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from monai_dpaat.attacks import APGD, APGDT, FMN, APGDSeg, Attack, CosPGD, DenseSquare, SegPGD, Square

__all__ = ["DEFAULT_PROTOCOL", "PROTOCOLS", "SEGMENTATION_PROTOCOLS", "CascadeResult", "classification_protocol", "run_cascade",
           "segmentation_protocol"]

logger = logging.getLogger(__name__)

#: the version a benchmark runs unless told otherwise
DEFAULT_PROTOCOL = "v2"

#: version -> budget -> attack settings (the ``standard`` counts are AutoAttack's)
PROTOCOLS: dict[str, dict[str, dict[str, dict[str, int]]]] = {
    "v1": {
        "standard": {"APGD-CE": {"steps": 100}, "APGD-T": {"steps": 100, "n_target_classes": 9},
                     "Square": {"steps": 5000}},
        "quick": {"APGD-CE": {"steps": 20}, "APGD-T": {"steps": 20, "n_target_classes": 3},
                  "Square": {"steps": 500}},
    },
    "v2": {
        "standard": {"APGD-CE": {"steps": 100}, "APGD-T": {"steps": 100, "n_target_classes": 9},
                     "FMN-T": {"steps": 100, "n_target_classes": 9}, "Square": {"steps": 5000}},
        "quick": {"APGD-CE": {"steps": 20}, "APGD-T": {"steps": 20, "n_target_classes": 3},
                  "FMN-T": {"steps": 20, "n_target_classes": 3}, "Square": {"steps": 500}},
    },
}


#: version -> budget -> the segmentation attacks' settings (iterations / queries)
SEGMENTATION_PROTOCOLS: dict[str, dict[str, dict[str, dict[str, int]]]] = {
    "v2": {
        "standard": {"SegPGD": {"steps": 100}, "CosPGD": {"steps": 100}, "APGD-seg": {"steps": 100},
                     "Square-seg": {"steps": 5000}},
        "quick": {"SegPGD": {"steps": 20}, "CosPGD": {"steps": 20}, "APGD-seg": {"steps": 20},
                  "Square-seg": {"steps": 200}},
    },
}


def _spec(table: Mapping[str, Any], version: str, budget: str, task: str = "classification"
          ) -> Mapping[str, Mapping[str, int]]:
    if version not in table:
        if version in PROTOCOLS:
            raise ValueError(f"protocol {version!r} has no {task} part; {task} starts at {min(table)}")
        raise ValueError(f"unknown protocol version {version!r}; known: {sorted(PROTOCOLS)}")
    if budget not in table[version]:
        raise ValueError(f"budget must be one of {sorted(table[version])}, got {budget!r}")
    return table[version][budget]


def segmentation_protocol(eps: float, version: str = DEFAULT_PROTOCOL, budget: str = "standard", value_range: Any = "data",
                          seed: int = 0) -> dict[str, Attack]:
    """The segmentation protocol's attacks, ``{label: attack}`` (the order of the report), each seeded (CPU)."""
    spec = _spec(SEGMENTATION_PROTOCOLS, version, budget, "segmentation")

    def generator() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    def pgd_like(cls, steps):  # Madry et al.'s step: 2.5 eps spread over the iterations
        return cls(eps=eps, alpha=2.5 * eps / steps, steps=steps, value_range=value_range, generator=generator())

    return {"SegPGD": pgd_like(SegPGD, spec["SegPGD"]["steps"]), "CosPGD": pgd_like(CosPGD, spec["CosPGD"]["steps"]),
            "APGD-seg": APGDSeg(eps=eps, steps=spec["APGD-seg"]["steps"], value_range=value_range,
                                generator=generator()),
            "Square-seg": DenseSquare(eps=eps, steps=spec["Square-seg"]["steps"], value_range=value_range,
                                      generator=generator())}


def classification_protocol(eps: float, version: str = DEFAULT_PROTOCOL, budget: str = "standard", value_range: Any = "data",
                            seed: int = 0) -> dict[str, Attack]:
    """The protocol's attacks in cascade order, ``{label: attack}``, each with its own seeded generator (CPU)."""
    spec = _spec(PROTOCOLS, version, budget)
    classes = {"APGD-CE": APGD, "APGD-T": APGDT, "FMN-T": FMN, "Square": Square}
    return {label: classes[label](eps=eps, value_range=value_range, generator=torch.Generator().manual_seed(seed),
                                  **settings)
            for label, settings in spec.items()}


@dataclass
class CascadeResult:
    """What the cascade found, per sample and per attack.

    ``clean_correct`` / ``robust`` ``(N,)`` bools; ``broken_by[i]`` the attack that broke sample ``i`` (None:
    robust, or wrong already on the clean image); ``breaks``, ``attacked`` and ``seconds`` per attack label (how
    many it broke, ran on, and its wall time).
    """

    clean_correct: torch.Tensor
    robust: torch.Tensor
    broken_by: list[str | None]
    breaks: dict[str, int] = field(default_factory=dict)
    attacked: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if self.num_samples else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust.float().mean()) if self.num_samples else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"num_samples": self.num_samples, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": self.robust_accuracy, "breaks": dict(self.breaks),
                "attacked": dict(self.attacked), "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def _predict(network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return APGD.logits_of(network(x)).argmax(1)


def run_cascade(network: torch.nn.Module, batches: Any, attacks: Mapping[str, Attack], device: Any = None,
                cascade: bool = True, progress: Callable[[str], None] | None = None) -> CascadeResult:
    """Run ``attacks`` in order over ``batches`` (an iterable of ``(images (N, C, *spatial), labels (N,))``).

    With ``cascade`` (default) each attack runs on the samples of the batch still robust after the earlier ones;
    without it every attack runs on every clean-correct sample (what the cascade saves: ``benchmarks/``), the
    result the same worst case. ``progress`` gets one line per attack and batch (``"APGD-T batch 2/5: 14 -> 11
    robust"``; default: the module's logger at INFO). The network is used in eval mode and left as found.
    """
    say = progress or logger.info
    was_training = network.training
    network.eval()
    clean_all: list[torch.Tensor] = []
    robust_all: list[torch.Tensor] = []
    broken: list[torch.Tensor] = []
    breaks = {label: 0 for label in attacks}
    attacked = {label: 0 for label in attacks}
    seconds = {label: 0.0 for label in attacks}
    batches = list(batches)  # read once: the count is in the progress lines
    try:
        for b, (x, y) in enumerate(batches):
            x = torch.as_tensor(x).to(device) if device is not None else torch.as_tensor(x)
            y = torch.as_tensor(y).to(x.device).long().reshape(-1)
            correct = _predict(network, x) == y
            robust = correct.clone()
            first = torch.full((len(y),), -1, dtype=torch.long)
            for k, (label, attack) in enumerate(attacks.items()):
                todo = (robust if cascade else correct).nonzero()[:, 0]
                before = int(robust.sum())
                if todo.numel():
                    start = time.perf_counter()
                    adv = attack(network, x[todo], y[todo])
                    seconds[label] += time.perf_counter() - start
                    fooled = _predict(network, adv) != y[todo]
                    new = todo[fooled & robust[todo]]
                    first[new.cpu()] = k
                    robust[new] = False
                    breaks[label] += int(new.numel())
                    attacked[label] += int(todo.numel())
                say(f"{label} batch {b + 1}/{len(batches)}: {before} -> {int(robust.sum())} robust")
            clean_all.append(correct.cpu())
            robust_all.append(robust.cpu())
            broken.append(first)
    finally:
        network.train(was_training)
    labels = list(attacks)
    firsts = torch.cat(broken) if broken else torch.zeros(0, dtype=torch.long)
    return CascadeResult(torch.cat(clean_all) if clean_all else torch.zeros(0, dtype=torch.bool),
                         torch.cat(robust_all) if robust_all else torch.zeros(0, dtype=torch.bool),
                         [labels[i] if i >= 0 else None for i in firsts.tolist()], breaks, attacked, seconds)
