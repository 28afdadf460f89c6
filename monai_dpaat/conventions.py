"""The rules every layer shares (attacks, training methods, evaluation), written once.

- **Primary output**: a network may return a deep-supervision list/tuple; its first entry is the
  full-resolution prediction (:func:`primary_output`).
- **Targets**: classification targets are class indices ``(N,)``, ``(N, 1)`` or one-hot ``(N, K)``
  (:func:`class_indices`); segmentation targets are label maps ``(N, 1, *spatial)``, ``(N, *spatial)`` or
  one-hot ``(N, K, *spatial)`` (:func:`label_map`). A one-channel output (``K = 1``) is a sigmoid logit:
  predicted class ``logit > 0``.
- **Empty ground truth** (one policy, MONAI's ``ignore_empty=False``): a class absent from the ground truth
  scores Dice/IoU 1 when the prediction leaves it out too and 0 when it predicts it. So an attack that makes a
  model paint foreground on an empty image counts as a failure instead of being dropped from the mean.
- **Per sample**: :func:`per_sample_losses` is the trainer loss on each sample; :func:`per_sample_correct` is
  arg-max = label (classification) or mean foreground Dice >= a threshold (segmentation).
- **Batches**: a batch is a dict ``{image_key: ..., label_key: ...}`` (MONAI style) or an ``(image, label)``
  pair; :func:`image_and_label` returns plain tensors (no MetaTensor) for attacks.

This module imports only torch and MONAI, so every layer can use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from monai.utils import convert_to_tensor

__all__ = [
    "EMPTY_GROUND_TRUTH",
    "primary_output",
    "plain_tensor",
    "image_and_label",
    "class_indices",
    "label_map",
    "discretize",
    "per_sample_dice",
    "per_sample_correct",
    "per_sample_losses",
]

#: the empty-ground-truth policy of every Dice/IoU/correctness number (see the module docstring)
EMPTY_GROUND_TRUTH = "ignore_empty=False: empty truth and empty prediction score 1, empty truth and any prediction 0"


def primary_output(pred: Any) -> torch.Tensor:
    """The full-resolution output of a network that may return a deep-supervision list/tuple."""
    if isinstance(pred, (list, tuple)):
        if len(pred) == 0:
            raise ValueError("the network returned an empty list/tuple of outputs")
        return pred[0]
    return pred


def plain_tensor(value: Any) -> Any:
    """A ``torch.Tensor`` without MONAI metadata (MetaTensor -> Tensor); other values unchanged."""
    return convert_to_tensor(value, track_meta=False) if isinstance(value, torch.Tensor) else value


def image_and_label(batch: Any, image_key: str = "image", label_key: str = "label") -> tuple[torch.Tensor, Any]:
    """``(images, labels)`` of a batch dict (``batch[image_key]``, ``batch[label_key]``) or an ``(image, label,
    ...)`` sequence, as plain tensors. Raises ``ValueError`` naming the missing key."""
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


def class_indices(targets: Any, num_channels: int, n: int | None = None) -> torch.Tensor:
    """Class indices ``(N,)`` (long) from ``(N,)``, ``(N, 1)`` or one-hot ``(N, K)`` targets of a ``K``-channel
    classifier (``num_channels = K``; one channel means 0/1 labels)."""
    t = torch.as_tensor(targets).detach()
    n = t.shape[0] if n is None else n
    if t.ndim == 2 and t.shape[1] == num_channels and num_channels > 1:
        t = t.argmax(1)
    return t.reshape(n).round().long() if t.is_floating_point() else t.reshape(n).long()


def label_map(targets: Any, output: torch.Tensor) -> torch.Tensor:
    """Label map ``(N, 1, *spatial)`` (long) of segmentation ``targets`` for ``output`` ``(N, K, *spatial)``:
    targets may be ``(N, 1, *spatial)``, ``(N, *spatial)`` or one-hot ``(N, K, *spatial)`` (``K > 1``)."""
    t = torch.as_tensor(targets, device=output.device).detach()
    n, k, spatial = output.shape[0], output.shape[1], output.shape[2:]
    if k > 1 and t.ndim == output.ndim and t.shape[1] == k:
        t = t.argmax(1, keepdim=True)
    t = t.reshape(n, 1, *spatial)
    return t.round().long() if t.is_floating_point() else t.long()


def discretize(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From segmentation logits ``(N, K, *spatial)`` return ``(labels (N, 1, *spatial), one_hot)``: ``K``
    channels (``K > 1``, arg-max) or the one foreground channel (``K = 1``, ``logit > 0``)."""
    output = primary_output(output)
    if output.ndim < 3:
        raise ValueError(f"segmentation output must be (N, K, *spatial), got shape {tuple(output.shape)}")
    if output.shape[1] == 1:
        labels = (output > 0).long()
        return labels, labels.float()
    labels = output.argmax(1, keepdim=True)
    return labels, one_hot(labels, output.shape[1], dim=1)


