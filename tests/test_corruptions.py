"""Natural corruptions and the mean corruption error (``monai_dpaat.evaluation.corruptions``) on real sample data:
HAM10000 dermatoscopy photos, an H&E tile (NuInsSeg layout) and z-scored BraTS 2013 FLAIR crops."""

from __future__ import annotations

import json
import random
from itertools import pairwise

import numpy as np
import pytest
import torch
from torch import nn

from monai.data import MetaTensor

from monai_dpaat.evaluation.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    applicable_corruptions,
    corrupt,
    corruption_table,
    mean_corruption_error,
    severity_table,
)

PHOTO_ONLY = {"jpeg", "stain"}
MRI_ONLY = {"rician_noise", "gibbs", "kspace_spike", "motion_ghosting"}
RANDOM = {"gaussian_noise", "rician_noise", "bias_field", "kspace_spike", "stain"}  # a seeded pattern, not a coin


# ---------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def ham64(data_dir):
    """4 real HAM10000 photos ``(4, 3, 64, 64)`` in [0, 1]."""
    from helpers import load_ham

    return load_ham(data_dir, 2, size=64)[0]


@pytest.fixture(scope="module")
def he_tile(data_dir):
    """Two 96x96 crops of a real H&E tile ``(2, 3, 96, 96)`` in [0, 1]."""
    from PIL import Image

    path = data_dir / "nuclei_he" / "tcga_miccai2015" / "tissue images" / "tcga_miccai2015_01.png"
    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0
    return torch.stack([rgb[:, :96, :96], rgb[:, 200:296, 150:246]])


@pytest.fixture(scope="module")
def brats(data_dir):
    """``(images (2, 1, 48, 48, 32), labels (2, 1, 48, 48, 32))``: two z-scored FLAIR crops of BraTS case 3 at the
    tumour's edge (one with background), and its whole-tumour labels."""
    import nibabel as nib

    case = data_dir / "brats2013" / "brats_2013_pat0003_1"
    flair = nib.load(case / "Flair_subtrMeanDivStd.nii.gz").get_fdata(dtype=np.float32)
    tumour = np.asarray(nib.load(case / "OTMultiClass.nii.gz").dataobj) > 0
    corners = [(60, 170, 60), (100, 130, 80)]
    crop = [tuple(slice(c, c + n) for c, n in zip(corner, (48, 48, 32), strict=True)) for corner in corners]
    images = torch.from_numpy(np.stack([flair[c] for c in crop]))[:, None].contiguous()
    labels = torch.from_numpy(np.stack([tumour[c] for c in crop]))[:, None].long()
    assert 0.1 < labels.float().mean() < 0.9 and images.min() < -2 < 3 < images.max()  # a z-scored tumour edge
    return images, labels


@pytest.fixture(scope="module")
def datasets(ham64, he_tile, brats):
    return {"ham": ham64, "he": he_tile, "mri": brats[0], "slice": brats[0][..., 16].contiguous()}


CASES = [("ham", c) for c in ("gaussian_noise", "blur", "bias_field", "contrast", "jpeg", "stain")]
CASES += [("he", c) for c in ("gaussian_noise", "blur", "contrast", "jpeg", "stain")]
CASES += [("mri", c) for c in CORRUPTIONS if c not in PHOTO_ONLY]
CASES += [("slice", c) for c in ("rician_noise", "bias_field", "gibbs", "kspace_spike", "motion_ghosting")]  # 2D MR


def _distortion(y: torch.Tensor, x: torch.Tensor) -> float:
    """Mean absolute change as a fraction of the batch's range."""
    return float((y - x).abs().mean() / (x.max() - x.min()))


# ---------------------------------------------------------------------------------------------- registry
def test_registry_has_five_levels_and_a_json_table():
    assert list(CORRUPTIONS) == ["gaussian_noise", "rician_noise", "blur", "bias_field", "contrast", "gibbs",
                                 "kspace_spike", "motion_ghosting", "jpeg", "stain"]
    table = json.loads(json.dumps(severity_table()))
    assert list(table) == list(CORRUPTIONS)
    for name, row in table.items():
        assert len(row["levels"]) == len(SEVERITIES) == 5, name
        assert len({json.dumps(v) for v in row["levels"]}) == 5, f"{name}: the five severities must differ"


