"""Robustness evaluation: run a suite of attacks over a dataset and collect the papers' table rows.

>>> evaluator = RobustnessEvaluator(attacks="dpaat-table", task="classification", device="cpu")
>>> result = evaluator(network, test_loader)          # RobustnessResult
>>> result.rows["20-PGD"]["accuracy"], result.rows["Worst case"]["accuracy"]
>>> RobustnessEvaluator({"FGSM": FGSM(), "20-PGD": PGD(steps=20)}, eps=4 / 255)   # any {label: Attack} suite

Rows: ``"Original"`` (clean inputs), one per attack (its label), and ``"Worst case"``: per sample the worst of
the clean input and every attack of the suite within its budget (classification: a sample counts as correct only
if the clean input and every pooled attack leave it correct, as AutoAttack/RobustBench report robust accuracy;
segmentation: the lowest Dice per sample, the other metrics taken from that same input). An attack is pooled only
when it is bounded and every perturbation it made lies within its budget (:func:`within_budget`): unbounded
Gaussian noise (``unet-paper``'s ``GN``, L-inf ~0.3 against eps 8/255) keeps its own row but is no worst case at
the budget. ``meta["worst_case_pool"]`` lists the pooled rows, ``meta["worst_case_excluded"]`` the others and why.

The task is given (``task="classification"`` / ``"segmentation"``) or, with ``task=None``, inferred from the first
batch's output and labels (:func:`infer_task`); a given task that contradicts their shapes is a ``ValueError``
naming them (:func:`check_task`), before any attack runs.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from monai.inferers import Inferer

from monai_dpaat.attacks import Attack, canonical_name, default_loss, restore_model_state
from monai_dpaat.attacks.base import EPS_UNITS, with_eps_units
from monai_dpaat.conventions import image_and_label, per_sample_losses, primary_output
from monai_dpaat.networks.inferer_network import InfererNetwork
from monai_dpaat.training.utils import unwrap_parallel
from monai_dpaat.utils import unique_keys

from .metrics import (
    SegmentationMetrics,
    classification_summary,
    perturbation_norms,
    scores_from_logits,
    summarize_segmentation,
)
from .presets import PRESETS, preset

__all__ = [
    "ORIGINAL",
    "WORST_CASE",
    "SuiteEntry",
    "RobustnessResult",
    "RobustnessEvaluator",
    "InfererNetwork",
    "build_suite",
    "attack_info",
    "within_budget",
    "worst_case_pool",
    "infer_task",
    "check_task",
]

ORIGINAL = "Original"
WORST_CASE = "Worst case"
TASKS = ("classification", "segmentation")

#: relative slack of :func:`within_budget` on the budget (the float rounding of ``x + delta`` is added to it)
BUDGET_RTOL = 1e-4


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


SUITE_FORMS = ("a preset name (" + ", ".join(sorted(PRESETS)) + "), a {label: Attack} mapping or a list of "
               "Attacks (in a bundle config: attack objects {'_target_': 'monai_dpaat.attacks.PGD', ...})")


def _default_label(attack: Attack) -> str:
    """``"PGD"``, ``"I-FGSM"``, ``"GN"``: the registry's name of the attack's class, upper-cased."""
    return str(attack.config()["name"]).upper()


def _labelled_attacks(attacks: Any, eps: float | None) -> list[tuple[str, Attack]]:
    """``(label, attack)`` pairs of a suite description, at budget ``eps`` when given (see :func:`build_suite`)."""
    if isinstance(attacks, str):
        key = attacks.strip().lower().replace("_", "-")
        if key not in PRESETS:
            hint = (" (a list of names is no longer a suite: pass {label: Attack}, e.g. {'20-PGD': "
                    "build_attack('pgd', steps=20)}, or preset(name, only=[...]))")
            raise ValueError(f"unknown preset {attacks!r}; attacks must be {SUITE_FORMS}{hint}")
        return list(preset(key, eps=eps).items())  # a preset is built at the budget (GN keeps its own)
    if isinstance(attacks, Mapping):
        pairs = [(str(label), attack) for label, attack in attacks.items()]
    elif isinstance(attacks, (list, tuple)):
        pairs = [(None, attack) for attack in attacks]
    else:
        raise ValueError(f"attacks must be {SUITE_FORMS}; got {type(attacks).__name__}")
    for label, attack in pairs:
        if not isinstance(attack, Attack):
            where = f"attacks[{label!r}]" if label is not None else "every entry of the attack list"
            raise ValueError(f"{where} must be an Attack, got {attack!r}: in Python pass Attack objects (e.g. "
                             "build_attack('pgd', steps=20)); in a bundle config write a {'_target_': "
                             "'monai_dpaat.attacks.PGD', ...} object (MONAI instantiates it)")
    if not pairs:
        raise ValueError(f"the attack suite is empty; attacks must be {SUITE_FORMS}")
    return [(label if label is not None else _default_label(attack), attack if eps is None else attack.with_eps(eps))
            for label, attack in pairs]


def build_suite(attacks: Any, eps: float | None = None, loss_function: Callable | None = None,
                generator: torch.Generator | None = None, eps_units: str | None = None) -> list[SuiteEntry]:
    """The :class:`SuiteEntry` list of a suite.

    Args:
        attacks: a preset name (``"dpaat-table"``, ``"unet-paper"``), an ordered ``{label: Attack}`` mapping
            (a bundle's ``{"10-PGD": {"_target_": "monai_dpaat.attacks.PGD", ...}}``, or
            :func:`~monai_dpaat.evaluation.preset`'s result) or a list of ``Attack``s (labelled by their
            registry name, ``"PGD"``, ``"GN"``).
        eps: budget of every attack: a preset is built at it, other attacks are copied with
            :meth:`Attack.with_eps` (the step size keeps its ratio to the budget; GN's noise is clipped to it).
            ``None`` keeps their own.
        loss_function, generator: given to (copies of) the attacks left at the default loss / global RNG.
        eps_units: ``"absolute"`` or ``"range"`` (a fraction of each sample's intensity range): the units of every
            attack's budget (:func:`~monai_dpaat.attacks.base.with_eps_units`); ``None`` keeps theirs.

    Labels are made unique (``"PGD"``, ``"PGD (2)"``); ``"Original"`` and ``"Worst case"`` are reserved.
    Raises ``ValueError`` on any other form, naming what is accepted.
    """
    if eps_units is not None and eps_units not in EPS_UNITS:
        raise ValueError(f"eps_units must be one of {EPS_UNITS} or None, got {eps_units!r}")
    entries: list[SuiteEntry] = []
    for label, attack in unique_keys(_labelled_attacks(attacks, eps)).items():
        if label in (ORIGINAL, WORST_CASE):
            raise ValueError(f"attack label {label!r} is reserved")
        if eps_units is not None and attack.eps_units != eps_units:
            attack = with_eps_units(attack, eps_units)
        attack = _with_defaults(attack, loss_function, generator)
        entries.append(SuiteEntry(label, attack, _jsonable(attack.config())))
    return entries


def _shapes(output: Any, labels: Any) -> str:
    out = primary_output(output)
    return f"outputs {tuple(out.shape)} and labels {tuple(torch.as_tensor(labels).shape)}"


def _dense_labels(out: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether ``labels`` are a label map for ``out`` ``(N, K, *spatial)``: ``(N, C, *spatial)`` or ``(N, *spatial)``."""
    spatial = tuple(out.shape[2:])
    return out.ndim >= 3 and labels.ndim >= 2 and tuple(labels.shape[-len(spatial):]) == spatial and \
        labels.ndim in (out.ndim, out.ndim - 1)


def infer_task(output: Any, labels: Any) -> str:
    """The task of a network ``output`` and its ``labels``: outputs ``(N, K)`` -> ``"classification"``; outputs
    ``(N, K, *spatial)`` with labels ``(N, 1 or K, *spatial)`` / ``(N, *spatial)`` -> ``"segmentation"``
    (a deep-supervision list: its first entry). Raises ``ValueError`` naming the shapes otherwise."""
    out = primary_output(output)
    labels = torch.as_tensor(labels)
    if out.ndim == 2:
        task = "classification"
    elif out.ndim >= 3 and _dense_labels(out, labels):
        task = "segmentation"
    else:
        raise ValueError(f"cannot infer the task from {_shapes(output, labels)}: classification needs "
                         f"{_TASK_SHAPES['classification']}, segmentation {_TASK_SHAPES['segmentation']}; "
                         "pass task='classification' or 'segmentation'")
    check_task(task, out, labels)
    return task


_TASK_SHAPES = {
    "classification": "outputs (N, K) and labels (N,), (N, 1) or one-hot (N, K)",
    "segmentation": "outputs (N, K, *spatial) and labels (N, 1, *spatial), (N, *spatial) or one-hot (N, K, *spatial)",
}


def _fits(task: str, out: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether ``out``/``labels`` have the shapes of ``task`` (:data:`_TASK_SHAPES`)."""
    same_n = labels.ndim > 0 and labels.shape[0] == out.shape[0]
    if task == "classification":
        return out.ndim == 2 and labels.ndim <= 2 and same_n
    return _dense_labels(out, labels) and same_n


def check_task(task: str, output: Any, labels: Any) -> None:
    """Raise ``ValueError`` naming the shapes when ``output``/``labels`` do not fit ``task`` (see :func:`infer_task`)."""
    out = primary_output(output)
    labels = torch.as_tensor(labels)
    if _fits(task, out, labels):
        return
    other = "segmentation" if task == "classification" else "classification"
    hint = f" (they fit {other}: pass task={other!r}, or task=None to infer it)" if _fits(other, out, labels) else ""
    raise ValueError(f"task={task!r} needs {_TASK_SHAPES[task]}; got {_shapes(out, labels)}{hint}")


class _Rewound:
    """A data loader's batches with the first one already taken out (to infer the task): yields ``first``, then
    the rest of ``batches``; ``len`` is the loader's."""

    def __init__(self, first: Any, batches: Any, length: int | None) -> None:
        self._batches = itertools.chain([first], batches)
        self._length = length

    def __iter__(self):
        return self._batches

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("the data loader has no length")
        return self._length


def _with_defaults(attack: Attack, loss_function: Callable | None, generator: torch.Generator | None) -> Attack:
    """``attack``, or a copy of it with the evaluator's loss / generator where it has none of its own."""
    give_loss = loss_function is not None and attack.accepts_loss_function and attack.loss_function is default_loss
    give_generator = generator is not None and attack.generator is None
    if not (give_loss or give_generator):
        return attack
    attack = copy.copy(attack)
    if give_loss:
        attack.loss_function = loss_function
    if give_generator:
        attack.generator = generator
    return attack


def attack_info(entry: SuiteEntry) -> dict[str, Any]:
    """``{"name", "eps", "steps", "uses_gradient"}`` of a built attack (``eps = inf`` for unbounded noise),
    the record fields of :func:`monai_dpaat.evaluation.sanity.flags_from_records`."""
    attack = entry.attack
    eps = getattr(attack, "eps", None)
    if getattr(attack, "bounded", True) is False:
        eps = float("inf")
    if isinstance(eps, torch.Tensor):
        eps = float(eps) if eps.numel() == 1 else None
    name = canonical_name(entry.spec.get("name", type(attack).__name__))  # the registry's name: no step count
    return {"name": name, "eps": None if eps is None else float(eps),
            "steps": int(getattr(attack, "steps", 1)), "uses_gradient": bool(getattr(attack, "uses_gradient", True))}


def within_budget(attack: Attack, clean: torch.Tensor, linf: torch.Tensor, l2: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: whether each sample's measured perturbation is inside ``attack``'s budget.

    Args:
        attack: the attack that made the perturbation: its :attr:`~Attack.norm` picks ``linf`` or ``l2``, its
            ``eps`` (a float or ``(N,)``; with ``eps_units="range"`` a fraction of each clean sample's intensity
            range) is the budget. An unbounded attack (``bounded`` False, or an infinite ``eps``) is never inside.
        clean: the clean batch ``(N, C, *spatial)``.
        linf, l2: ``(N,)`` norms of ``adversarial - clean`` (:func:`.metrics.perturbation_norms`).

    The slack is ``BUDGET_RTOL * eps`` plus the float rounding of ``x + delta`` (a few ulps of the sample's
    largest magnitude; times ``sqrt(numel)`` for L2).
    """
    n = clean.shape[0]
    eps = torch.as_tensor(getattr(attack, "eps", math.inf), dtype=torch.float64).detach().cpu().reshape(-1)
    if not getattr(attack, "bounded", True) or not torch.isfinite(eps).all() or eps.numel() not in (1, n):
        return torch.zeros(n, dtype=torch.bool)
    flat = clean.detach().reshape(n, -1).double().cpu()
    if getattr(attack, "eps_units", "absolute") == "range":
        eps = eps * (flat.amax(1) - flat.amin(1))
    l2_norm = str(getattr(attack, "norm", "Linf")).lower().replace("-", "") == "l2"
    measured = l2 if l2_norm else linf
    ulps = 4 * torch.finfo(clean.dtype if clean.is_floating_point() else torch.float32).eps
    rounding = ulps * (1.0 + flat.abs().amax(1)) * (math.sqrt(flat.shape[1]) if l2_norm else 1.0)
    return measured.double().cpu() <= eps * (1 + BUDGET_RTOL) + rounding


def worst_case_pool(labels: Sequence[str], attacks: Mapping[str, Attack],
                    inside: Mapping[str, torch.Tensor]) -> tuple[list[str], dict[str, str]]:
    """The attack rows the worst case pools, and ``{label: why not}`` for the others (in suite order).

    Args:
        labels: the suite's attack labels, in order.
        attacks: ``{label: Attack}``.
        inside: ``{label: (N,) bool}`` of :func:`within_budget` over every sample evaluated.
    """
    pooled, excluded = [], {}
    for label in labels:
        attack, ok = attacks[label], inside[label]
        if not getattr(attack, "bounded", True):
            excluded[label] = "unbounded (no budget: its noise is not clipped to eps)"
        elif not torch.isfinite(torch.as_tensor(getattr(attack, "eps", math.inf))).all():
            excluded[label] = "unbounded (eps = inf)"
        elif not bool(ok.all()):
            excluded[label] = f"perturbation beyond its budget on {int((~ok).sum())} of {ok.numel()} samples"
        else:
            pooled.append(label)
    return pooled, excluded


def _pool_meta(pool: list[str], excluded: dict[str, str], choice: torch.Tensor) -> dict[str, Any]:
    """``worst_case_pool`` (rows pooled, ``"Original"`` first), ``worst_case_excluded`` and ``worst_case_choice``
    (samples whose worst case each pooled row gave) of a result's ``meta``."""
    counts = {pool[i]: int((choice == i).sum()) for i in range(len(pool))}
    return {"worst_case_pool": list(pool), "worst_case_excluded": dict(excluded), "worst_case_choice": counts}


@dataclass
class RobustnessResult:
    """Rows of one model's robustness tables.

    Attributes:
        task: ``"classification"`` or ``"segmentation"``.
        rows: ``{row label: {metric: value}}`` with rows ``"Original"``, each attack, ``"Worst case"`` (over
            ``meta["worst_case_pool"]``: the clean input and the attacks within their budget).
            Classification metrics: accuracy, precision, recall, f1, map, linf, l2 (``accuracy`` of
            ``"Original"`` is the GAcc, of an attack its RAcc; ``map`` is mAP / mARP). Segmentation:
            dice, iou, pixel_accuracy, loss, hd95 (+ hd95_undefined), linf, l2.
        confusion: ``{row label: K x K nested list}`` (classification only).
        attacks: ``{attack label: spec}`` as run.
        num_samples: samples evaluated.
        class_names: optional class names (confusion matrix axes).
        meta: free-form extra information (eps, device, seconds, ``worst_case_pool``, ``worst_case_excluded``
            ``{label: reason}``, ``worst_case_choice`` counts...).
    """

    task: str
    rows: dict[str, dict[str, float]]
    confusion: dict[str, list[list[int]]] = field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    num_samples: int = 0
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

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


def _sample_losses(loss_function: Callable, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(N,)`` float64 CPU losses, the dtype and device :class:`SegmentationMetrics` keeps them in."""
    return per_sample_losses(loss_function, output, labels).double().cpu()


class RobustnessEvaluator:
    """Run an attack suite over a data loader; see the module docstring for the rows.

    Args:
        attacks: a preset name (``"dpaat-table"``, ``"unet-paper"``), an ordered ``{label: Attack}`` mapping
            (e.g. :func:`~monai_dpaat.evaluation.preset`'s) or a list of ``Attack``s (see :func:`build_suite`).
        task: ``"classification"`` (logits ``(N, K)``, labels ``(N,)``), ``"segmentation"`` (logits
            ``(N, K, *spatial)``, labels ``(N, 1, *spatial)``; ``K = 1`` means a sigmoid foreground channel) or
            ``None``: inferred per run from the first batch (:func:`infer_task`). A task that contradicts the
            shapes is a ``ValueError`` naming them.
        eps: budget of every attack (a preset is built at it, other attacks are copied with
            :meth:`~monai_dpaat.attacks.Attack.with_eps`); ``None`` keeps theirs.
        loss_function: ``(logits, labels) -> scalar``; the segmentation ``loss`` metric and the loss of every attack
            left at the default loss.
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
        progress: show a tqdm progress bar (stderr; one step per batch, the attack running in its postfix).
        image_key, label_key: batch dict keys.
        eps_units: units of every attack's budget, ``"absolute"`` or ``"range"`` (see :func:`build_suite`);
            ``None`` keeps the attacks' own.
    """

    def __init__(self, attacks: Any = "dpaat-table", task: str | None = "classification", eps: float | None = None,
                 loss_function: Callable | None = None, inferer: Inferer | None = None,
                 device: str | torch.device | None = None, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, max_samples: int | None = None, hd95: bool = True,
                 seed: int | None = 0, progress: bool = True, image_key: str = "image", label_key: str = "label",
                 eps_units: str | None = None) -> None:
        if task is not None and task not in TASKS:
            raise ValueError(f"task must be one of {TASKS} or None (inferred from the outputs), got {task!r}")
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
        self.eps_units = eps_units
        build_suite(attacks, eps=eps, eps_units=eps_units)  # fail early on an unknown preset, a wrong form or a bad budget

    # ---------------------------------------------------------------------------------------------- public
    def __call__(self, network: nn.Module, data_loader: Iterable, eps: float | None = None) -> RobustnessResult:
        """Evaluate ``network`` on every batch of ``data_loader``; ``eps`` overrides the budget for this run."""
        # DDP's forward broadcasts buffers to every rank: one rank evaluating alone (rank 0's validation handlers)
        # would wait on the others forever, so the wrapped module is evaluated
        network = unwrap_parallel(network)
        device = self.device or next(iter(network.parameters()), torch.zeros(())).device
        network = network.to(device)
        eps = self.eps if eps is None else eps
        suite = build_suite(self.attacks, eps=eps, loss_function=self.loss_function, eps_units=self.eps_units)
        model = InfererNetwork(network, self.inferer) if self.inferer is not None else network
        start = time.perf_counter()
        # a seeded run forks torch's RNG (CPU and the device's), so it is reproducible and leaves the caller's RNG alone
        rng_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices, enabled=self.seed is not None), \
                restore_model_state(network, "eval"):
            if self.seed is not None:
                torch.manual_seed(int(self.seed))
            task = self.task
            if task is None:
                task, data_loader = self._infer_task(model, data_loader, device)
            if task == "classification":
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
    def _infer_task(self, model: nn.Module, data_loader: Iterable, device: torch.device) -> tuple[str, Iterable]:
        """The task of the first batch (:func:`infer_task`, one no-grad forward of its first sample) and the
        batches to run (the first one included)."""
        try:
            length = len(data_loader)  # type: ignore[arg-type]
        except TypeError:
            length = None
        batches = iter(data_loader)
        first = next(batches, None)
        if first is None:
            raise ValueError("the data loader yielded no samples")
        images, labels = image_and_label(first, self.image_key, self.label_key)
        with torch.no_grad():
            out = model(images[:1].to(device).float())
        return infer_task(out, labels[:1]), _Rewound(first, batches, length)

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
                images, labels = image_and_label(batch, self.image_key, self.label_key)
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

    @staticmethod
    def _record_norms(entry: SuiteEntry, adv: torch.Tensor, images: torch.Tensor, norms: dict, inside: dict) -> None:
        """Append the batch's perturbation norms ``(N,)`` and whether each is inside the attack's budget."""
        linf, l2 = perturbation_norms(adv, images)
        norms[entry.label].append((linf, l2))
        inside[entry.label].append(within_budget(entry.attack, images, linf, l2))

    @staticmethod
    def _pool(suite: list[SuiteEntry], inside: dict[str, list[torch.Tensor]]) -> tuple[list[str], dict[str, str]]:
        """The worst case's rows (``"Original"`` and the attacks within budget) and the excluded attacks."""
        pooled, excluded = worst_case_pool([e.label for e in suite], {e.label: e.attack for e in suite},
                                           {label: torch.cat(v) for label, v in inside.items()})
        return [ORIGINAL] + pooled, excluded

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
        inside: dict[str, list[torch.Tensor]] = {e.label: [] for e in suite}
        all_labels: list[torch.Tensor] = []
        for images, labels, bar in self._batches(data_loader, suite):
            images = images.to(device).float()
            with torch.no_grad():
                logits = model(images)
            check_task("classification", logits, labels)  # before the labels are reshaped: name what came in
            labels = self._class_labels(labels).to(device)
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
                self._record_norms(entry, adv, images, norms, inside)
            all_labels.append(labels.cpu())
        if not all_labels:
            raise ValueError("the data loader yielded no samples")
        y = torch.cat(all_labels)
        k = self.num_classes or probs[ORIGINAL][0].shape[1]
        stacked = {n: torch.cat(v) for n, v in probs.items()}
        linf = {n: torch.cat([a for a, _ in v]) for n, v in norms.items()}
        l2 = {n: torch.cat([b for _, b in v]) for n, v in norms.items()}

        # worst case: per sample, among clean + the attacks within budget, a wrong prediction first, then the
        # lowest true-class prob
        pool, excluded = self._pool(suite, inside)
        cand = torch.stack([stacked[n] for n in pool])  # (R, N, K)
        true_p = cand.gather(2, y.view(1, -1, 1).expand(len(pool), -1, 1))[..., 0]  # (R, N)
        wrong = (cand.argmax(2) != y.view(1, -1)).double()
        choice = torch.argmin(true_p.double() - 2.0 * wrong, dim=0)  # (N,)
        idx = torch.arange(y.shape[0])
        stacked[WORST_CASE] = cand[choice, idx]
        linf[WORST_CASE] = torch.stack([linf[n] for n in pool])[choice, idx]
        l2[WORST_CASE] = torch.stack([l2[n] for n in pool])[choice, idx]

        rows, confusion = {}, {}
        for n in names + [WORST_CASE]:
            summary = classification_summary(stacked[n], y, k)
            confusion[n] = summary.pop("confusion")
            summary["linf"] = float(linf[n].mean())
            summary["l2"] = float(l2[n].mean())
            rows[n] = summary
        return RobustnessResult("classification", rows, confusion, num_samples=int(y.shape[0]),
                                class_names=self.class_names,
                                meta={**_pool_meta(pool, excluded, choice), "num_classes": k})

    # ---------------------------------------------------------------------------------------------- segmentation
    def _run_segmentation(self, model, data_loader, suite, device) -> RobustnessResult:
        names = [ORIGINAL] + [e.label for e in suite]
        metrics = {n: SegmentationMetrics(hd95=self.hd95) for n in names}
        norms: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {n: [] for n in names}
        inside: dict[str, list[torch.Tensor]] = {e.label: [] for e in suite}
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
            out = primary_output(out)
            check_task("segmentation", out, labels)
            k = out.shape[1]
            top = 1 if k == 1 else k - 1
            if labels.numel() and (labels.min() < 0 or labels.max() > top):
                raise ValueError(f"segmentation label values must lie in [0, {top}] for a {k}-channel output, "
                                 f"got range [{float(labels.min())}, {float(labels.max())}]")
            metrics[ORIGINAL].update(out, labels, _sample_losses(loss_fn, out, labels))
            zero = torch.zeros(images.shape[0], dtype=torch.float64)
            norms[ORIGINAL].append((zero, zero))
            for entry in suite:
                adv = self._attack(entry, model, images, labels, bar)
                with torch.no_grad():
                    adv_out = model(adv)
                adv_out = primary_output(adv_out)
                metrics[entry.label].update(adv_out, labels, _sample_losses(loss_fn, adv_out, labels))
                self._record_norms(entry, adv, images, norms, inside)
        per_sample = {n: metrics[n].per_sample() for n in names}
        if per_sample[ORIGINAL]["dice"].numel() == 0:
            raise ValueError("the data loader yielded no samples")
        for n in names:
            per_sample[n]["linf"] = torch.cat([a for a, _ in norms[n]])
            per_sample[n]["l2"] = torch.cat([b for _, b in norms[n]])

        # worst case: per sample, among clean + the attacks within budget, the lowest Dice (NaN Dice = empty
        # ground truth: the highest loss decides)
        pool, excluded = self._pool(suite, inside)
        dice = torch.stack([per_sample[n]["dice"] for n in pool])  # (R, N)
        loss = torch.stack([per_sample[n]["loss"] for n in pool])
        key = torch.where(torch.isnan(dice), torch.full_like(dice, 2.0), dice)
        choice = torch.argmin(key, dim=0)
        no_dice = torch.isnan(dice).all(0)
        choice = torch.where(no_dice, torch.argmax(loss, dim=0), choice)
        idx = torch.arange(dice.shape[1])
        worst = {m: torch.stack([per_sample[n][m] for n in pool])[choice, idx] for m in per_sample[ORIGINAL]}

        rows = {}
        for n in names:
            row = summarize_segmentation({m: v for m, v in per_sample[n].items() if m not in ("linf", "l2")}, self.hd95)
            row["linf"] = float(per_sample[n]["linf"].mean())
            row["l2"] = float(per_sample[n]["l2"].mean())
            rows[n] = row
        row = summarize_segmentation({m: v for m, v in worst.items() if m not in ("linf", "l2")}, self.hd95)
        row["linf"], row["l2"] = float(worst["linf"].mean()), float(worst["l2"].mean())
        rows[WORST_CASE] = row
        return RobustnessResult("segmentation", rows, num_samples=int(dice.shape[1]), class_names=self.class_names,
                                meta=_pool_meta(pool, excluded, choice))
