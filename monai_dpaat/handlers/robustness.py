"""Robustness validation inside MONAI training: every N epochs and on the final epoch (and on every run of a
standalone evaluator) run an attack suite and publish the results as ``robust_*`` entries of
``engine.state.metrics`` before the epoch completes (``TensorBoardStatsHandler`` and ``StatsHandler``, wherever they
are listed, then log the clean and robust curves together)."""

from __future__ import annotations

import inspect
import logging
import re
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from monai.utils import IgniteInfo, min_version, optional_import

from monai.engines import Evaluator

from monai_dpaat.attacks import PGD
from monai_dpaat.evaluation.suite import RobustnessEvaluator, RobustnessResult

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["RobustnessValidationHandler", "metric_key", "default_attacks", "driving_engine",
           "last_iteration_of_epoch", "unsharded"]

#: the label of the default attack (:func:`default_attacks`): ``robust_10_pgd_accuracy`` / ``robust_10_pgd_dice``
DEFAULT_LABEL = "10-PGD"


def metric_key(prefix: str, row: str, metric: str) -> str:
    """``engine.state.metrics`` key of a table cell: ``metric_key("robust_", "20-PGD", "accuracy")`` ->
    ``"robust_20_pgd_accuracy"``; ``"Worst case"`` -> ``robust_worst_case_...``; ``"Original"`` -> ``robust_clean_...``."""
    row = "clean" if row == "Original" else row
    slug = re.sub(r"[^0-9a-z]+", "_", row.lower()).strip("_")
    return f"{prefix}{slug}_{metric}"


def default_attacks(eps: float = 8 / 255) -> dict[str, PGD]:
    """The handler's default suite: one 10-step L-inf PGD at ``eps`` (step ``eps / 4``, random start), labelled
    ``"10-PGD"``: a fraction of the ``"dpaat-table"`` preset's cost (its 50-step PGD alone is five times this), so
    validating every few epochs stays cheap; pass ``attacks="dpaat-table"`` for the papers' table."""
    return {DEFAULT_LABEL: PGD(eps=eps, alpha=eps / 4, steps=10)}


