"""Attack suites of the papers, as ordered ``{label: Attack}`` dicts.

- ``unet-paper``: the eight attacks of Koishiyeva et al. 2025 (FGSM, PGD, MI-FGSM, TI-FGSM, DI-FGSM,
  SI-DI-FGSM, NI-FGSM, GN). The paper gives no attack settings; the defaults are torchattacks' (eps 8/255,
  alpha 2/255, 10 steps, decay 1.0 for MI/NI/SI, TI kernel 15, DI resize 0.9 with probability 0.5,
  GN std ``gn_std`` = 0.1 unbounded). The paper names GN only as a table row, with no standard deviation;
  its GN drop (Dice 0.6845 -> 0.2329 UNet, 0.6550 -> 0.0658 Att-UNet++) is far larger than std 0.1 gives,
  so ``gn_std`` is a parameter (see ``docs/paper_choices.md``).
- ``dpaat-table``: FGSM, 10-IFGSM, 20-IFGSM, 20-PGD, 50-PGD of Li et al. 2024 (DPAAT), Table I. The
  paper's epsilon was lost in extraction, so ``eps`` defaults to **8/255** (L-inf, on images in [0, 1]),
  the common budget, and the step size to ``eps / 4`` (2/255, ours: the paper gives no step for its test
  attacks; its "step size of 0.15" is the training adversary's); both are parameters.

>>> list(preset("dpaat-table", eps=4 / 255, only=["FGSM", "20-PGD"]))
['FGSM', '20-PGD']

In a bundle config: ``"attacks": "$monai_dpaat.evaluation.preset(@robustness_preset, eps=@robustness_eps)"``.
Every preset takes ``eps`` (and ``alpha``, default ``eps / 4``) so one suite can be re-run along an epsilon
sweep. ``GN`` in ``unet-paper`` keeps its std (``gn_std``, shown as ``std`` in the GN attack's ``config()`` and so in
every report); with ``gn_eps`` (or an eps sweep, :meth:`Attack.with_eps`) its noise is clipped to the L-inf budget
for a like-for-like comparison.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from monai_dpaat.attacks import DIFGSM, FGSM, IFGSM, MIFGSM, NIFGSM, PGD, SIDIFGSM, TIFGSM, Attack, GaussianNoise

__all__ = ["PRESETS", "DEFAULT_EPS", "DEFAULT_GN_STD", "preset", "unet_paper", "dpaat_table", "parse_eps",
           "list_presets"]

#: the budget of every preset unless told otherwise (L-inf, images in [0, 1])
DEFAULT_EPS = 8 / 255

#: ``unet-paper``'s Gaussian-noise standard deviation unless told otherwise: torchattacks' GN default (the paper
#: gives none), in the data's units
DEFAULT_GN_STD = 0.1


def _alpha(eps: float, alpha: float | None) -> float:
    return eps / 4 if alpha is None else float(alpha)


def unet_paper(eps: float = DEFAULT_EPS, alpha: float | None = None, steps: int = 10,
               gn_std: float | None = None, gn_eps: float | None = None, std: float | None = None,
               **attack_kwargs: Any) -> dict[str, Attack]:
    """Koishiyeva et al. 2025's suite (rows of their Tables 2-4, in their order). ``attack_kwargs``
    (``value_range``, ``loss_function``, ``generator``, ``model_mode``) go to every attack.

    Args:
        gn_std: standard deviation of the ``GN`` row's noise, in the data's units (None: ``DEFAULT_GN_STD``, 0.1,
            torchattacks' default; the paper states none). It is in ``attacks["GN"].config()["std"]``, so every
            report's attack table shows it.
        gn_eps: optional L-inf clip of that noise (None: unbounded, as torchattacks).
        std: the former name of ``gn_std`` (kept for old configs; giving both with different values is an error).

    Raises:
        ValueError: ``gn_std`` not a finite number >= 0, or ``std`` and ``gn_std`` disagreeing.
    """
    gn_std = _gn_std(gn_std, std)
    common = {"eps": eps, "alpha": _alpha(eps, alpha), "steps": steps, **attack_kwargs}
    gn_kwargs = {k: v for k, v in attack_kwargs.items() if k in ("value_range", "generator")}
    return {
        "FGSM": FGSM(eps=eps, **attack_kwargs),
        "PGD": PGD(**common),
        "MI-FGSM": MIFGSM(**common, decay=1.0),
        "TI-FGSM": TIFGSM(**common),
        "DI-FGSM": DIFGSM(**common),
        "SI-DI-FGSM": SIDIFGSM(**common),
        "NI-FGSM": NIFGSM(**common, decay=1.0),
        "GN": GaussianNoise(std=gn_std, eps=gn_eps, **gn_kwargs),
    }


def _gn_std(gn_std: Any, std: Any) -> float:
    """The GN standard deviation from ``gn_std`` or its old name ``std`` (either may be ``"0.1"`` or ``"8/255"``)."""
    if gn_std is not None and std is not None and parse_eps(gn_std, "gn_std") != parse_eps(std, "std"):
        raise ValueError(f"gn_std={gn_std!r} and its old name std={std!r} disagree; give gn_std only")
    value = gn_std if gn_std is not None else std
    return DEFAULT_GN_STD if value is None else parse_eps(value, "gn_std")


def dpaat_table(eps: float = DEFAULT_EPS, alpha: float | None = None, **attack_kwargs: Any) -> dict[str, Attack]:
    """Li et al. 2024's Table I columns: FGSM, 10-IFGSM, 20-IFGSM, 20-PGD, 50-PGD (L-inf, budget ``eps``).
    The step counts are part of the labels, so there is no ``steps`` parameter."""
    common = {"eps": eps, "alpha": _alpha(eps, alpha), **attack_kwargs}
    return {
        "FGSM": FGSM(eps=eps, **attack_kwargs),
        "10-IFGSM": IFGSM(**common, steps=10),
        "20-IFGSM": IFGSM(**common, steps=20),
        "20-PGD": PGD(**common, steps=20),
        "50-PGD": PGD(**common, steps=50),
    }


#: preset name -> factory ``(eps=..., alpha=..., ...) -> {label: Attack}``
PRESETS: dict[str, Callable[..., dict[str, Attack]]] = {"unet-paper": unet_paper, "dpaat-table": dpaat_table}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def preset(name: str, eps: float | None = DEFAULT_EPS, alpha: float | None = None, steps: int | None = None,
           value_range: Any = "data", only: Sequence[str] | None = None, **kwargs: Any) -> dict[str, Attack]:
    """The attacks of preset ``name`` as an ordered ``{label: Attack}`` dict.

    Args:
        name: ``"dpaat-table"`` or ``"unet-paper"`` (case-insensitive, ``_`` for ``-``).
        eps: budget of every attack (None: the default 8/255).
        alpha: step size of the iterative attacks (None: ``eps / 4``).
        steps: step count of the multi-step attacks of presets that have one (``unet-paper``; None: 10).
        value_range: given to every attack (``"data"``, ``(lo, hi)`` or None for z-scored volumes).
        only: keep these labels, in this order (e.g. ``["FGSM", "20-PGD"]``).
        kwargs: preset-specific (``unet-paper``: ``gn_std``, the GN noise's standard deviation, default 0.1;
            ``gn_eps``, its optional L-inf clip) or given to every attack
            (``loss_function``, ``generator``, ``model_mode``).

    Raises:
        ValueError: an unknown preset or label in ``only``, or ``steps`` for a preset whose labels fix them.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
    factory = PRESETS[key]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if steps is not None:
        if "steps" not in inspect.signature(factory).parameters:
            raise ValueError(f"preset {key!r} fixes its step counts in its labels; pick labels with only= "
                             f"instead of steps={steps}")
        kwargs["steps"] = steps
    attacks = factory(eps=DEFAULT_EPS if eps is None else parse_eps(eps), alpha=alpha, value_range=value_range,
                      **kwargs)
    if only is None:
        return attacks
    labels = [only] if isinstance(only, str) else list(only)
    unknown = [label for label in labels if label not in attacks]
    if unknown:
        raise ValueError(f"preset {key!r} has no attack labelled {unknown}; its labels: {', '.join(attacks)}")
    return {label: attacks[label] for label in labels}


def parse_eps(value: Any, name: str = "eps") -> float:
    """A budget from a number or a string such as ``"8/255"`` or ``"0.03"``: finite and >= 0. Raises ``ValueError``
    (naming the value as ``name``, e.g. a command-line flag) otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number or 'a/b' such as '8/255', got {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    else:
        text = str(value).strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                out = float(num) / float(den)
            else:
                out = float(text)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{name} must be a number or 'a/b' such as '8/255', got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if out < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return out
