"""Epoch-level logging of adversarial training: running means of the per-iteration numbers into
``engine.state.metrics`` (so ``StatsHandler``/``TensorBoardStatsHandler`` print and plot them like any
metric) and a per-epoch TensorBoard histogram of the per-sample epsilon table (AMAT, DPAAT)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from monai.utils import IgniteInfo, min_version, optional_import

from monai_dpaat.training.utils import AdvKeys

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["AdversarialStatsHandler", "adversarial_output_transform", "DEFAULT_KEYS"]

#: numbers the training iterations publish: the values of :class:`monai_dpaat.training.utils.AdvKeys`
DEFAULT_KEYS = tuple(value for name, value in vars(AdvKeys).items() if not name.startswith("_"))


def adversarial_output_transform(keys: Sequence[str] = ("loss",) + DEFAULT_KEYS):
    """``output_transform`` for ``StatsHandler``/``TensorBoardStatsHandler`` iteration logs: a dict of the
    given keys present in ``engine.state.output`` (a decollated list, or a dict when ``decollate=False``)."""

    def _transform(output: Any) -> dict[str, float]:
        item = output[0] if isinstance(output, (list, tuple)) and output else output
        if not isinstance(item, dict):
            return {}
        return {k: float(torch.as_tensor(item[k]).float().mean()) for k in keys if k in item}

    return _transform


class AdversarialStatsHandler:
    """Make adversarial-training numbers visible per epoch.

    - ``ITERATION_COMPLETED``: running means, over the current epoch, of ``engine.state.adversarial``
      (written by the training iteration) go to ``engine.state.metrics[prefix + key]``; after the last
      iteration they are the epoch means, whatever the handler order, so ``StatsHandler`` and
      ``TensorBoardStatsHandler`` log them at ``EPOCH_COMPLETED``.
      When the iteration keeps a per-sample ``epsilon`` table, its current mean/min/max go to
      ``engine.state.metrics[prefix + "table_eps_mean|min|max"]`` too.
    - ``EPOCH_COMPLETED``: with a ``summary_writer`` (or ``log_dir``), a histogram ``tag`` of the whole
      epsilon table is added for the epoch (TensorBoard's HISTOGRAMS tab).

    Args:
        iteration_update: the object with the ``epsilon`` table; default: the engine's process function
            (the ``iteration_update`` given to ``SupervisedTrainer``).
        summary_writer: a ``torch.utils.tensorboard.SummaryWriter`` (e.g. the one given to
            ``TensorBoardStatsHandler``); or ``log_dir`` to create one. Neither: no histogram.
        prefix: prefix of the metric names (default ``"adv_"``).
        tag: histogram tag (default ``"epsilon"``).
    """

    def __init__(
        self,
        iteration_update: Any = None,
        summary_writer: Any = None,
        log_dir: str | None = None,
        prefix: str = "adv_",
        tag: str = "epsilon",
    ) -> None:
        self.iteration_update = iteration_update
        if summary_writer is None and log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            summary_writer = SummaryWriter(log_dir=log_dir)
        self.summary_writer = summary_writer
        self.prefix = prefix
        self.tag = tag
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._sums.clear()
        self._counts.clear()

    def iteration_completed(self, engine: Engine) -> None:
        values = getattr(engine.state, "adversarial", None) or {}
        for key, value in values.items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
            self._counts[key] = self._counts.get(key, 0) + 1
            engine.state.metrics[self.prefix + key] = self._sums[key] / self._counts[key]
        eps = self.epsilon_table(engine)
        if eps is not None:
            eps = eps.detach().float()
            engine.state.metrics[self.prefix + "table_eps_mean"] = float(eps.mean())
            engine.state.metrics[self.prefix + "table_eps_min"] = float(eps.min())
            engine.state.metrics[self.prefix + "table_eps_max"] = float(eps.max())

    def epsilon_table(self, engine: Engine) -> torch.Tensor | None:
        source = self.iteration_update
        if source is None:
            source = getattr(engine, "_process_function", None)
        eps = getattr(source, "epsilon", None)
        return eps if isinstance(eps, torch.Tensor) else None

    def epoch_completed(self, engine: Engine) -> None:
        eps = self.epsilon_table(engine)
        if eps is not None and self.summary_writer is not None:
            self.summary_writer.add_histogram(self.tag, eps.detach().float().cpu().numpy(), engine.state.epoch)
            self.summary_writer.flush()
