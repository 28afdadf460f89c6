"""The benchmark's segmentation protocol v1 (issue 14): the per-sample worst case by Dice over SegPGD, CosPGD, APGD on
the per-pixel CE (``APGDSeg``) and a score-based Square on dense outputs (``DenseSquare``), in 2D (real H&E tiles)
and 3D (a real BraTS FLAIR crop), through a sliding-window inferer; the masking flag on a network with no useful
gradient. The networks are small MONAI UNets fitted for a few seconds to the real crops, so their Dice is high enough
for an attack to have something to lower."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet

from monai_dpaat.attacks import APGDSeg, DenseSquare
from monai_dpaat.conventions import per_sample_dice
from monai_dpaat.evaluation.bundle_benchmark import _segmentation_results
from monai_dpaat.evaluation.protocol import SEGMENTATION_PROTOCOLS, segmentation_protocol
from monai_dpaat.evaluation.suite import WORST_CASE, RobustnessEvaluator
from monai_dpaat.networks import InfererNetwork

EPS = 8 / 255


def _fit(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 60) -> torch.nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y[:, 0]).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def nuclei(data_dir):
    """Two real H&E crops ``(2, 3, 48, 48)`` in [0, 1] with their nucleus masks, and a UNet fitted to them."""
    from PIL import Image

    organ = sorted(p for p in (data_dir / "nuclei_he").iterdir() if p.is_dir())[0]
    tile = sorted((organ / "tissue images").glob("*.png"))[0]
    image = np.asarray(Image.open(tile).convert("RGB"), dtype=np.float32) / 255.0
    mask = np.asarray(Image.open(organ / "mask binary" / tile.name)) > 0
    xs, ys = [], []
    for r, c in ((0, 0), (96, 96)):
        xs.append(torch.from_numpy(image[r:r + 96:2, c:c + 96:2].copy()).permute(2, 0, 1))
        ys.append(torch.from_numpy(mask[r:r + 96:2, c:c + 96:2].copy()).long()[None])
    x, y = torch.stack(xs), torch.stack(ys)
    assert 0 < y.float().mean() < 1
    torch.manual_seed(0)
    return _fit(UNet(2, 3, 2, (8, 16, 32), (2, 2)), x, y), x, y


@pytest.fixture(scope="module")
def brats(data_dir):
    """Two real z-scored BraTS FLAIR crops ``(2, 1, 24, 24, 16)`` (96 x 96 x 64 mm, 4x down) around the tumour,
    whole-tumour labels, and a 3D UNet fitted to them."""
    import nibabel as nib

    case = data_dir / "brats2013" / "brats_2013_pat0003_1"
    flair = np.asarray(nib.load(case / "Flair_subtrMeanDivStd.nii.gz").dataobj, dtype=np.float32)
    label = np.asarray(nib.load(case / "OTMultiClass.nii.gz").dataobj) > 0
    centre = np.argwhere(label).mean(0).astype(int)
    xs, ys = [], []
    for shift in ((0, 0, 0), (-16, 16, 8)):
        lo = np.clip(centre + np.array(shift) - np.array((48, 48, 32)), 0, np.array(flair.shape) - (96, 96, 64))
        sl = tuple(slice(a, a + n) for a, n in zip(lo, (96, 96, 64)))
        xs.append(F.avg_pool3d(torch.from_numpy(flair[sl].copy())[None, None], 4)[0])
        ys.append(torch.from_numpy(label[sl][2::4, 2::4, 2::4].copy()).long()[None])
    x, y = torch.stack(xs), torch.stack(ys)
    assert 0.05 < y.float().mean() < 0.95
    torch.manual_seed(0)
    return _fit(UNet(3, 1, 2, (8, 16), (2,)), x, y), x, y


@pytest.mark.parametrize("case, roi", [("nuclei", (32, 32)), ("brats", (16, 16, 16))])
def test_worst_case_by_dice_through_a_sliding_window(case, roi, request):
    net, x, y = request.getfixturevalue(case)
    model = InfererNetwork(net, SlidingWindowInferer(roi_size=roi, sw_batch_size=4, overlap=0.25))
    attacks = segmentation_protocol(EPS, budget="quick")
    attacks["Square-seg"].n_queries = 50  # the search's cost; its checks below do not need the whole budget
    # eps as a fraction of each crop's intensity range: z-scored MRI spans ~8 units, not 1
    result = RobustnessEvaluator(attacks, task="segmentation", eps_units="range", hd95=False, progress=False)(
        model, [(x, y)])
    clean = result.rows["Original"]["dice"]
    assert clean > 0.5, f"the fitted {case} network segments its crops (Dice {clean:.3f})"
    for label in ("SegPGD", "CosPGD", "APGD-seg"):
        assert result.rows[label]["dice"] < clean - 0.05, (label, result.rows[label]["dice"], clean)
    worst = result.rows[WORST_CASE]["dice"]
    assert worst <= min(result.rows[label]["dice"] for label in attacks) + 1e-9
    # every attack stayed inside its budget (measured: within_budget pools only those), in the data's units
    assert result.meta["worst_case_pool"] == ["Original", *attacks]
    width = float((x.amax() - x.amin()))
    assert all(0 < result.rows[label]["linf"] <= EPS * width + 1e-5 for label in attacks)


def test_apgd_seg_returns_its_lowest_dice_point(nuclei):
    net, x, y = nuclei
    attack = APGDSeg(eps=EPS, steps=20, n_restarts=2, generator=torch.Generator().manual_seed(0))
    adv = attack(net, x, y)
    with torch.no_grad():
        clean, dice = per_sample_dice(net(x), y), per_sample_dice(net(adv), y)
    assert torch.allclose(dice, attack.dice) and (dice <= clean).all() and (dice < clean - 0.05).any()
    assert (adv - x).abs().max() <= EPS + 1e-6 and adv.min() >= 0 and adv.max() <= 1


def test_dense_square_reads_outputs_only(nuclei):
    net, x, y = nuclei

    def no_backward(*_):
        raise AssertionError("DenseSquare took a gradient")

    hooks = [p.register_hook(no_backward) for p in net.parameters()]
    try:
        attack = DenseSquare(eps=16 / 255, steps=100, generator=torch.Generator().manual_seed(0))
        adv = attack(net, x, y)
    finally:
        for h in hooks:
            h.remove()
    with torch.no_grad():
        _, soft_clean = attack.margin_and_loss(net, x, y)
        _, soft_adv = attack.margin_and_loss(net, adv, y)
    assert (soft_adv < soft_clean).all() and (attack.queries > 1).all()
    assert (adv - x).abs().max() <= 16 / 255 + 1e-6


class _Quantised(torch.nn.Module):
    """A segmenter whose input is rounded to 8 levels: zero gradient almost everywhere, decisions not robust."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 8) / 8)  # torch.round's gradient is 0


