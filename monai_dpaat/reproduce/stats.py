"""Numbers over seeds: mean and standard deviation, the paired test between two methods, the comparison with a
published number."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["summarize", "paired_test", "claim_outcome", "compare", "format_mean_std", "format_p", "SIGNIFICANCE"]

#: the level below which a paired test's p-value settles a paper's claim
SIGNIFICANCE = 0.05


def _finite(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ValueError(f"{what}: no values")
    bad = [v for v in out if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what}: non-finite values {bad}")
    return out


def summarize(values: Sequence[float], what: str = "values") -> dict[str, Any]:
    """``{"mean", "std", "n", "values"}`` of per-seed values; ``std`` is the sample standard deviation
    (``ddof=1``, ``None`` for one seed: a single run has no spread, and 0 would claim one)."""
    vals = _finite(values, what)
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "values": vals}


def paired_test(a: Sequence[float], b: Sequence[float], what: str = "a vs b") -> dict[str, Any]:
    """Paired t-test of ``a`` against ``b`` over the same seeds (``scipy.stats.ttest_rel``, two-sided).

    Returns ``{"test", "n", "mean_difference", "t", "p"}`` (``mean_difference`` = mean of ``a - b``); ``t`` and ``p``
    are ``None`` with fewer than 2 pairs or when every difference is equal (no variance: the test is undefined)."""
    from scipy import stats

    xa, xb = _finite(a, what), _finite(b, what)
    if len(xa) != len(xb):
        raise ValueError(f"{what}: a paired test needs the same seeds on both sides, got {len(xa)} and {len(xb)}")
    diffs = [x - y for x, y in zip(xa, xb)]
    out: dict[str, Any] = {"test": "paired t-test (two-sided)", "n": len(diffs),
                           "mean_difference": sum(diffs) / len(diffs), "t": None, "p": None}
    if len(diffs) >= 2 and max(diffs) - min(diffs) > 1e-12:
        result = stats.ttest_rel(xa, xb)
        out["t"], out["p"] = float(result.statistic), float(result.pvalue)
    return out


def claim_outcome(test: dict[str, Any], direction: int, alpha: float = SIGNIFICANCE) -> str:
    """What a :func:`paired_test` says of a claim that ``a - b`` has the sign of ``direction`` (+1 or -1):
    ``"untested"`` (no p-value), ``"held"`` (significant, that sign), ``"contradicted"`` (significant, not that
    sign) or ``"not significant"``."""
    if test["p"] is None:
        return "untested"
    if test["p"] >= alpha:
        return "not significant"
    return "held" if test["mean_difference"] * direction > 0 else "contradicted"


def compare(ours: Sequence[float], published: float | None, what: str = "value") -> dict[str, Any]:
    """:func:`summarize` of ``ours`` with the ``published`` number and ``difference`` = our mean - published
    (``None`` where the paper gives no number)."""
    row = summarize(ours, what)
    row["published"] = None if published is None else float(published)
    row["difference"] = None if published is None else row["mean"] - float(published)
    return row


def format_mean_std(row: dict[str, Any], digits: int = 3) -> str:
    """``"0.512 ± 0.031"`` (``"0.512"`` for one seed)."""
    if row.get("std") is None:
        return f"{row['mean']:.{digits}f}"
    return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"


def format_p(test: dict[str, Any]) -> str:
    """A :func:`paired_test`'s p-value for a report: ``"0.0449"`` (3 significant digits), ``"–"`` when undefined."""
    return "–" if test["p"] is None else f"{test['p']:.3g}"
