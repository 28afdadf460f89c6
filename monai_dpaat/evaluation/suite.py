"""Robustness evaluation: run a suite of attacks over a dataset and collect the papers' table rows.

>>> evaluator = RobustnessEvaluator(attacks="dpaat-table", task="classification", device="cpu")
>>> result = evaluator(network, test_loader)          # RobustnessResult
>>> result.rows["20-PGD"]["accuracy"], result.rows["Worst case"]["accuracy"]

Rows: ``"Original"`` (clean inputs), one per attack (its label), and ``"Worst case"``: per sample the worst of
the clean input and every attack of the suite (classification: a sample counts as correct only if the clean
input and every attack leave it correct, as AutoAttack/RobustBench report robust accuracy; segmentation: the
lowest Dice per sample, the other metrics taken from that same input).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from monai.inferers import Inferer
from monai.utils import convert_to_tensor

from monai_dpaat.attacks import Attack, build_attack, canonical_name, default_loss, restore_model_state
from monai_dpaat.networks.inferer_network import InfererNetwork

from .metrics import (
    CLASSIFICATION_METRICS,
    SEGMENTATION_METRICS,
    SegmentationMetrics,
    classification_summary,
    per_sample_loss,
    perturbation_norms,
    scores_from_logits,
    summarize_segmentation,
)
from .presets import PRESETS, preset, suite_with_eps

__all__ = [
    "ORIGINAL",
    "WORST_CASE",
    "SuiteEntry",
    "RobustnessResult",
    "RobustnessEvaluator",
    "InfererNetwork",
    "build_suite",
    "resolve_attack_specs",
]

ORIGINAL = "Original"
WORST_CASE = "Worst case"
TASKS = ("classification", "segmentation")


@dataclass
class SuiteEntry:
    """One attack of a suite: the row ``label``, the built ``attack`` and its JSON-able ``spec``."""

    label: str
    attack: Attack
    spec: dict[str, Any]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _split_names(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def resolve_attack_specs(attacks: Any, eps: float | None = None) -> list[Any]:
    """Normalise a suite description to a list of spec dicts (``{"name", "label", **kwargs}``) or ``Attack``s.

    ``attacks`` may be a preset name (``"unet-paper"``, ``"dpaat-table"``), an attack name (``"20-pgd"``), a
    comma-separated string of either, a list mixing names, spec dicts and ``Attack`` instances, or a mapping
    ``label -> spec dict | Attack``. ``eps`` rebuilds presets at that budget and sets it on spec dicts
    (see :func:`~monai_dpaat.evaluation.presets.suite_with_eps`); ``Attack`` instances are kept as they are.
    Raises ``ValueError`` naming an unknown preset/attack or a malformed entry.
    """
    if attacks is None:
        raise ValueError("attacks must be a preset name, attack names or a list of attack specs, got None")
    if isinstance(attacks, str):
        items: list[Any] = _split_names(attacks)
        if not items:
            raise ValueError("attacks is an empty string; give a preset name or attack names")
    elif isinstance(attacks, Mapping):
        items = []
        for label, value in attacks.items():
            if isinstance(value, Attack):
                items.append((str(label), value))
            elif isinstance(value, Mapping):
                items.append({"label": str(label), **value})
            else:
                raise ValueError(f"attacks[{label!r}] must be a spec dict or an Attack, got {type(value).__name__}")
    elif isinstance(attacks, (Attack, tuple)) and not isinstance(attacks, list):
        items = [attacks] if isinstance(attacks, Attack) else list(attacks)
    elif isinstance(attacks, Iterable):
        items = list(attacks)
    else:
        raise ValueError(f"attacks must be a preset name, attack names or a list of specs, got {type(attacks).__name__}")

    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            key = canonical_name(item)
            if key in PRESETS:
                out.extend(preset(key, eps=eps))
                continue
            try:
                build_attack(item)
            except ValueError as err:
                raise ValueError(f"unknown attack or preset {item!r}; presets: {', '.join(sorted(PRESETS))}; "
                                 f"{str(err).split('; ', 1)[-1]}") from None
            spec = {"name": item, "label": item.strip().upper()}
            out.extend(suite_with_eps([spec], eps) if eps is not None else [spec])
        elif isinstance(item, Mapping):
            if "name" not in item:
                raise ValueError(f"an attack spec needs a 'name' key, got keys {sorted(item)}")
            spec = dict(item)
            if "_target_" in spec:
                raise ValueError("attack specs use 'name' + kwargs (see build_attack), not '_target_'")
            out.extend(suite_with_eps([spec], eps) if eps is not None else [spec])
        elif isinstance(item, Attack):
            out.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Attack):
            out.append(item)
        else:
            raise ValueError(f"an attack must be a name, a spec dict or an Attack, got {item!r}")
    if not out:
        raise ValueError("the attack suite is empty")
    return out


def build_suite(attacks: Any, eps: float | None = None, loss_function: Callable | None = None,
                generator: torch.Generator | None = None) -> list[SuiteEntry]:
    """Build the :class:`SuiteEntry` list of a suite description (see :func:`resolve_attack_specs`).

    ``loss_function`` and ``generator`` are given to every attack built from a spec that does not set them.
    Labels are made unique (``"PGD"``, ``"PGD (2)"``).
    """
    entries: list[SuiteEntry] = []
    seen: dict[str, int] = {}
    for item in resolve_attack_specs(attacks, eps):
        if isinstance(item, tuple):
            label, attack = item
            spec = {"name": type(attack).__name__, "repr": repr(attack)}
        elif isinstance(item, Attack):
            attack = item
            label = type(attack).__name__.upper()
            spec = {"name": type(attack).__name__, "repr": repr(attack)}
        else:
            kwargs = {k: v for k, v in item.items() if k not in ("name", "label")}
            if loss_function is not None:
                kwargs.setdefault("loss_function", loss_function)
            if generator is not None:
                kwargs.setdefault("generator", generator)
            try:
                attack = build_attack(item["name"], **kwargs)
            except TypeError as err:
                raise ValueError(f"bad arguments for attack {item['name']!r}: {err}") from None
            label = str(item.get("label") or str(item["name"]).upper())
            spec = {k: v for k, v in item.items() if k not in ("loss_function", "generator")}
        if label in seen:
            seen[label] += 1
            label = f"{label} ({seen[label]})"
        else:
            seen[label] = 1
        if label in (ORIGINAL, WORST_CASE):
            raise ValueError(f"attack label {label!r} is reserved")
        entries.append(SuiteEntry(label, attack, _jsonable(spec)))
    return entries


def attack_info(entry: SuiteEntry) -> dict[str, Any]:
    """``{"name", "eps", "steps", "uses_gradient"}`` of a built attack (``eps = inf`` for unbounded noise),
    the record fields of :func:`monai_dpaat.evaluation.sanity.flags_from_records`."""
    attack = entry.attack
    eps = getattr(attack, "eps", None)
    if getattr(attack, "bounded", True) is False:
        eps = float("inf")
    if isinstance(eps, torch.Tensor):
        eps = float(eps) if eps.numel() == 1 else None
    name = canonical_name(entry.spec.get("name", type(attack).__name__))
    match = re.fullmatch(r"\d+-(.+)", name)
    name = match.group(1) if match else name
    return {"name": name, "eps": None if eps is None else float(eps),
            "steps": int(getattr(attack, "steps", 1)), "uses_gradient": bool(getattr(attack, "uses_gradient", True))}


@dataclass
class RobustnessResult:
    """Rows of one model's robustness tables.

    Attributes:
        task: ``"classification"`` or ``"segmentation"``.
        rows: ``{row label: {metric: value}}`` with rows ``"Original"``, each attack, ``"Worst case"``.
            Classification metrics: accuracy, precision, recall, f1, map, linf, l2 (``accuracy`` of
            ``"Original"`` is the GAcc, of an attack its RAcc; ``map`` is mAP / mARP). Segmentation:
            dice, iou, pixel_accuracy, loss, hd95 (+ hd95_undefined), linf, l2.
        confusion: ``{row label: K x K nested list}`` (classification only).
        attacks: ``{attack label: spec}`` as run.
        num_samples: samples evaluated.
        class_names: optional class names (confusion matrix axes).
        meta: free-form extra information (eps, device, seconds, worst-case attack counts...).
    """

    task: str
    rows: dict[str, dict[str, float]]
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    num_samples: int = 0
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return CLASSIFICATION_METRICS if self.task == "classification" else SEGMENTATION_METRICS

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "rows": _jsonable(self.rows), "confusion": self.confusion,
            "attacks": _jsonable(self.attacks), "num_samples": self.num_samples, "class_names": self.class_names,
            "meta": _jsonable(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RobustnessResult:
        for key in ("task", "rows"):
            if key not in data:
                raise ValueError(f"a robustness result needs the key {key!r}, got keys {sorted(data)}")

        def num(v):
            return float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v

        rows = {r: {m: num(v) for m, v in vals.items()} for r, vals in data["rows"].items()}
        return cls(task=data["task"], rows=rows, confusion=dict(data.get("confusion", {})),
                   attacks=dict(data.get("attacks", {})), num_samples=int(data.get("num_samples", 0)),
                   class_names=data.get("class_names"), meta=dict(data.get("meta", {})))


def _unpack_batch(batch: Any, image_key: str, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        for key in (image_key, label_key):
            if key not in batch:
                raise ValueError(f"batch has no key {key!r}; keys are {sorted(batch)}")
        images, labels = batch[image_key], batch[label_key]
    elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
        images, labels = batch[0], batch[1]
    else:
        raise ValueError(f"a batch must be a dict with {image_key!r}/{label_key!r} or an (image, label) pair")
    return convert_to_tensor(images, track_meta=False), convert_to_tensor(labels, track_meta=False)


class RobustnessEvaluator:
    """Run an attack suite over a data loader; see the module docstring for the rows.

    Args:
        attacks: preset name, attack names, or a list of spec dicts / ``Attack``s (see :func:`build_suite`).
        task: ``"classification"`` (logits ``(N, K)``, labels ``(N,)``) or ``"segmentation"`` (logits
            ``(N, K, *spatial)``, labels ``(N, 1, *spatial)``; ``K = 1`` means a sigmoid foreground channel).
        eps: budget override for presets and spec dicts (``None`` keeps theirs).
        loss_function: ``(logits, labels) -> scalar``; the attacks' loss and the segmentation ``loss`` metric.
            ``None``: cross-entropy (``K > 1``) / BCE-with-logits (``K = 1``).
        inferer: e.g. a ``SlidingWindowInferer``: the network is wrapped with it (:class:`InfererNetwork`) for
            the clean pass and for the attacks.
        device: where the network and batches run (``None``: the network's device).
        num_classes: classes of a classifier (default: from its output; 1 logit counts as 2 classes).
        class_names: names for the confusion-matrix axes.
        max_samples: stop after this many samples.
        hd95: compute HD95 for segmentation (slow on large tiles).
        seed: seed of torch's RNG during the run (random starts, DI, GN), forked so the caller's RNG state is
            untouched; ``None``: use the global RNG as it is.
        progress: show a tqdm progress bar.
        image_key, label_key: batch dict keys.
    """

    def __init__(self, attacks: Any = "dpaat-table", task: str = "classification", eps: float | None = None,
                 loss_function: Callable | None = None, inferer: Inferer | None = None,
                 device: str | torch.device | None = None, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, max_samples: int | None = None, hd95: bool = True,
                 seed: int | None = 0, progress: bool = True, image_key: str = "image", label_key: str = "label") -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if max_samples is not None and int(max_samples) < 1:
            raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
        self.attacks = attacks
        self.task = task
        self.eps = eps
        self.loss_function = loss_function
        self.inferer = inferer
        self.device = torch.device(device) if device is not None else None
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.max_samples = int(max_samples) if max_samples is not None else None
        self.hd95 = bool(hd95)
        self.seed = seed
        self.progress = bool(progress)
        self.image_key, self.label_key = image_key, label_key
        build_suite(attacks, eps=eps)  # fail early on unknown names or bad arguments

    # ---------------------------------------------------------------------------------------------- public
    def __call__(self, network: nn.Module, data_loader: Iterable, eps: float | None = None) -> RobustnessResult:
        """Evaluate ``network`` on every batch of ``data_loader``; ``eps`` overrides the budget for this run."""
        device = self.device or next(iter(network.parameters()), torch.zeros(())).device
        network = network.to(device)
        eps = self.eps if eps is None else eps
        suite = build_suite(self.attacks, eps=eps, loss_function=self.loss_function)
        model = InfererNetwork(network, self.inferer) if self.inferer is not None else network
        start = time.perf_counter()
        # a seeded run forks torch's RNG (CPU and the device's), so it is reproducible and leaves the caller's RNG alone
        rng_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices, enabled=self.seed is not None), \
                restore_model_state(network, "eval"):
            if self.seed is not None:
                torch.manual_seed(int(self.seed))
            if self.task == "classification":
                result = self._run_classification(model, data_loader, suite, device)
            else:
                result = self._run_segmentation(model, data_loader, suite, device)
        result.attacks = {e.label: e.spec for e in suite}
        result.meta["attack_info"] = {e.label: attack_info(e) for e in suite}
        result.meta.update({"eps": eps, "device": str(device), "seconds": round(time.perf_counter() - start, 3),
                            "seed": self.seed})
        return result

    def sweep(self, network: nn.Module, data_loader: Iterable, eps_values: Sequence[float]) -> dict[float, RobustnessResult]:
        """Run the suite once per budget in ``eps_values``: ``{eps: RobustnessResult}`` (for metric-vs-eps plots)."""
        if not eps_values:
            raise ValueError("eps_values is empty")
        return {float(e): self(network, data_loader, eps=float(e)) for e in eps_values}

    # ---------------------------------------------------------------------------------------------- helpers
    def _batches(self, data_loader: Iterable, suite: list[SuiteEntry]):
        from tqdm.auto import tqdm

        total = None
        try:
            total = len(data_loader)  # type: ignore[arg-type]
        except TypeError:
            pass
        seen = 0
        bar = tqdm(total=total, desc=f"robustness ({len(suite)} attacks)", unit="batch", disable=not self.progress,
                   leave=False)
        try:
            for batch in data_loader:
                images, labels = _unpack_batch(batch, self.image_key, self.label_key)
                if self.max_samples is not None:
                    room = self.max_samples - seen
                    if room <= 0:
                        break
                    images, labels = images[:room], labels[:room]
                seen += images.shape[0]
                yield images, labels, bar
                bar.update(1)
        finally:
            bar.close()

    def _attack(self, entry: SuiteEntry, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, bar) -> torch.Tensor:
        bar.set_postfix_str(entry.label)
        return entry.attack(model, images, targets)

    # ---------------------------------------------------------------------------------------------- classification
    def _class_labels(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.ndim == 2 and labels.shape[1] > 1:
            labels = labels.argmax(1)
        labels = labels.reshape(labels.shape[0])
        if labels.is_floating_point() and not torch.equal(labels, labels.round()):
            raise ValueError("classification labels must be class indices (N,) or one-hot (N, K)")
        return labels.long()

    def _run_classification(self, model, data_loader, suite, device) -> RobustnessResult:
        names = [ORIGINAL] + [e.label for e in suite]
        probs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        norms: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
        all_labels: list[torch.Tensor] = []
        for images, labels, bar in self._batches(data_loader, suite):
            images = images.to(device).float()
            labels = self._class_labels(labels).to(device)
            with torch.no_grad():
                logits = model(images)
            p = scores_from_logits(logits).cpu()
            k = p.shape[1]
            if labels.numel() and (labels.min() < 0 or labels.max() >= k):
                bad = sorted({int(v) for v in labels[(labels < 0) | (labels >= k)].tolist()})
                raise ValueError(f"label values {bad[:10]} are outside [0, {k - 1}] for a {k}-class output")
            targets = labels.float().reshape(-1, 1) if logits.shape[1] == 1 else labels
            probs[ORIGINAL].append(p)
            zero = torch.zeros(images.shape[0], dtype=torch.float64)
            norms[ORIGINAL].append((zero, zero))
            for entry in suite:
                adv = self._attack(entry, model, images, targets, bar)
                with torch.no_grad():
                    probs[entry.label].append(scores_from_logits(model(adv)).cpu())
                norms[entry.label].append(perturbation_norms(adv, images))
            all_labels.append(labels.cpu())
        if not all_labels:
            raise ValueError("the data loader yielded no samples")
        y = torch.cat(all_labels)
        k = self.num_classes or probs[ORIGINAL][0].shape[1]
        stacked = {n: torch.cat(v) for n, v in probs.items()}
        linf = {n: torch.cat([a for a, _ in v]) for n, v in norms.items()}
        l2 = {n: torch.cat([b for _, b in v]) for n, v in norms.items()}

        # worst case: per sample, among clean + attacks, a wrong prediction first, then the lowest true-class prob
        cand = torch.stack([stacked[n] for n in names])  # (R, N, K)
        true_p = cand.gather(2, y.view(1, -1, 1).expand(len(names), -1, 1))[..., 0]  # (R, N)
        wrong = (cand.argmax(2) != y.view(1, -1)).double()
        choice = torch.argmin(true_p.double() - 2.0 * wrong, dim=0)  # (N,)
        idx = torch.arange(y.shape[0])
        stacked[WORST_CASE] = cand[choice, idx]
        linf[WORST_CASE] = torch.stack([linf[n] for n in names])[choice, idx]
        l2[WORST_CASE] = torch.stack([l2[n] for n in names])[choice, idx]

        rows, confusion = {}, {}
        for n in names + [WORST_CASE]:
            summary = classification_summary(stacked[n], y, k)
            confusion[n] = summary.pop("confusion")
            summary["linf"] = float(linf[n].mean())
            summary["l2"] = float(l2[n].mean())
            rows[n] = summary
        counts = {names[i]: int((choice == i).sum()) for i in range(len(names))}
        return RobustnessResult("classification", rows, confusion, num_samples=int(y.shape[0]),
                                class_names=self.class_names, meta={"worst_case_choice": counts, "num_classes": k})

    # ---------------------------------------------------------------------------------------------- segmentation
    def _run_segmentation(self, model, data_loader, suite, device) -> RobustnessResult:
        names = [ORIGINAL] + [e.label for e in suite]
        metrics = {n: SegmentationMetrics(hd95=self.hd95) for n in names}
        norms: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
        loss_fn = self.loss_function or default_loss
        for images, labels, bar in self._batches(data_loader, suite):
            images = images.to(device).float()
            if labels.ndim == images.ndim - 1:
                labels = labels[:, None]
            labels = labels.to(device)
            if labels.shape[0] != images.shape[0] or labels.shape[2:] != images.shape[2:]:
                raise ValueError(f"segmentation labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
            with torch.no_grad():
                out = model(images)
            out = out[0] if isinstance(out, (list, tuple)) else out
            k = out.shape[1]
            top = 1 if k == 1 else k - 1
            if labels.numel() and (labels.min() < 0 or labels.max() > top):
                raise ValueError(f"segmentation label values must lie in [0, {top}] for a {k}-channel output, "
                                 f"got range [{float(labels.min())}, {float(labels.max())}]")
            metrics[ORIGINAL].update(out, labels, per_sample_loss(loss_fn, out, labels))
            zero = torch.zeros(images.shape[0], dtype=torch.float64)
            norms[ORIGINAL].append((zero, zero))
            for entry in suite:
                adv = self._attack(entry, model, images, labels, bar)
                with torch.no_grad():
                    adv_out = model(adv)
                adv_out = adv_out[0] if isinstance(adv_out, (list, tuple)) else adv_out
                metrics[entry.label].update(adv_out, labels, per_sample_loss(loss_fn, adv_out, labels))
                norms[entry.label].append(perturbation_norms(adv, images))
        per_sample = {n: metrics[n].per_sample() for n in names}
        if per_sample[ORIGINAL]["dice"].numel() == 0:
            raise ValueError("the data loader yielded no samples")
        for n in names:
            per_sample[n]["linf"] = torch.cat([a for a, _ in norms[n]])
            per_sample[n]["l2"] = torch.cat([b for _, b in norms[n]])

        # worst case: per sample the lowest Dice (NaN Dice = empty ground truth: the highest loss decides)
        dice = torch.stack([per_sample[n]["dice"] for n in names])  # (R, N)
        loss = torch.stack([per_sample[n]["loss"] for n in names])
        key = torch.where(torch.isnan(dice), torch.full_like(dice, 2.0), dice)
        choice = torch.argmin(key, dim=0)
        no_dice = torch.isnan(dice).all(0)
        choice = torch.where(no_dice, torch.argmax(loss, dim=0), choice)
        idx = torch.arange(dice.shape[1])
        worst = {m: torch.stack([per_sample[n][m] for n in names])[choice, idx] for m in per_sample[ORIGINAL]}

        rows = {}
        for n in names:
            row = summarize_segmentation({m: v for m, v in per_sample[n].items() if m not in ("linf", "l2")}, self.hd95)
            row["linf"] = float(per_sample[n]["linf"].mean())
            row["l2"] = float(per_sample[n]["l2"].mean())
            rows[n] = row
        row = summarize_segmentation({m: v for m, v in worst.items() if m not in ("linf", "l2")}, self.hd95)
        row["linf"], row["l2"] = float(worst["linf"].mean()), float(worst["l2"].mean())
        rows[WORST_CASE] = row
        counts = {names[i]: int((choice == i).sum()) for i in range(len(names))}
        return RobustnessResult("segmentation", rows, num_samples=int(dice.shape[1]), class_names=self.class_names,
                                meta={"worst_case_choice": counts})
