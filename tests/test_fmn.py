"""FMN (L-inf Fast Minimum-Norm, targeted over the top classes), the benchmark protocol's minimum-norm attack in
FAB-T's place: at a fixed budget it breaks at least what torchattacks' FAB-T breaks (same iterations) on the trained
HAM10000 network and on a 10-class network; the norms it reports are those of the points it returns; it works on
data outside [0, 1]."""

from __future__ import annotations

import pytest
import torch

from helpers import accuracy, ten_class_mlp
from monai_dpaat.attacks import FMN

torchattacks = pytest.importorskip("torchattacks")


def test_no_weaker_than_torchattacks_fab_t_on_real_images(ham):
    net, x, y = ham
    eps = 2 / 255
    ours = FMN(eps=eps, steps=100, value_range=(0, 1))(net, x, y)
    fab = torchattacks.FAB(net, norm="Linf", eps=eps, steps=100, multi_targeted=True, n_classes=2, seed=0)(x, y)
    assert accuracy(net, ours, y) < accuracy(net, x, y)  # it breaks real images ...
    assert accuracy(net, ours, y) <= accuracy(net, fab, y)  # ... at least those FAB-T breaks


def test_no_weaker_than_fab_t_on_ten_classes():
    net, x, y = ten_class_mlp()
    eps = 0.01
    fab = torchattacks.FAB(net, norm="Linf", eps=eps, steps=100, multi_targeted=True, n_classes=10, seed=0)(x, y)
    ours = FMN(eps=eps, steps=100, value_range=(0, 1))(net, x, y)
    assert 0 < accuracy(net, fab, y) < 1
    assert accuracy(net, ours, y) <= accuracy(net, fab, y)


def test_reported_norms_are_those_of_the_returned_points(ham):
    net, x, y = ham
    eps = 4 / 255
    attack = FMN(eps=eps, steps=50, n_target_classes=1, value_range=(0, 1))
    adv = attack(net, x, y)
    with torch.no_grad():
        wrong = net(adv).argmax(1) != y
        clean_wrong = net(x).argmax(1) != y
    linf = (adv - x).reshape(len(x), -1).abs().amax(1)
    assert (attack.norms[clean_wrong] == 0).all() and (linf[clean_wrong] == 0).all()
    broken = wrong & ~clean_wrong
    assert broken.any() and torch.allclose(linf[broken], attack.norms[broken], atol=1e-6)
    assert (linf <= eps + 1e-6).all() and adv.min() >= 0 and adv.max() <= 1
    # robust samples keep the clean image; their smallest adversarial norm (if any) lies beyond eps
    assert (linf[~wrong] == 0).all() and (attack.norms[~wrong] > eps).all()


def test_the_step_follows_the_data_range(ham):
    """The same images and network in [0, 255] units: the same samples break at the same relative budget."""
    net, x, y = ham

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, z):
            return self.net(z / 255)

    unit = FMN(eps=4 / 255, steps=50, n_target_classes=1, value_range=(0, 1))(net, x, y)
    scaled = FMN(eps=4.0, steps=50, n_target_classes=1, value_range=(0, 255))(Scaled().eval(), x * 255, y)
    with torch.no_grad():
        a, b = net(unit).argmax(1) != y, net(scaled / 255).argmax(1) != y
    assert (a == b).float().mean() >= 0.95 and a.any()


def test_bad_settings():
    with pytest.raises(ValueError, match="n_target_classes"):
        FMN(n_target_classes=0)
    with pytest.raises(ValueError, match="alpha_final <= alpha_init"):
        FMN(alpha_init=0.1, alpha_final=1.0)
    with pytest.raises(ValueError, match="gamma_final <= gamma_init"):
        FMN(gamma_init=0.001, gamma_final=0.05)
    with pytest.raises(ValueError, match="loss_function must be None"):
        FMN(loss_function=torch.nn.CrossEntropyLoss())
