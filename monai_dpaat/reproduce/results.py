"""Writing a reproduction's results: one JSON (every number, per seed) and one Markdown report, each written
atomically, with the exact command, the commit and the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monai_dpaat.atomic_io import atomic_write_text, ensure_output_dir

from .stats import SIGNIFICANCE, format_mean_std

__all__ = ["provenance", "markdown_table", "comparison_table", "claim", "claims_section", "write_results",
           "read_results", "render_results"]


def _commit() -> str | None:
    """The git commit of the package's checkout (``None`` for an installed copy without git)."""
    root = Path(__file__).resolve().parents[2]
    try:
        proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return proc.stdout.strip() + ("+uncommitted changes" if dirty else "")


def provenance(argv: Sequence[str] | None = None, started: datetime | None = None) -> dict[str, Any]:
    """What produced a result: the command line, commit, package versions and machine (no host name)."""
    from importlib.metadata import PackageNotFoundError, version

    import monai
    import torch

    try:
        package_version = version("monai-dpaat")
    except PackageNotFoundError:  # run from a checkout that was never installed
        package_version = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "command": " ".join(["python -m monai_dpaat", *(sys.argv[1:] if argv is None else argv)]),
        "commit": _commit(),
        "monai_dpaat": package_version,
        "torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version(),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "device": device},
        "started": (started or datetime.now(timezone.utc)).isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict) and "mean" in value:
        return format_mean_std(value, digits)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub Markdown table; cells are strings, numbers, ``{"mean", "std"}`` rows or ``None`` (``–``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c, digits) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_table(rows: dict[str, dict[str, dict[str, Any]]], columns: Sequence[str], digits: int = 3) -> str:
    """Ours next to the paper: for each row label and column, three cells ``ours (mean ± std) | paper | diff``
    from :func:`~monai_dpaat.reproduce.stats.compare` rows (``rows[label][column]``; a missing cell is ``–``)."""
    header = ["", *[f"{c} {part}" for c in columns for part in ("ours", "paper", "diff")]]
    body = []
    for label, cells in rows.items():
        line: list[Any] = [label]
        for column in columns:
            cell = cells.get(column)
            if cell is None:
                line += [None, None, None]
                continue
            diff = cell.get("difference")
            line += [cell, cell.get("published"), None if diff is None else f"{diff:+.{digits}f}"]
        body.append(line)
    return markdown_table(header, body, digits)


def claim(paper: str, measured: str, outcome: str) -> dict[str, str]:
    """One claim of a paper, what this reproduction measured for it, and the outcome in one word or phrase
    (``held``, ``contradicted``, ``not significant``, ``untested``, ``held on 2 of 6 CNNs``...)."""
    return {"paper": paper, "measured": measured, "outcome": outcome}


def claims_section(claims: Sequence[dict[str, str]]) -> list[str]:
    """The Markdown lines of the "Claims" section: one row per :func:`claim`, first in each report."""
    rows = [[c["paper"], c["measured"], f"**{c['outcome']}**"] for c in claims]
    return ["## Claims: what the paper says, what was measured here, whether it held", "",
            markdown_table(["paper's claim", "measured here", "outcome"], rows), "",
            f"*held* / *contradicted*: a paired t-test over seeds with p < {SIGNIFICANCE} in / against the paper's "
            "direction; *not significant*: p >= that; *untested*: no variance (one seed). Counts (*held on k of n*) "
            "compare means and are descriptive.", ""]


def write_results(output_dir: str | os.PathLike, name: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``<output_dir>/<name>.json`` (``payload``) and ``<name>.md`` (``markdown``) atomically (an
    earlier result stays whole until the new file is complete). Returns both paths."""
    out = ensure_output_dir(output_dir)
    json_path = atomic_write_text(out / f"{name}.json", json.dumps(payload, indent=2, sort_keys=False) + "\n")
    md_path = atomic_write_text(out / f"{name}.md", markdown.rstrip() + "\n")
    return json_path, md_path


def read_results(json_file: str | os.PathLike, paper: str) -> tuple[dict[str, Any], Path, str]:
    """``(payload, folder, name)`` of a results file written by :func:`write_results` for ``paper`` (its
    ``"paper"`` entry); a clear error for a missing or unreadable file, or one of another paper."""
    path = Path(json_file)
    if not path.is_file():
        raise ValueError(f"results file {str(path)!r} does not exist")
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"results file {str(path)!r} is not readable JSON: {err}") from None
    if not isinstance(payload, dict) or "runs" not in payload or "provenance" not in payload:
        raise ValueError(f"results file {str(path)!r} is not a reproduction's results (no 'runs'/'provenance')")
    if payload.get("paper") != paper:
        raise ValueError(f"results file {str(path)!r} holds results of {payload.get('paper')!r}, not {paper!r}")
    return payload, path.parent, path.stem


def render_results(json_file: str | os.PathLike, paper: str, claims: Any, markdown: Any,
                   derive: Any = None) -> dict[str, Any]:
    """Rewrite the Markdown of ``paper``'s results file ``json_file`` with ``markdown(payload)``, its ``claims``
    recomputed by ``claims(payload)`` (and ``derive(payload)``, if given, recomputing in place the sections that are
    functions of the per-run numbers), without running anything; the payload records who re-rendered it."""
    payload, folder, name = read_results(json_file, paper)
    if derive is not None:
        derive(payload)
    payload["claims"] = claims(payload)
    payload["rendered"] = provenance()
    write_results(folder, name, payload, markdown(payload))
    return payload
