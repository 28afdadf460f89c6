"""Gradient-masking sanity checks (Athalye et al. 2018; Carlini et al. 2019; Croce & Hein 2020).

A robustness number is only meaningful if the attacks behind it work. These checks look for the
classic red flags of gradient masking / obfuscated gradients:

1. robust accuracy must fall (not rise) as the budget ``eps`` grows;
2. an iterative attack (PGD-10) must be at least as strong as a single step (FGSM) at the same budget;
3. random noise at the same budget must not beat the gradient attacks;
4. an unbounded attack (huge ``eps``, many steps, no clamping) must drive accuracy to ~0;
5. (when the records hold it) more steps of the same attack must not keep lowering accuracy a lot.

:func:`flags_from_records` applies the rules to any list of result records, so a report writer can
run them over the numbers it already has; :func:`check_gradient_masking` runs its own small set of
attacks on a few batches and returns the flags. An empty list means no red flag was raised.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from monai_dpaat.attacks import FGSM, PGD, Attack, GaussianNoise
from monai_dpaat.attacks.base import restore_model_state
from monai_dpaat.conventions import image_and_label, per_sample_correct, per_sample_dice, primary_output

__all__ = [
    "check_gradient_masking",
    "gradient_masking_records",
    "flags_from_records",
    "batch_scores",
    "score_of",
    "materialize_batches",
]

TASKS = ("classification", "segmentation")


# ---------------------------------------------------------------------------------------------- rules
def flags_from_records(
    records: Sequence[Mapping[str, Any]],
    tolerance: float = 0.02,
    unbounded_max_accuracy: float = 0.05,
    steps_drop: float = 0.10,
) -> list[str]:
    """Red flags of gradient masking found in a list of results.

    Args:
        records: dicts with keys ``"attack"`` (name), ``"eps"`` (budget; ``0`` for clean,
            ``float("inf")`` for an unbounded attack), ``"steps"`` (1 = single step), ``"uses_gradient"``
            (bool) and ``"robust_accuracy"`` (in [0, 1]; mean Dice for segmentation). A record named
            ``"clean"`` (or with ``eps == 0``) is the clean accuracy.
        tolerance: absolute slack on accuracy comparisons (sampling noise of a small evaluation set).
        unbounded_max_accuracy: the most an unbounded gradient attack may leave (e.g. 0.05 = 5%).
        steps_drop: flag when more steps of the same attack at the same ``eps`` lower accuracy by more.

    Returns:
        human-readable flags; empty when no rule fires.
    """
    recs = [_checked_record(r, i) for i, r in enumerate(records)]
    flags: list[str] = []
    clean = [r for r in recs if r["attack"] == "clean" or r["eps"] == 0]
    clean_acc = max((r["robust_accuracy"] for r in clean), default=None)
    attacked = [r for r in recs if r not in clean]
    grad = [r for r in attacked if r["uses_gradient"]]
    bounded_grad = [r for r in grad if math.isfinite(r["eps"])]

    # 1. accuracy must not rise with eps (per attack and step count), nor above clean
    for (name, steps), small, large in _neighbours(bounded_grad, ("attack", "steps"), "eps"):
        if large["eps"] > small["eps"] and large["robust_accuracy"] > small["robust_accuracy"] + tolerance:
            flags.append(
                f"robust accuracy rises with eps: {_label(name, steps)} gives {_pct(small)} at "
                f"eps={_fmt(small['eps'])} but {_pct(large)} at eps={_fmt(large['eps'])}"
            )
    if clean_acc is not None:
        for r in grad:
            if r["robust_accuracy"] > clean_acc + tolerance:
                flags.append(
                    f"attack raises accuracy: {_label(r['attack'], r['steps'])} at eps={_fmt(r['eps'])} gives "
                    f"{_pct(r)}, above the clean {clean_acc:.1%}"
                )

    # 2. single-step must not beat iterative; 3. noise must not beat gradient attacks (same eps)
    by_eps: dict[float, list[dict]] = defaultdict(list)
    for r in attacked:
        if math.isfinite(r["eps"]):
            by_eps[r["eps"]].append(r)
    for eps, rows in sorted(by_eps.items()):
        single = [r for r in rows if r["uses_gradient"] and r["steps"] <= 1]
        iterative = [r for r in rows if r["uses_gradient"] and r["steps"] > 1]
        noise = [r for r in rows if not r["uses_gradient"]]
        beaten = _weaker_wins(single, iterative, tolerance)
        if beaten:
            s, it = beaten
            flags.append(
                f"single-step beats iterative at eps={_fmt(eps)}: {_label(s['attack'], s['steps'])} "
                f"{_pct(s)} < {_label(it['attack'], it['steps'])} {_pct(it)}"
            )
        beaten = _weaker_wins(noise, single + iterative, tolerance)
        if beaten:
            n, g = beaten
            flags.append(
                f"random noise beats the gradient attacks at eps={_fmt(eps)}: {n['attack']} {_pct(n)} < "
                f"{_label(g['attack'], g['steps'])} {_pct(g)}"
            )

    # 4. an unbounded gradient attack must reach ~0 accuracy
    for r in grad:
        if not math.isfinite(r["eps"]) and r["robust_accuracy"] > unbounded_max_accuracy:
            flags.append(
                f"unbounded attack does not reach ~0 accuracy: {_label(r['attack'], r['steps'])} with eps=inf "
                f"leaves {_pct(r)} (> {unbounded_max_accuracy:.0%})"
            )

    # 5. more steps of the same attack should not keep lowering accuracy a lot
    for (name, eps), few, many in _neighbours(bounded_grad, ("attack", "eps"), "steps"):
        if few["steps"] > 1 and many["steps"] > few["steps"] and (
            few["robust_accuracy"] - many["robust_accuracy"] > steps_drop
        ):
            flags.append(
                f"more steps keep lowering accuracy at eps={_fmt(eps)}: {_label(name, few['steps'])} "
                f"{_pct(few)} -> {_label(name, many['steps'])} {_pct(many)} (attack not converged)"
            )
    return flags


def _neighbours(records: list[dict], group_by: tuple[str, ...], order_by: str):
    """``(group key, a, b)`` for records ``a``, ``b`` next to each other in ``order_by`` order within each group
    of equal ``group_by`` values (groups in sorted key order)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r[k] for k in group_by)].append(r)
    for key, rows in sorted(groups.items()):
        rows = sorted(rows, key=lambda r: r[order_by])
        for a, b in zip(rows, rows[1:]):
            yield key, a, b


