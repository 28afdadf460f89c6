"""End-to-end checks of the two segmentation bundles on the real sample data (quick settings).

Each bundle is copied to a temporary folder (``bundle_root`` and ``dataset_dir`` are overridden, so no output
ever lands in the repository) and run as ``python -m monai.bundle run`` runs it: train (``train.json`` +
``quick.json``), evaluate, robustness (the eight attacks of Koishiyeva et al. 2025 with few steps) and
inference, plus MONAI's ``verify_net_in_out`` for both networks. Every step runs in-process through
:class:`monai.bundle.ConfigWorkflow` (what ``monai.bundle run`` builds), which spares the ~10 s MONAI import
a subprocess per step would cost; ``test_nuinsseg_cli_inference`` runs one command line end to end.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLES = REPO_ROOT / "bundles"
NUINSSEG = "nuinsseg_adversarial_segmentation"
BRATS = "brats_adversarial_segmentation_3d"
UNET_PAPER_ROWS = ["Original", "FGSM", "PGD", "MI-FGSM", "TI-FGSM", "DI-FGSM", "SI-DI-FGSM", "NI-FGSM", "GN", "Worst case"]
CONFIG_FILES = ("train.json", "quick.json", "evaluate.json", "resume.json", "multi_gpu_train.json", "robustness.json",
                "inference.json", "metadata.json", "logging.conf")


def _copy_bundle(name: str, dst: Path) -> Path:
    shutil.copytree(BUNDLES / name, dst, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    return dst


def _configs(bundle: Path, names) -> list[str]:
    return [str(bundle / "configs" / n) for n in names]


def _run_cli(bundle: Path, data: Path, configs, **overrides) -> None:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(_configs(bundle, configs)),
           "--bundle_root", str(bundle), "--dataset_dir", str(data)]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def _run_workflow(bundle: Path, data: Path, configs, **overrides):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=_configs(bundle, configs), meta_file=str(bundle / "configs" / "metadata.json"),
                              logging_file=False, workflow_type=None, bundle_root=str(bundle), dataset_dir=str(data),
                              **overrides)
    workflow.initialize()
    result = workflow.run()
    workflow.finalize()
    return result


def _verify_net(bundle: Path, network_name: str) -> None:
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=str(bundle / "configs" / "metadata.json"),
                      config_file=str(bundle / "configs" / "inference.json"), device="cpu", network_name=network_name,
                      bundle_root=str(bundle))


def _read_metrics_csv(path: Path) -> dict[str, float]:
    with open(path) as f:
        return {row[0]: float(row[1]) for row in csv.reader(f, delimiter=",") if row}


def _check_report(report_dir: Path, column: str) -> dict:
    for name in ("report.md", "report.json", "table_dice.csv", "table_iou.csv", "table_loss.csv"):
        assert (report_dir / name).is_file(), f"{name} missing in {report_dir}"
    report = json.loads((report_dir / "report.json").read_text())
    dice = report["tables"]["dice"]["values"]
    assert list(dice) == UNET_PAPER_ROWS
    values = {row: dice[row][column] for row in UNET_PAPER_ROWS}
    assert all(0.0 <= v <= 1.0 for v in values.values()), values
    # the worst case pools the attacks within their budget (GN of unet-paper is unbounded: its own row only)
    pool = report["models"][column]["meta"]["worst_case_pool"]
    assert "GN" not in pool and {"Original", "PGD"} <= set(pool), pool
    assert values["Worst case"] <= min(values[row] for row in pool) + 1e-6
    return values


@pytest.mark.parametrize("name", [NUINSSEG, BRATS])
def test_bundle_files(name):
    configs = BUNDLES / name / "configs"
    for f in CONFIG_FILES:
        assert (configs / f).is_file(), f"{name}: configs/{f} missing"
    assert (BUNDLES / name / "docs" / "README.md").is_file()
    meta = json.loads((configs / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    train = json.loads((configs / "train.json").read_text())
    assert train["bundle_root"] == "."
    assert train["dataset_dir"].startswith("$@bundle_root + '/../../../shared/data/")
    for key in ("train", "validate", "checkpoint_saver", "iteration_update", "method", "network_name", "val_interval"):
        assert key in train, key


ALL_BUNDLES = ["ham10000_dpaat_classification", NUINSSEG, BRATS]
#: the keys every bundle's configs/robustness.json defines (the CLI's robustness flags map onto them)
ROBUSTNESS_CONTRACT = ("robustness_preset", "robustness_attacks", "robustness_eps", "robustness_eps_sweep",
                       "robustness_max_samples", "robustness_dir", "model_path", "model_name")


@pytest.mark.parametrize("name", ALL_BUNDLES)
def test_default_method_is_written_as_its_method_file(name):
    """train.json's runnable default (``method`` + ``iteration_update``) is exactly its configs/methods file, so
    composing that file changes nothing and the two cannot drift apart."""
    configs = BUNDLES / name / "configs"
    train = json.loads((configs / "train.json").read_text())
    method = json.loads((configs / "methods" / f"{train['method']}.json").read_text())
    assert {k: train[k] for k in method} == method
    for path in sorted((configs / "methods").glob("*.json")):
        assert json.loads(path.read_text())["method"] == path.stem, path


def test_override_default_method_is_written_as_its_method_file():
    overrides = BUNDLES / "overrides"
    train = json.loads((overrides / "adversarial_train.json").read_text())
    method = json.loads((overrides / "methods" / f"{train['adversarial_method']}.json").read_text())
    assert {k: train[k] for k in method} == method


@pytest.mark.parametrize("name", ALL_BUNDLES)
def test_robustness_contract_keys(name):
    configs = BUNDLES / name / "configs"
    robustness = json.loads((configs / "robustness.json").read_text())
    train = json.loads((configs / "train.json").read_text())
    missing = [k for k in ROBUSTNESS_CONTRACT if k not in robustness]
    assert not missing, f"{name}: configs/robustness.json lacks {missing}"
    assert "device" in train and robustness["robustness_eps"] == "@epsilon"


# ------------------------------------------------------------------------------------------------ NuInsSeg (2D)
@pytest.fixture(scope="module")
def nuinsseg(tmp_path_factory, data_dir):
    """The NuInsSeg bundle after a quick DPAAT training of the UNet (2 epochs, 3 training tiles, 64 px patches)."""
    data = data_dir / "nuclei_he"
    bundle = _copy_bundle(NUINSSEG, tmp_path_factory.mktemp("bundles") / NUINSSEG)
    _run_workflow(bundle, data, ["train.json", "methods/dpaat.json", "quick.json"])
    return bundle, data


def test_nuinsseg_train(nuinsseg):
    bundle, _ = nuinsseg
    models = bundle / "models"
    for f in ("model.pt", "checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"):
        assert (models / f).is_file(), f
    assert list((bundle / "eval").glob("events.out.tfevents.*")), "no TensorBoard event file"
    import torch

    ckpt = torch.load(models / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "method", "data"} <= set(ckpt)
    assert ckpt["method"]["epsilon"].shape == (3,)  # DPAAT's per-sample epsilon table, one per training tile
    assert ckpt["data"]["num_samples"] == 3 and len(ckpt["data"]["ids"]["train"]) == 3  # what a resume checks
    assert not (models / "run.lock").exists(), "the finished run did not release its lock"


def test_nuinsseg_evaluate_robustness(nuinsseg):
    bundle, data = nuinsseg
    _run_workflow(bundle, data, ["train.json", "methods/dpaat.json", "evaluate.json", "quick.json"])
    metrics = _read_metrics_csv(bundle / "eval" / "metrics.csv")
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0 and "val_mean_iou" in metrics
    assert (bundle / "eval" / "val_mean_dice_raw.csv").is_file()

    _run_workflow(bundle, data, ["train.json", "methods/dpaat.json", "robustness.json", "quick.json"])
    _check_report(bundle / "eval" / "robustness", "unet (dpaat)")


def test_nuinsseg_cli_inference(nuinsseg):
    """The command line a user types, in the bundle folder: sliding-window inference saving PNG masks."""
    bundle, data = nuinsseg
    _run_cli(bundle, data, ["inference.json", "quick.json"])
    from PIL import Image

    tile = sorted((data / "tcga_miccai2015" / "tissue images").glob("*.png"))[0]  # quick: max_images 1
    mask = bundle / "eval" / "predictions" / f"{tile.stem}_seg.png"
    assert mask.is_file(), sorted(p.name for p in (bundle / "eval" / "predictions").glob("*"))
    with Image.open(mask) as m, Image.open(tile) as t:
        assert m.size == t.size  # (W, H) kept: no transposition on the way out
        assert set(np.unique(np.asarray(m)).tolist()) <= {0, 255}


def test_nuinsseg_attention_unet_pp(nuinsseg, tmp_path):
    """The other network of the paper through the same bundle: one epoch of standard training, two attacks."""
    _, data = nuinsseg
    bundle = _copy_bundle(NUINSSEG, tmp_path / NUINSSEG)
    overrides = {"network_name": "attention_unet_pp", "features": [4, 8, 16], "num_samples": 1, "max_epochs": 1,
                 "robust_val_interval": 5}
    _run_workflow(bundle, data, ["train.json", "quick.json"], **overrides)
    assert (bundle / "models" / "model.pt").is_file()
    _run_workflow(bundle, data, ["train.json", "robustness.json", "quick.json"], robustness_only=["FGSM", "PGD"],
                  **overrides)
    report = json.loads((bundle / "eval" / "robustness" / "report.json").read_text())
    assert list(report["tables"]["dice"]["values"]) == ["Original", "FGSM", "PGD", "Worst case"]
    assert "attention_unet_pp (std)" in report["tables"]["dice"]["columns"]


@pytest.mark.parametrize("network_name", ["unet", "attention_unet_pp"])
def test_nuinsseg_verify_net_in_out(network_name):
    _verify_net(BUNDLES / NUINSSEG, network_name)


# ------------------------------------------------------------------------------------------------ BraTS (3D)
@pytest.fixture(scope="module")
def brats(tmp_path_factory, data_dir):
    """The BraTS bundle after a quick AT training of the 3D UNet (2 epochs, 2 training cases resized to 32^3)."""
    data = data_dir / "brats2013"
    bundle = _copy_bundle(BRATS, tmp_path_factory.mktemp("bundles") / BRATS)
    _run_workflow(bundle, data, ["train.json", "methods/at.json", "quick.json"])
    return bundle, data


def test_brats_train_evaluate_robustness_inference(brats):
    bundle, data = brats
    for f in ("model.pt", "checkpoint_epoch=2.pt"):
        assert (bundle / "models" / f).is_file(), f
    assert list((bundle / "eval").glob("events.out.tfevents.*"))

    _run_workflow(bundle, data, ["train.json", "methods/at.json", "evaluate.json", "quick.json"])
    metrics = _read_metrics_csv(bundle / "eval" / "metrics.csv")
    assert 0.0 <= metrics["val_mean_dice"] <= 1.0

    _run_workflow(bundle, data, ["train.json", "methods/at.json", "robustness.json", "quick.json"])
    report = json.loads((bundle / "eval" / "robustness" / "report.json").read_text())
    _check_report(bundle / "eval" / "robustness", "unet (at)")
    # z-scored MRI: the attacks clamp to each volume's own range ("data"), never to [0, 1]
    assert all(spec.get("value_range") == "data" for spec in report["models"]["unet (at)"]["attacks"].values())

    _run_workflow(bundle, data, ["inference.json", "quick.json"])
    import nibabel as nib

    case = sorted(p for p in data.iterdir() if p.is_dir())[0]
    pred = bundle / "eval" / "predictions" / case.name / "Flair_subtrMeanDivStd_seg.nii.gz"
    assert pred.is_file(), sorted(str(p) for p in (bundle / "eval" / "predictions").rglob("*"))
    out, ref = nib.load(str(pred)), nib.load(str(case / "OTMultiClass.nii.gz"))
    assert out.shape == ref.shape  # inverted back to the original grid
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)
    assert set(np.unique(np.asarray(out.dataobj)).tolist()) <= {0, 1}


@pytest.mark.parametrize("network_name", ["unet", "attention_unet_pp"])
def test_brats_verify_net_in_out(network_name):
    _verify_net(BUNDLES / BRATS, network_name)
