"""The "Worst case" row pools only the attacks within their budget: unbounded Gaussian noise (``unet-paper``'s
``GN``, std 0.1: L-inf ~0.3 against eps 8/255) keeps its own row but is no worst case at the budget.

Small deterministic models: a PGD at 8/255 can flip only what lies within 8/255 of the decision threshold,
while GN's unclipped noise flips more, so pooling GN would make the worst case lower than PGD's row."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_dpaat.attacks import PGD, Attack, GaussianNoise
from monai_dpaat.attacks.base import with_eps_units
from monai_dpaat.evaluation import ORIGINAL, WORST_CASE, RobustnessEvaluator, preset, write_report
from monai_dpaat.evaluation.metrics import perturbation_norms
from monai_dpaat.evaluation.suite import within_budget

EPS = 8 / 255


def _threshold_segmenter() -> nn.Module:
    """One sigmoid foreground channel, logit ``50 * (x - 0.5)``: foreground where a pixel exceeds 0.5."""
    net = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(50.0)
        net.bias.fill_(-25.0)
    return net


def _segmentation_batch(n: int = 4, size: int = 16) -> list[dict]:
    """Left half foreground at 0.6 (one column per sample at 0.52, within 8/255 of the threshold), right half
    background at 0.4: PGD flips exactly that column; noise of std 0.1 flips about 16 % of every other pixel."""
    images = torch.full((n, 1, size, size), 0.4)
    images[..., : size // 2] = 0.6
    for i in range(n):
        images[i, 0, :, i] = 0.52
    labels = torch.zeros(n, 1, size, size)
    labels[..., : size // 2] = 1.0
    return [{"image": images, "label": labels}]


def _pair_classifier_batch() -> list[dict]:
    """Logits = the two pixels. 28 samples with a gap of 0.08 between the true and the other pixel (PGD at 8/255
    closes at most 2 * 8/255 = 0.063 of it; noise of std 0.1 flips about 29 %), 4 with a gap of 0.04 (PGD flips
    them)."""
    gaps = torch.tensor([0.08] * 28 + [0.04] * 4)
    labels = torch.arange(32) % 2
    images = torch.empty(32, 1, 1, 2)
    images[:, 0, 0, 0] = torch.where(labels == 0, 0.5 + gaps / 2, 0.5 - gaps / 2)
    images[:, 0, 0, 1] = 1.0 - images[:, 0, 0, 0]
    return [{"image": images, "label": labels}]


def test_segmentation_worst_case_is_pgd_not_unbounded_noise(tmp_path):
    suite = preset("unet-paper", eps=EPS, only=["PGD", "GN"])  # GN: std 0.1, unclipped (as in the preset)
    assert suite["GN"].bounded is False
    result = RobustnessEvaluator(suite, task="segmentation", hd95=False, progress=False, seed=0)(
        _threshold_segmenter(), _segmentation_batch())
    rows = result.rows
    assert list(rows) == [ORIGINAL, "PGD", "GN", WORST_CASE]  # GN keeps its row and its label
    assert rows["GN"]["linf"] > 5 * EPS and rows["PGD"]["linf"] <= EPS + 1e-6
    # pooling GN would lower the worst case: GN is worse than PGD on average, hence on some sample
    assert rows["GN"]["dice"] < rows["PGD"]["dice"] < rows[ORIGINAL]["dice"]
    assert rows[WORST_CASE] == pytest.approx(rows["PGD"], nan_ok=True)  # hd95 off: NaN in both; PGD is the worst within budget on every sample
    assert result.meta["worst_case_pool"] == [ORIGINAL, "PGD"]
    assert "GN" in result.meta["worst_case_excluded"] and "unbounded" in result.meta["worst_case_excluded"]["GN"]
    assert result.meta["worst_case_choice"] == {ORIGINAL: 0, "PGD": 4}
    write_report({"threshold": result}, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Pooled: PGD; not pooled: GN (unbounded" in md, md[:600]


def test_classification_worst_case_is_pgd_not_unbounded_noise():
    suite = preset("unet-paper", eps=EPS, only=["PGD", "GN"], value_range=(0, 1))
    result = RobustnessEvaluator(suite, task="classification", progress=False, seed=0)(
        nn.Flatten(), _pair_classifier_batch())
    acc = {row: values["accuracy"] for row, values in result.rows.items()}
    assert acc[ORIGINAL] == 1.0 and acc["PGD"] == pytest.approx(28 / 32)  # PGD fools exactly the 0.04 gaps
    # GN fools more than the four PGD fools, so at least one sample PGD left correct: a pooled GN would drop
    # the worst case below PGD's row
    assert acc["GN"] < acc["PGD"]
    assert acc[WORST_CASE] == pytest.approx(acc["PGD"])
    assert result.confusion[WORST_CASE] == result.confusion["PGD"]
    assert result.meta["worst_case_pool"] == [ORIGINAL, "PGD"] and list(result.meta["worst_case_excluded"]) == ["GN"]


def test_bounded_attacks_are_pooled():
    """GN clipped to the budget (``gn_eps``) is a bounded attack: pooled, with PGD."""
    suite = preset("unet-paper", eps=EPS, only=["PGD", "GN"], gn_eps=EPS, value_range=(0, 1))
    assert suite["GN"].bounded
    result = RobustnessEvaluator(suite, task="classification", progress=False, seed=0)(
        nn.Flatten(), _pair_classifier_batch())
    assert result.meta["worst_case_pool"] == [ORIGINAL, "PGD", "GN"] and result.meta["worst_case_excluded"] == {}
    assert result.rows["GN"]["linf"] <= EPS + 1e-6
    worst = result.rows[WORST_CASE]["accuracy"]
    assert worst <= min(result.rows["PGD"]["accuracy"], result.rows["GN"]["accuracy"])


class _Overshoot(Attack):
    """Claims budget ``eps`` but adds ``step`` to every pixel: its measured L-inf exceeds the budget."""

    def __init__(self, eps: float, step: float):
        super().__init__(eps=eps, value_range=None)
        self.step = step

    def perturb(self, network, x, y, eps, alpha, lo, hi):
        return x + self.step


def test_an_attack_beyond_its_budget_is_reported_but_not_pooled():
    suite = {"PGD": PGD(eps=EPS, alpha=EPS / 4, steps=5, value_range=(0, 1)), "liar": _Overshoot(eps=EPS, step=0.2),
             "honest": _Overshoot(eps=EPS, step=EPS)}  # exactly at the budget: inside
    result = RobustnessEvaluator(suite, task="classification", progress=False, seed=0)(
        nn.Flatten(), _pair_classifier_batch())
    assert "liar" in result.rows and result.rows["liar"]["linf"] == pytest.approx(0.2)
    assert result.meta["worst_case_pool"] == [ORIGINAL, "PGD", "honest"]
    assert result.meta["worst_case_excluded"] == {"liar": "perturbation beyond its budget on 32 of 32 samples"}


def test_within_budget_per_norm_and_units():
    clean = torch.linspace(0, 10, 2 * 1 * 3 * 3).reshape(2, 1, 3, 3)  # 9 values 10/17 apart per sample
    width = 8 * 10 / 17  # each sample's intensity range
    pgd = PGD(eps=0.1, value_range=None, random_start=False)
    for step, inside in ((0.1, True), (0.1 + 1e-3, False)):
        linf, l2 = perturbation_norms(clean + step, clean)
        assert within_budget(pgd, clean, linf, l2).tolist() == [inside, inside]
    ranged = with_eps_units(PGD(eps=0.1, value_range=None, random_start=False), "range")  # 0.1 x each range
    linf, l2 = perturbation_norms(clean + 0.1 * width * 0.99, clean)
    assert within_budget(ranged, clean, linf, l2).all()
    linf, l2 = perturbation_norms(clean + 0.1 * width * 1.01, clean)
    assert not within_budget(ranged, clean, linf, l2).any()
    noise = GaussianNoise(std=0.1)
    linf, l2 = perturbation_norms(clean, clean)
    assert not within_budget(noise, clean, linf, l2).any()  # unbounded: never inside, even unperturbed