def _checked_record(record: Mapping[str, Any], index: int) -> dict:
    missing = [k for k in ("attack", "eps", "robust_accuracy") if k not in record]
    if missing:
        raise ValueError(f"record {index} misses keys {missing}: {dict(record)!r}")
    acc = float(record["robust_accuracy"])
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"record {index}: robust_accuracy must be in [0, 1], got {record['robust_accuracy']!r}")
    eps = float(record["eps"])
    if math.isnan(eps) or eps < 0:
        raise ValueError(f"record {index}: eps must be >= 0 (inf = unbounded), got {record['eps']!r}")
    name = str(record["attack"]).lower()
    return {
        "attack": name,
        "eps": eps,
        "steps": int(record.get("steps", 1) or 1),
        "uses_gradient": bool(record.get("uses_gradient", name not in ("gn", "noise", "gaussian-noise", "clean"))),
        "robust_accuracy": acc,
    }


def _best(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: r["robust_accuracy"])


def _weaker_wins(weaker: list[dict], stronger: list[dict], tolerance: float) -> tuple[dict, dict] | None:
    """The best records of a weaker attack family and of a stronger one when the weaker leaves a lower
    accuracy by more than ``tolerance`` (a gradient-masking sign); else None."""
    if not weaker or not stronger:
        return None
    w, s = _best(weaker), _best(stronger)
    return (w, s) if w["robust_accuracy"] < s["robust_accuracy"] - tolerance else None


def _label(name: str, steps: int) -> str:
    return f"{name.upper()}-{steps}" if steps > 1 else name.upper()


def _pct(r: Mapping[str, Any]) -> str:
    return f"{r['robust_accuracy']:.1%}"


def _fmt(eps: float) -> str:
    if not math.isfinite(eps):
        return "inf"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 and k >= 1 else f"{eps:.4g}"


