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


# --------------------------------------------------------------------------- parity with the reference
class RecordingAPGD(APGD):
    """APGD that keeps what each run returns ``(x_best, fooled, loss_best, x_best_adv)``, for the tests."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.runs = []

    def attack_single_run(self, *args):
        out = super().attack_single_run(*args)
        self.runs.append(out)
        return out


def reference_problem():
    """A fixed tanh MLP, 10 classes, 16 RGB 8x8 images in [0, 1] labelled with its clean predictions; its
    DLR values stay in [-1, 1] (no near-tied logits, whose tiny denominators would amplify rounding)."""
    torch.manual_seed(5)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.Tanh(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        net[3].weight.mul_(4)
        x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(105))
        y = net(x).argmax(1)
    return net, x, y


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_matches_torchattacks_best_loss_and_images(loss):
    """20 steps from the same random start (both draw it from torch's global RNG, seed 0): the same highest loss
    per sample and the same returned images as torchattacks.APGD (= auto-attack's autopgd_base). Before this
    matched, the first step-size check compared the first step's loss with the start point's loss (the
    reference compares it with its loss buffer's unfilled, zero last row): DLR best losses here were off by up
    to 0.0076; and never-fooled samples were returned at their highest-loss point instead of the clean input
    (images off by 2 * eps)."""
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = reference_problem()
    eps = 16 / 255
    ours = RecordingAPGD(eps=eps, steps=20, loss=loss, value_range=(0, 1))
    reference = torchattacks.APGD(net, eps=eps, steps=20, loss=loss, seed=0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        adv = ours(net, x, y)
        torch.manual_seed(0)
        _, ref_fooled, ref_loss, _ = reference.attack_single_run(x, y)
        ref_adv = reference(x, y)  # reseeds with seed 0 itself
    _, fooled, best_loss, _ = ours.runs[0]
    assert 0 < int(fooled.sum()) < len(y), "some samples fooled, some not: both return rules are exercised"
    assert torch.equal(fooled, ~ref_fooled)  # the reference returns "still correct"
    assert torch.allclose(best_loss, ref_loss, atol=1e-5, rtol=1e-5), (best_loss - ref_loss).abs().max()
    assert (adv - ref_adv).abs().max() < 1e-6, (adv - ref_adv).abs().max()
    assert torch.equal(adv[~fooled], x[~fooled]), "never-fooled samples come back clean"


def test_first_step_size_check_compares_with_the_unfilled_loss_slot():
    """The reference's first oscillation window starts at row -1 of its zero-initialised loss buffer: with DLR
    on a sample that stays correctly classified (DLR < 0) the first step never counts as an increase, so at
    most k - 1 = 3 of k = 4 steps count and the step size is halved at the first check (20 steps: after
    iteration 3) even when every step increased the loss. Comparing with the start loss instead counts 4
    increases and keeps the step."""
    net, x, y = reference_problem()

    class StepRecorder(RecordingAPGD):
        def _step(self, adv, grad, step_size):
            self.step_sizes.append(step_size.flatten().clone())
            return super()._step(adv, grad, step_size)

    attack = StepRecorder(eps=2 / 255, steps=20, loss="dlr", value_range=(0, 1),
                          generator=torch.Generator().manual_seed(0))
    attack.step_sizes = []
    attack(net, x, y)
    _, fooled, _, _ = attack.runs[0]
    assert (~fooled).sum() >= 8, "the check needs samples that stay correctly classified"
    halved_at_first_check = attack.step_sizes[4] < attack.step_sizes[3]
    assert halved_at_first_check[~fooled].all(), "every never-fooled sample: step halved at the first check"


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


def test_unfooled_sample_gets_the_clean_image_and_the_run_finds_the_highest_loss_point():
    # linear 2-class model with a huge margin: no point in the ball is misclassified and the CE is
    # maximised exactly at the corner x - eps * sign(w). As the reference implementation (its x_best_adv is
    # only copied out where the sample was fooled) the attack returns the clean input; the run itself still
    # finds the highest-loss point. (Returning that point instead, as before, moved mARP and loss rows.)
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with torch.no_grad():
        lin[1].bias.copy_(torch.tensor([10.0, 0.0]))
    x = torch.rand(3, 3, 4, 4) * 0.5 + 0.25
    y = torch.zeros(3, dtype=torch.long)
    attack = RecordingAPGD(eps=0.05, steps=20, value_range=None)
    adv = attack(lin, x, y)
    assert torch.equal(adv, x)
    w = (lin[1].weight[0] - lin[1].weight[1]).reshape(1, 3, 4, 4)
    x_best, fooled, _, _ = attack.runs[0]
    assert not fooled.any() and torch.allclose(x_best, x - 0.05 * w.sign(), atol=1e-6)


def test_per_sample_eps_and_3d_inputs_and_l2():
    torch.manual_seed(0)
    net3d = tiny_cnn(out=3, dims=3)
    x = torch.rand(3, 3, 8, 8, 8)
    with torch.no_grad():
        y = net3d(x).argmax(1)  # correctly classified at the start, so the attack has work to do
    eps = torch.tensor([0.0, 0.02, 0.1])
    attack = RecordingAPGD(eps=eps, steps=5, loss="dlr")
    adv = attack(net3d, x, y)
    assert adv.shape == x.shape
    # never-fooled samples come back clean (as the reference), so the per-sample budgets are checked on the
    # points the run reached: its highest-loss points
    searched = attack.runs[0][0]
    for points in (adv, searched):
        linf = (points - x).flatten(1).abs().amax(1)
        assert linf[0] == 0 and (linf <= eps + 1e-6).all()
    assert (searched - x).flatten(1).abs().amax(1)[2] > 0.02
    l2 = RecordingAPGD(eps=0.5, norm="L2", steps=5)
    adv2 = l2(net3d, x, torch.nn.functional.one_hot(y, 3).float())
    assert (l2.runs[0][0] != x).any()
    for points in (adv2, l2.runs[0][0]):
        assert ((points - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all()


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


# ----------------------------------------------------------------------------------------- targeted APGD (APGD-T)
def _mlp_problem(classes=10):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, classes)).eval()
    x = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample correct on its clean image: APGD-T attacks them all
    return model, x, y


@pytest.mark.parametrize("eps", [0.01, 0.03])
def test_apgdt_matches_torchattacks_apgdt(eps):
    torchattacks = pytest.importorskip("torchattacks")
    from monai_dpaat.attacks import APGDT

    model, x, y = _mlp_problem()
    reference = torchattacks.APGDT(model, eps=eps, steps=20, n_classes=10, seed=0)(x, y)
    torch.manual_seed(0)  # torchattacks seeds torch's global generator
    ours = APGDT(eps=eps, steps=20, value_range=(0, 1))(model, x, y)
    assert (ours - reference).abs().max() < 1e-5
    robust = accuracy(model, ours, y)
    assert robust < 1.0 and robust == accuracy(model, reference, y)
    torch.manual_seed(0)
    untargeted = APGD(eps=eps, steps=20, value_range=(0, 1))(model, x, y)
    assert robust <= accuracy(model, untargeted, y)  # the targeted runs are at least as strong here


@pytest.mark.parametrize("classes", [2, 3])
def test_apgdt_with_fewer_than_four_classes_uses_the_logit_spread(classes):
    from monai_dpaat.attacks import APGDT
    from monai_dpaat.attacks.apgd import dlr_targeted_loss

    logits = torch.tensor([[3.0, 1.0, 0.0][:classes]])
    loss = dlr_targeted_loss(logits, torch.tensor([0]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-(3.0 - 1.0) / (3.0 - logits.min().item()))
    model, x, y = _mlp_problem(classes)
    adv = APGDT(eps=0.25, steps=10, value_range=(0, 1), generator=torch.Generator().manual_seed(0))(model, x, y)
    assert (adv - x).abs().max() <= 0.25 + 1e-6 and accuracy(model, adv, y) < 1.0


def test_apgdt_registry_and_refusals():
    from monai_dpaat.attacks import APGDT

    assert type(build_attack("apgd-t", steps=3)) is APGDT
    with pytest.raises(ValueError, match="n_target_classes"):
        APGDT(n_target_classes=0)
    with pytest.raises(ValueError, match="targeted DLR"):
        APGDT(loss="ce")
