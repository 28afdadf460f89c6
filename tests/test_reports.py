"""Paper-shaped reports: combining models into one table per metric, the three file formats, plots, flags,
atomic writes and clear errors for unwritable output folders."""

from __future__ import annotations

import csv
import json
import os

import pytest

from monai_dpaat.evaluation import ORIGINAL, WORST_CASE, RobustnessResult, combine_results, load_report, write_report
from monai_dpaat.evaluation.report import atomic_write_text, csv_table, ensure_output_dir, markdown_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
INFO = {"FGSM": {"name": "fgsm", "eps": 8 / 255, "steps": 1, "uses_gradient": True},
        "10-PGD": {"name": "pgd", "eps": 8 / 255, "steps": 10, "uses_gradient": True}}


def _result(clean, fgsm, pgd, worst, maps=(0.9, 0.5, 0.4, 0.4), eps=8 / 255):
    rows = {}
    for name, acc, m in zip((ORIGINAL, "FGSM", "10-PGD", WORST_CASE), (clean, fgsm, pgd, worst), maps):
        rows[name] = {"accuracy": acc, "precision": acc, "recall": acc, "f1": acc, "map": m,
                      "linf": 0.0 if name == ORIGINAL else eps, "l2": 0.0 if name == ORIGINAL else 1.0}
    info = {k: {**v, "eps": eps} for k, v in INFO.items()}
    return RobustnessResult("classification", rows, confusion={r: [[2, 1], [0, 3]] for r in rows},
                            attacks={"FGSM": {"name": "fgsm", "eps": eps}, "10-PGD": {"name": "pgd", "eps": eps}},
                            num_samples=6, class_names=["mel", "nv"], meta={"attack_info": info})


STD = _result(0.75, 0.10, 0.02, 0.0)
DPAAT = _result(0.70, 0.60, 0.55, 0.50, maps=(0.85, 0.7, 0.65, 0.6))


def test_combine_results_one_table_per_metric():
    tables = combine_results({"STD": STD, "DPAAT": DPAAT})
    assert list(tables) == ["accuracy", "precision", "recall", "f1", "map", "linf", "l2"]
    acc = tables["accuracy"]
    assert acc["columns"] == ["STD", "DPAAT"]
    assert acc["rows"] == [ORIGINAL, "FGSM", "10-PGD", WORST_CASE]
    assert acc["values"]["10-PGD"] == {"STD": 0.02, "DPAAT": 0.55}
    assert tables["map"]["values"][ORIGINAL]["DPAAT"] == 0.85
    md = markdown_table(acc, "accuracy")
    assert md.splitlines()[0] == "| Attack | STD | DPAAT |"
    assert "| 10-PGD | 2.00 | 55.00 |" in md  # accuracy shown in percent like the paper
    assert "| Original | 0.9000 | 0.8500 |" in markdown_table(tables["map"], "map")


def test_combine_results_with_a_missing_row_and_errors():
    extra = _result(0.8, 0.3, 0.2, 0.1)
    extra.rows["GN"] = dict(extra.rows["FGSM"])
    tables = combine_results({"A": STD, "B": extra}, metrics=["accuracy"])
    assert tables["accuracy"]["rows"] == [ORIGINAL, "FGSM", "10-PGD", "GN", WORST_CASE]
    assert tables["accuracy"]["values"]["GN"] == {"A": None, "B": 0.3}
    assert "| GN | - | 30.00 |" in markdown_table(tables["accuracy"], "accuracy")
    assert csv_table(tables["accuracy"]).splitlines()[4] == "GN,,0.3"
    with pytest.raises(ValueError, match="unknown metric 'dice'"):
        combine_results({"A": STD}, metrics=["dice"])
    seg = RobustnessResult("segmentation", {ORIGINAL: {"dice": 0.8}})
    with pytest.raises(ValueError, match="different tasks"):
        combine_results({"A": STD, "B": seg})
    with pytest.raises(ValueError, match="non-empty mapping"):
        combine_results({})


def test_write_report_files_parse(tmp_path):
    sweeps = {"STD": {2 / 255: _result(0.75, 0.5, 0.4, 0.35, eps=2 / 255), 8 / 255: STD}}
    files = write_report({"STD": STD, "DPAAT": DPAAT}, tmp_path / "out", flags=["a flag from check_gradient_masking"],
                         sweeps=sweeps, title="Table I")
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".")]  # no temp files left
    assert {"report.md", "report.json", "table_accuracy.csv", "table_map.csv", "accuracy_vs_eps.png",
            "accuracy_by_attack.png", "confusion_STD.png", "confusion_DPAAT.png"} <= set(names)
    assert all(p.exists() for p in files.values())
    for png in (n for n in names if n.endswith(".png")):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    with open(out / "table_accuracy.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["attack", "STD", "DPAAT"]
    assert rows[1][0] == ORIGINAL and rows[-1][0] == WORST_CASE
    assert [float(v) for v in rows[3][1:]] == [0.02, 0.55]
    report = json.loads((out / "report.json").read_text())
    assert report["title"] == "Table I"
    assert report["tables"]["accuracy"]["values"]["FGSM"]["DPAAT"] == 0.6
    assert "a flag from check_gradient_masking" in report["flags"]
    assert set(report["models"]) == {"STD", "DPAAT"}
    md = (out / "report.md").read_text()
    assert md.startswith("# Table I")
    assert "- a flag from check_gradient_masking" in md
    assert "![accuracy_vs_eps](accuracy_vs_eps.png)" in md
    assert "| mel | 2 | 1 |" in md  # confusion matrix with class names
    # the JSON round-trips into results that combine again
    loaded = load_report(out)
    assert loaded["DPAAT"].rows == DPAAT.rows
    assert combine_results(loaded)["accuracy"] == report["tables"]["accuracy"]


def test_masking_flags_are_derived_from_the_tables(tmp_path):
    pytest.importorskip("monai_dpaat.evaluation.sanity")
    suspicious = _result(0.8, 0.1, 0.6, 0.1)  # single-step FGSM far stronger than 10-step PGD: a red flag
    write_report({"M": suspicious}, tmp_path, plots=False)
    flags = json.loads((tmp_path / "report.json").read_text())["flags"]
    assert any("single-step beats iterative" in f and f.startswith("M: ") for f in flags)
    write_report({"M": DPAAT}, tmp_path, plots=False)
    assert json.loads((tmp_path / "report.json").read_text())["flags"] == []
    assert "None raised." in (tmp_path / "report.md").read_text()


def test_report_of_nan_values_is_strict_json(tmp_path):
    seg = RobustnessResult("segmentation", {ORIGINAL: {"dice": 0.8, "iou": 0.7, "pixel_accuracy": 0.9, "loss": 0.3,
                                                       "hd95": float("nan"), "linf": 0.0, "l2": 0.0}})
    write_report(seg, tmp_path, plots=True, check_masking=False)
    text = (tmp_path / "report.json").read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["tables"]["hd95"]["values"][ORIGINAL]["model"] == "nan"
    assert "| Original | - |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "dice_by_attack.png").read_bytes()[:8] == PNG_MAGIC


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # the temporary file was removed


def test_unwritable_output_dir_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        write_report(STD, blocker)
    with pytest.raises(ValueError, match="cannot be created"):
        ensure_output_dir(blocker / "sub")
    if os.geteuid() != 0:  # root can write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="not writable"):
                write_report(STD, locked)
        finally:
            locked.chmod(0o700)
    with pytest.raises(ValueError, match="does not exist"):
        load_report(tmp_path / "missing.json")
