"""APGD (Croce & Hein 2020): schedule, losses, per-sample budgets, N-D inputs, and strength against PGD-10
on a small CNN trained on real HAM10000 images (mel vs nv, 32x32)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_cnn
from torch import nn

from monai_dpaat.attacks import APGD, APGDDLR, PGD, build_attack, dlr_loss
from monai_dpaat.attacks.apgd import apgd_checkpoints

EPS = 8 / 255


def accuracy(net, x, y):
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


# --------------------------------------------------------------------------- strength on a real model
@pytest.mark.slow
def test_apgd_at_least_as_strong_as_pgd10_on_trained_ham_model(ham):
    net, x, y = ham
    clean = accuracy(net, x, y)
    assert clean >= 0.65, f"the tiny HAM10000 model should learn mel vs nv, clean accuracy {clean:.2f}"
    pgd = PGD(eps=EPS, alpha=2 / 255, steps=10, generator=torch.Generator().manual_seed(0))(net, x, y)
    adv = APGD(eps=EPS, generator=torch.Generator().manual_seed(0))(net, x, y)
    acc_pgd, acc_apgd = accuracy(net, pgd, y), accuracy(net, adv, y)
    assert acc_apgd <= acc_pgd, f"APGD-100 {acc_apgd:.3f} must not be weaker than PGD-10 {acc_pgd:.3f}"
    assert acc_apgd < clean
    assert (adv - x).abs().max() <= EPS + 1e-6
    lo, hi = x.flatten(1).amin(1), x.flatten(1).amax(1)  # value range taken from each image
    assert (adv.flatten(1).amin(1) >= lo - 1e-6).all() and (adv.flatten(1).amax(1) <= hi + 1e-6).all()


@pytest.mark.slow
def test_restarts_only_add_successes_and_match_torchattacks(ham):
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = ham
    one = APGD(eps=EPS, steps=20, n_restarts=1, generator=torch.Generator().manual_seed(1))(net, x, y)
    three = APGD(eps=EPS, steps=20, n_restarts=3, generator=torch.Generator().manual_seed(1))(net, x, y)
    with torch.no_grad():
        wrong_one, wrong_three = net(one).argmax(1) != y, net(three).argmax(1) != y
    assert (wrong_three | ~wrong_one).all(), "a sample fooled by the first restart must stay fooled"
    # same algorithm as the reference implementation (images here are in [0, 1], where both clamp alike)
    with torch.random.fork_rng():  # torchattacks reseeds the global RNG
        ref = torchattacks.APGD(net, eps=EPS, steps=20, n_restarts=1, seed=0)(x, y)
    assert abs(accuracy(net, one, y) - accuracy(net, ref, y)) <= 2 / len(y)


# --------------------------------------------------------------------------- algorithm pieces
def test_checkpoint_schedule_matches_croce_hein():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), x 100 iterations
    assert apgd_checkpoints(100) == [21, 40, 56, 69, 79, 86, 92, 98]
    assert apgd_checkpoints(10)[0] == 1 and apgd_checkpoints(1) == [0]


def test_dlr_loss_hand_computed():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    # y = 0 is on top: -(3 - 2) / (3 - 1) = -0.5; y = 2: -(2 - 3) / (3 - 1) = 0.5
    assert torch.allclose(dlr_loss(logits, torch.tensor([0, 2])), torch.tensor([-0.5, 0.5]))
    # shift and scale invariant
    assert torch.allclose(dlr_loss(5 * logits + 7, torch.tensor([0, 2])), torch.tensor([-0.5, 0.5]))
    with pytest.raises(ValueError, match="K >= 3"):
        dlr_loss(torch.zeros(2, 2), torch.tensor([0, 1]))


def test_dlr_needs_three_classes_and_classification_outputs():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=">= 3 classes"):
        APGD(loss="dlr", steps=2)(tiny_cnn(out=2), x, torch.tensor([0, 1]))
    seg = nn.Conv2d(3, 2, 1)
    with pytest.raises(ValueError, match="SegPGD"):
        APGD(steps=2)(seg, x, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        APGD(steps=2)(tiny_cnn(out=2), x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="norm"):
        APGD(norm="L1")
    with pytest.raises(ValueError, match="loss"):
        APGD(loss="hinge")


def test_unfooled_sample_gets_the_highest_loss_point_not_the_clean_image():
    # linear 2-class model with a huge margin: no point in the ball is misclassified and the CE is
    # maximised exactly at the corner x - eps * sign(w)
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with torch.no_grad():
        lin[1].bias.copy_(torch.tensor([10.0, 0.0]))
    x = torch.rand(3, 3, 4, 4) * 0.5 + 0.25
    y = torch.zeros(3, dtype=torch.long)
    adv = APGD(eps=0.05, steps=20, value_range=None)(lin, x, y)
    w = (lin[1].weight[0] - lin[1].weight[1]).reshape(1, 3, 4, 4)
    assert torch.allclose(adv, x - 0.05 * w.sign(), atol=1e-6)


def test_per_sample_eps_and_3d_inputs_and_l2():
    torch.manual_seed(0)
    net3d = tiny_cnn(out=3, dims=3)
    x = torch.rand(3, 3, 8, 8, 8)
    with torch.no_grad():
        y = net3d(x).argmax(1)  # correctly classified at the start, so the attack has work to do
    eps = torch.tensor([0.0, 0.02, 0.1])
    adv = APGD(eps=eps, steps=5, loss="dlr")(net3d, x, y)
    linf = (adv - x).flatten(1).abs().amax(1)
    assert adv.shape == x.shape
    assert linf[0] == 0 and (linf <= eps + 1e-6).all() and linf[2] > 0.02
    adv2 = APGD(eps=0.5, norm="L2", steps=5)(net3d, x, torch.nn.functional.one_hot(y, 3).float())
    assert (adv2 != x).any()
    assert ((adv2 - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()


def test_sigmoid_binary_classifier_model_state_and_no_grad():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 1))
    net.train()
    x = torch.rand(4, 3, 8, 8)
    with torch.no_grad():
        net.eval()
        y = (net(x)[:, 0] > 0).long()
        net.train()
    running = net[1].running_mean.clone()
    with torch.no_grad():
        adv = APGD(eps=1.0, steps=10, value_range=None)(net, x, y)
    assert net.training and torch.equal(net[1].running_mean, running)
    assert all(p.grad is None for p in net.parameters())
    net.eval()
    with torch.no_grad():
        assert ((net(adv)[:, 0] > 0).long() != y).all(), "eps=1 unclamped must flip a tiny sigmoid classifier"


def test_registry_names():
    assert isinstance(build_attack("apgd"), APGD) and build_attack("apgd").steps == 100
    assert build_attack("APGD-CE").loss_name == "ce"
    dlr = build_attack("apgd-dlr", eps=4 / 255)
    assert isinstance(dlr, APGDDLR) and dlr.indiv_loss is dlr_loss and dlr.eps == 4 / 255
    assert build_attack("apgd", steps=25).steps == 25  # step counts are keywords, not part of the name
