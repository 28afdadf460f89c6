"""Leaderboard rows of the benchmark protocol (issue 14): one JSON row per (bundle, weights, data, budget), and the
merge of several rows into one table sorted by the robust metric (accuracy for classification rows, mean Dice for
segmentation rows: ``metric`` names it, ``clean_<metric>`` / ``robust_<metric>`` hold it).

A row records what makes two numbers comparable: the protocol version and budget, the budget ``eps`` with its units
(``range``: a fraction of each sample's intensity range, with the absolute values it became), the bundle's name and
version, a hash of the weights file and a fingerprint of the evaluated images and labels, plus the results, the
flags, the wall time, the device and the package versions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["COLUMNS", "row_metric", "dataset_fingerprint", "file_sha256", "merge_rows", "read_row", "rows_to_csv",
           "rows_to_markdown", "versions"]

#: the merged table's columns: (header, row key path)
COLUMNS = (("model", ("name",)), ("bundle", ("bundle", "name")), ("version", ("bundle", "version")),
           ("protocol", ("protocol",)), ("budget", ("budget",)), ("eps", ("eps",)), ("units", ("eps_units",)),
           ("samples", ("dataset", "num_samples")), ("metric", ("metric",)), ("clean", ("clean",)),
           ("robust", ("robust",)), ("mCE", ("corruptions", "summary", "mce")),
           ("corruption error", ("corruptions", "summary", "average_error")), ("flags", ("flags",)),
           ("weights", ("weights", "sha256")))


def row_metric(row: Mapping[str, Any]) -> str:
    """The row's headline metric: ``accuracy`` (classification; rows from before the key existed) or ``dice``."""
    return str(row.get("metric") or "accuracy")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_fingerprint(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """SHA-256 of the evaluated images (float32 bytes) and labels, in order: equal only for the same data."""
    digest = hashlib.sha256()
    for x, y in batches:
        digest.update(torch.as_tensor(x).detach().float().cpu().contiguous().numpy().tobytes())
        digest.update(torch.as_tensor(y).detach().long().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import monai

    try:
        ours = version("monai-dpaat")
    except PackageNotFoundError:  # run from a source tree that was never installed
        ours = "not installed"
    return {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
            "monai_dpaat": ours}


def read_row(path: str | Path) -> dict[str, Any]:
    """A ``leaderboard.json`` (or a folder holding one); a ValueError names a file that is not a row."""
    p = Path(path)
    if p.is_dir():
        p = p / "leaderboard.json"
    try:
        row = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read leaderboard row {str(p)!r}: {err}") from None
    metric = row_metric(row) if isinstance(row, dict) else "accuracy"
    missing = [k for k in ("protocol", f"robust_{metric}", f"clean_{metric}", "eps") if not isinstance(row, dict)
               or k not in row]
    if missing:
        raise ValueError(f"{str(p)!r} is not a benchmark row: it lacks {missing}")
    return row


def _get(row: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = row
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def merge_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows as table records (:data:`COLUMNS`), grouped by metric, each group sorted by the robust metric, best
    first (ties: the clean metric)."""
    records = []
    for row in rows:
        record = {}
        metric = row_metric(row)
        for header, path in COLUMNS:
            value = row.get(f"{header}_{metric}") if header in ("clean", "robust") else _get(row, path)
            if header == "metric":
                value = metric
            if header == "flags":
                value = "; ".join(value) if value else "none"
            elif header == "weights" and value:
                value = value[:12]
            record[header] = value
        records.append(record)
    return sorted(records, key=lambda r: (r["metric"], -(r["robust"] or 0.0), -(r["clean"] or 0.0)))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value).replace("|", "\\|")


def rows_to_markdown(records: Sequence[Mapping[str, Any]]) -> str:
    headers = [h for h, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(r.get(h)) for h in headers) + " |" for r in records]
    return "\n".join(lines) + "\n"


def rows_to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[h for h, _ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()
