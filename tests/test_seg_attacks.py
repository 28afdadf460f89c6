"""SegPGD and CosPGD: the per-pixel weighting (hand-computed), and the attacks on 2D / 3D, multi-class and
one-channel sigmoid segmenters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_dpaat.attacks import CosPGD, SegPGD, build_attack
from monai_dpaat.attacks.segpgd import pixel_terms

EPS = 8 / 255


class Centered(nn.Module):
    """``(x - 0.5) * gain``: makes a randomly initialised net's prediction follow its input, so the
    prediction map is not one constant class and an 8/255 perturbation can change it."""

    def __init__(self, gain: float = 100.0):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        return (x - 0.5) * self.gain


def seg_net(out_channels: int, dims: int = 2) -> nn.Module:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    torch.manual_seed(0)
    return nn.Sequential(Centered(), conv(1, 8, 3, padding=1), nn.ReLU(), conv(8, 8, 3, padding=1), nn.ReLU(),
                         conv(8, out_channels, 1))


def pixel_accuracy(net, x, y, sigmoid=False):
    with torch.no_grad():
        out = net(x)
        pred = (out > 0).long() if sigmoid else out.argmax(1, keepdim=True)
    return (pred == y).float().mean().item()


def own_labels(net, x, sigmoid=False):
    """Targets = the network's own clean prediction (every pixel starts correct), ``(N, 1, *spatial)``."""
    with torch.no_grad():
        out = net(x)
    return (out > 0).long() if sigmoid else out.argmax(1, keepdim=True)


# --------------------------------------------------------------------------- the weighting, by hand
def test_segpgd_weights_correct_and_wrong_pixels_by_one_minus_lt_and_lt():
    # one image, 2 classes, 2 pixels: pixel 0 correct (logits 2, 0; label 0), pixel 1 wrong (2, 0; label 1)
    logits = torch.tensor([[[[2.0, 2.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    target = torch.tensor([[[[0, 1]]]])  # (1, 1, 1, 2)
    ce_right, ce_wrong = math.log(1 + math.exp(-2)), math.log(1 + math.exp(2))
    attack = SegPGD(steps=10)
    for t in (0, 4, 9):
        lam = t / 20
        expected = ((1 - lam) * ce_right + lam * ce_wrong) / 2
        assert attack.weight(t) == pytest.approx(lam)
        assert attack.step_loss(logits, target, t).item() == pytest.approx(expected, rel=1e-6)


def test_cospgd_scales_by_detached_cosine_similarity():
    # softmax (0.8, 0.2), target class 0: cos = 0.8 / ||(0.8, 0.2)||
    z = math.log(4.0)
    logits = torch.tensor([[[[z]], [[0.0]]]], requires_grad=True)  # (1, 2, 1, 1)
    target = torch.tensor([[[[0]]]])
    cos = 0.8 / math.sqrt(0.8**2 + 0.2**2)
    assert CosPGD.scale(logits, target).item() == pytest.approx(cos, rel=1e-6)
    loss = CosPGD().step_loss(logits, target, 0)
    assert loss.item() == pytest.approx(cos * -math.log(0.8), rel=1e-6)
    (g,) = torch.autograd.grad(loss, logits)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(logits, target[:, 0]), logits)
    assert torch.allclose(g, cos * g_ce), "the cosine weight must be detached"
    # sigmoid: s = 0.8, target 1 -> 0.8 / ||(0.2, 0.8)||; target 0 -> 0.2 / ||(0.2, 0.8)||
    s_logit = torch.full((1, 1, 1, 2), math.log(4.0))
    cos_sig = CosPGD.scale(s_logit, torch.tensor([[[[1, 0]]]])).flatten()
    norm = math.sqrt(0.8**2 + 0.2**2)
    assert torch.allclose(cos_sig, torch.tensor([0.8 / norm, 0.2 / norm]))


def test_pixel_terms_targets_and_errors():
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    a = pixel_terms(logits, labels)
    b = pixel_terms(logits, labels[:, None])
    c = pixel_terms(logits, F.one_hot(labels, 3).permute(0, 3, 1, 2).float())
    for u, v, w in zip(a, b, c):
        assert u.shape == (2, 4, 5) and torch.equal(u, v) and torch.equal(u, w)
    with pytest.raises(ValueError, match="labels must be in"):
        pixel_terms(logits, labels + 3)
    with pytest.raises(ValueError, match="does not fit"):
        pixel_terms(logits, labels[:, :2])
    with pytest.raises(ValueError, match="activation"):
        SegPGD(activation="relu")
    with pytest.raises(ValueError, match="loss_function"):
        CosPGD(loss_function=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="segmentation outputs"):
        SegPGD(steps=1)(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]))


# --------------------------------------------------------------------------- the attacks
@pytest.mark.parametrize("attack_cls", [SegPGD, CosPGD])
@pytest.mark.parametrize("dims,channels", [(2, 3), (2, 1), (3, 2)])
def test_attacks_lower_pixel_accuracy_inside_the_ball(attack_cls, dims, channels):
    net = seg_net(channels, dims)
    shape = (2, 1, 16, 16) if dims == 2 else (2, 1, 8, 8, 8)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    sigmoid = channels == 1
    y = own_labels(net, x, sigmoid)
    attack = attack_cls(eps=EPS, alpha=2 / 255, steps=10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # as inside a MONAI evaluator
        adv = attack(net, x, y)
    assert adv.shape == x.shape
    assert (adv - x).abs().max() <= EPS + 1e-6
    assert adv.min() >= x.min() - 1e-6 and adv.max() <= x.max() + 1e-6
    acc = pixel_accuracy(net, adv, y, sigmoid)
    noise = (x + torch.empty_like(x).uniform_(-EPS, EPS, generator=torch.Generator().manual_seed(2))).clamp(
        x.min(), x.max())
    acc_noise = pixel_accuracy(net, noise, y, sigmoid)
    assert acc < min(0.97, acc_noise - 0.03), (
        f"{attack_cls.__name__} left pixel accuracy {acc:.3f} (clean 1.0, uniform noise {acc_noise:.3f})"
    )


def test_deep_supervision_outputs_and_registry():
    net = seg_net(2)

    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            return [out, F.avg_pool2d(out, 2)]

    x = torch.rand(1, 1, 16, 16)
    y = own_labels(net, x)
    adv = build_attack("segpgd", steps=3)(Deep(), x, y)
    assert pixel_accuracy(net, adv, y) < 1.0
    assert isinstance(build_attack("CosPGD"), CosPGD) and build_attack("cos-pgd").steps == 10
    assert build_attack("segpgd", steps=20).steps == 20  # step counts are keywords, not part of the name
