"""Metrics of the robustness tables, per sample where the worst case needs it.

Classification (Li et al. 2024, DPAAT): accuracy (GAcc on clean inputs, RAcc on adversarial ones), macro
precision / recall / F1 (from MONAI's confusion-matrix utilities), the ``K x K`` confusion matrix and
mAP / mARP = the mean over classes of the average precision of the softmax scores (clean / adversarial).

Segmentation (Koishiyeva et al. 2025): Dice (:class:`monai.metrics.DiceMetric`), mean IoU
(:class:`monai.metrics.MeanIoU`), HD95 (:class:`monai.metrics.HausdorffDistanceMetric`, ``percentile=95``),
pixel accuracy and the mean loss, all kept per sample by :class:`SegmentationMetrics`.

Conventions: a class with no predicted sample has precision 0 (scikit-learn's ``zero_division=0``); a
class with no positive sample has no average precision and is left out of the mAP mean; Dice and IoU of a
class absent from the ground truth follow :data:`monai_dpaat.conventions.EMPTY_GROUND_TRUTH` (1 when the
prediction leaves it out too, else 0); an HD95 that is undefined (empty prediction or empty ground truth) is
left out of the HD95 mean and counted.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from monai.metrics import (
    DiceMetric,
    HausdorffDistanceMetric,
    MeanIoU,
    compute_average_precision,
    compute_confusion_matrix_metric,
)
from monai.networks.utils import one_hot

from monai_dpaat.conventions import discretize, label_map, primary_output

__all__ = [
    "CLASSIFICATION_METRICS",
    "SEGMENTATION_METRICS",
    "METRIC_TITLES",
    "accuracy",
    "confusion_matrix",
    "macro_precision_recall_f1",
    "scores_from_confusion",
    "average_precision",
    "mean_average_precision",
    "classification_summary",
    "scores_from_logits",
    "pixel_accuracy",
    "SegmentationMetrics",
    "perturbation_norms",
    "finite_mean",
]

#: metric keys of a classification row, in table order
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "map", "linf", "l2")
#: metric keys of a segmentation row, in table order
SEGMENTATION_METRICS = ("dice", "iou", "pixel_accuracy", "loss", "hd95", "linf", "l2")
#: human-readable table titles (the papers' names where they have one)
METRIC_TITLES = {
    "accuracy": "Accuracy (%): Original = GAcc, attacks = RAcc",
    "precision": "Macro precision",
    "recall": "Macro recall",
    "f1": "Macro F1-score",
    "map": "mAP (Original) / mARP (attacks)",
    "dice": "Dice",
    "iou": "Mean IoU",
    "pixel_accuracy": "Pixel accuracy",
    "loss": "Mean loss",
    "hd95": "HD95 (pixels)",
    "linf": "Mean L-inf perturbation",
    "l2": "Mean L2 perturbation",
}


def _as_index(labels: torch.Tensor, name: str = "labels") -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{name} must be class indices of shape (N,), got shape {tuple(labels.shape)}")
    return labels.long()


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``predictions`` ``(N,)`` equal to ``labels`` ``(N,)`` (a number in [0, 1]; NaN if N = 0)."""
    predictions, labels = _as_index(predictions, "predictions"), _as_index(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape")
    if labels.numel() == 0:
        return float("nan")
    return float((predictions == labels).double().mean())


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, K)`` int64 matrix: entry ``[i, j]`` counts samples of true class ``i`` predicted as ``j``."""
    predictions, labels = _as_index(predictions, "predictions"), _as_index(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for name, t in (("predictions", predictions), ("labels", labels)):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes - 1}], got range [{int(t.min())}, {int(t.max())}]")
    flat = labels.cpu() * num_classes + predictions.cpu()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro (unweighted class mean) precision, recall and F1 of a ``(K, K)`` confusion matrix
    (entry ``[i, j]``: samples of true class ``i`` predicted as ``j``, as :func:`confusion_matrix` gives).

    The per-class scores come from MONAI's :func:`monai.metrics.compute_confusion_matrix_metric` on the
    one-vs-rest counts ``(K, 4)`` = tp, fp, tn, fn. Classes that are neither present nor predicted are left out
    of the mean; 0/0 precision or recall counts as 0 (scikit-learn's ``f1_score(average="macro")`` with
    ``zero_division=0``). All NaN when the matrix is empty.
    """
    confusion = torch.as_tensor(confusion).detach().cpu().double()
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a (K, K) matrix, got shape {tuple(confusion.shape)}")
    total = confusion.sum()
    if total == 0:
        return dict.fromkeys(("accuracy", "precision", "recall", "f1"), float("nan"))
    tp = confusion.diagonal()
    fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
    counts = torch.stack([tp, fp, total - tp - fp - fn, fn], dim=1)  # (K, 4), MONAI's order
    seen = (tp + fp + fn) > 0
    out = {"accuracy": float(tp.sum() / total)}
    for key, monai_name in (("precision", "precision"), ("recall", "recall"), ("f1", "f1 score")):
        per_class = torch.nan_to_num(compute_confusion_matrix_metric(monai_name, counts), nan=0.0)
        out[key] = float(per_class[seen].mean())
    return out


