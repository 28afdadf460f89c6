"""Single-label classification metrics for a ``SupervisedTrainer``/``SupervisedEvaluator``, one scalar each in
``engine.state.metrics`` (so ``StatsHandler``, ``TensorBoardStatsHandler``, ``CheckpointSaver`` and early stopping
use them like any metric).

Why not the usual bundle lines: on the decollated one-hot ``pred``/``label`` of a MONAI bundle,
``ignite.metrics.Accuracy`` sees ``(1, K)`` binary tensors and scores the ``K`` one-hot entries one by one
(``1 - 2 * errors / (K * N)``, not the accuracy), and MONAI's ``ConfusionMatrix(metric_name="f1 score")`` sums the
counts over classes before the F1 (micro-F1, always equal to the accuracy). :class:`ClassificationMetric` counts
the ``K x K`` confusion matrix of the class indices and scores it with
:func:`monai_dpaat.evaluation.metrics.scores_from_confusion`, the definition of the robustness report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from monai_dpaat.conventions import class_indices
from monai_dpaat.evaluation.metrics import confusion_matrix, scores_from_confusion

__all__ = ["ClassificationMetric", "METRICS"]

#: what :class:`ClassificationMetric` can report: the accuracy and the macro (class-mean) scores
METRICS = ("accuracy", "precision", "recall", "f1")


class ClassificationMetric(Metric):
    """Accuracy or macro precision / recall / F1 (scikit-learn's ``average="macro"``) over every sample of a run.

    ``update((y_pred, y))`` takes ``y_pred`` ``(B, K)`` (one-hot, probabilities or logits: the argmax is the
    prediction) and ``y`` ``(B, K)`` one-hot or ``(B,)`` / ``(B, 1)`` class indices; the decollated lists of
    ``monai.handlers.from_engine(["pred", "label"])`` arrive as one ``(1, K)`` pair per sample (ignite batches
    them). The ``K x K`` confusion matrix is summed over processes before :meth:`compute`, so a distributed
    validation scores all its samples.

    Args:
        metric: one of :data:`METRICS`.
        num_classes: ``K`` (at least 2; a single sigmoid logit is not a ``(B, K)`` score).
        output_transform: maps the engine's output to ``(y_pred, y)``.
        device: where the confusion matrix is counted.
    """

    def __init__(self, metric: str, num_classes: int, output_transform: Callable = lambda x: x,
                 device: str | torch.device = "cpu") -> None:
        if metric not in METRICS:
            raise ValueError(f"ClassificationMetric: metric must be one of {METRICS}, got {metric!r}")
        if int(num_classes) < 2:
            raise ValueError(f"ClassificationMetric: num_classes must be >= 2, got {num_classes}")
        self.metric, self.num_classes = metric, int(num_classes)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64, device=self._device)

    def _indices(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,)`` predicted and true class indices."""
        k = self.num_classes
        if y_pred.ndim != 2 or y_pred.shape[1] != k:
            raise ValueError(f"ClassificationMetric: y_pred must be (B, {k}) scores, got shape {tuple(y_pred.shape)}")
        if y.ndim == 2 and y.shape[1] == k and not bool(((y == 0) | (y == 1)).all() and (y.sum(1) == 1).all()):
            raise ValueError("ClassificationMetric: a (B, K) y must be one-hot (one label per sample)")
        if y.shape[:1] != y_pred.shape[:1] or not (y.ndim == 1 or (y.ndim == 2 and y.shape[1] in (1, k))):
            raise ValueError(f"ClassificationMetric: y must be (B, {k}) one-hot or (B,) indices with B = "
                             f"{y_pred.shape[0]}, got shape {tuple(y.shape)}")
        return y_pred.argmax(1), class_indices(y, k)

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        y_pred, y = (torch.as_tensor(t).detach() for t in output[:2])
        pred, label = self._indices(y_pred, y)
        self._confusion += confusion_matrix(pred, label, self.num_classes).to(self._device)

    @sync_all_reduce("_confusion")
    def compute(self) -> float:
        if int(self._confusion.sum()) == 0:
            raise NotComputableError("ClassificationMetric must have at least one example before it can be computed")
        return scores_from_confusion(self._confusion)[self.metric]
