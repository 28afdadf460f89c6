"""Gradient-masking sanity checks: the rules on hand-made records, a normally trained HAM10000 model that
raises no flag, and deliberately gradient-masked versions of the same model that do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_dpaat.evaluation.sanity import (
    check_gradient_masking,
    flags_from_records,
    score_of,
)


# --------------------------------------------------------------------------- the rules
def rec(attack, eps, acc, steps=10, grad=True):
    return {"attack": attack, "eps": eps, "steps": steps, "uses_gradient": grad, "robust_accuracy": acc}


HEALTHY = [
    rec("clean", 0.0, 0.80, steps=0, grad=False),
    rec("pgd", 2 / 255, 0.60), rec("pgd", 4 / 255, 0.40), rec("pgd", 8 / 255, 0.10),
    rec("fgsm", 8 / 255, 0.30, steps=1), rec("gn", 8 / 255, 0.78, steps=1, grad=False),
    rec("pgd", float("inf"), 0.0, steps=100),
]


def replace(records, index, **changes):
    out = [dict(r) for r in records]
    out[index].update(changes)
    return out


def test_healthy_records_raise_no_flag():
    assert flags_from_records(HEALTHY) == []


@pytest.mark.parametrize(
    "index,changes,expected",
    [
        (2, {"robust_accuracy": 0.65}, "rises with eps"),  # PGD at 4/255 above PGD at 2/255
        (4, {"robust_accuracy": 0.05}, "single-step beats iterative"),
        (5, {"robust_accuracy": 0.02}, "random noise beats"),
        (6, {"robust_accuracy": 0.50}, "unbounded attack does not reach"),
        (1, {"robust_accuracy": 0.90}, "raises accuracy"),  # above clean
    ],
)
def test_each_rule_fires_alone(index, changes, expected):
    flags = flags_from_records(replace(HEALTHY, index, **changes))
    assert any(expected in f for f in flags), flags
    assert all(expected in f for f in flags), flags


def test_more_steps_rule_and_tolerance_and_bad_records():
    records = HEALTHY + [rec("pgd", 8 / 255, 0.35, steps=5)]  # PGD-5 35% -> PGD-10 10%: not converged
    flags = flags_from_records(records)
    assert len(flags) == 1 and "more steps" in flags[0] and "PGD-5" in flags[0]
    # a rise within the tolerance is sampling noise, not a flag
    assert flags_from_records(replace(HEALTHY, 2, robust_accuracy=0.61)) == []
    assert flags_from_records(replace(HEALTHY, 2, robust_accuracy=0.61), tolerance=0.0) != []
    assert flags_from_records(replace(HEALTHY, 6, robust_accuracy=0.04), unbounded_max_accuracy=0.03) != []
    with pytest.raises(ValueError, match="robust_accuracy"):
        flags_from_records([rec("pgd", 0.1, 1.5)])
    with pytest.raises(ValueError, match="misses keys"):
        flags_from_records([{"attack": "pgd", "eps": 0.1}])


def test_score_of_hand_computed():
    # classification: argmax / sigmoid logit; targets indices or one-hot
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert score_of(logits, torch.tensor([0, 1, 1])).tolist() == [1.0, 1.0, 0.0]
    assert score_of(logits, torch.eye(2)[[0, 0, 0]]).tolist() == [1.0, 0.0, 1.0]
    assert score_of(torch.tensor([[1.0], [-1.0]]), torch.tensor([1, 1])).tolist() == [1.0, 0.0]
    # segmentation, 2 foreground pixels predicted, 3 true, 1 shared: Dice = 2 * 1 / (2 + 3) = 0.4
    pred = torch.tensor([[1, 1, 0, 0, 0]]).reshape(1, 1, 1, 5).float() * 2 - 1  # one-channel logits
    truth = torch.tensor([[0, 1, 1, 1, 0]]).reshape(1, 1, 1, 5)
    assert score_of(pred, truth, "segmentation").item() == pytest.approx(0.4)
    two = torch.cat([-pred, pred], dim=1)  # the same as 2-class logits
    assert score_of(two, truth, "segmentation").item() == pytest.approx(0.4)
    assert score_of(-torch.ones(1, 1, 1, 5), torch.zeros(1, 1, 1, 5), "segmentation").item() == 1.0
    with pytest.raises(ValueError, match="task"):
        score_of(logits, torch.tensor([0, 1, 1]), "detection")


# --------------------------------------------------------------------------- real models
class QuantizedInput(nn.Module):
    """Gradient masking by a non-differentiable input quantisation: ``net(round(x * levels) / levels)``.
    ``torch.round`` has a zero gradient, so every gradient attack sees a flat loss."""

    def __init__(self, net, levels=8):
        super().__init__()
        self.net, self.levels = net, levels

    def forward(self, x):
        return self.net(torch.round(x * self.levels) / self.levels)


class SaturatedLogits(nn.Module):
    """Gradient masking by saturating the softmax (as defensive distillation does): logits x 1e4 make the
    CE gradient of confidently classified samples exactly zero in float32, though predictions are unchanged."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * 1e4


@pytest.mark.slow
def test_normally_trained_ham_model_raises_no_flag(ham):
    net, x, y = ham
    with torch.no_grad():
        assert (net(x).argmax(1) == y).float().mean() >= 0.65
    batches = [{"image": x[:24], "label": y[:24]}, {"image": x[24:], "label": y[24:]}]  # MONAI-style dicts
    assert check_gradient_masking(net, batches, unbounded_steps=50) == []


@pytest.mark.slow
@pytest.mark.parametrize("wrapper", [QuantizedInput, SaturatedLogits])
def test_gradient_masked_models_raise_flags(ham, wrapper):
    net, x, y = ham
    masked = wrapper(net).eval()
    with torch.no_grad():
        assert (masked(x).argmax(1) == y).float().mean() >= 0.6, "masking must keep the clean accuracy"
    flags = check_gradient_masking(masked, (x, y), unbounded_steps=50)
    assert any("unbounded attack does not reach" in f for f in flags), flags


def test_input_validation():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    batch = (torch.rand(2, 3, 2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="task"):
        check_gradient_masking(net, [batch], task="detection")
    with pytest.raises(ValueError, match="eps"):
        check_gradient_masking(net, [batch], eps=0.0)
    with pytest.raises(ValueError, match="eps_grid"):
        check_gradient_masking(net, [batch], eps_grid=(0.01, -1.0))
    with pytest.raises(ValueError, match="no batches"):
        check_gradient_masking(net, [])
    with pytest.raises(ValueError, match="keys"):
        check_gradient_masking(net, [{"img": batch[0], "label": batch[1]}])
