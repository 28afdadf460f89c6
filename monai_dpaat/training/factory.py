"""``build_iteration``: one entry point for the five training methods, for bundle configs and scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .amat import AMATIteration
from .at import ATIteration, SATIteration
from .base import AdversarialIteration, StandardIteration
from .dpaat import DPAATIteration

__all__ = ["METHODS", "BUNDLE_METHODS", "build_iteration", "check_method", "method_name"]

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
                             "num_samples": "$len(@train#dataset#data)",
                             "attack": {"_target_": "monai_dpaat.attacks.PGD", "eps": "$8/255", "steps": 7}}
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
#: the methods a bundle composes from ``configs/methods/<name>.json``
BUNDLE_METHODS = ("std", "at", "sat", "amat", "dpaat", "d-a", "d-b")


def method_name(iteration: Any) -> str:
    """The method name of an ``iteration_update``: ``"std"`` (also for None: MONAI's own iteration), ``"at"``,
    ``"sat"``, ``"amat"``, ``"dpaat"``, or a DPAAT ablation: ``"d-a"`` (``sync_loss=False``), ``"d-b"``
    (``adapt_eps=False``), ``"d-a+d-b"`` (both)."""
    if iteration is None:
        return "std"
    if isinstance(iteration, DPAATIteration):
        ablations = [n for n, off in (("d-a", not iteration.sync_loss), ("d-b", not iteration.adapt_eps)) if off]
        if ablations:
            return "+".join(ablations)
    return getattr(iteration, "method", "") or type(iteration).__name__


def check_method(method: str, iteration_update: Any, methods_dir: str = "configs/methods", key: str = "method",
                 base: Sequence[str] = ("configs/train.json",)) -> None:
    """Raise ``ValueError`` when a bundle's ``method`` (the name its labels use) does not name its
    ``iteration_update``. A bundle selects its method by composing ``<methods_dir>/<name>.json``, which sets both
    keys; a ``--<key>`` override alone would only rename the run (the trainer would still run the default).

    ``key`` is the id of ``method`` in the config (named in the message as its command-line override) and
    ``base`` the config files the method file is composed after (the message's example ``--config_file`` list).

    Meant for a bundle's ``"initialize"`` list: ``"$monai_dpaat.training.check_method(@method, @iteration_update)"``;
    an override file for other bundles passes its own ``key``, ``methods_dir`` and ``base``.
    """
    example = method if method in BUNDLE_METHODS else "at"
    files = ",".join(f"'{f}'" for f in (*base, f"{methods_dir}/{example}.json"))
    how = (f"a bundle selects its training method by composing {methods_dir}/<name>.json, e.g. --config_file "
           f"\"[{files}]\"")
    if method not in BUNDLE_METHODS:
        raise ValueError(f"unknown training method {method!r}; expected one of {list(BUNDLE_METHODS)} ({how})")
    actual = method_name(iteration_update)
    if actual != method:
        raise ValueError(f"method {method!r} does not match the iteration_update {type(iteration_update).__name__} "
                         f"(method {actual!r}): a --{key} override does not change the training method; compose "
                         f"{methods_dir}/{method}.json instead ({how})")
