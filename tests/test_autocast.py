"""Attacks under mixed precision (issue 15): called inside ``torch.autocast`` (CPU bfloat16 here, the CUDA path is
the same code) they return float32 images inside their bounds and break as many held-out HAM10000 images as in
float32; ``channels_last`` inputs give the same adversarial images. The input gradient stays float32: the images
are a float32 leaf, autocast only lowers the network's matmuls and convolutions."""

from __future__ import annotations

import pytest
import torch

from helpers import load_ham, trained_ham_cnn
from monai_dpaat.attacks import APGD, FGSMRS, NFGSM, PGD

EPS = 8 / 255
ATTACKS = {
    "pgd": lambda: PGD(eps=EPS, alpha=EPS / 4, steps=10, value_range=(0, 1)),
    "fgsm-rs": lambda: FGSMRS(eps=EPS, value_range=(0, 1)),
    "n-fgsm": lambda: NFGSM(eps=EPS, value_range=(0, 1)),
    "apgd": lambda: APGD(eps=EPS, steps=10, value_range=(0, 1)),
}


@pytest.fixture(scope="module")
def problem(data_dir):
    net = trained_ham_cnn(data_dir)
    x, y = load_ham(data_dir, 16, offset=40, size=32)  # held-out lesions
    return net, x, y


def _seeded(attack, net, images, labels, context=None):
    """The attack's images from the same random start (seed 0), inside ``context`` if given."""
    torch.manual_seed(0)
    if context is None:
        return attack(net, images, labels)
    with context:
        return attack(net, images, labels)


def _accuracy(net, images, labels) -> float:
    with torch.no_grad():
        return (net(images).argmax(1) == labels).float().mean().item()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_under_bfloat16_autocast(problem, name):
    net, x, y = problem
    attack = ATTACKS[name]()
    full = _seeded(attack, net, x, y)
    mixed = _seeded(attack, net, x, y, torch.autocast("cpu", dtype=torch.bfloat16))
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed).all()
    size = (mixed - x).abs().flatten(1).amax(1)
    assert bool((size <= attack.perturbation_bound(EPS) + 1e-6).all())
    assert mixed.min() >= 0 and mixed.max() <= 1
    clean, robust_full, robust_mixed = _accuracy(net, x, y), _accuracy(net, full, y), _accuracy(net, mixed, y)
    assert robust_full < clean  # the attack does something on this network ...
    assert abs(robust_mixed - robust_full) <= 0.1, (clean, robust_full, robust_mixed)  # ... and as much under autocast


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_channels_last_inputs_give_the_same_images(problem, name):
    net, x, y = problem
    attack = ATTACKS[name]()
    plain = _seeded(attack, net, x, y)
    last = _seeded(attack, net, x.contiguous(memory_format=torch.channels_last), y)
    assert torch.allclose(plain, last, atol=1e-6)
