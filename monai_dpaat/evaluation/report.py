"""Paper-shaped robustness reports: Markdown, CSV and JSON tables plus PNG plots, written atomically.

One table per metric; rows = ``"Original"``, the attacks, ``"Worst case"``; columns = models or training
methods (STD, AT, SAT, AMAT, DPAAT...), as in Li et al. 2024 (Table I, transposed to one table per metric)
and Koishiyeva et al. 2025 (Tables 2-4).

>>> tables = combine_results({"STD": result_std, "DPAAT": result_dpaat})
>>> files = write_report({"STD": result_std, "DPAAT": result_dpaat}, "out/", flags=[...])

:func:`write_report` replaces the report set as a whole: the output folder must be a dedicated report folder
(missing, empty, or holding only a previous report set; see :func:`check_report_folder`), the new set is written
into a staging folder beside it and the two folders are swapped in one step (see :func:`write_report`), so a
reader, or a run killed at any point, sees the old set or the new one, never a mix. Single files (:func:`atomic_write_bytes`) go to a temporary file and ``os.replace``. Files get the
usual permissions (``0666 & ~umask``).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import functools
import io
import json
import math
import os
import re
import shutil
import stat
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_write_bytes as _atomic_write_bytes
from ..atomic_io import ensure_output_dir, fsync_dir, new_file
from . import plots as P
from .metrics import CLASSIFICATION_METRICS, METRIC_TITLES, SEGMENTATION_METRICS
from .sanity import flags_from_records
from .suite import ORIGINAL, WORST_CASE, RobustnessResult

__all__ = [
    "ensure_output_dir",
    "check_report_folder",
    "recover_output_dir",
    "atomic_write_text",
    "atomic_write_bytes",
    "as_results",
    "combine_results",
    "format_value",
    "markdown_table",
    "csv_table",
    "masking_records",
    "masking_flags",
    "render_markdown",
    "write_report",
    "load_report",
]

#: metrics shown as percentages in Markdown (stored as fractions in CSV/JSON)
PERCENT_METRICS = ("accuracy",)
#: metrics plotted per attack by default
PLOT_METRICS = {"classification": ("accuracy", "map"), "segmentation": ("dice", "iou")}


# ---------------------------------------------------------------------------------------------- atomic I/O
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``
    (:func:`monai_dpaat.atomic_io.atomic_write`); the folder is created if missing (see
    :func:`ensure_output_dir`) and the file gets mode ``0666 & ~umask``."""
    path = Path(path)
    ensure_output_dir(path.parent)
    return _atomic_write_bytes(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------- set swap
#: the names write_report gives its files; only these are ever dropped from an output folder
_REPORT_NAME = re.compile(r"report\.(md|json)|table_[\w-]+\.csv|(confusion_[\w-]+|[\w-]+_(by_attack|vs_eps))\.png"
                          r"|model\.pt")
#: a temporary file the in-place fallback (atomic_write_bytes) leaves when killed
_REPORT_TMP = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")
_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


@functools.lru_cache(maxsize=None)
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux, glibc >= 2.28 / musl), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap the two paths ``a`` and ``b`` in one atomic step (``renameat2(RENAME_EXCHANGE)``); False where
    that does not exist (other systems, old kernels or C libraries, file systems without it)."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _report_names(folder: Path) -> set[str]:
    """The report set a previous :func:`write_report` left in ``folder``: ``report.json``, ``report.md`` and the
    files its ``report.json`` lists (only names write_report gives its files, so a user's file is never taken
    for one). Unreadable or foreign JSON: just the two reports, which a new set replaces anyway."""
    names = {"report.json", "report.md"}
    try:
        listed = json.loads((folder / "report.json").read_text(encoding="utf-8")).get("files", {}).values()
    except (OSError, ValueError, AttributeError):
        return names
    return names | {n for n in listed if isinstance(n, str) and _REPORT_NAME.fullmatch(n)}


