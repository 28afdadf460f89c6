"""The benchmark's classification protocol v1 (issue 14): APGD-CE -> APGD-T -> Square as a cascade.

Strength: on a trained HAM10000 network its robust accuracy is no higher than torchattacks' AutoAttack's (which
cannot run its APGD-T below 4 classes: there the comparison is with torchattacks' other three standard attacks,
APGD-CE, FAB-T and Square, at their standard counts), and on a 10-class network no higher than
``AutoAttack(version="standard")`` itself. Bookkeeping: every break is counted once, by the first attack that found
it, and each attack runs only on what the earlier ones left. Masking: on a network whose gradient is zero (its input
is quantised), the gradient attacks (both APGD runs, FMN-T) break nothing and Square breaks what they missed, the flag
the protocol raises."""

from __future__ import annotations

import pytest
import torch

from helpers import accuracy, ten_class_mlp
from monai_dpaat.evaluation.protocol import PROTOCOLS, classification_protocol, run_cascade

torchattacks = pytest.importorskip("torchattacks")

EPS = 8 / 255


def test_quick_protocol_is_no_weaker_than_torchattacks_at_the_same_counts(ham):
    net, x, y = ham
    result = run_cascade(net, [(x[:16], y[:16]), (x[16:], y[16:])],
                         classification_protocol(EPS, budget="quick", value_range=(0, 1)))
    reference = torchattacks.MultiAttack([  # the quick budget's counts (the standard ones: the 10-class test below)
        torchattacks.APGD(net, eps=EPS, steps=20, loss="ce", seed=0),
        torchattacks.FAB(net, eps=EPS, steps=20, multi_targeted=True, n_classes=2, seed=0),
        torchattacks.Square(net, eps=EPS, n_queries=500, seed=0),
    ])(x, y)
    assert result.clean_accuracy == pytest.approx(accuracy(net, x, y))
    assert result.robust_accuracy < result.clean_accuracy  # it breaks real images ...
    assert result.robust_accuracy <= accuracy(net, reference, y)  # ... at least as many as the reference


def test_protocol_is_no_weaker_than_autoattack_standard_on_ten_classes():
    net, x, y = ten_class_mlp()
    eps = 0.01
    shipped = torchattacks.AutoAttack(net, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)(x, y)
    published = torchattacks.MultiAttack([  # AutoAttack at its paper's counts (torchattacks ships 10 iterations)
        torchattacks.APGD(net, eps=eps, steps=100, loss="ce", seed=0),
        torchattacks.APGDT(net, eps=eps, steps=100, n_classes=10, seed=0),
        torchattacks.FAB(net, eps=eps, steps=100, multi_targeted=True, n_classes=10, seed=0),
        torchattacks.Square(net, eps=eps, n_queries=5000, seed=0)])(x, y)
    result = run_cascade(net, [(x, y)], classification_protocol(eps, value_range=(0, 1)))
    assert 0 < accuracy(net, shipped, y) < 1
    assert result.robust_accuracy <= min(accuracy(net, shipped, y), accuracy(net, published, y))


def test_each_break_is_counted_once_by_the_first_attack(ham):
    net, x, y = ham
    lines = []
    result = run_cascade(net, [(x, y)], classification_protocol(EPS, budget="quick", value_range=(0, 1)),
                         progress=lines.append)
    correct = int(result.clean_correct.sum())
    assert sum(result.breaks.values()) == correct - int(result.robust.sum())
    labels = list(result.breaks)
    assert result.attacked[labels[0]] == correct
    for a, b in zip(labels, labels[1:]):  # the cascade: each attack gets what the earlier ones left
        assert result.attacked[b] == result.attacked[a] - result.breaks[a]
    for label in labels:
        assert result.broken_by.count(label) == result.breaks[label]
    assert result.broken_by.count(None) == len(y) - sum(result.breaks.values())
    assert len(lines) == len(labels) == 4 and lines[0].startswith("APGD-CE batch 1/1: ") and " robust" in lines[0]
    full = run_cascade(net, [(x, y)], classification_protocol(EPS, budget="quick", value_range=(0, 1)), cascade=False)
    assert all(n == correct for n in full.attacked.values())  # without the cascade: every attack on every sample
    assert sum(full.attacked.values()) > sum(result.attacked.values())


def test_square_breaks_a_gradient_masked_network(ham):
    net, x, y = ham

    class Quantised(torch.nn.Module):  # round() has a zero gradient: white-box attacks see nothing
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            return self.inner(torch.round(images * 16) / 16)

    result = run_cascade(Quantised(net), [(x, y)], classification_protocol(EPS, budget="quick", value_range=(0, 1)))
    assert result.breaks["APGD-CE"] == result.breaks["APGD-T"] == result.breaks["FMN-T"] == 0
    assert result.breaks["Square"] > 0


def test_protocol_definitions_and_refusals():
    attacks = classification_protocol(EPS)
    assert list(attacks) == ["APGD-CE", "APGD-T", "FMN-T", "Square"]
    assert [a.steps for a in attacks.values()] == [100, 100, 100, 5000]  # AutoAttack's counts (FAB-T's for FMN-T)
    assert attacks["APGD-T"].n_target_classes == attacks["FMN-T"].n_target_classes == 9
    assert set(PROTOCOLS["v1"]) == set(PROTOCOLS["v2"]) == {"standard", "quick"}
    assert list(classification_protocol(EPS, version="v1")) == ["APGD-CE", "APGD-T", "Square"]  # v1 rows stay as run
    with pytest.raises(ValueError, match="unknown protocol version 'v9'"):
        classification_protocol(EPS, version="v9")
    with pytest.raises(ValueError, match="budget must be one of"):
        classification_protocol(EPS, budget="fast")
