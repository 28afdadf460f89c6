"""Robustness evaluation: attack suites and presets, the papers' metrics, paper-shaped reports and plots.

>>> from monai_dpaat.evaluation import RobustnessEvaluator, write_report
>>> result = RobustnessEvaluator("dpaat-table", task="classification")(network, test_loader)
>>> write_report({"STD": result}, "out/")

Gradient-masking checks live in :mod:`monai_dpaat.evaluation.sanity`, Grad-CAM in
:mod:`monai_dpaat.evaluation.gradcam` (imported on demand).
"""

from .metrics import (
    CLASSIFICATION_METRICS,
    METRIC_TITLES,
    SEGMENTATION_METRICS,
    SegmentationMetrics,
    accuracy,
    average_precision,
    classification_summary,
    confusion_matrix,
    macro_precision_recall_f1,
    mean_average_precision,
    perturbation_norms,
    pixel_accuracy,
)
from .presets import PRESETS, dpaat_table, list_presets, parse_eps, preset, suite_with_eps, unet_paper
from .report import (
    atomic_write_bytes,
    atomic_write_text,
    combine_results,
    ensure_output_dir,
    load_report,
    masking_flags,
    write_report,
)
from .suite import (
    ORIGINAL,
    WORST_CASE,
    InfererNetwork,
    RobustnessEvaluator,
    RobustnessResult,
    SuiteEntry,
    build_suite,
    resolve_attack_specs,
)

__all__ = [
    "CLASSIFICATION_METRICS", "SEGMENTATION_METRICS", "METRIC_TITLES", "SegmentationMetrics", "accuracy",
    "average_precision", "classification_summary", "confusion_matrix", "macro_precision_recall_f1",
    "mean_average_precision", "perturbation_norms", "pixel_accuracy",
    "PRESETS", "dpaat_table", "list_presets", "parse_eps", "preset", "suite_with_eps", "unet_paper",
    "atomic_write_bytes", "atomic_write_text", "combine_results", "ensure_output_dir", "load_report",
    "masking_flags", "write_report",
    "ORIGINAL", "WORST_CASE", "InfererNetwork", "RobustnessEvaluator", "RobustnessResult", "SuiteEntry",
    "build_suite", "resolve_attack_specs",
]