def test_applicable_corruptions_follow_the_rule(ham64, he_tile, brats):
    photo = ["gaussian_noise", "blur", "bias_field", "contrast", "jpeg", "stain"]
    assert applicable_corruptions(ham64) == photo
    assert applicable_corruptions(he_tile * 255.0) == photo  # [0, 255] photos too
    assert PHOTO_ONLY.isdisjoint(applicable_corruptions(ham64 - 0.5))  # normalised values: not a photo any more
    mri = applicable_corruptions(brats[0])
    assert set(mri) == set(CORRUPTIONS) - PHOTO_ONLY
    assert set(applicable_corruptions(brats[0][..., 16])) == set(mri)  # a 1-channel 2D slice is MR too
    rgb_volume = brats[0].expand(-1, 3, -1, -1, -1).clamp(0, 1)  # 3D, 3 channels, in [0, 1]: still no jpeg
    volume_fits = set(applicable_corruptions(rgb_volume))
    assert PHOTO_ONLY.isdisjoint(volume_fits) and volume_fits >= MRI_ONLY


# ---------------------------------------------------------------------------------------------- corrupt
@pytest.mark.parametrize("data,name", CASES, ids=[f"{d}-{c}" for d, c in CASES])
def test_corruption_properties_on_real_images(datasets, data, name):
    x = datasets[data]
    lo = x.reshape(len(x), -1).min(1).values.reshape(-1, *[1] * (x.ndim - 1))
    hi = x.reshape(len(x), -1).max(1).values.reshape(-1, *[1] * (x.ndim - 1))
    before = x.clone()
    distortion = []
    for s in SEVERITIES:
        y = corrupt(x, name, s, seed=3)
        assert type(y) is torch.Tensor and y.dtype == torch.float32 and y.shape == x.shape
        assert torch.equal(x, before), "corrupt() changed its input"
        assert torch.isfinite(y).all()
        assert (y >= lo).all() and (y <= hi).all(), f"severity {s} left an image's own [min, max]"
        assert torch.equal(y, corrupt(x, name, s, seed=3)), f"severity {s} is not deterministic"
        distortion.append(_distortion(y, x))
    assert distortion[0] > 1e-4, f"severity 1 does not change the images: {distortion}"
    assert all(b >= a - 1e-6 for a, b in pairwise(distortion)), f"not monotone: {distortion}"
    assert distortion[-1] > 1.5 * distortion[0], f"severity barely matters: {distortion}"
    if name in RANDOM:
        assert not torch.equal(corrupt(x, name, 3, seed=3), corrupt(x, name, 3, seed=4)), "the seed is ignored"


@pytest.mark.parametrize("data", ["ham", "mri"])
def test_magnitudes_are_relative_to_each_images_range(datasets, data):
    """``corrupt(a x + b) = a corrupt(x) + b``: the same corruption on [0, 1] and [0, 255] photos, and on any
    affine rescaling of a z-scored MR crop."""
    x = datasets[data]
    a, b = (255.0, 0.0) if data == "ham" else (3.0, 5.0)
    for name in applicable_corruptions(x):
        for s in (1, 5):
            scaled = corrupt(a * x + b, name, s, seed=1)
            expected = a * corrupt(x, name, s, seed=1) + b
            error = float((scaled - expected).abs().mean() / (a * (x.max() - x.min())))
            limit = 2e-3 if name == "jpeg" else 1e-4  # 8-bit rounding can flip a few JPEG blocks
            assert error < limit, f"{name} s={s}: mean deviation {error:.2e} of the range"


def test_every_image_of_a_batch_has_its_own_pattern_and_range(ham64):
    x = torch.stack([ham64[0], ham64[0], 0.2 * ham64[0] + 0.1])
    y = corrupt(x, "gaussian_noise", 4)
    assert not torch.allclose(y[0], y[1]), "two samples got the same noise"
    assert y[2].min() >= x[2].min() and y[2].max() <= x[2].max()
    noise = [float((y[i] - x[i]).std()) for i in (1, 2)]
    assert 3.0 < noise[0] / noise[1] < 7.0, f"noise std should follow the range (ratio 5): {noise}"


def test_metatensor_in_plain_tensor_out(brats):
    x = brats[0]
    meta = MetaTensor(x.clone(), affine=torch.eye(4))
    for name in ("gaussian_noise", "gibbs", "motion_ghosting"):
        y = corrupt(meta, name, 2)
        assert type(y) is torch.Tensor and not isinstance(y, MetaTensor)
        assert torch.equal(y, corrupt(x, name, 2))


def test_global_rng_state_is_untouched(ham64, brats):
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    for x in (ham64, brats[0]):
        for name in applicable_corruptions(x):
            corrupt(x, name, 3, seed=7)
    assert torch.equal(torch.get_rng_state(), states[0])
    after = np.random.get_state()
    assert after[0] == states[1][0] and np.array_equal(after[1], states[1][1]) and after[2:] == states[1][2:]
    assert random.getstate() == states[2]


