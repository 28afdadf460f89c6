"""Robustness validation inside MONAI training: every N epochs run an attack suite and publish the results as
``robust_*`` entries of ``engine.state.metrics`` (``TensorBoardStatsHandler`` and ``StatsHandler`` then log
the clean and robust curves together)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from monai.utils import IgniteInfo, min_version, optional_import

from monai_dpaat.evaluation.suite import RobustnessEvaluator, RobustnessResult

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["RobustnessValidationHandler", "metric_key"]


def metric_key(prefix: str, row: str, metric: str) -> str:
    """``engine.state.metrics`` key of a table cell: ``metric_key("robust_", "20-PGD", "accuracy")`` ->
    ``"robust_20_pgd_accuracy"``; ``"Worst case"`` -> ``robust_worst_case_...``; ``"Original"`` -> ``robust_clean_...``."""
    row = "clean" if row == "Original" else row
    slug = re.sub(r"[^0-9a-z]+", "_", row.lower()).strip("_")
    return f"{prefix}{slug}_{metric}"


class RobustnessValidationHandler:
    """Run a :class:`~monai_dpaat.evaluation.RobustnessEvaluator` every ``interval`` epochs of the engine it is
    attached to (a ``SupervisedTrainer``, or a ``SupervisedEvaluator`` whose epoch is the trainer's) and write
    the selected table cells to ``engine.state.metrics``.

    Keys (see :func:`metric_key`): ``robust_clean_accuracy``, ``robust_fgsm_accuracy``, ...,
    ``robust_worst_case_accuracy`` (classification; ``*_dice`` etc. for segmentation). Attach it *before*
    ``TensorBoardStatsHandler``/``StatsHandler`` on the same engine (in a bundle, list it first): handlers of
    an event run in attach order. Keys are removed at the start of epochs it does not run on, so no stale
    value is logged.

    Args:
        attacks: a preset name, an ordered ``{label: Attack}`` mapping or a list of ``Attack``s (see
            :func:`~monai_dpaat.evaluation.build_suite`); in a bundle config
            ``{"10-PGD": {"_target_": "monai_dpaat.attacks.PGD", "eps": "$8/255", "steps": 10}}``.
        data_loader: batches of ``{"image", "label"}``; ``None`` reuses ``engine.data_loader`` (e.g. the
            validation loader of the evaluator it is attached to).
        interval: run every ``interval`` epochs.
        task: ``"classification"`` or ``"segmentation"``.
        network: the model; ``None`` uses ``engine.network``.
        eps: budget override of the suite.
        metrics: table metrics to publish (default ``("accuracy",)`` / ``("dice",)``).
        rows: rows to publish (default all: clean, every attack, worst case).
        prefix: key prefix (default ``"robust_"``).
        max_samples: evaluate at most this many samples per run (keeps training fast).
        inferer: e.g. a ``SlidingWindowInferer`` for large segmentation tiles.
        loss_function, device, seed, hd95: see :class:`~monai_dpaat.evaluation.RobustnessEvaluator`.
        report_dir: also write the full report (no plots) there after every run.
        evaluator: a ready :class:`~monai_dpaat.evaluation.RobustnessEvaluator` (the arguments above that
            configure one are then ignored).
    """

    def __init__(self, attacks: Any = "dpaat-table", data_loader: Iterable | None = None, interval: int = 1,
                 task: str = "classification", network: torch.nn.Module | None = None, eps: float | None = None,
                 metrics: Sequence[str] | None = None, rows: Sequence[str] | None = None, prefix: str = "robust_",
                 max_samples: int | None = None, inferer: Any = None, loss_function: Callable | None = None,
                 device: str | torch.device | None = None, seed: int | None = 0, hd95: bool = False,
                 report_dir: str | None = None, evaluator: RobustnessEvaluator | None = None) -> None:
        if int(interval) < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.evaluator = evaluator or RobustnessEvaluator(
            attacks=attacks, task=task, eps=eps, loss_function=loss_function, inferer=inferer, device=device,
            max_samples=max_samples, hd95=hd95, seed=seed, progress=False)
        self.data_loader = data_loader
        self.interval = int(interval)
        self.network = network
        task = self.evaluator.task
        self.metrics = tuple(metrics) if metrics is not None else (("accuracy",) if task == "classification" else ("dice",))
        self.rows = tuple(rows) if rows is not None else None
        self.prefix = prefix
        self.report_dir = report_dir
        self.last_result: RobustnessResult | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._clear)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _due(self, engine: Engine) -> bool:
        return engine.state.epoch % self.interval == 0

    def _clear(self, engine: Engine) -> None:
        if not self._due(engine):
            for key in [k for k in engine.state.metrics if k.startswith(self.prefix)]:
                del engine.state.metrics[key]

    def __call__(self, engine: Engine) -> None:
        if not self._due(engine):
            return
        network = self.network if self.network is not None else getattr(engine, "network", None)
        if network is None:
            raise ValueError("RobustnessValidationHandler needs a network: pass network= or attach to a MONAI engine")
        loader = self.data_loader if self.data_loader is not None else getattr(engine, "data_loader", None)
        if loader is None:
            raise ValueError("RobustnessValidationHandler needs a data_loader (the engine has none)")
        result = self.evaluator(network, loader)
        self.last_result = result
        for row, values in result.rows.items():
            if self.rows is not None and row not in self.rows:
                continue
            for metric in self.metrics:
                if metric not in values:
                    raise ValueError(f"metric {metric!r} is not in the robustness rows; known: {sorted(values)}")
                engine.state.metrics[metric_key(self.prefix, row, metric)] = float(values[metric])
        if self.report_dir is not None:
            from monai_dpaat.evaluation.report import write_report

            write_report(result, self.report_dir, plots=False, title=f"Robustness at epoch {engine.state.epoch}")
        summary = ", ".join(f"{k}={v:.4f}" for k, v in engine.state.metrics.items() if k.startswith(self.prefix))
        self.logger.info("epoch %d robustness: %s", engine.state.epoch, summary)
