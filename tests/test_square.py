"""Square Attack (Andriushchenko et al. 2020), the benchmark protocol's black-box attack (issue 14): the same images
as torchattacks' ``Square`` (= auto-attack's) under the same seed on a trained HAM10000 network, per-sample budgets,
3D inputs, and the things a score-based attack must not do (take a gradient, leave the ball)."""

from __future__ import annotations

import pytest
import torch

from helpers import accuracy, tiny_cnn
from monai_dpaat.attacks import Square, build_attack
from monai_dpaat.attacks.square import square_p_schedule

torchattacks = pytest.importorskip("torchattacks")

EPS = 8 / 255


@pytest.mark.parametrize("loss", ["margin", "ce"])
def test_square_matches_torchattacks_under_the_same_seed(ham, loss):
    net, x, y = ham
    reference = torchattacks.Square(net, eps=EPS, n_queries=300, loss=loss, seed=0)(x, y)
    torch.manual_seed(0)  # the reference seeds torch's global generator with its seed
    ours = Square(eps=EPS, steps=300, loss=loss, value_range=(0, 1))(net, x, y)
    assert torch.equal(ours, reference)
    assert accuracy(net, ours, y) < accuracy(net, x, y)  # it breaks real images


def test_queries_budget_ball_and_no_gradient(ham):
    net, x, y = ham
    for p in net.parameters():
        p.requires_grad_(False)  # a black-box attack needs no gradient anywhere
    try:
        attack = Square(eps=EPS, steps=100, value_range=(0, 1), generator=torch.Generator().manual_seed(0))
        adv = attack(net, x, y)
    finally:
        for p in net.parameters():
            p.requires_grad_(True)
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        correct = net(x).argmax(1) == y
    assert bool((attack.queries[~correct] == 0).all())  # misclassified images are not attacked
    assert bool((attack.queries[correct] >= 1).all()) and attack.queries.max() <= 101
    fooled = correct & (net(adv).argmax(1) != y)
    assert bool((attack.queries[correct & ~fooled] == 101).all())  # a robust image used every query


def test_per_sample_budgets_and_3d_volumes():
    torch.manual_seed(0)
    net = tiny_cnn(out=3, dims=3).eval()
    x = torch.rand(4, 3, 8, 8, 8)
    with torch.no_grad():
        y = net(x).argmax(1)
    eps = torch.tensor([0.0, 0.02, 0.05, 0.3])
    adv = Square(eps=eps, steps=50, value_range=(0, 1), generator=torch.Generator().manual_seed(0))(net, x, y)
    size = (adv - x).abs().flatten(1).amax(1)
    assert bool((size <= eps + 1e-6).all()) and size[0] == 0
    assert bool((adv.min() >= 0) & (adv.max() <= 1))


def test_schedule_refusals_and_registry():
    assert square_p_schedule(0, 5000) == 0.8 and square_p_schedule(5000, 5000) == pytest.approx(0.8 / 512)
    assert square_p_schedule(100, 1000) == pytest.approx(0.8 / 16)  # rescaled: query 100 of 1000 is 1000 of 10000
    attack = build_attack("square", eps=EPS, n_queries=20)
    assert type(attack) is Square and attack.n_queries == attack.steps == 20
    with pytest.raises(ValueError, match="differ"):
        Square(steps=10, n_queries=20)
    with pytest.raises(ValueError, match="loss"):
        Square(loss="dlr")
    with pytest.raises(ValueError, match="classification"):
        seg = torch.nn.Conv2d(3, 2, 1)
        Square(steps=2)(seg, torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long))