def _foreign_entries(folder: Path) -> list[str]:
    """The entries of ``folder`` that are not part of a previous report set (sorted); ``[]`` for a missing folder."""
    try:
        entries = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):  # nothing there yet, or a path that cannot be a folder
        return []
    names = _report_names(folder)

    def ours(name: str) -> bool:
        m = _REPORT_TMP.fullmatch(name)
        return name in names or (m is not None and _REPORT_NAME.fullmatch(m.group("name")) is not None)

    return [n for n in entries if not ours(n)]


def check_report_folder(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be a report folder: missing, empty, or holding only a previous report set
    (``report.json``, ``report.md`` and the files that ``report.json`` lists). :func:`write_report` replaces
    the folder as a whole, so it refuses one holding anything else (a user's files, TensorBoard logs,
    subfolders, the current directory of a shell) with a ``ValueError`` naming a few of those entries.
    Returns the folder's path (a symlink is followed); creates nothing."""
    if str(path) == "":
        raise ValueError("output_dir is empty; give a folder for the report")
    shown = Path(path).expanduser()
    real = Path(os.path.realpath(shown))
    if os.path.lexists(real) and not real.is_dir():
        raise ValueError(f"output_dir {str(shown)!r} exists and is not a folder")
    foreign = _foreign_entries(real)
    if foreign:
        listed = ", ".join(repr(n) for n in foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(f"output_dir {str(shown)!r} holds entries that are not part of a previous report ({listed}); "
                         "the report replaces the whole folder: give an empty folder or a previous report's folder")
    return real



def _stage_prefix(out: Path) -> str:
    return f".{out.name}.report-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process (or no way to tell): leave its folder alone
    return True


def recover_output_dir(path: str | os.PathLike) -> None:
    """Undo or finish what a killed :func:`write_report` left beside the output folder ``path``
    (:func:`write_report` runs this first):

    - the old folder that the two-rename fallback moved away (``.<name>.report-previous-<id>``) is moved back
      when ``path`` is missing (killed between the renames) and removed when ``path`` is the new set that
      replaced it (a folder that something else has created at ``path`` since leaves it in place);
    - staging folders (``.<name>.report-staging-<pid>-<id>``) of processes that no longer run are removed
      (when they hold only report files).
    """
    out = Path(os.path.realpath(Path(path).expanduser()))
    parent, prefix = out.parent, _stage_prefix(out)
    if not parent.is_dir():
        return
    for entry in sorted(os.scandir(parent), key=lambda e: e.name):
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        kind, _, rest = entry.name[len(prefix):].partition("-")
        if kind == "previous":
            if not os.path.lexists(out):
                os.rename(entry.path, out)
                continue
            if str(os.lstat(out).st_ino) == rest:  # the set that replaced it is in place
                shutil.rmtree(entry.path)
        elif kind == "staging":
            pid = rest.partition("-")[0]
            if (not pid.isdigit() or not _pid_alive(int(pid))) and _only_report_files(Path(entry.path)):
                shutil.rmtree(entry.path, ignore_errors=True)
    fsync_dir(parent)


def _only_report_files(folder: Path) -> bool:
    """Whether ``folder`` holds only files named as report files are (a partial set, or an old set that
    something else wrote into during a swap is left alone)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return all(_REPORT_NAME.fullmatch(n) or _REPORT_TMP.fullmatch(n) for n in names)


def _swappable(out: Path) -> bool:
    """Whether a staging folder can be made beside ``out`` and renamed over it."""
    return not os.path.ismount(out) and os.access(out.parent, os.W_OK | os.X_OK) and out != Path(out.anchor)


def _new_stage(out: Path) -> Path:
    """An empty staging folder beside ``out``, with ``out``'s permissions (``0777 & ~umask`` for a new folder)."""
    while True:
        stage = out.parent / f"{_stage_prefix(out)}staging-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            os.mkdir(stage, 0o777)
            break
        except FileExistsError:
            continue
    if out.is_dir():
        try:
            os.chmod(stage, stat.S_IMODE(os.stat(out).st_mode))
        except BaseException:
            os.rmdir(stage)
            raise
    return stage


def _swap_in(stage: Path, out: Path, old_names: set[str]) -> None:
    """Make the complete folder ``stage`` the folder ``out`` in one step and remove the old one.

    Linux: one ``renameat2(RENAME_EXCHANGE)``. Elsewhere: ``out`` is renamed to
    ``.<name>.report-previous-<id>``, ``stage`` to ``out``, then the previous one is removed; a kill between
    the two renames leaves ``out`` missing (never mixed) and :func:`recover_output_dir` puts it back.
    Only the old set's files (``old_names``) are deleted: an old folder that something else has written into
    meanwhile is left in place, with a warning.
    """
    fsync_dir(stage)
    cwd = _cwd_inside(out)
    if _exchange(stage, out):
        old = stage  # the exchange left the old folder at the staging path
    else:
        old = out.parent / f"{_stage_prefix(out)}previous-{os.lstat(stage).st_ino}"
        os.rename(out, old)
        try:
            os.rename(stage, out)
        except BaseException:
            os.rename(old, out)
            raise
    if cwd is not None:  # this process sat in the old folder: move it to the same path in the new one
        with contextlib.suppress(OSError):
            os.chdir(cwd if os.path.isdir(cwd) else out)
    try:
        fsync_dir(out.parent)
        for name in os.listdir(old):
            if name in old_names or _REPORT_TMP.fullmatch(name):
                os.unlink(old / name)
        os.rmdir(old)
    except OSError as err:  # the new set is in place: a leftover old folder is no reason to fail the write
        warnings.warn(f"the new report is in {str(out)!r}, but the old folder {str(old)!r} could not be removed: "
                      f"{err}", RuntimeWarning, stacklevel=3)


def _cwd_inside(folder: Path) -> str | None:
    """The current directory when it is ``folder`` or inside it (it would be left in the removed old folder)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    return cwd if cwd == str(folder) or cwd.startswith(str(folder) + os.sep) else None


# ---------------------------------------------------------------------------------------------- tables
def as_results(results: Any) -> dict[str, RobustnessResult]:
    """``{column name: RobustnessResult}`` from one result, a mapping of results / their dicts, or report
    JSON paths. A single result becomes the column ``"model"``."""
    if isinstance(results, (RobustnessResult, str, os.PathLike)):
        results = {"model": results}
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a RobustnessResult or a non-empty mapping {name: RobustnessResult}")
    out: dict[str, RobustnessResult] = {}
    for name, value in results.items():
        if isinstance(value, (str, os.PathLike)):
            loaded = load_report(value)
            if len(loaded) != 1:
                raise ValueError(f"{str(value)!r} holds {len(loaded)} models; pass them separately or merge dicts")
            value = next(iter(loaded.values()))
        if isinstance(value, Mapping):
            value = RobustnessResult.from_dict(value)
        if not isinstance(value, RobustnessResult):
            raise ValueError(f"results[{name!r}] must be a RobustnessResult, got {type(value).__name__}")
        out[str(name)] = value
    tasks = {r.task for r in out.values()}
    if len(tasks) > 1:
        raise ValueError(f"cannot combine results of different tasks: {sorted(tasks)}")
    return out


def _row_order(results: Mapping[str, RobustnessResult]) -> list[str]:
    rows: list[str] = []
    for r in results.values():
        for name in r.rows:
            if name not in rows and name not in (ORIGINAL, WORST_CASE):
                rows.append(name)
    has = lambda n: any(n in r.rows for r in results.values())  # noqa: E731
    return ([ORIGINAL] if has(ORIGINAL) else []) + rows + ([WORST_CASE] if has(WORST_CASE) else [])


def combine_results(results: Any, metrics: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Combine several models' results into one table per metric.

    Args:
        results: ``{column name: RobustnessResult | its dict | report JSON path}`` (or one result).
        metrics: metric keys (default: all of the task's).

    Returns:
        ``{metric: {"title": str, "columns": [model...], "rows": [attack...], "values": {row: {column: float | None}}}}``
        with ``None`` where a model has no such row.
    """
    results = as_results(results)
    task = next(iter(results.values())).task
    known = CLASSIFICATION_METRICS if task == "classification" else SEGMENTATION_METRICS
    metrics = list(metrics) if metrics is not None else list(known)
    for m in metrics:
        if not any(m in row for r in results.values() for row in r.rows.values()):
            raise ValueError(f"unknown metric {m!r} for {task}; known: {', '.join(known)}")
    rows, columns = _row_order(results), list(results)
    tables = {}
    for m in metrics:
        values = {row: {col: _num(results[col].rows.get(row, {}).get(m)) for col in columns} for row in rows}
        tables[m] = {"title": METRIC_TITLES.get(m, m), "columns": columns, "rows": rows, "values": values}
    return tables


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def format_value(value: float | None, metric: str) -> str:
    """Table cell text: ``-`` for missing/NaN, percent with 2 decimals for accuracy, else 4 decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if metric in PERCENT_METRICS:
        return f"{100 * value:.2f}"
    return f"{value:.4f}"


def markdown_table(table: Mapping[str, Any], metric: str, first_header: str = "Attack") -> str:
    """One metric's table as GitHub Markdown (rows = attacks, columns = models)."""
    cols = table["columns"]
    lines = [
        "| " + " | ".join([first_header] + cols) + " |",
        "|" + "---|" * (len(cols) + 1),
    ]
    for row in table["rows"]:
        cells = [format_value(table["values"][row][c], metric) for c in cols]
        lines.append("| " + " | ".join([row] + cells) + " |")
    return "\n".join(lines)


def csv_table(table: Mapping[str, Any], first_header: str = "attack") -> str:
    """One metric's table as CSV text (raw values; empty cell for a missing value)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([first_header] + list(table["columns"]))
    for row in table["rows"]:
        vals = [table["values"][row][c] for c in table["columns"]]
        writer.writerow([row] + ["" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))
                                 for v in vals])
    return buf.getvalue()


def _json_default(obj: Any) -> Any:
    return repr(obj)


def _clean_json(value: Any) -> Any:
    """NaN/inf become the strings "nan"/"inf" so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- masking flags
def masking_records(result: RobustnessResult) -> list[dict[str, Any]]:
    """Records for :func:`monai_dpaat.evaluation.sanity.flags_from_records` from one result: the clean row
    and each attack row (accuracy, or Dice for segmentation), with the attack's eps/steps/uses_gradient."""
    metric = "accuracy" if result.task == "classification" else "dice"
    info = result.meta.get("attack_info", {})
    records = []
    clean = result.rows.get(ORIGINAL, {}).get(metric)
    if clean is not None and not math.isnan(float(clean)):
        records.append({"attack": "clean", "eps": 0.0, "steps": 1, "uses_gradient": False,
                        "robust_accuracy": float(clean)})
    for label, row in result.rows.items():
        if label in (ORIGINAL, WORST_CASE) or label not in info:
            continue
        value, a = row.get(metric), info[label]
        if value is None or math.isnan(float(value)) or a.get("eps") is None:
            continue
        records.append({"attack": a["name"], "eps": float(a["eps"]), "steps": int(a.get("steps", 1)),
                        "uses_gradient": bool(a.get("uses_gradient", True)),
                        "robust_accuracy": min(max(float(value), 0.0), 1.0)})
    return records


def masking_flags(results: Mapping[str, RobustnessResult],
                  sweeps: Mapping[str, Mapping[float, RobustnessResult]] | None = None) -> list[str]:
    """Gradient-masking red flags from the numbers a report already has (per model; sweeps included), via
    :func:`monai_dpaat.evaluation.sanity.flags_from_records`."""
    flags = []
    for name, result in results.items():
        records = masking_records(result)
        for sweep_result in (sweeps or {}).get(name, {}).values():
            records += [r for r in masking_records(sweep_result) if r["attack"] != "clean"]
        seen, unique = set(), []
        for r in records:
            key = (r["attack"], r["eps"], r["steps"])
            if key not in seen:
                seen.add(key)
                unique.append(r)
        flags += [f"{name}: {flag}" for flag in flags_from_records(unique)]
    return flags


# ---------------------------------------------------------------------------------------------- the report
def _pool_text(result: RobustnessResult) -> str:
    """``"FGSM, PGD; not pooled: GN (unbounded ...)"`` from a result's ``meta`` (older results: every attack)."""
    pool = result.meta.get("worst_case_pool")
    if pool is None:
        return "every attack"
    attacks = [label for label in pool if label != ORIGINAL]
    text = ", ".join(attacks) if attacks else "no attack"
    excluded = result.meta.get("worst_case_excluded") or {}
    if excluded:
        text += "; not pooled: " + ", ".join(f"{label} ({why})" for label, why in excluded.items())
    return text


def _worst_case_note(results: Mapping[str, RobustnessResult]) -> str:
    """The report's sentence on the ``"Worst case"`` row: what it takes per sample, and which rows it pools
    (the clean input and the attacks within their budget, per model where they differ)."""
    first = next(iter(results.values()))
    rule = "(correct only if no pooled attack fools it)" if first.task == "classification" else "(lowest Dice)"
    texts = {name: _pool_text(r) for name, r in results.items()}
    if len(set(texts.values())) == 1:
        pooled = texts[next(iter(texts))]
    else:
        pooled = "; ".join(f"{name}: {text}" for name, text in texts.items())
    return (f"Worst case: per sample, the worst of the clean input and the attacks within their budget {rule}. "
            f"Pooled: {pooled}.")


def render_markdown(results: Mapping[str, RobustnessResult], tables: Mapping[str, Mapping[str, Any]],
                    flags: Sequence[str] | None = None, title: str = "Robustness report",
                    images: Sequence[str] = ()) -> str:
    """The whole Markdown report: settings, one table per metric, confusion matrices, flags, plots."""
    first = next(iter(results.values()))
    lines = [f"# {title}", "", f"Task: {first.task}. Samples: " +
             ", ".join(f"{n} = {r.num_samples}" for n, r in results.items()) + ".", ""]
    lines += [_worst_case_note(results), ""]
    lines += ["## Attacks", "", "| Attack | Settings |", "|---|---|"]
    for label, spec in first.attacks.items():
        settings = ", ".join(f"{k}={_short(v) if k in _BUDGET_KEYS else v}" for k, v in spec.items() if k != "label")
        lines.append(f"| {label} | {settings} |")
    lines.append("")
    for metric, table in tables.items():
        lines += [f"## {table['title']}", "", markdown_table(table, metric), ""]
    if first.task == "classification":
        for name, r in results.items():
            if not r.confusion:
                continue
            lines += [f"## Confusion matrices: {name} (rows = true, columns = predicted)", ""]
            k = len(next(iter(r.confusion.values())))
            classes = r.class_names if r.class_names and len(r.class_names) == k else [str(i) for i in range(k)]
            for row_name in (ORIGINAL, WORST_CASE):
                if row_name in r.confusion:
                    lines += [f"{row_name}:", "", "| true \\ pred | " + " | ".join(classes) + " |",
                              "|" + "---|" * (k + 1)]
                    for cls, counts in zip(classes, r.confusion[row_name]):
                        lines.append(f"| {cls} | " + " | ".join(str(c) for c in counts) + " |")
                    lines.append("")
    lines += ["## Gradient-masking flags", ""]
    if flags is None:
        lines += ["(not checked)", ""]
    elif not flags:
        lines += ["None raised.", ""]
    else:
        lines += [f"- {f}" for f in flags] + [""]
    if images:
        lines += ["## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    return "\n".join(lines)


#: spec keys that are budgets in image units, written as k/255 where they are such a fraction
_BUDGET_KEYS = ("eps", "alpha", "std")


def _short(value: Any) -> str:
    if isinstance(value, float):
        k = value * 255
        if value > 0 and abs(k - round(k)) < 1e-6 and round(k) >= 1:
            return f"{round(k)}/255"
        return f"{value:.4g}"
    return str(value)


def write_report(results: Any, output_dir: str | os.PathLike, metrics: Sequence[str] | None = None,
                 flags: Sequence[str] | None = None, sweeps: Mapping[str, Any] | None = None,
                 title: str = "Robustness report", check_masking: bool = True, plots: bool = True,
                 extra_files: Mapping[str, bytes] | None = None) -> dict[str, Path]:
    """Write the report of one or several models to ``output_dir``, replacing a previous report set as a whole.

    Files: ``report.md``, ``report.json`` (tables, every model's full result, sweeps, flags, and the list of
    files), ``table_<metric>.csv`` per metric, and with ``plots``: ``<metric>_by_attack.png`` (the main metrics),
    ``confusion_<model>.png`` (classification) and, with ``sweeps``, ``<metric>_vs_eps.png``.

    The whole set is written into a staging folder beside ``output_dir`` (``.<name>.report-staging-<pid>-<id>``),
    and the two folders are then swapped in one step (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames,
    see :func:`recover_output_dir`), so the old set stays whole until the new one is complete and a reader never
    sees a mix; a failed or killed write leaves the old folder as it was. ``output_dir`` must therefore be a
    dedicated report folder: missing, empty or holding only a previous report set; one holding anything else (the
    user's files, TensorBoard logs, subfolders) is refused with a ``ValueError`` before any work (see
    :func:`check_report_folder`). The folder keeps its permissions; files get ``0666 & ~umask``. Where no folder can be made beside ``output_dir`` (a mount point,
    a read-only parent) the files are replaced one by one instead, with a ``RuntimeWarning``. Note that a
    shell or program that has its current directory inside ``output_dir`` keeps seeing the removed old folder
    until it changes directory again (this process is moved along).

    Args:
        results: ``{column name: RobustnessResult | dict | report JSON path}`` or one result.
        output_dir: created if missing; ``ValueError`` if it cannot be written.
        metrics: metric keys for the tables (default all).
        flags: gradient-masking flags (e.g. from ``check_gradient_masking``); listed in the report.
        sweeps: ``{column name: {eps: RobustnessResult}}`` (or one ``{eps: result}``) for metric-vs-eps plots.
        title: report title.
        check_masking: also derive flags from the tables' own numbers (see :func:`masking_flags`).
        plots: write the PNG plots.
        extra_files: ``{file name: bytes}`` written with the set (e.g. ``{"model.pt": ...}`` for the demo); only
            ``model.pt`` is allowed, and it is listed in ``report.json`` like the other files.

    Returns:
        ``{file kind: path}`` of everything written (paths inside ``output_dir``).
    """
    results = as_results(results)
    if str(output_dir) == "":
        raise ValueError("output_dir is empty; give a folder for the report")
    extra = dict(extra_files or {})
    for fname in extra:
        if fname != "model.pt":
            raise ValueError(f"extra_files may only hold 'model.pt', got {fname!r}")
    shown = Path(output_dir).expanduser()
    real = Path(os.path.realpath(shown))  # a symlinked output folder stays a symlink: swap its target
    recover_output_dir(real)  # before the folder is created: a killed swap may have moved it away
    out = ensure_output_dir(shown)
    tables = combine_results(results, metrics)
    check_report_folder(shown)  # before anything is written: the whole folder is replaced
    if sweeps is not None:
        if sweeps and all(isinstance(k, (int, float)) for k in sweeps):
            sweeps = {next(iter(results)): sweeps}
        sweeps = {name: {float(e): (RobustnessResult.from_dict(r) if isinstance(r, Mapping) else r)
                         for e, r in s.items()} for name, s in sweeps.items()}
    all_flags = list(flags) if flags is not None else None
    if check_masking:
        derived = masking_flags(results, sweeps)
        all_flags = (all_flags or []) + [f for f in derived if f not in (all_flags or [])]

    old_names = _report_names(real)
    if not _swappable(real):
        warnings.warn(f"cannot make a staging folder beside output_dir {str(shown)!r} (a mount point or a read-only "
                      "parent): its report files are replaced one by one, not as a set", RuntimeWarning, stacklevel=2)
        names = _write_report_files(results, tables, all_flags, sweeps, title, plots, real, _replace_file, extra)
        for name in sorted(old_names - set(names.values())):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(real / name)
        return {k: out / n for k, n in names.items()}
    stage = _new_stage(real)
    try:
        names = _write_report_files(results, tables, all_flags, sweeps, title, plots, stage, extra=extra)
        check_report_folder(shown)  # nothing foreign was added while the set was written
        _swap_in(stage, real, old_names)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # after a swap this is the old folder; before it, the partial set
        raise
    return {k: out / n for k, n in names.items()}


def _write_new(path: Path, data: str | bytes) -> str:
    """Write a file that does not exist yet (into a private staging folder: no temporary file needed) and
    return its name; :func:`_swap_in` syncs the folder once."""
    fd = new_file(path)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    return path.name


def _replace_file(path: Path, data: str | bytes) -> str:
    """:func:`atomic_write_bytes` as a ``write`` for :func:`_write_report_files` (the in-place fallback)."""
    return atomic_write_bytes(path, data.encode("utf-8") if isinstance(data, str) else data).name


def _write_report_files(results: Mapping[str, RobustnessResult], tables: Mapping[str, Any], flags: list[str] | None,
                        sweeps: Mapping[str, Any] | None, title: str, plots: bool, folder: Path,
                        write=_write_new, extra: Mapping[str, bytes] | None = None) -> dict[str, str]:
    """Write the report set into ``folder`` with ``write(path, text | bytes) -> name``; returns
    ``{file kind: file name}``. ``report.json`` and ``report.md`` come last."""
    written: dict[str, str] = {}
    for fname, data in (extra or {}).items():
        written[Path(fname).stem] = write(folder / fname, data)
    for metric, table in tables.items():
        written[f"table_{metric}"] = write(folder / f"table_{metric}.csv", csv_table(table))

    images: list[str] = []
    task = next(iter(results.values())).task
    if plots:
        for metric in PLOT_METRICS[task]:
            if metric in tables:
                fig = P.figure_metric_by_attack(tables[metric], metric)
                written[f"plot_{metric}_by_attack"] = write(folder / f"{metric}_by_attack.png", P.png_bytes(fig))
                images.append(written[f"plot_{metric}_by_attack"])
        if task == "classification":
            for name, r in results.items():
                if r.confusion:
                    fig = P.figure_confusion_matrices(r, title=name)
                    written[f"confusion_{name}"] = write(folder / f"confusion_{_slug(name)}.png", P.png_bytes(fig))
                    images.append(written[f"confusion_{name}"])
        if sweeps:
            for metric in PLOT_METRICS[task]:
                fig = P.figure_metric_vs_eps(sweeps, metric)
                written[f"plot_{metric}_vs_eps"] = write(folder / f"{metric}_vs_eps.png", P.png_bytes(fig))
                images.append(written[f"plot_{metric}_vs_eps"])

    payload = {
        "title": title,
        "task": task,
        "tables": tables,
        "models": {name: r.to_dict() for name, r in results.items()},
        "sweeps": {name: {repr(e): r.to_dict() for e, r in s.items()} for name, s in (sweeps or {}).items()},
        "flags": flags,
        "files": dict(written),
    }
    text = json.dumps(_clean_json(payload), indent=2, default=_json_default) + "\n"
    written["json"] = write(folder / "report.json", text)
    written["markdown"] = write(folder / "report.md", render_markdown(results, tables, flags, title, images))
    return written


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name)) or "model"


def load_report(path: str | os.PathLike) -> dict[str, RobustnessResult]:
    """``{model: RobustnessResult}`` from a ``report.json`` written by :func:`write_report` (or a folder
    holding one). Raises ``ValueError`` for a missing or malformed file."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise ValueError(f"report file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"report file {str(path)!r} is not valid JSON: {err}") from None
    if not isinstance(data, Mapping) or "models" not in data:
        raise ValueError(f"report file {str(path)!r} has no 'models' key")
    return {name: RobustnessResult.from_dict(d) for name, d in data["models"].items()}