# ---------------------------------------------------------------------------------------------- scoring
def score_of(outputs: Any, targets: torch.Tensor, task: str = "classification") -> torch.Tensor:
    """Per-sample float32 score ``(N,)``: 1/0 correctness (classification,
    :func:`monai_dpaat.conventions.per_sample_correct`) or mean foreground Dice (segmentation,
    :func:`monai_dpaat.conventions.per_sample_dice`, with the package's empty-ground-truth policy
    :data:`monai_dpaat.conventions.EMPTY_GROUND_TRUTH`).

    Classification: outputs ``(N, K)`` (argmax) or ``(N, 1)`` (logit > 0); targets ``(N,)``, ``(N, 1)``
    or one-hot ``(N, K)``. Segmentation: outputs ``(N, K, *spatial)`` (argmax, background class 0 left
    out) or ``(N, 1, *spatial)`` (logit > 0); targets ``(N, 1, *spatial)``, ``(N, *spatial)`` or one-hot.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    outputs = primary_output(outputs)
    if task == "classification":
        if outputs.ndim != 2:
            raise ValueError(f"classification outputs must be (N, K), got shape {tuple(outputs.shape)}")
        return per_sample_correct(outputs, targets).to(torch.float32)
    return per_sample_dice(outputs, targets).to(torch.float32)


def materialize_batches(
    loader_or_batches: Iterable[Any],
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Read ``(image, label)`` pairs once so every attack sees the same samples.

    Accepts a DataLoader / list of dicts (``{image_key: (N, C, ...), label_key: ...}``, MONAI style) or of
    ``(image, label)`` pairs, or a single ``(images, labels)`` pair of tensors; each batch is unpacked by
    :func:`monai_dpaat.conventions.image_and_label` (plain tensors, float images).
    """
    if (isinstance(loader_or_batches, (tuple, list)) and len(loader_or_batches) == 2
            and all(isinstance(b, torch.Tensor) for b in loader_or_batches)):
        loader_or_batches = [tuple(loader_or_batches)]
    out = []
    for i, batch in enumerate(loader_or_batches):
        if max_batches is not None and i >= max_batches:
            break
        try:
            x, y = image_and_label(batch, image_key, label_key)
        except ValueError as err:
            raise ValueError(f"batch {i}: {err}") from None
        x = x.float()
        if device is not None:
            x, y = x.to(device), y.to(device)
        out.append((x, y))
    if not out:
        raise ValueError("loader_or_batches yielded no batches")
    return out


def batch_scores(network: torch.nn.Module, batches, attack: Attack | None = None, task: str = "classification"):
    """Per-sample scores ``(total N,)`` of ``network`` on ``batches``, under ``attack`` when given."""
    scores = []
    for x, y in batches:
        adv = x if attack is None else attack(network, x, y)
        with restore_model_state(network, "eval"), torch.no_grad():
            scores.append(score_of(network(adv), y, task).cpu())
    return torch.cat(scores)


