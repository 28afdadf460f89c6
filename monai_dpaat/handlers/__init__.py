"""Ignite/MONAI handlers of monai-dpaat (attach them to a ``SupervisedTrainer`` or ``SupervisedEvaluator``,
or list them in a bundle's ``train#handlers`` / ``validate#handlers``)."""

from __future__ import annotations

import importlib

# name -> submodule; imported on first use so that each handler pulls in only what it needs
_EXPORTS = {
    "AdversarialStatsHandler": "adversarial_stats",
    "AtomicCheckpointSaver": "checkpoint",
    "AtomicDiskSaver": "checkpoint",
    "CatastrophicOverfittingGuard": "overfitting_guard",
    "ClassificationMetric": "classification_metric",
    "ReleaseBackbone": "backbone",
    "RobustnessValidationHandler": "robustness",
    "RunLock": "run_lock",
    "TrainingData": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
