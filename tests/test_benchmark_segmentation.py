"""``python -m monai_dpaat benchmark`` on segmentation bundles (issue 14): the NuInsSeg bundle (2D, sliding window),
the BraTS bundle (3D, z-scored MRI) and the Model Zoo's endoscopic_tool_segmentation, each after a quick training on
real samples (the Zoo's: its CI's dummy data); the worst case by Dice, the corruptions that fit the images, and a
leaderboard that keeps Dice rows apart from accuracy rows."""

from __future__ import annotations

import json
import shutil

import pytest

from monai_dpaat.cli import main
from monai_dpaat.evaluation.leaderboard import file_sha256
from monai_dpaat.utils import bundle_config_files, run_bundle
from model_zoo_bundles import SEGMENTATION, prepare_bundle, run_bundle as run_zoo_bundle
from test_benchmark_bundle import ROOT, _benchmark, ham_bundle  # noqa: F401  (ham_bundle: a fixture)


NUINSSEG = "nuinsseg_adversarial_segmentation"


@pytest.fixture(scope="module")
def nuinsseg_bundle(tmp_path_factory, data_dir):
    """A copy of the NuInsSeg bundle with a quick STD UNet (its quick.json: 2 epochs, 64 px patches of real tiles)."""
    root = tmp_path_factory.mktemp("bench_seg") / NUINSSEG
    shutil.copytree(ROOT / "bundles" / NUINSSEG, root, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    flags = {"dataset_dir": str(data_dir / "nuclei_he"), "max_tiles": 10}  # a test split of 2 tiles
    run_bundle(bundle_config_files(root, ("train.json", "methods/std.json", "quick.json")),
               {"bundle_root": str(root), "device": "$torch.device('cpu')", **flags})
    return root, flags


def test_nuinsseg_bundle_row_is_the_worst_case_by_dice(nuinsseg_bundle, tmp_path, capsys):
    root, flags = nuinsseg_bundle
    assert _benchmark(root, tmp_path / "row", flags, "--limit", "2") == 0
    row = json.loads((tmp_path / "row" / "leaderboard.json").read_text())
    n = row["dataset"]["num_samples"]
    assert row["task"] == "segmentation" and row["metric"] == "dice" and n == 2
    assert row["bundle"]["inferer"] == "SlidingWindowInferer"  # its validate#inferer: the attacks went through it
    assert row["weights"]["sha256"] == file_sha256(root / "models" / "model.pt")
    assert list(row["per_attack"]) == ["SegPGD", "CosPGD", "APGD-seg", "Square-seg"]
    assert row["attacks"]["APGD-seg"]["steps"] == 20 and row["attacks"]["Square-seg"]["steps"] == 200  # quick
    for part in [row["clean"], row["robust"], *row["per_attack"].values()]:
        assert {"dice", "iou", "hd95"} <= set(part) and 0 <= part["dice"] <= 1 and 0 <= part["iou"] <= part["dice"] + 1e-9
    # the worst case is per sample: no higher than any attack's mean, and each sample's worst came from one row
    assert row["robust_dice"] == row["robust"]["dice"] <= min(m["dice"] for m in row["per_attack"].values()) + 1e-9
    assert row["robust_dice"] < row["clean_dice"] == row["clean"]["dice"]
    assert row["clean_best"] + sum(row["worst_case_by"].values()) == n
    # the gradient attacks do better than random search on this (unmasked) network
    assert min(row["per_attack"][k]["dice"] for k in ("SegPGD", "CosPGD", "APGD-seg")) < \
        row["per_attack"]["Square-seg"]["dice"]
    assert 0 < row["eps_absolute"]["min"] <= row["eps_absolute"]["max"] <= 8 / 255 + 1e-9
    assert row["plots"] == ["attacks.png"] and (tmp_path / "row" / "attacks.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "row" / "report.md").read_text()
    assert "| APGD-seg |" in report and f"{row['robust']['dice']:.4f}" in report
    assert "robust dice" in capsys.readouterr().out


def test_leaderboard_keeps_classification_and_segmentation_rows_apart(ham_bundle, nuinsseg_bundle, tmp_path, capsys):
    for (root, flags), out in ((ham_bundle, "cls"), (nuinsseg_bundle, "seg")):
        assert _benchmark(root, tmp_path / out, flags, "--limit", "1", "--nocheck_masking", "--nohd95",
                          "--nocorruptions") == 0
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path / "seg"), str(tmp_path / "cls")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| metric |" in lines[0] and "| accuracy |" in lines[2] and "| dice |" in lines[3]


def test_model_zoo_segmentation_bundle_row(tmp_path):
    """The Zoo's endoscopic_tool_segmentation (its own training, on the Zoo CI's dummy data): a segmentation row."""
    bundle, overrides = prepare_bundle(SEGMENTATION, tmp_path)
    rc, out = run_zoo_bundle(bundle, ["configs/train.json"], overrides)
    assert rc == 0, out[-3000:]
    args = ["benchmark", "--bundle", str(bundle), "--budget", "quick", "--output_dir", str(tmp_path / "row"),
            "--nocheck_masking", "--limit", "1"]
    for key, value in overrides.items():
        if key not in ("bundle_root", "device"):
            args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    assert main(args) == 0
    row = json.loads((tmp_path / "row" / "leaderboard.json").read_text())
    assert row["task"] == "segmentation" and row["dataset"]["num_samples"] == 1
    assert row["bundle"]["name"] == json.loads((bundle / "configs" / "metadata.json").read_text())["name"]
    assert row["bundle"]["inferer"] == "SimpleInferer" and list(row["per_attack"])[-1] == "Square-seg"
    assert row["robust_dice"] <= min(m["dice"] for m in row["per_attack"].values()) + 1e-9
    assert "corruptions" in row and row["corruptions"]["table"]["metric"] == "dice"


def test_brats_bundle_row_3d(tmp_path, data_dir):
    """The BraTS bundle (3D, z-scored MRI, sliding window) after its quick STD training: the row's budget is in the
    images' range units and its corruptions are the MRI ones."""
    name = "brats_adversarial_segmentation_3d"
    root = tmp_path / name
    shutil.copytree(ROOT / "bundles" / name, root, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    flags = {"dataset_dir": str(data_dir / "brats2013")}
    run_bundle(bundle_config_files(root, ("train.json", "methods/std.json", "quick.json")),
               {"bundle_root": str(root), "device": "$torch.device('cpu')", **flags})
    assert _benchmark(root, tmp_path / "row", flags, "--limit", "1", "--nocheck_masking") == 0
    row = json.loads((tmp_path / "row" / "leaderboard.json").read_text())
    assert row["task"] == "segmentation" and row["bundle"]["inferer"] == "SlidingWindowInferer"
    assert row["eps_absolute"]["mean"] > 8 / 255  # z-scored: 8/255 of a range of several units
    assert set(row["corruptions"]["table"]["errors"]) >= {"rician_noise", "gibbs", "kspace_spike", "motion_ghosting"}
    assert "jpeg" not in row["corruptions"]["table"]["errors"]
    assert row["robust_dice"] <= row["clean_dice"]
