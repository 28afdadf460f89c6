"""PNG plots of robustness results (matplotlib's Agg canvas; no pyplot state, safe headless).

- :func:`plot_metric_vs_eps`: a metric against the budget, one line per attack (and line style per model).
- :func:`plot_metric_by_attack`: grouped bars, attacks x models, of one metric table.
- :func:`plot_confusion_matrices`: the confusion matrices of one result (clean, each attack, worst case),
  as Li et al. 2024's Fig. 2.

Each figure is written atomically (temporary file in the same folder, then ``os.replace``; mode
``0666 & ~umask``). The ``figure_*`` functions build the same figures without writing them (``png_bytes``
renders one), which is how :func:`~monai_dpaat.evaluation.report.write_report` puts them into its report set.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..atomic_io import atomic_write_bytes, ensure_output_dir
from .metrics import METRIC_TITLES
from .suite import ORIGINAL, WORST_CASE, RobustnessResult

__all__ = [
    "plot_metric_vs_eps", "plot_metric_by_attack", "plot_confusion_matrices", "save_figure", "png_bytes",
    "figure_metric_vs_eps", "figure_metric_by_attack", "figure_confusion_matrices",
]

_LINESTYLES = ("-", "--", ":", "-.")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Any) -> bytes:
    """``fig`` rendered as PNG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Render ``fig`` to PNG bytes and write them atomically to ``path``."""
    data = png_bytes(fig)
    path = Path(path)
    ensure_output_dir(path.parent)
    return atomic_write_bytes(path, data)


_SHORT = {"accuracy": "Accuracy (%)", "map": "mAP / mARP", "dice": "Dice", "iou": "Mean IoU", "loss": "Mean loss",
          "pixel_accuracy": "Pixel accuracy", "hd95": "HD95 (pixels)", "f1": "Macro F1", "precision": "Macro precision",
          "recall": "Macro recall", "linf": "Mean L-inf", "l2": "Mean L2"}


def _label(metric: str) -> str:
    return _SHORT.get(metric, METRIC_TITLES.get(metric, metric))


def _scale(metric: str) -> float:
    return 100.0 if metric == "accuracy" else 1.0


def plot_metric_vs_eps(sweeps: Mapping[str, Mapping[float, RobustnessResult]], metric: str,
                       path: str | os.PathLike, rows: Sequence[str] | None = None) -> Path:
    """``metric`` against epsilon: one colour per row (attack, ``Worst case``), one line style per model.

    Args:
        sweeps: ``{model: {eps: RobustnessResult}}``; the clean row is drawn at each eps as a flat reference.
        metric: a row metric (``accuracy``, ``dice``...).
        path: PNG file to write.
        rows: rows to draw (default every row of the results).
    """
    return save_figure(figure_metric_vs_eps(sweeps, metric, rows), path)


def figure_metric_vs_eps(sweeps: Mapping[str, Mapping[float, RobustnessResult]], metric: str,
                         rows: Sequence[str] | None = None) -> Any:
    """The figure of :func:`plot_metric_vs_eps`."""
    if not sweeps:
        raise ValueError("sweeps is empty: nothing to plot")
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    colours: dict[str, Any] = {}
    cycle = [f"C{i}" for i in range(10)]
    for m_idx, (model, by_eps) in enumerate(sweeps.items()):
        eps_values = sorted(float(e) for e in by_eps)
        if not eps_values:
            continue
        results = [by_eps[e] for e in eps_values]
        names = list(rows) if rows is not None else list(results[0].rows)
        for name in names:
            ys = [r.rows.get(name, {}).get(metric) for r in results]
            if all(y is None for y in ys):
                continue
            ys = [math.nan if y is None else float(y) * _scale(metric) for y in ys]
            colour = colours.setdefault(name, cycle[len(colours) % len(cycle)])
            label = name if len(sweeps) == 1 else f"{model}: {name}"
            style = _LINESTYLES[m_idx % len(_LINESTYLES)]
            marker = "" if name == ORIGINAL else "o"
            width = 2.5 if name == WORST_CASE else 1.5
            ax.plot([e * 255 for e in eps_values], ys, linestyle=style, marker=marker, color=colour,
                    linewidth=width, label=label)
    ax.set_xlabel("epsilon (x 1/255)")
    ax.set_ylabel(_label(metric))
    ax.set_title(f"{_label(metric)} vs epsilon")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_metric_by_attack(table: Mapping[str, Any], metric: str, path: str | os.PathLike) -> Path:
    """Grouped bars of one table from :func:`~monai_dpaat.evaluation.report.combine_results`: one group per
    row (Original, attacks, Worst case), one bar per column (model)."""
    return save_figure(figure_metric_by_attack(table, metric), path)


def figure_metric_by_attack(table: Mapping[str, Any], metric: str) -> Any:
    """The figure of :func:`plot_metric_by_attack`."""
    rows, cols = list(table["rows"]), list(table["columns"])
    if not rows or not cols:
        raise ValueError("the table has no rows or no columns: nothing to plot")
    fig = _figure(max(6.0, 0.9 * len(rows) + 1.5), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(cols)
    for j, col in enumerate(cols):
        ys = [table["values"][r][col] for r in rows]
        ys = [0.0 if y is None or math.isnan(y) else y * _scale(metric) for y in ys]
        ax.bar([i + (j - (len(cols) - 1) / 2) * width for i in range(len(rows))], ys, width=width, label=col)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(rows, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(_label(metric))
    ax.set_title(_label(metric))
    ax.grid(True, axis="y", alpha=0.3)
    if len(cols) > 1:
        ax.legend(fontsize=8)
    return fig


def plot_confusion_matrices(result: RobustnessResult, path: str | os.PathLike, rows: Sequence[str] | None = None,
                            title: str | None = None) -> Path:
    """Confusion matrices of one classification result side by side (rows = true, columns = predicted)."""
    return save_figure(figure_confusion_matrices(result, rows, title), path)


def figure_confusion_matrices(result: RobustnessResult, rows: Sequence[str] | None = None,
                              title: str | None = None) -> Any:
    """The figure of :func:`plot_confusion_matrices`."""
    if not result.confusion:
        raise ValueError("the result has no confusion matrices (classification only)")
    names = [r for r in (rows or list(result.confusion)) if r in result.confusion]
    if not names:
        raise ValueError(f"none of the rows {list(rows or [])} has a confusion matrix")
    k = len(result.confusion[names[0]])
    classes = result.class_names if result.class_names and len(result.class_names) == k else [str(i) for i in range(k)]
    ncols = min(4, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure(2.6 * ncols + 0.4, 2.6 * nrows + 0.6)
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        cm = result.confusion[name]
        top = max(1, max(max(r) for r in cm))
        ax.imshow(cm, cmap="Blues", vmin=0, vmax=top)
        for a in range(k):
            for b in range(k):
                ax.text(b, a, str(cm[a][b]), ha="center", va="center", fontsize=8,
                        color="white" if cm[a][b] > top / 2 else "black")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(classes, fontsize=7)
        ax.set_yticklabels(classes, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted", fontsize=7)
        ax.set_ylabel("true", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def plot_cascade(row: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Accuracy after each stage of a benchmark row's cascade (clean, then after each attack in order)."""
    return save_figure(figure_cascade(row), path)


