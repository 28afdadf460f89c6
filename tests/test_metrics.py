"""Robustness-table metrics against values computed by hand on small fixed predictions."""

from __future__ import annotations

import math

import pytest
import torch

from monai_dpaat.conventions import per_sample_dice, per_sample_losses
from monai_dpaat.evaluation.metrics import (
    SegmentationMetrics,
    accuracy,
    average_precision,
    classification_summary,
    confusion_matrix,
    macro_precision_recall_f1,
    mean_average_precision,
    perturbation_norms,
    pixel_accuracy,
    scores_from_logits,
)

PRED = torch.tensor([0, 1, 1, 2, 0])
LABEL = torch.tensor([0, 1, 2, 2, 1])


def test_accuracy_by_hand():
    assert accuracy(PRED, LABEL) == pytest.approx(3 / 5)
    assert accuracy(LABEL, LABEL) == 1.0
    assert accuracy(PRED[:, None], LABEL) == pytest.approx(3 / 5)  # (N, 1) labels are accepted
    assert math.isnan(accuracy(torch.zeros(0), torch.zeros(0)))
    with pytest.raises(ValueError, match="differ in shape"):
        accuracy(PRED[:3], LABEL)


def test_confusion_matrix_by_hand():
    # pairs (true, pred): (0,0) (1,1) (2,1) (2,2) (1,0)
    cm = confusion_matrix(PRED, LABEL, 3)
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert int(cm.sum()) == 5
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        confusion_matrix(PRED, LABEL, 2)


def test_macro_precision_recall_f1_by_hand():
    # class 0: tp1 fp1 fn0 -> P .5 R 1 F 2/3; class 1: tp1 fp1 fn1 -> .5 .5 .5; class 2: tp1 fp0 fn1 -> 1 .5 2/3
    out = macro_precision_recall_f1(PRED, LABEL, 3)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)


def test_macro_precision_zero_division_counts_as_zero():
    # class 1 is never predicted: precision 0/0 -> 0 (scikit-learn's zero_division=0)
    out = macro_precision_recall_f1(torch.tensor([0, 0]), torch.tensor([0, 1]), 2)
    assert out == pytest.approx({"precision": 0.25, "recall": 0.5, "f1": (2 / 3 + 0) / 2})
    # a class that is neither present nor predicted is left out of the mean
    out3 = macro_precision_recall_f1(torch.tensor([0, 0]), torch.tensor([0, 1]), 3)
    assert out3 == pytest.approx(out)


def test_average_precision_by_hand():
    # ranks: 1 (pos, P=1, R=.5), 2 (neg), 3 (pos, P=2/3, R=1) -> .5 * 1 + .5 * 2/3
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # tied scores form one threshold: {0.9: P 1, R .5}, {0.5: P 2/3, R 1} -> 5/6, not 1
    assert average_precision(torch.tensor([0.9, 0.5, 0.5, 0.1]), torch.tensor([1, 1, 0, 0])) == pytest.approx(5 / 6)
    assert average_precision(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])) == pytest.approx(1.0)
    assert math.isnan(average_precision(torch.tensor([0.1, 0.2]), torch.tensor([0, 0])))


def test_mean_average_precision_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.45, 0.25], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 1, 2, 1])
    # class 0: AP 1; class 1: scores .6(+) .45(-) .4(+) -> 5/6; class 2: .3(-) .25(+) -> 1/2
    assert mean_average_precision(probs, labels) == pytest.approx((1 + 5 / 6 + 1 / 2) / 3)
    # a class without positives is skipped: only classes 0 and 1 present
    assert mean_average_precision(probs[:2], labels[:2]) == pytest.approx(1.0)


