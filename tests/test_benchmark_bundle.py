"""``python -m monai_dpaat benchmark`` / ``leaderboard`` (issue 14), classification (segmentation:
``test_benchmark_segmentation.py``, a separate file so that xdist's ``loadfile`` splits the work): the classification
protocol on a bundle's own evaluation (``configs/train.json`` + ``configs/evaluate.json``), on the HAM10000 bundle (a quick STD training on
the real samples) and on the Model Zoo's endoscopic_inbody_classification bundle (its own training on the Zoo CI's
dummy data), one complete row each; bad input exits 2 before any attack, writing nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from monai_dpaat.cli import main
from monai_dpaat.evaluation.leaderboard import file_sha256
from monai_dpaat.utils import bundle_config_files, run_bundle
from model_zoo_bundles import CLASSIFICATION, prepare_bundle, run_bundle as run_zoo_bundle

ROOT = Path(__file__).resolve().parents[1]
HAM = "ham10000_dpaat_classification"
SMALL = {"n_train": 60, "n_test": 16, "image_size": 32, "robust_val_max_samples": 2}


@pytest.fixture(scope="module")
def ham_bundle(tmp_path_factory, data_dir):
    """A copy of the HAM10000 bundle with a quick STD model (4 epochs, 120 real images at 32 px)."""
    root = tmp_path_factory.mktemp("bench") / HAM
    shutil.copytree(ROOT / "bundles" / HAM, root, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    flags = {"dataset_dir": str(data_dir / "ham10000"), "ckpt_dir": str(root / "models"), **SMALL}
    run_bundle(bundle_config_files(root, ("train.json", "quick.json", "methods/std.json")),
               {"bundle_root": str(root), "max_epochs": 4, "lr": 0.003, "device": "$torch.device('cpu')", **flags})
    return root, flags


def _benchmark(root: Path, out: Path, flags: dict, *extra: str) -> int:
    args = ["benchmark", "--bundle", str(root), "--config_file", "configs/quick.json", "--budget", "quick",
            "--output_dir", str(out), *extra]
    for key, value in flags.items():
        args += [f"--{key}", str(value)]
    return main(args)


def test_ham_bundle_row_is_complete_and_consistent(ham_bundle, tmp_path, capsys):
    root, flags = ham_bundle
    assert _benchmark(root, tmp_path / "row", flags) == 0
    row = json.loads((tmp_path / "row" / "leaderboard.json").read_text())
    n = row["dataset"]["num_samples"]
    assert n == 32 and row["protocol"] == "v2" and row["budget"] == "quick"
    assert row["bundle"]["name"] and row["bundle"]["version"] == json.loads(
        (root / "configs" / "metadata.json").read_text())["version"]
    assert row["weights"]["sha256"] == file_sha256(root / "models" / "model.pt")
    assert len(row["dataset"]["fingerprint"]) == 64
    assert row["eps"] == pytest.approx(8 / 255) and row["eps_units"] == "range"
    assert 0 < row["eps_absolute"]["min"] <= row["eps_absolute"]["max"] <= 8 / 255  # images in [0, 1]
    assert 0.5 < row["clean_accuracy"] and row["robust_accuracy"] < row["clean_accuracy"]
    broken = round(n * (row["clean_accuracy"] - row["robust_accuracy"]))
    assert sum(row["breaks"].values()) == broken and list(row["breaks"]) == ["APGD-CE", "APGD-T", "FMN-T", "Square"]
    assert {"torch", "monai", "monai_dpaat", "python"} <= set(row["versions"]) and row["device"] == "cpu"
    assert row["wall_seconds"] > 0 and isinstance(row["flags"], list)
    assert row["plots"] == ["cascade.png"]
    assert (tmp_path / "row" / "cascade.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "row" / "report.md").read_text()
    assert "| APGD-CE |" in report and f"{row['robust_accuracy']:.4f}" in report
    assert "robust" in capsys.readouterr().out


def test_corruption_table_and_mce_against_a_reference_row(ham_bundle, tmp_path, capsys):
    from monai_dpaat.evaluation.corruptions import CORRUPTIONS

    root, flags = ham_bundle
    assert _benchmark(root, tmp_path / "ref", flags, "--nocheck_masking", "--limit", "16") == 0
    ref = json.loads((tmp_path / "ref" / "leaderboard.json").read_text())["corruptions"]
    # the dermatoscopy photos get the photo and generic corruptions, not the MR artefacts
    assert list(ref["table"]["errors"]) == [c for c in CORRUPTIONS if c in
                                            ("gaussian_noise", "blur", "bias_field", "contrast", "jpeg", "stain")]
    assert all(len(v) == 5 and all(0 <= e <= 1 for e in v) for v in ref["table"]["errors"].values())
    assert ref["summary"]["mce"] is None and ref["reference"] is None  # no reference: the plain errors only
    # normalised by itself (the same weights, data and seed) every CE is 1
    assert _benchmark(root, tmp_path / "self", flags, "--nocheck_masking", "--limit", "16",
                      "--reference", str(tmp_path / "ref")) == 0
    row = json.loads((tmp_path / "self" / "leaderboard.json").read_text())
    assert row["corruptions"]["summary"]["mce"] == pytest.approx(1.0)
    assert row["corruptions"]["reference"]["weights"] == file_sha256(root / "models" / "model.pt")
    assert "mCE 1.000" in (tmp_path / "self" / "report.md").read_text() and "mCE 1.000" in capsys.readouterr().out
    # a reference measured on other images cannot normalise: named before any attack, nothing written
    _refused(["benchmark", "--bundle", str(root), "--config_file", "configs/quick.json", "--budget", "quick",
              "--limit", "8", "--reference", str(tmp_path / "ref"), "--output_dir", str(tmp_path / "other")]
             + [f"--{k}={v}" for k, v in flags.items()], tmp_path / "other", capsys, "dataset fingerprint differs")


def test_leaderboard_merges_rows_sorted_by_robust_accuracy(ham_bundle, tmp_path, capsys):
    root, flags = ham_bundle
    fast = ("--nocorruptions", "--nocheck_masking", "--limit", "16")  # the sort is what is tested here
    assert _benchmark(root, tmp_path / "a", flags, "--eps", "2/255", "--name", "small-eps", *fast) == 0
    assert _benchmark(root, tmp_path / "b", flags, "--eps", "16/255", "--name", "large-eps", *fast) == 0
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path / "b"), str(tmp_path / "a" / "leaderboard.json"),
                 "--output", str(tmp_path / "table.csv")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| model | bundle |") and table[2].startswith("| small-eps |")  # most robust first
    csv_lines = (tmp_path / "table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("model,bundle,version,protocol") and csv_lines[1].startswith("small-eps,")


def test_model_zoo_bundle_row(tmp_path):
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path)
    rc, out = run_zoo_bundle(bundle, ["configs/train.json"], overrides)
    assert rc == 0, out[-3000:]
    args = ["benchmark", "--bundle", str(bundle), "--budget", "quick", "--output_dir", str(tmp_path / "row"),
            "--nocheck_masking"]
    for key, value in overrides.items():
        if key not in ("bundle_root", "device"):  # --device is the benchmark's own flag (cpu)
            args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    assert main(args) == 0
    row = json.loads((tmp_path / "row" / "leaderboard.json").read_text())
    assert row["bundle"]["name"] == json.loads((bundle / "configs" / "metadata.json").read_text())["name"]
    assert row["dataset"]["num_samples"] == 2 and row["dataset"]["num_classes"] == 2
    assert row["weights"]["sha256"] == file_sha256(bundle / "models" / "model.pt")


def _refused(args: list[str], out: Path, capsys, match: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert match in err, err
    assert not out.exists() or not any(out.iterdir())


def test_bad_input_exits_2_and_writes_nothing(ham_bundle, tmp_path, capsys, data_dir):
    root, flags = ham_bundle
    out = tmp_path / "out"
    base = ["benchmark", "--bundle", str(root), "--config_file", "configs/quick.json", "--output_dir", str(out)]
    rest = [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    _refused(base + rest + ["--eps", "2"], out, capsys, "at most 1")
    _refused(base + rest + ["--budgte", "quick"], out, capsys, "did you mean --budget?")
    _refused(base + rest + ["--n_tset", "3"], out, capsys, "n_tset")
    no_eval = tmp_path / "no_eval"
    shutil.copytree(root, no_eval, ignore=shutil.ignore_patterns("evaluate.json"))
    _refused(["benchmark", "--bundle", str(no_eval), "--output_dir", str(out)], out, capsys, "configs/evaluate.json")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, wrong / "model.pt")
    wrong_flags = [a if a != str(root / "models") else str(wrong) for a in rest]
    _refused(base + wrong_flags, out, capsys, str(wrong / "model.pt"))