def test_bad_input_is_a_clear_value_error(ham64, brats):
    with pytest.raises(ValueError, match="did you mean 'gaussian_noise'") as info:
        corrupt(ham64, "gausian_noise", 1)
    assert all(name in str(info.value) for name in CORRUPTIONS)
    for severity in (0, 6, 2.5, True, "3"):
        with pytest.raises(ValueError, match="severity"):
            corrupt(ham64, "blur", severity)
    with pytest.raises(ValueError, match="'jpeg' is for 2D 3-channel"):
        corrupt(brats[0], "jpeg", 1)
    with pytest.raises(ValueError, match="'stain'"):
        corrupt(ham64 - 0.5, "stain", 1)  # negative values: not an RGB photo
    with pytest.raises(ValueError, match="'gibbs' is for 3D or 1-channel"):
        corrupt(ham64, "gibbs", 1)
    for bad in (float("nan"), float("inf")):
        x = ham64.clone()
        x[1, 0, 3, 3] = bad
        with pytest.raises(ValueError, match="non-finite"):
            corrupt(x, "blur", 1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        corrupt(ham64[0], "blur", 1)  # no batch dimension
    with pytest.raises(ValueError, match="seed"):
        corrupt(ham64, "blur", 1, seed=-1)


# ---------------------------------------------------------------------------------------------- tables and mCE
def _by_hand_error(net, x, y, name, severity, seed):
    with torch.no_grad():
        logits = net(x if name is None else corrupt(x, name, severity, seed))
    return float((logits.argmax(1) != y).double().mean())


def test_corruption_table_on_a_trained_classifier(ham):
    net, x, y = ham
    net.train()  # the table must switch to eval and back
    lines = []
    table = corruption_table(net, [(x[:20], y[:20]), (x[20:], y[20:])], "classification", progress=lines.append)
    assert net.training and all(m.training for m in net.modules())
    net.eval()
    assert json.loads(json.dumps(table)) == table
    assert table["metric"] == "accuracy" and table["num_samples"] == len(x)
    assert list(table["errors"]) == applicable_corruptions(x) and len(lines) == len(table["errors"])
    assert all(len(v) == 5 and all(0 <= e <= 1 for e in v) for v in table["errors"].values())
    # the numbers are the errors of the corrupted batches: batch b uses seed + b
    wrong = (_by_hand_error(net, x[:20], y[:20], "contrast", 4, 0) * 20
             + _by_hand_error(net, x[20:], y[20:], "contrast", 4, 1) * (len(x) - 20))
    assert table["errors"]["contrast"][3] == pytest.approx(wrong / len(x), abs=1e-9)
    assert table["clean_error"] == pytest.approx(_by_hand_error(net, x, y, None, 0, 0), abs=1e-9)
    assert table["clean_error"] < 0.4, "the helper's CNN should be trained-ish (about 75% accuracy)"
    # strong noise hurts this model (checked on several seeds: about +0.2 at severity 5, nothing below 4)
    noise = table["errors"]["gaussian_noise"]
    assert noise[4] >= table["clean_error"] + 0.1 and noise[4] >= max(noise[:2]) + 0.1, noise


def test_corruption_table_restores_batchnorm_and_accepts_a_function(ham):
    _, x, y = ham
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    net.train()
    net(x)  # non-trivial running statistics
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    table = corruption_table(net, [(x, y)], "classification", corruptions=["blur", "jpeg"], severities=(1, 5))
    assert net.training and all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    net.eval()
    as_function = corruption_table(lambda images: net(images), [(x, y)], "classification", corruptions=["blur", "jpeg"],
                                   severities=(1, 5))
    assert as_function["errors"] == table["errors"] and table["severities"] == [1, 5]
    with pytest.raises(ValueError, match="task"):
        corruption_table(net, [(x, y)], "detection")
    with pytest.raises(ValueError, match="did you mean 'blur'"):
        corruption_table(net, [(x, y)], "classification", corruptions=["blurr"])


def test_corruption_table_segmentation_on_brats(brats):
    """A FLAIR-threshold "model" (oedema and tumour are bright in FLAIR): error = 1 - mean Dice."""
    images, labels = brats

    def threshold_model(x):
        return torch.cat([1.0 - x, x - 1.0], dim=1) * 4.0  # (N, 2, *spatial) logits of FLAIR > 1

    table = corruption_table(threshold_model, [(images, labels)], "segmentation",
                             corruptions=["gaussian_noise", "gibbs", "kspace_spike"])
    assert table["metric"] == "dice"
    pred = (images > 1.0).float()
    truth = labels.float()
    dice = (2 * (pred * truth).sum((1, 2, 3, 4)) / (pred.sum((1, 2, 3, 4)) + truth.sum((1, 2, 3, 4)))).mean()
    assert table["clean_error"] == pytest.approx(1.0 - float(dice), abs=1e-5)
    assert table["clean_error"] < 0.2
    noise = table["errors"]["gaussian_noise"]
    assert all(b >= a - 0.01 for a, b in pairwise(noise)) and noise[4] > table["clean_error"] + 0.05, noise


def _weaker_cnn(data_dir):
    """The helper's tiny CNN trained 4 epochs instead of 20, from another seed: the reference model (about 60%
    held-out accuracy, like AlexNet's role in ImageNet-C)."""
    from helpers import trained_ham_cnn

    with torch.random.fork_rng(devices=[]):
        return trained_ham_cnn(data_dir, epochs=4, seed=1)


@pytest.fixture(scope="module")
def two_tables(ham, data_dir):
    """The trained CNN's table and the weaker reference CNN's, on the same held-out images."""
    net, x, y = ham
    table = corruption_table(net, [(x, y)], "classification")
    reference = corruption_table(_weaker_cnn(data_dir), [(x, y)], "classification")
    return table, reference


def test_mean_corruption_error_matches_an_independent_computation(two_tables):
    table, reference = two_tables
    result = mean_corruption_error(table, reference)
    names = list(table["errors"])
    e = np.array([table["errors"][c] for c in names], dtype=np.float64)
    r = np.array([reference["errors"][c] for c in names], dtype=np.float64)
    assert (r.sum(1) > 0).all() and len(np.unique(r)) > 3, "the reference must have varied errors for this check"
    ce = e.sum(1) / r.sum(1)
    assert [result["ce"][c] for c in names] == pytest.approx(ce.tolist())
    assert result["mce"] == pytest.approx(ce.mean())
    rise = (r - reference["clean_error"]).sum(1)
    for i, c in enumerate(names):
        expected = None if rise[i] == 0 else (e[i] - table["clean_error"]).sum() / rise[i]
        assert result["relative_ce"][c] == (None if expected is None else pytest.approx(expected)), c
    defined = [v for v in result["relative_ce"].values() if v is not None]
    if len(defined) == len(names):
        assert result["relative_mce"] == pytest.approx(np.mean(defined))
    else:
        assert result["relative_mce"] is None and result["relative_undefined"]
    assert [result["mean_error"][c] for c in names] == pytest.approx(e.mean(1).tolist())
    assert json.loads(json.dumps(result)) == result


def test_mean_corruption_error_reference_normalises_to_one(two_tables):
    table, _ = two_tables
    self_ce = mean_corruption_error(table, table)
    assert all(v == pytest.approx(1.0) for v in self_ce["ce"].values()) and self_ce["mce"] == pytest.approx(1.0)
    for c, v in self_ce["relative_ce"].items():
        assert v == pytest.approx(1.0) if c not in self_ce["relative_undefined"] else v is None
    alone = mean_corruption_error(table)
    assert alone["mce"] is None and alone["ce"] is None and alone["relative_mce"] is None
    assert alone["mean_error"] == pytest.approx({c: float(np.mean(v)) for c, v in table["errors"].items()})
    assert alone["average_error"] == pytest.approx(np.mean([np.mean(v) for v in table["errors"].values()]))


def test_mean_corruption_error_refuses_what_it_cannot_normalise(two_tables):
    table, reference = two_tables
    missing = {**reference, "errors": {c: v for c, v in reference["errors"].items() if c != "stain"}}
    with pytest.raises(ValueError, match="'stain'"):
        mean_corruption_error(table, missing)
    perfect = {**reference, "errors": {**reference["errors"], "blur": [0.0] * 5}}
    with pytest.raises(ValueError, match="'blur'.*sum to 0"):
        mean_corruption_error(table, perfect)
    with pytest.raises(ValueError, match="metric"):
        mean_corruption_error(table, {**reference, "metric": "dice"})
    flat = {**reference, "clean_error": 0.5, "errors": {c: [0.5] * 5 for c in reference["errors"]}}
    result = mean_corruption_error(table, flat)  # the reference never degrades: rCE undefined, CE still fine
    assert result["relative_mce"] is None and result["relative_undefined"] == list(table["errors"])
    assert result["mce"] == pytest.approx(np.mean([np.sum(v) / 2.5 for v in table["errors"].values()]))
