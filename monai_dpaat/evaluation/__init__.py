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
from .presets import DEFAULT_EPS, PRESETS, dpaat_table, list_presets, parse_eps, preset, unet_paper
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
    attack_info,
    build_suite,
)

__all__ = [
    "CLASSIFICATION_METRICS", "SEGMENTATION_METRICS", "METRIC_TITLES", "SegmentationMetrics", "accuracy",
    "average_precision", "classification_summary", "confusion_matrix", "macro_precision_recall_f1",
    "mean_average_precision", "perturbation_norms", "pixel_accuracy",
    "DEFAULT_EPS", "PRESETS", "dpaat_table", "list_presets", "parse_eps", "preset", "unet_paper",
    "atomic_write_bytes", "atomic_write_text", "combine_results", "ensure_output_dir", "load_report",
    "masking_flags", "write_report",
    "ORIGINAL", "WORST_CASE", "InfererNetwork", "RobustnessEvaluator", "RobustnessResult", "SuiteEntry",
    "attack_info", "build_suite",
]