def test_black_box_beating_every_gradient_attack_is_flagged(nuclei):
    net, x, y = nuclei
    masked = _Quantised(net).eval()
    part, flags, n = _segmentation_results(masked, [(x, y)], segmentation_protocol(16 / 255, budget="quick"), 0,
                                           False, "cpu", False)
    gradient = min(part["per_attack"][k]["dice"] for k in ("SegPGD", "CosPGD", "APGD-seg"))
    assert part["per_attack"]["Square-seg"]["dice"] < gradient and n == 2
    assert any("Square-seg (black-box)" in f and "gradient masking" in f for f in flags), flags


def test_protocol_table_and_bad_input():
    assert set(SEGMENTATION_PROTOCOLS["v2"]) == {"standard", "quick"}
    standard = segmentation_protocol(EPS)
    assert [a.steps for a in standard.values()] == [100, 100, 100, 5000]
    assert standard["SegPGD"].alpha == pytest.approx(2.5 * EPS / 100)
    with pytest.raises(ValueError, match="budget must be one of"):
        segmentation_protocol(EPS, budget="fast")
    with pytest.raises(ValueError, match="unknown protocol version"):
        segmentation_protocol(EPS, version="v0")
    with pytest.raises(ValueError, match="protocol 'v1' has no segmentation part; segmentation starts at v2"):
        segmentation_protocol(EPS, version="v1")
    with pytest.raises(ValueError, match="loss must be 'ce'"):
        APGDSeg(loss="dlr")


def test_labels_and_outputs_that_fit_no_task_are_named(caplog):
    from monai_dpaat.evaluation.bundle_benchmark import _label_maps, _task_of

    x = torch.zeros(2, 3, 8, 8)
    assert _label_maps(torch.ones(2, 8, 8), x, 2, "here").shape == (2, 1, 8, 8)
    assert _label_maps(F.one_hot(torch.ones(2, 8, 8).long(), 3).permute(0, 3, 1, 2), x, 3, "here").max() == 1
    with pytest.raises(ValueError, match=r"here: labels of shape \(2, 1, 4, 4\) do not fit images"):
        _label_maps(torch.zeros(2, 1, 4, 4), x, 2, "here")
    with pytest.raises(ValueError, match=r"here: label values \[0, 3\] are outside \[0, 1\]"):
        _label_maps(torch.tensor([0, 3]).repeat_interleave(64).reshape(2, 1, 8, 8), x, 2, "here")
    jpeg_like = torch.tensor([0.0, 0.02, 0.97, 1.0]).repeat(32).reshape(2, 1, 8, 8)  # a compressed mask in [0, 1]
    with caplog.at_level("WARNING"):
        assert torch.equal(_label_maps(jpeg_like, x, 2, "here"), jpeg_like.round().long())
    assert "here: 64 of 128 label values are not class indices" in caplog.text
    assert _task_of(torch.zeros(1, 4), "b") == ("classification", 4)
    assert _task_of([torch.zeros(1, 3, 8, 8, 8)], "b") == ("segmentation", 3)  # deep supervision: the first
    with pytest.raises(ValueError, match=r"'b' outputs shape \(1, 2, 5\)"):
        _task_of(torch.zeros(1, 2, 5), "b")