def driving_engine(engine: Engine) -> Engine | None:
    """The engine whose event handler is running ``engine`` right now (the trainer whose ``ValidationHandler``
    runs this evaluator), or None when ``engine`` runs on its own. Ignite runs handlers synchronously, so that
    engine is the nearest other ``Engine`` on the call stack (read only, nothing is changed)."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, Engine) and owner is not engine:
                return owner
            frame = frame.f_back
        return None
    finally:
        del frame  # no reference cycle through the frames


def unsharded(loader: Any) -> Any:
    """``loader`` itself, or, when it reads through a ``DistributedSampler`` (a Model Zoo ``multi_gpu_*.json``),
    a loader over its whole dataset in order with the same batch size and collate function: robust validation
    runs on rank 0 only (their ``val_handlers`` are ``None`` elsewhere) and would otherwise see rank 0's share
    while their clean metrics are reduced over all ranks."""
    from torch.utils.data import DataLoader, DistributedSampler

    if not isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader
    return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False, collate_fn=loader.collate_fn,
                      num_workers=loader.num_workers)


def last_iteration_of_epoch(engine: Engine, event: int | None = None) -> bool:
    """Ignite event filter: whether ``engine`` is at the last iteration of its epoch (``state.iteration`` a
    multiple of ``state.epoch_length``; ignite's iteration counter is global over epochs, a MONAI evaluator's
    restarts at every run). False while the epoch length is unknown (a loader without ``len``, first epoch)."""
    length = engine.state.epoch_length
    return length is not None and length > 0 and engine.state.iteration % length == 0


class RobustnessValidationHandler:
    """Run a :class:`~monai_dpaat.evaluation.RobustnessEvaluator` on the epochs of training it is due and write
    the selected table cells to ``engine.state.metrics``.

    When it runs (:meth:`due`), attached to a ``SupervisedTrainer``, or to a ``SupervisedEvaluator`` whose run
    a trainer drives (``ValidationHandler``; the epoch is the trainer's):

    - every ``interval`` epochs, and on the trainer's final epoch (``final_epoch=True``), so a run shorter than
      ``interval`` epochs still ends with robust numbers;
    - on every run of an evaluator that no trainer drives (an evaluate-only run, ``evaluator.run()``).

    Keys (see :func:`metric_key`): ``robust_clean_accuracy``, ``robust_10_pgd_accuracy``, ...,
    ``robust_worst_case_accuracy`` (classification; ``*_dice`` etc. for segmentation). They are written on the
    epoch's last ``ITERATION_COMPLETED`` (see :meth:`attach`), so every ``EPOCH_COMPLETED`` handler of the engine
    (``StatsHandler``, ``TensorBoardStatsHandler``, a ``CheckpointSaver`` keyed on a robust metric) sees them,
    whether it is listed before or after this one (a bundle appending this handler to their ``validate#handlers``).
    Keys are removed at the start of epochs it does not run on, so no stale value is logged. Each run logs one
    INFO line ``epoch <e> robustness: <key>=<value>, ... (<s> s)``.

    Args:
        attacks: ``None`` (default: :func:`default_attacks`, one 10-step PGD at ``eps``, labelled ``"10-PGD"``), a
            preset name (``"dpaat-table"``: the papers' five attacks, much slower), an ordered
            ``{label: Attack}`` mapping or a list of ``Attack``s (see :func:`~monai_dpaat.evaluation.build_suite`);
            in a bundle config ``{"10-PGD": {"_target_": "monai_dpaat.attacks.PGD", "eps": "$8/255", "steps": 10}}``.
        data_loader: batches of ``{"image", "label"}``; ``None`` reuses ``engine.data_loader`` (e.g. the
            validation loader of the evaluator it is attached to).
        interval: run every ``interval`` epochs.
        task: ``None`` (default: inferred from the first batch's outputs and labels, see
            :func:`~monai_dpaat.evaluation.suite.infer_task`), ``"classification"`` or ``"segmentation"``; a task
            that contradicts the shapes is a ``ValueError`` naming them.
        network: the model; ``None`` uses ``engine.network``.
        eps: budget of every attack (default attack: 8/255); in ``eps_units``.
        eps_units: ``"absolute"`` (the data's units), ``"range"`` (a fraction of each sample's intensity range
            ``max - min``, for z-scored inputs; the absolute value is logged) or ``None`` (the attacks' own;
            the default attack's is absolute).
        metrics: table metrics to publish (default ``("accuracy",)`` / ``("dice",)`` by the task).
        rows: rows to publish (default all: clean, every attack, worst case).
        prefix: key prefix (default ``"robust_"``).
        max_samples: evaluate at most this many samples per run (keeps training fast).
        inferer: e.g. a ``SlidingWindowInferer`` for large segmentation tiles.
        loss_function, device, seed, hd95: see :class:`~monai_dpaat.evaluation.RobustnessEvaluator`.
        report_dir: also write the full report (no plots) there after every run.
        evaluator: a ready :class:`~monai_dpaat.evaluation.RobustnessEvaluator` (the arguments above that
            configure one are then ignored).
        final_epoch: also run on the trainer's final epoch (``epoch == max_epochs``).
        progress: a tqdm bar on stderr per run (one step per batch, the running attack in its postfix).
    """

    def __init__(self, attacks: Any = None, data_loader: Iterable | None = None, interval: int = 1,
                 task: str | None = None, network: torch.nn.Module | None = None, eps: float | None = None,
                 metrics: Sequence[str] | None = None, rows: Sequence[str] | None = None, prefix: str = "robust_",
                 max_samples: int | None = None, inferer: Any = None, loss_function: Callable | None = None,
                 device: str | torch.device | None = None, seed: int | None = 0, hd95: bool = False,
                 report_dir: str | None = None, evaluator: RobustnessEvaluator | None = None,
                 final_epoch: bool = True, progress: bool = True, eps_units: str | None = None) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        if attacks is None:
            attacks = default_attacks() if eps is None else default_attacks(eps)
        self.evaluator = evaluator or RobustnessEvaluator(
            attacks=attacks, task=task, eps=eps, loss_function=loss_function, inferer=inferer, device=device,
            max_samples=max_samples, hd95=hd95, seed=seed, progress=progress, eps_units=eps_units)
        self.data_loader = data_loader
        self.interval = int(interval)
        self.final_epoch = bool(final_epoch)
        self.network = network
        self.metrics = tuple(metrics) if metrics is not None else None
        self.rows = tuple(rows) if rows is not None else None
        self.prefix = prefix
        self.report_dir = report_dir
        self.last_result: RobustnessResult | None = None
        self.logger = logging.getLogger(__name__)
        self._pending: weakref.WeakSet = weakref.WeakSet()  # engines whose current epoch is due and not yet run
        self._warned_late = False

    def attach(self, engine: Engine) -> None:
        """Decide at ``EPOCH_STARTED`` whether the epoch is due (:meth:`due`), run on its last
        ``ITERATION_COMPLETED``, and at ``EPOCH_COMPLETED`` only if that did not happen (the epoch length unknown
        until the loader ended, or the epoch terminated early; a warning says so once).

        Why the last iteration: ignite runs an event's handlers in attach order, and a bundle override appends
        this handler after their ``StatsHandler``/``TensorBoardStatsHandler``, which log at ``EPOCH_COMPLETED``.
        Ignite has no public way to run a handler first, and an ignite ``Metric`` would also complete at
        ``EPOCH_COMPLETED`` and need their ``key_val_metric``/``additional_metrics`` edited (metrics attach before
        handlers). Nothing clears ``state.metrics`` between the last iteration and the epoch's end, and ignite
        leaves the loop at ``epoch_length`` without asking its loader for another batch, so the suite can iterate
        the same loader there.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=last_iteration_of_epoch), self._run_pending)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def due(self, engine: Engine) -> bool:
        """Whether this epoch of ``engine`` gets robust validation (see the class docstring)."""
        driver = driving_engine(engine)
        if driver is None and isinstance(engine, Evaluator):
            return True  # a standalone evaluator: every run
        state = (driver or engine).state
        final = self.final_epoch and state.max_epochs is not None and state.epoch >= state.max_epochs
        return state.epoch % self.interval == 0 or final

    def _epoch_started(self, engine: Engine) -> None:
        # decided once per epoch, while the driving trainer is on the call stack; the mark is ours (a weak set of
        # engines), nothing is written to the engine but its metrics
        if self.due(engine):
            self._pending.add(engine)
            return
        self._pending.discard(engine)
        for key in [k for k in engine.state.metrics if k.startswith(self.prefix)]:
            del engine.state.metrics[key]

    def _run_pending(self, engine: Engine) -> None:
        if engine in self._pending:
            self._pending.discard(engine)
            self.run(engine)

    def _epoch_completed(self, engine: Engine) -> None:
        if engine in self._pending and not self._warned_late:
            self._warned_late = True
            self.logger.warning(
                "robust validation runs at EPOCH_COMPLETED (the epoch length is not known before the loader ends, "
                "or the epoch was terminated): handlers attached before it log this epoch without the %s* metrics",
                self.prefix)
        self._run_pending(engine)

    def _metrics(self, task: str) -> tuple[str, ...]:
        if self.metrics is not None:
            return self.metrics
        return ("accuracy",) if task == "classification" else ("dice",)

    def __call__(self, engine: Engine) -> None:
        """Run the suite on ``engine`` if this epoch is due (:meth:`due`); a handler to call from any event."""
        if self.due(engine):
            self.run(engine)

    def run(self, engine: Engine) -> None:
        """Run the suite now and write the selected cells to ``engine.state.metrics`` (see the class docstring)."""
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if network is None:
            raise ValueError("RobustnessValidationHandler needs a network: pass network= or attach to a MONAI engine")
        loader = self.data_loader if self.data_loader is not None else getattr(engine, "data_loader", None)
        if loader is None:
            raise ValueError("RobustnessValidationHandler needs a data_loader (the engine has none)")
        start = time.perf_counter()
        result = self.evaluator(network, unsharded(loader))
        self.last_result = result
        metrics = self._metrics(result.task)
        for row, values in result.rows.items():
            if self.rows is not None and row not in self.rows:
                continue
            for metric in metrics:
                if metric not in values:
                    raise ValueError(f"metric {metric!r} is not in the robustness rows; known: {sorted(values)}")
                engine.state.metrics[metric_key(self.prefix, row, metric)] = float(values[metric])
        if self.report_dir is not None:
            from monai_dpaat.evaluation.report import write_report

            write_report(result, self.report_dir, plots=False, title=f"Robustness at epoch {engine.state.epoch}")
        summary = ", ".join(f"{k}={v:.4f}" for k, v in engine.state.metrics.items() if k.startswith(self.prefix))
        self.logger.info("epoch %d robustness: %s (%s, %d samples, %.1f s)", engine.state.epoch, summary, result.task,
                         result.num_samples, time.perf_counter() - start)