# ---------------------------------------------------------------------------------------------- runner
def gradient_masking_records(
    network: torch.nn.Module,
    loader_or_batches: Iterable[Any],
    task: str = "classification",
    eps: float = 8 / 255,
    eps_grid: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    steps: int = 10,
    unbounded_steps: int = 100,
    unbounded_alpha: float | None = None,
    max_batches: int | None = 4,
    image_key: str = "image",
    label_key: str = "label",
    seed: int = 0,
) -> list[dict]:
    """Run the sanity attacks and return their records (the input of :func:`flags_from_records`).

    Runs: clean; PGD-``steps`` (random start, ``alpha = 2.5 * e / steps``) at every ``e`` in ``eps_grid``
    (default ``(eps / 4, eps / 2, eps, 2 * eps)``); FGSM and bounded Gaussian noise (``std = eps``,
    clipped to the L-inf ball) at ``eps``; and PGD-``unbounded_steps`` with ``eps = inf`` and no value
    clamping, step ``unbounded_alpha`` (default 5% of the data's value range, so it can travel 5x the
    range). The value range of the bounded attacks is taken from the data (never assumes [0, 1]).

    ``eps`` is an L-inf budget in data units; ``device`` is where the batches go (default: the network's
    device; the network is not moved); the first ``max_batches`` batches are read once and reused by every
    attack. Each record also holds ``"num_samples"``, the number of samples scored.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    grid = _eps_grid(eps, eps_grid)  # checked before any batch is read
    batches = materialize_batches(loader_or_batches, _device_of(network, device), max_batches, image_key, label_key)
    return _records_for(network, batches, task, grid, eps, steps, unbounded_steps, unbounded_alpha, seed)


def _device_of(network: torch.nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(iter(network.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _eps_grid(eps: float, eps_grid) -> list[float]:
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps}")
    grid = sorted({float(e) for e in (eps_grid if eps_grid is not None else (eps / 4, eps / 2, eps, 2 * eps))})
    if not grid or any(not (e > 0 and math.isfinite(e)) for e in grid):
        raise ValueError(f"eps_grid must hold finite numbers > 0, got {eps_grid!r}")
    return grid


def _records_for(network, batches, task, grid, eps, steps, unbounded_steps, unbounded_alpha, seed) -> list[dict]:
    if int(steps) != steps or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (the iterative attack), got {steps}")
    if unbounded_alpha is None:
        span = max(float(x.max() - x.min()) for x, _ in batches)
        unbounded_alpha = 0.05 * (span if span > 0 else 1.0)
    generator = torch.Generator(device=batches[0][0].device).manual_seed(seed)

    def run(name: str, attack: Attack | None, e: float, n_steps: int) -> dict:
        scores = batch_scores(network, batches, attack, task)
        uses_gradient = bool(attack is not None and attack.uses_gradient)
        return {"attack": name, "eps": e, "steps": n_steps, "uses_gradient": uses_gradient,
                "robust_accuracy": float(scores.mean()), "num_samples": scores.numel()}

    records = [run("clean", None, 0.0, 0)]
    for e in grid:
        records.append(run("pgd", PGD(eps=e, alpha=2.5 * e / steps, steps=steps, generator=generator), e, steps))
    records.append(run("fgsm", FGSM(eps=eps), eps, 1))
    records.append(run("gn", GaussianNoise(std=eps, eps=eps, generator=generator), eps, 1))
    unbounded = PGD(eps=float("inf"), alpha=unbounded_alpha, steps=unbounded_steps, value_range=None,
                    random_start=False)
    records.append(run("pgd", unbounded, float("inf"), unbounded_steps))
    return records


def check_gradient_masking(
    network: torch.nn.Module,
    loader_or_batches: Iterable[Any],
    task: str = "classification",
    unbounded_max_accuracy: float = 0.05,
    tolerance: float | None = None,
    **options: Any,
) -> list[str]:
    """Run small gradient-masking checks on ``network`` and return human-readable flags (empty = none):
    :func:`flags_from_records` of :func:`gradient_masking_records`.

    Args:
        network: classifier (outputs ``(N, K)`` / ``(N, 1)``) or segmenter (``(N, K, *spatial)``).
        loader_or_batches: a DataLoader or iterable of ``{"image", "label"}`` dicts or ``(image, label)``
            pairs; the first ``max_batches`` (default 4) are read once and reused by every attack.
        task: ``"classification"`` (score = accuracy) or ``"segmentation"`` (score = mean foreground Dice).
        unbounded_max_accuracy: the most the unbounded attack may leave before a flag (default 5%).
        tolerance: slack on comparisons; default ``max(0.02, 1 / n_samples)`` (one sample's worth).
        options: the other keywords of :func:`gradient_masking_records`: ``eps`` (the budget of the FGSM /
            PGD / noise comparison, L-inf, data units; default 8/255), ``eps_grid`` (budgets of the
            monotonicity check, default ``eps`` x (1/4, 1/2, 1, 2)), ``device`` (where the batches go; default
            the network's, which is not moved), ``steps``, ``unbounded_steps``, ``unbounded_alpha``,
            ``max_batches``, ``image_key``, ``label_key``, ``seed``.
    """
    records = gradient_masking_records(network, loader_or_batches, task, **options)
    if tolerance is None:
        tolerance = max(0.02, 1.0 / records[0]["num_samples"])
    return flags_from_records(records, tolerance=tolerance, unbounded_max_accuracy=unbounded_max_accuracy)