def macro_precision_recall_f1(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Macro (unweighted class mean) precision, recall and F1 (:func:`scores_from_confusion` of the
    :func:`confusion_matrix`).

    ``predictions``/``labels``: ``(N,)`` class indices. Classes that are neither present nor predicted are
    left out of the mean; 0/0 precision or recall counts as 0 (scikit-learn's ``zero_division=0``).
    """
    scores = scores_from_confusion(confusion_matrix(predictions, labels, num_classes))
    return {key: scores[key] for key in ("precision", "recall", "f1")}


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Average precision of one class: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds
    (no interpolation; scikit-learn's ``average_precision_score``), from
    :func:`monai.metrics.compute_average_precision`.

    ``scores``: ``(N,)`` scores of the class; ``targets``: ``(N,)`` in {0, 1}. NaN when there is no positive;
    1 when every sample is positive (every threshold has precision 1; MONAI returns NaN there).
    """
    scores = torch.as_tensor(scores).detach().double().flatten().cpu()
    targets = torch.as_tensor(targets).detach().double().flatten().cpu()
    if scores.shape != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} differ in shape")
    positives = int(targets.sum())
    if positives <= 0:
        return float("nan")
    if positives == targets.numel():
        return 1.0
    return float(compute_average_precision(scores, targets))


def mean_average_precision(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """mAP (mARP on adversarial inputs): mean over classes of :func:`average_precision` of column ``k`` of
    ``probabilities`` ``(N, K)`` against ``labels == k``; classes without a positive sample are skipped."""
    probabilities = torch.as_tensor(probabilities)
    labels = _as_index(labels)
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0]:
        raise ValueError(f"probabilities must be (N, K) with N = {labels.shape[0]}, got {tuple(probabilities.shape)}")
    aps = [average_precision(probabilities[:, k], (labels == k)) for k in range(probabilities.shape[1])]
    aps = [a for a in aps if a == a]
    return float(sum(aps) / len(aps)) if aps else float("nan")


def scores_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(N, K)`` from classifier logits ``(N, K)``; a one-logit (sigmoid) output
    ``(N, 1)`` becomes ``(N, 2)`` = ``[1 - p, p]``."""
    logits = primary_output(logits)
    if logits.ndim != 2:
        raise ValueError(f"classifier output must be (N, K) logits, got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits.float())
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits.float(), dim=1)


def classification_summary(probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> dict:
    """All classification metrics of one table row from ``probabilities`` ``(N, K)`` and ``labels`` ``(N,)``:
    ``accuracy``, ``precision``, ``recall``, ``f1``, ``map`` and ``confusion`` (a ``K x K`` nested list)."""
    probabilities = torch.as_tensor(probabilities).cpu()
    labels = _as_index(labels).cpu()
    k = int(num_classes or probabilities.shape[1])
    predictions = probabilities.argmax(1)
    out: dict[str, Any] = {"accuracy": accuracy(predictions, labels)}
    out.update(macro_precision_recall_f1(predictions, labels, k))
    out["map"] = mean_average_precision(probabilities, labels)
    out["confusion"] = confusion_matrix(predictions, labels, k).tolist()
    return out


# ---------------------------------------------------------------------------------------------- segmentation
def pixel_accuracy(pred_labels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample fraction of pixels whose predicted label equals the true one (background included).

    ``pred_labels``, ``labels``: ``(N, 1, *spatial)`` (or ``(N, *spatial)``) integer maps -> ``(N,)``."""
    if pred_labels.shape != labels.shape:
        labels = labels.reshape(pred_labels.shape)
    eq = (pred_labels.long() == labels.long()).reshape(pred_labels.shape[0], -1)
    return eq.double().mean(1)


def finite_mean(values: torch.Tensor) -> float:
    """Mean of the finite entries (NaN when there are none)."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    values = values[torch.isfinite(values)]
    return float(values.mean()) if values.numel() else float("nan")


class SegmentationMetrics:
    """Accumulates per-sample segmentation metrics of one table row over batches.

    ``update(output, labels, loss)`` takes logits ``(B, K, *spatial)`` (discretized by
    :func:`monai_dpaat.conventions.discretize`), labels ``(B, 1, *spatial)`` and the per-sample losses ``(B,)``
    (e.g. :func:`monai_dpaat.conventions.per_sample_losses`). Dice / IoU / HD95 come from MONAI's metric classes
    with ``reduction="none"`` (background excluded when ``K > 1``; the single channel is the foreground when
    ``K = 1``) and are averaged over classes per sample (NaN-aware).

    Empty ground truth: Dice and IoU follow the package's one policy,
    :data:`monai_dpaat.conventions.EMPTY_GROUND_TRUTH` (MONAI's ``ignore_empty=False``), so the per-sample Dice
    equals :func:`monai_dpaat.conventions.per_sample_dice`; HD95 is undefined (NaN, left out of the mean and
    counted) when the prediction or the ground truth of a class is empty.

    Args:
        hd95: compute HD95 (the slowest metric; off gives NaN).
    """

    def __init__(self, hd95: bool = True) -> None:
        self.hd95 = bool(hd95)
        self._include_bg: bool | None = None
        self._values: dict[str, list[torch.Tensor]] = {k: [] for k in ("dice", "iou", "pixel_accuracy", "loss", "hd95")}
        self._dice = self._iou = self._hd = None

    def _metrics(self, num_channels: int):
        include_bg = num_channels == 1
        if self._dice is None or include_bg != self._include_bg:
            self._include_bg = include_bg
            self._dice = DiceMetric(include_background=include_bg, reduction="none", ignore_empty=False)
            self._iou = MeanIoU(include_background=include_bg, reduction="none", ignore_empty=False)
            self._hd = HausdorffDistanceMetric(include_background=include_bg, percentile=95, reduction="none")
        return self._dice, self._iou, self._hd

    @staticmethod
    def _class_mean(values: torch.Tensor) -> torch.Tensor:
        values = values.double().reshape(values.shape[0], -1)
        finite = torch.isfinite(values)
        total = torch.where(finite, values, torch.zeros_like(values)).sum(1)
        count = finite.sum(1)
        return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))

    def update(self, output: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Add one batch; returns its per-sample values ``{metric: (B,)}`` (float64, CPU)."""
        output = primary_output(output).detach()
        pred_labels, pred_oh = discretize(output)
        k = output.shape[1]
        labels = label_map(labels, output)
        label_oh = (labels > 0).float() if k == 1 else one_hot(labels, k, dim=1)
        dice_m, iou_m, hd_m = self._metrics(k)
        batch = {
            "dice": self._class_mean(dice_m(pred_oh, label_oh).cpu()),
            "iou": self._class_mean(iou_m(pred_oh, label_oh).cpu()),
            "pixel_accuracy": pixel_accuracy(pred_labels, labels).cpu(),
            "loss": torch.as_tensor(loss, dtype=torch.float64).detach().cpu().reshape(-1),
        }
        if self.hd95:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch["hd95"] = self._class_mean(hd_m(pred_oh.cpu(), label_oh.cpu()).cpu())
        else:
            batch["hd95"] = torch.full((output.shape[0],), float("nan"), dtype=torch.float64)
        for m in (dice_m, iou_m, hd_m):
            m.reset()
        for key, value in batch.items():
            self._values[key].append(value)
        return batch

    def per_sample(self) -> dict[str, torch.Tensor]:
        """``{metric: (N,)}`` over every sample seen so far."""
        return {k: (torch.cat(v) if v else torch.zeros(0, dtype=torch.float64)) for k, v in self._values.items()}

    def summary(self) -> dict[str, float]:
        """Row values of every sample seen so far (:func:`summarize_segmentation` of :meth:`per_sample`)."""
        return summarize_segmentation(self.per_sample(), self.hd95)


def summarize_segmentation(values: dict[str, torch.Tensor], hd95: bool = True) -> dict[str, float]:
    """Row values from per-sample ``{metric: (N,)}`` tensors: the NaN-aware sample means, plus
    ``hd95_undefined`` (samples without a finite HD95). Used for the attack rows and the worst-case row."""
    out = {k: finite_mean(v) for k, v in values.items()}
    out["hd95_undefined"] = int((~torch.isfinite(values["hd95"])).sum()) if hd95 else 0
    return out


def perturbation_norms(adversarial: torch.Tensor, clean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample L-inf and L2 norms ``(N,)`` of ``adversarial - clean`` (both ``(N, C, *spatial)``)."""
    delta = (adversarial.detach() - clean.detach()).reshape(clean.shape[0], -1).double()
    return delta.abs().amax(1).cpu(), delta.norm(p=2, dim=1).cpu()