def per_sample_dice(output: Any, targets: Any) -> torch.Tensor:
    """``(N,)`` mean foreground Dice of the discretized ``output`` ``(N, K, *spatial)`` against ``targets``
    (background left out when ``K > 1``), with the module's empty-ground-truth policy."""
    out = primary_output(output).detach()
    if out.ndim < 3:
        raise ValueError(f"segmentation outputs must be (N, K, *spatial), got shape {tuple(out.shape)}")
    k = out.shape[1]
    _, pred_oh = discretize(out)
    labels = label_map(targets, out)
    truth_oh = (labels > 0).float() if k == 1 else one_hot(labels, k, dim=1)
    dice = compute_dice(pred_oh, truth_oh, include_background=k == 1, ignore_empty=False)
    return torch.nan_to_num(dice.float(), nan=1.0).mean(1)


def per_sample_correct(output: Any, targets: Any, dice_threshold: float = 0.5) -> torch.Tensor:
    """``(N,)`` bool: classification ``(N, K)`` outputs: the predicted class (arg-max; ``logit > 0`` for one
    channel) equals the label; segmentation ``(N, K, *spatial)``: :func:`per_sample_dice` ``>= dice_threshold``."""
    out = primary_output(output).detach()
    if out.ndim == 2:
        k = out.shape[1]
        guess = (out[:, 0] > 0).long() if k == 1 else out.argmax(1)
        return guess == class_indices(targets, k, out.shape[0]).to(guess.device)
    return per_sample_dice(out, targets) >= dice_threshold


def _slice(x: Any, i: int) -> Any:
    if isinstance(x, (list, tuple)):
        return type(x)(_slice(v, i) for v in x)
    if isinstance(x, torch.Tensor) and x.ndim > 0:
        return x[i : i + 1]
    return x


def _vectorized_sample_losses(loss_function: Callable, pred: Any, targets: Any) -> torch.Tensor | None:
    """Exact one-call ``(N,)`` per-sample losses for torch's mean-reduced, unweighted ``CrossEntropyLoss``
    (class-index targets, ``ignore_index`` honoured) and ``BCEWithLogitsLoss``; None for anything else."""
    if not isinstance(pred, torch.Tensor) or not isinstance(targets, torch.Tensor) or pred.ndim < 2:
        return None
    n = pred.shape[0]
    if type(loss_function) is torch.nn.CrossEntropyLoss and loss_function.weight is None:
        if loss_function.reduction != "mean" or targets.is_floating_point() or targets.shape != (n, *pred.shape[2:]):
            return None
        per = F.cross_entropy(
            pred, targets, reduction="none", ignore_index=loss_function.ignore_index,
            label_smoothing=loss_function.label_smoothing,
        ).reshape(n, -1)
        keep = (targets != loss_function.ignore_index).reshape(n, -1).to(per.dtype)
        return (per * keep).sum(1) / keep.sum(1)
    if type(loss_function) is torch.nn.BCEWithLogitsLoss:
        if loss_function.weight is not None or loss_function.pos_weight is not None:
            return None
        if loss_function.reduction != "mean" or targets.shape != pred.shape:
            return None
        per = F.binary_cross_entropy_with_logits(pred, targets.to(pred.dtype), reduction="none")
        return per.reshape(n, -1).mean(1)
    return None


@torch.no_grad()
def per_sample_losses(
    loss_function: Callable, pred: Any, targets: Any, sample_loss_function: Callable | None = None
) -> torch.Tensor:
    """Detached float32 ``(N,)`` loss of every sample.

    With ``sample_loss_function`` (returns ``(N,)`` or ``(N, ...)``, e.g. ``CrossEntropyLoss(reduction="none")``)
    the result is its mean over all but the batch dim. torch's unweighted ``CrossEntropyLoss`` and
    ``BCEWithLogitsLoss`` are computed in one vectorised call. Otherwise ``loss_function`` (e.g. ``DiceCELoss``)
    is called on each one-sample slice (deep-supervision lists sliced entry by entry), which is exact for any
    batch-mean loss and costs N small calls (about a millisecond for N = 32 on CPU). For segmentation the
    per-sample loss is the loss on that image: a mean over its pixels/voxels.
    """
    n = primary_output(pred).shape[0]
    if sample_loss_function is not None:
        out = torch.as_tensor(sample_loss_function(pred, targets))
        if out.ndim == 0 or out.shape[0] != n:
            raise ValueError(
                f"sample_loss_function must return (N,) or (N, ...) with N={n}, got shape {tuple(out.shape)}"
            )
        return out.reshape(n, -1).float().mean(1).detach()
    fast = _vectorized_sample_losses(loss_function, pred, targets)
    if fast is not None:
        return fast.float()
    losses = [torch.as_tensor(loss_function(_slice(pred, i), _slice(targets, i))).float().mean() for i in range(n)]
    return torch.stack(losses)