def plot_segmentation_protocol(row: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Mean Dice of a segmentation benchmark row: clean, under each attack, and the per-sample worst case."""
    return save_figure(figure_segmentation_protocol(row), path)


def _row_bars(row: Mapping[str, Any], labels: list[str], values: list[float], colors: list[str], ylabel: str) -> Any:
    """A benchmark row's bar chart: one bar per stage (values in [0, 1], shown in %), titled with its protocol."""
    fig = _figure(max(5.0, 1.1 * len(labels) + 1.5), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(range(len(labels)), [100 * v for v in values], color=colors)
    for bar, value in zip(bars, values):
        ax.annotate(f"{100 * value:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 105)
    ax.set_title(f"{row['name']}: protocol {row['protocol']} ({row['budget']}),\n"
                 f"eps {row['eps']:.4g} {row['eps_units']}", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def figure_segmentation_protocol(row: Mapping[str, Any]) -> Any:
    """The figure of :func:`plot_segmentation_protocol` (a :mod:`~monai_dpaat.evaluation.bundle_benchmark` row)."""
    if not row["dataset"]["num_samples"]:
        raise ValueError("the row has no samples: nothing to plot")
    labels = ["clean", *row["per_attack"], "worst case"]
    values = [row["clean"]["dice"], *(m["dice"] for m in row["per_attack"].values()), row["robust"]["dice"]]
    return _row_bars(row, labels, values, ["tab:gray"] + ["tab:red"] * (len(labels) - 2) + ["black"],
                     "Mean Dice (%)")


def figure_cascade(row: Mapping[str, Any]) -> Any:
    """The figure of :func:`plot_cascade`: ``row`` is a :mod:`~monai_dpaat.evaluation.bundle_benchmark` row."""
    n = row["dataset"]["num_samples"]
    if not n:
        raise ValueError("the row has no samples: nothing to plot")
    labels, values = ["clean"], [row["clean_accuracy"]]
    for attack, broke in row["breaks"].items():
        labels.append(f"+ {attack}")
        values.append(values[-1] - broke / n)
    return _row_bars(row, labels, values, ["tab:gray"] + ["tab:red"] * (len(labels) - 1), "Accuracy (%)")
