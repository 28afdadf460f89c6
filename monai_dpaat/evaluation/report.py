"""Paper-shaped robustness reports: Markdown, CSV and JSON tables plus PNG plots, written atomically.

One table per metric; rows = ``"Original"``, the attacks, ``"Worst case"``; columns = models or training
methods (STD, AT, SAT, AMAT, DPAAT...), as in Li et al. 2024 (Table I, transposed to one table per metric)
and Koishiyeva et al. 2025 (Tables 2-4).

>>> tables = combine_results({"STD": result_std, "DPAAT": result_dpaat})
>>> files = write_report({"STD": result_std, "DPAAT": result_dpaat}, "out/", flags=[...])

Every file goes to a temporary file in the output folder first and is moved into place with ``os.replace``,
so a reader never sees a half-written report.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import CLASSIFICATION_METRICS, METRIC_TITLES, SEGMENTATION_METRICS
from .suite import ORIGINAL, WORST_CASE, RobustnessResult

__all__ = [
    "ensure_output_dir",
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
def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (with parents) and check it is a writable folder; raises ``ValueError`` otherwise."""
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"output_dir {str(out)!r} cannot be created: {err.strerror or err}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"output_dir {str(out)!r} is not writable")
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    ensure_output_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


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
                  sweeps: Mapping[str, Mapping[float, RobustnessResult]] | None = None) -> list[str] | None:
    """Gradient-masking red flags from the numbers a report already has (per model; sweeps included), via
    :func:`monai_dpaat.evaluation.sanity.flags_from_records`. ``None`` when that module is unavailable."""
    try:
        from monai_dpaat.evaluation.sanity import flags_from_records
    except ImportError:
        return None
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
def render_markdown(results: Mapping[str, RobustnessResult], tables: Mapping[str, Mapping[str, Any]],
                    flags: Sequence[str] | None = None, title: str = "Robustness report",
                    images: Sequence[str] = ()) -> str:
    """The whole Markdown report: settings, one table per metric, confusion matrices, flags, plots."""
    first = next(iter(results.values()))
    lines = [f"# {title}", "", f"Task: {first.task}. Samples: " +
             ", ".join(f"{n} = {r.num_samples}" for n, r in results.items()) + ".", ""]
    lines += ["Worst case: per sample, the worst of the clean input and every attack "
              + ("(correct only if no attack fools it)." if first.task == "classification" else "(lowest Dice)."), ""]
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
                 title: str = "Robustness report", check_masking: bool = True, plots: bool = True) -> dict[str, Path]:
    """Write the report of one or several models to ``output_dir``.

    Files: ``report.md``, ``report.json`` (tables, every model's full result, sweeps, flags),
    ``table_<metric>.csv`` per metric, and with ``plots``: ``<metric>_by_attack.png`` (the main metrics),
    ``confusion_<model>.png`` (classification) and, with ``sweeps``, ``<metric>_vs_eps.png``.

    Args:
        results: ``{column name: RobustnessResult | dict | report JSON path}`` or one result.
        output_dir: created if missing; ``ValueError`` if it cannot be written.
        metrics: metric keys for the tables (default all).
        flags: gradient-masking flags (e.g. from ``check_gradient_masking``); listed in the report.
        sweeps: ``{column name: {eps: RobustnessResult}}`` (or one ``{eps: result}``) for metric-vs-eps plots.
        title: report title.
        check_masking: also derive flags from the tables' own numbers (see :func:`masking_flags`).
        plots: write the PNG plots.

    Returns:
        ``{file kind: path}`` of everything written.
    """
    results = as_results(results)
    out = ensure_output_dir(output_dir)
    tables = combine_results(results, metrics)
    if sweeps is not None:
        if sweeps and all(isinstance(k, (int, float)) for k in sweeps):
            sweeps = {next(iter(results)): sweeps}
        sweeps = {name: {float(e): (RobustnessResult.from_dict(r) if isinstance(r, Mapping) else r)
                         for e, r in s.items()} for name, s in sweeps.items()}
    all_flags = list(flags) if flags is not None else None
    if check_masking:
        derived = masking_flags(results, sweeps)
        if derived is not None:
            all_flags = (all_flags or []) + [f for f in derived if f not in (all_flags or [])]

    written: dict[str, Path] = {}
    for metric, table in tables.items():
        written[f"table_{metric}"] = atomic_write_text(out / f"table_{metric}.csv", csv_table(table))

    images: list[str] = []
    if plots:
        from . import plots as P

        task = next(iter(results.values())).task
        for metric in PLOT_METRICS[task]:
            if metric in tables:
                path = P.plot_metric_by_attack(tables[metric], metric, out / f"{metric}_by_attack.png")
                written[f"plot_{metric}_by_attack"] = path
                images.append(path.name)
        if task == "classification":
            for name, r in results.items():
                if r.confusion:
                    path = P.plot_confusion_matrices(r, out / f"confusion_{_slug(name)}.png", title=name)
                    written[f"confusion_{name}"] = path
                    images.append(path.name)
        if sweeps:
            for metric in PLOT_METRICS[task]:
                path = P.plot_metric_vs_eps(sweeps, metric, out / f"{metric}_vs_eps.png")
                written[f"plot_{metric}_vs_eps"] = path
                images.append(path.name)

    payload = {
        "title": title,
        "task": next(iter(results.values())).task,
        "tables": tables,
        "models": {name: r.to_dict() for name, r in results.items()},
        "sweeps": {name: {repr(e): r.to_dict() for e, r in s.items()} for name, s in (sweeps or {}).items()},
        "flags": all_flags,
        "files": {k: p.name for k, p in written.items()},
    }
    written["json"] = atomic_write_text(out / "report.json",
                                        json.dumps(_clean_json(payload), indent=2, default=_json_default) + "\n")
    written["markdown"] = atomic_write_text(out / "report.md", render_markdown(results, tables, all_flags, title, images))
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