def test_classification_summary_and_scores():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.45, 0.25], [0.5, 0.4, 0.1]]))
    probs = scores_from_logits(logits)
    assert torch.allclose(probs.sum(1), torch.ones(4))
    out = classification_summary(probs, torch.tensor([0, 1, 2, 1]))
    assert out["accuracy"] == pytest.approx(2 / 4)
    assert out["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 1, 0]]
    assert out["map"] == pytest.approx((1 + 5 / 6 + 1 / 2) / 3)
    # a one-logit (sigmoid) classifier becomes two classes [1 - p, p]
    two = scores_from_logits(torch.tensor([[0.0], [2.0]]))
    assert torch.allclose(two[:, 1], torch.sigmoid(torch.tensor([0.0, 2.0])))
    assert torch.allclose(two.sum(1), torch.ones(2))


def _square(h=8, w=8, rows=(2, 6), cols=(2, 6)):
    y = torch.zeros(1, 1, h, w)
    y[..., rows[0]:rows[1], cols[0]:cols[1]] = 1
    return y


def test_segmentation_metrics_shifted_square_by_hand():
    label = _square()                    # 4x4 square, 16 px
    pred = _square(cols=(3, 7))          # shifted one column: overlap 12 px
    m = SegmentationMetrics()
    out = m.update((pred * 2 - 1) * 5, label, torch.tensor([0.5]))
    assert out["dice"].item() == pytest.approx(2 * 12 / 32)
    assert out["iou"].item() == pytest.approx(12 / 20)
    assert out["pixel_accuracy"].item() == pytest.approx(56 / 64)
    # edge pixels: half of each edge set is on the other edge set (0), half one pixel away (1) -> p95 = 1
    assert out["hd95"].item() == pytest.approx(1.0)
    assert m.summary()["loss"] == pytest.approx(0.5)


def test_segmentation_hd95_of_an_outlier_by_hand():
    label = _square()
    pred = label.clone()
    pred[0, 0, 0, 7] = 1                 # one stray pixel sqrt(8) from the nearest label edge pixel (2, 5)
    out = SegmentationMetrics().update((pred * 2 - 1) * 5, label, torch.tensor([0.0]))
    assert out["dice"].item() == pytest.approx(32 / 33)
    assert out["iou"].item() == pytest.approx(16 / 17)
    assert out["pixel_accuracy"].item() == pytest.approx(63 / 64)
    # pred -> label distances: twelve 0s and sqrt(8); 95th percentile (linear) = 0.4 * sqrt(8)
    assert out["hd95"].item() == pytest.approx(0.4 * math.sqrt(8))


def test_segmentation_multiclass_excludes_background_and_counts_undefined_hd95():
    label = torch.zeros(2, 1, 6, 6)
    label[0, 0, :3] = 1
    label[0, 0, 3:] = 2
    label[1, 0, :3] = 1                  # sample 1 has no class 2
    logits = torch.zeros(2, 3, 6, 6)
    logits[0, 1, :3] = 5                 # sample 0: perfect
    logits[0, 2, 3:] = 5
    logits[1, 1] = 5                     # sample 1: predicts class 1 everywhere
    m = SegmentationMetrics()
    out = m.update(logits, label, torch.tensor([0.1, 0.3]))
    assert out["dice"][0].item() == pytest.approx(1.0)
    # sample 1: class 1 dice 2*18/(36+18) = 2/3; class 2 empty in truth and prediction scores 1 (the one
    # empty-ground-truth policy, monai_dpaat.conventions.EMPTY_GROUND_TRUTH; issue 11 replaced "NaN, skipped")
    assert out["dice"][1].item() == pytest.approx((2 / 3 + 1) / 2)
    assert out["pixel_accuracy"].tolist() == pytest.approx([1.0, 0.5])
    summary = m.summary()
    assert summary["dice"] == pytest.approx((1 + (2 / 3 + 1) / 2) / 2)
    assert summary["loss"] == pytest.approx(0.2)
    assert summary["hd95_undefined"] == 0
    # an empty prediction has no HD95: left out of the mean and counted
    binary = SegmentationMetrics()
    binary.update(torch.full((1, 1, 8, 8), -5.0), _square(), torch.tensor([1.0]))
    binary.update((_square() * 2 - 1) * 5, _square(), torch.tensor([0.0]))
    assert binary.summary()["hd95_undefined"] == 1
    assert binary.summary()["hd95"] == pytest.approx(0.0)
    assert binary.summary()["dice"] == pytest.approx(0.5)


def test_pixel_accuracy_and_perturbation_norms():
    assert pixel_accuracy(torch.tensor([[[1, 0], [0, 0]]]), torch.tensor([[[1, 1], [0, 0]]])).tolist() == [0.75]
    clean = torch.zeros(2, 1, 2, 2)
    adv = clean.clone()
    adv[0] += 0.5                        # L-inf 0.5, L2 sqrt(4 * 0.25) = 1
    adv[1, 0, 0, 0] = -0.3
    linf, l2 = perturbation_norms(adv, clean)
    assert linf.tolist() == pytest.approx([0.5, 0.3])
    assert l2.tolist() == pytest.approx([1.0, 0.3])


def test_per_sample_loss_matches_a_loop():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    losses = per_sample_losses(torch.nn.functional.cross_entropy, logits, labels)
    expected = [-math.log(math.exp(2) / (math.exp(2) + 1)), -math.log(1 / (1 + math.e))]
    assert losses.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_segmentation_dice_is_the_conventions_per_sample_dice(k):
    """One empty-ground-truth policy: SegmentationMetrics' Dice equals conventions.per_sample_dice, also on
    samples whose truth is empty (with and without predicted foreground)."""
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(6, k, 7, 5, generator=g)
    labels = torch.randint(0, max(k, 2), (6, 1, 7, 5), generator=g)
    labels[:3] = 0                       # empty ground truth (background only)
    if k == 1:
        logits[0] = -1.0                 # empty truth, empty prediction -> 1
        logits[1] = 1.0                  # empty truth, foreground everywhere -> 0
    else:
        logits[0, 0] = 9.0               # empty truth, background predicted everywhere -> 1
        logits[1, 1] = 9.0               # empty truth, class 1 predicted everywhere: class 1 -> 0, others -> 1
    dice = SegmentationMetrics(hd95=False).update(logits, labels, torch.zeros(6))["dice"]
    expected = per_sample_dice(logits, labels).double()
    assert dice[:2].tolist() == pytest.approx([1.0, 0.0 if k == 1 else 1 - 1 / (k - 1)])
    assert torch.allclose(dice, expected)
