"""``build_iteration``: one entry point for the five training methods, for bundle configs and scripts."""

from __future__ import annotations

from typing import Any

from .amat import AMATIteration
from .at import ATIteration, SATIteration
from .base import AdversarialIteration, StandardIteration
from .dpaat import DPAATIteration

__all__ = ["METHODS", "build_iteration"]

#: method name -> iteration_update class.
METHODS: dict[str, type[AdversarialIteration]] = {
    "std": StandardIteration,
    "at": ATIteration,
    "sat": SATIteration,
    "amat": AMATIteration,
    "dpaat": DPAATIteration,
}


def build_iteration(method: str, **kwargs: Any) -> AdversarialIteration:
    """Return the ``iteration_update`` for ``method``: ``"std"`` (:class:`StandardIteration`: MONAI's own
    iteration that refuses a non-finite loss),
    ``"at"``, ``"sat"``, ``"amat"`` or ``"dpaat"`` (case-insensitive). ``kwargs`` go to the class
    (``attack=...``; ``num_samples=...`` for AMAT/DPAAT). The DPAAT ablations are ``"d-a"``
    (``sync_loss=False``), ``"d-b"`` (``adapt_eps=False``) and ``"d-(a+b)"`` (= ``"dpaat"``).

    Example (bundle JSON)::

        "iteration_update": {"_target_": "monai_dpaat.training.build_iteration", "method": "dpaat",
                             "num_samples": "$len(@train#dataset#data)", "attack": {"name": "pgd", "steps": 7}}
    """
    key = str(method).strip().lower().replace("_", "-").replace(" ", "")
    ablations = {"d-a": {"sync_loss": False}, "d-b": {"adapt_eps": False}, "d-(a+b)": {}, "d-a+b": {}}
    if key in ablations:
        return DPAATIteration(**{**ablations[key], **kwargs})
    if key not in METHODS:
        raise ValueError(f"unknown training method {method!r}; expected one of {sorted(METHODS)} or d-a, d-b, d-(a+b)")
    cls = METHODS[key]
    if cls is StandardIteration and kwargs:
        raise ValueError(f"method 'std' takes no arguments, got {sorted(kwargs)}")
    return cls(**kwargs)
