"""Paper-shaped reports: combining models into one table per metric, the three file formats, plots, flags,
atomic writes and clear errors for unwritable output folders."""

from __future__ import annotations

import csv
import json
import os
import shutil

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


# ---------------------------------------------------------------------------------------------- the set as a whole
NEW = _result(0.65, 0.30, 0.20, 0.15, maps=(0.8, 0.6, 0.5, 0.45))
#: the calls a kill is injected before (every file, folder and rename operation write_report makes)
KILL_CALLS = ("open", "fsync", "replace", "rename", "link", "symlink", "mkdir", "rmdir", "unlink", "chmod")
KILLED = 17


def _tree(folder):
    """``{relative path: content}`` of everything under ``folder`` (files by hash, folders, symlinks by target);
    None when ``folder`` does not exist."""
    import hashlib

    if not folder.exists():
        return None
    tree = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            tree[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            tree[rel] = "folder"
        else:
            tree[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return tree


class _FakeFigure:
    """Stands in for a plot's matplotlib figure (building and rendering one takes ~50 ms, and the kill test
    writes hundreds): its PNG bytes differ whenever the plotted data do."""

    def __init__(self, *args, **kwargs):
        self.data = repr((args, sorted(kwargs.items())))

    def savefig(self, fname, **kwargs):
        fname.write(PNG_MAGIC + self.data.encode())


def _previous_run(folder):
    """A report set with eps sweeps (more plots than the new one) and a model.pt (as the demo writes)."""
    sweeps = {"STD": {2 / 255: _result(0.75, 0.5, 0.4, 0.35, eps=2 / 255), 8 / 255: STD}}
    write_report({"STD": STD}, folder, sweeps=sweeps, title="previous run", extra_files={"model.pt": b"weights"})
    return folder


def _die_at(k):
    """In a child process: make the ``k``-th file operation (``KILL_CALLS``, the folder swap, a plot) end it."""
    from monai_dpaat.evaluation import report

    count = [0]

    def wrap(fn):
        def counted(*args, **kwargs):
            count[0] += 1
            if count[0] == k:
                os._exit(KILLED)
            return fn(*args, **kwargs)

        return counted

    for name in KILL_CALLS:
        setattr(os, name, wrap(getattr(os, name)))
    report._exchange = wrap(report._exchange)
    _FakeFigure.savefig = wrap(_FakeFigure.savefig)


def _exchange_works(tmp_path) -> bool:
    from monai_dpaat.evaluation import report

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        return report._exchange(tmp_path / "a", tmp_path / "b")
    finally:
        os.rmdir(tmp_path / "a")
        os.rmdir(tmp_path / "b")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_a_kill_at_any_point_leaves_the_old_set_or_the_new_one(tmp_path, monkeypatch, exchange):
    """A process writing a report over a previous run's is killed before its k-th file operation, for every k:
    the folder then holds exactly the old set or exactly the new one, never a mix; (two-rename fallback: or it is missing, and the recovery step puts the old one back); the next write
    succeeds and leaves no staging folder behind."""
    from monai_dpaat.evaluation import plots, report
    from monai_dpaat.evaluation.report import recover_output_dir

    if exchange and not _exchange_works(tmp_path):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    if not exchange:
        monkeypatch.setattr(report, "_exchange", lambda a, b: False)
    for name in ("figure_metric_by_attack", "figure_confusion_matrices", "figure_metric_vs_eps"):
        monkeypatch.setattr(plots, name, _FakeFigure)
    template = _previous_run(tmp_path / "template" / "out")
    old = _tree(template)
    shutil.copytree(template, tmp_path / "reference" / "out", symlinks=True)
    write_report({"STD": NEW}, tmp_path / "reference" / "out", title="new run")
    new = _tree(tmp_path / "reference" / "out")
    assert new != old and "accuracy_vs_eps.png" not in new  # the old set's extra plot goes with it
    assert "model.pt" in old and "model.pt" not in new  # a file of the old set, not of the new one

    outcomes = []
    for k in range(1, 1000):
        root = tmp_path / f"kill{k}"
        out = shutil.copytree(template, root / "out", symlinks=True)
        pid = os.fork()
        if pid == 0:  # the child: write the new report, killed at the k-th operation
            try:
                _die_at(k)
                write_report({"STD": NEW}, out, title="new run")
                os._exit(0)
            except BaseException:
                os._exit(3)
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        assert code in (0, KILLED), f"the child failed (exit {code}) at k={k}"
        state = _tree(out)
        moved_away = [p.name for p in root.iterdir() if "report-previous" in p.name]
        if exchange or state is not None:
            assert state in (old, new), f"killed before operation {k}: the folder mixes the two runs"
        else:
            assert moved_away, f"killed before operation {k}: the folder is gone and nothing can restore it"
        recover_output_dir(out)
        state = _tree(out)
        assert state in (old, new), f"killed before operation {k}: after recovery the folder mixes the two runs"
        outcomes.append("new" if state == new else "old")
        write_report({"STD": NEW}, out, title="new run")
        assert _tree(out) == new
        assert [p.name for p in root.iterdir()] == ["out"], f"leftovers after the next write (k={k})"
        shutil.rmtree(root)
        if code == 0:
            break
    else:
        pytest.fail("the write never completed")
    assert outcomes[0] == "old" and outcomes[-1] == "new" and len(outcomes) > 40, outcomes


def test_report_files_get_normal_permissions(tmp_path):
    """Under umask 022 every report file is 0644 (not tempfile's 0600) and the output folder keeps its mode."""
    old_umask = os.umask(0o022)
    try:
        write_report({"STD": STD}, tmp_path / "new", plots=True)
        assert oct(os.stat(tmp_path / "new").st_mode & 0o777) == oct(0o755)
        locked = tmp_path / "private"
        locked.mkdir(mode=0o700)
        write_report({"STD": STD}, locked, plots=False)
        write_report({"STD": DPAAT}, locked, plots=False)  # over an existing set
        assert oct(os.stat(locked).st_mode & 0o777) == oct(0o700)
        single = atomic_write_text(tmp_path / "single.txt", "x")
        from monai_dpaat.evaluation.plots import plot_metric_by_attack

        plot = plot_metric_by_attack(combine_results(STD)["accuracy"], "accuracy", tmp_path / "plot.png")
    finally:
        os.umask(old_umask)
    files = [p for p in (tmp_path / "new").iterdir()] + [p for p in locked.iterdir()] + [single, plot]
    modes = {str(p.relative_to(tmp_path)): oct(os.stat(p).st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o644)}, modes


def test_write_report_refuses_a_folder_with_foreign_entries(tmp_path):
    """The set replaces the whole folder, so a folder holding anything but a previous report (the user's files,
    TensorBoard logs, a subfolder) is refused before anything is written, naming those entries; it is unchanged."""
    out = _previous_run(tmp_path / "out")
    (out / "notes.txt").write_text("the user's own file")
    (out / "logs").mkdir()
    (out / "logs" / "events.1").write_text("tensorboard events")
    before = _tree(out)
    with pytest.raises(ValueError, match=r"holds entries that are not part of a previous report \('logs', "
                                         r"'notes.txt'\).*give an empty folder or a previous report's folder"):
        write_report({"STD": NEW}, out, plots=False)
    assert _tree(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    home = tmp_path / "home"
    home.mkdir()
    for i in range(7):
        (home / f"f{i}").write_text("x")
    with pytest.raises(ValueError, match=r"\('f0', 'f1', 'f2', 'f3', 'f4' and 2 more\)"):
        write_report({"STD": NEW}, home, plots=False)
    with pytest.raises(ValueError, match="output_dir is empty"):
        write_report({"STD": NEW}, "", plots=False)


def test_write_report_follows_links_and_keeps_the_cwd_valid(tmp_path, monkeypatch):
    """A symlinked output folder stays a symlink; this process's current directory inside the folder stays valid;
    the old set's files are dropped."""
    out = _previous_run(tmp_path / "out")
    monkeypatch.chdir(out)
    write_report({"STD": NEW}, ".", plots=False)
    assert not (out / "accuracy_vs_eps.png").exists() and not (out / "model.pt").exists()
    assert os.path.samefile(os.getcwd(), out) and (out / "report.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    os.symlink(out, tmp_path / "alias")
    write_report({"STD": STD}, tmp_path / "alias", plots=False, title="through the link")
    assert os.path.islink(tmp_path / "alias") and "through the link" in (out / "report.md").read_text()
    assert os.path.samefile(os.getcwd(), out)


def test_write_report_in_place_where_no_folder_can_be_made_beside(tmp_path, monkeypatch):
    """A mount point or read-only parent: the files are replaced one by one (with a warning), the old set's
    extra files are still dropped."""
    from monai_dpaat.evaluation import report

    out = _previous_run(tmp_path / "out")
    monkeypatch.setattr(report, "_swappable", lambda folder: False)
    with pytest.warns(RuntimeWarning, match="replaced one by one"):
        write_report({"STD": NEW}, out, plots=False)
    names = {p.name for p in out.iterdir()}
    assert "accuracy_vs_eps.png" not in names and "confusion_STD.png" not in names and "model.pt" not in names
    assert {"report.md", "table_accuracy.csv"} <= names
    assert not [n for n in names if n.startswith(".")]
