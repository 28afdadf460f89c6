"""Attack suites of the papers, as lists of config-friendly ``{"name": ..., "label": ..., **kwargs}`` dicts.

- ``unet-paper``: the eight attacks of Koishiyeva et al. 2025 (FGSM, PGD, MI-FGSM, TI-FGSM, DI-FGSM,
  SI-DI-FGSM, NI-FGSM, GN). The paper gives no attack settings; the defaults are torchattacks' (eps 8/255,
  alpha 2/255, 10 steps, decay 1.0 for MI/NI/SI, TI kernel 15, DI resize 0.9 with probability 0.5,
  GN std 0.1 unbounded).
- ``dpaat-table``: FGSM, 10-IFGSM, 20-IFGSM, 20-PGD, 50-PGD of Li et al. 2024 (DPAAT), Table I. The
  paper's epsilon was lost in extraction, so ``eps`` defaults to **8/255** (L-inf, on images in [0, 1]),
  the common budget, and the step size to ``eps / 4`` (2/255); both are parameters.

Every preset takes ``eps`` (and ``alpha``, default ``eps / 4``) so one suite can be re-run along an
epsilon sweep. ``GN`` in ``unet-paper`` keeps its std; with ``gn_eps`` (or an eps sweep through
:func:`suite_with_eps`) its noise is clipped to the L-inf budget for a like-for-like comparison.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["PRESETS", "preset", "unet_paper", "dpaat_table", "suite_with_eps", "parse_eps", "list_presets"]

DEFAULT_EPS = 8 / 255


def _alpha(eps: float, alpha: float | None) -> float:
    return eps / 4 if alpha is None else float(alpha)


def unet_paper(eps: float = DEFAULT_EPS, alpha: float | None = None, steps: int = 10, std: float = 0.1,
               gn_eps: float | None = None) -> list[dict[str, Any]]:
    """Koishiyeva et al. 2025's suite (rows of their Tables 2-4, in their order)."""
    a = _alpha(eps, alpha)
    common = {"eps": eps, "alpha": a, "steps": steps}
    return [
        {"name": "fgsm", "label": "FGSM", "eps": eps},
        {"name": "pgd", "label": "PGD", **common},
        {"name": "mi-fgsm", "label": "MI-FGSM", **common, "decay": 1.0},
        {"name": "ti-fgsm", "label": "TI-FGSM", **common},
        {"name": "di-fgsm", "label": "DI-FGSM", **common},
        {"name": "si-di-fgsm", "label": "SI-DI-FGSM", **common},
        {"name": "ni-fgsm", "label": "NI-FGSM", **common, "decay": 1.0},
        {"name": "gn", "label": "GN", "std": std, "eps": gn_eps},
    ]


def dpaat_table(eps: float = DEFAULT_EPS, alpha: float | None = None) -> list[dict[str, Any]]:
    """Li et al. 2024's Table I columns: FGSM, 10-IFGSM, 20-IFGSM, 20-PGD, 50-PGD (L-inf, budget ``eps``)."""
    a = _alpha(eps, alpha)
    return [
        {"name": "fgsm", "label": "FGSM", "eps": eps},
        {"name": "i-fgsm", "label": "10-IFGSM", "eps": eps, "alpha": a, "steps": 10},
        {"name": "i-fgsm", "label": "20-IFGSM", "eps": eps, "alpha": a, "steps": 20},
        {"name": "pgd", "label": "20-PGD", "eps": eps, "alpha": a, "steps": 20},
        {"name": "pgd", "label": "50-PGD", "eps": eps, "alpha": a, "steps": 50},
    ]


#: preset name -> factory ``(eps=..., alpha=..., ...) -> list of attack spec dicts``
PRESETS: dict[str, Callable[..., list[dict[str, Any]]]] = {"unet-paper": unet_paper, "dpaat-table": dpaat_table}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def preset(name: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The attack specs of preset ``name`` (``eps``, ``alpha``, ... passed on to its factory)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())}")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return PRESETS[key](**kwargs)


def parse_eps(value: Any) -> float:
    """A budget from a number or a string such as ``"8/255"`` or ``"0.03"``; raises ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"eps must be a number or 'a/b', got {value!r}")
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
            raise ValueError(f"eps must be a number or 'a/b' such as '8/255', got {value!r}") from None
    if not out >= 0:
        raise ValueError(f"eps must be >= 0, got {value!r}")
    return out


def _defaults(name: str) -> tuple[float | None, float | None]:
    """``(eps, alpha)`` an attack is built with by default (alpha ``None`` for single-step / gradient-free ones)."""
    from monai_dpaat.attacks import build_attack

    try:
        attack = build_attack(name)
    except (ValueError, TypeError):
        return None, None  # an unknown name is reported when the suite is built
    eps, alpha = getattr(attack, "eps", None), getattr(attack, "alpha", None)
    eps = float(eps) if isinstance(eps, (int, float)) else None
    if not getattr(attack, "uses_gradient", True) or getattr(attack, "steps", 1) <= 1:
        return eps, None
    return eps, (float(alpha) if isinstance(alpha, (int, float)) else None)


def suite_with_eps(specs: Sequence[Mapping[str, Any]], eps: float) -> list[dict[str, Any]]:
    """Copies of ``specs`` at budget ``eps``. The step size keeps its ratio to the budget: a spec's ``alpha``
    (else the attack's default step at its default budget, e.g. PGD's 2/255 : 8/255) is scaled by
    ``eps / old_eps``, so the steps still reach the ball's surface. A GN spec gets its noise clipped to
    ``eps``; ``std`` and ``steps`` are kept."""
    out = []
    for spec in specs:
        if not isinstance(spec, Mapping):
            raise ValueError(f"suite_with_eps needs attack spec dicts, got {type(spec).__name__}")
        new = copy.deepcopy(dict(spec))
        old, alpha = new.get("eps"), new.get("alpha")
        if (old is None or alpha is None) and "name" in new:
            default_eps, default_alpha = _defaults(new["name"])
            if alpha is None and old is None:
                old, alpha = default_eps, default_alpha
            elif alpha is None and default_eps and default_alpha is not None:
                alpha = default_alpha * float(old) / default_eps  # the default step/eps ratio at the spec's eps
        old = DEFAULT_EPS if old is None else float(old)
        if alpha is not None and old > 0:
            new["alpha"] = float(alpha) * eps / old
        new["eps"] = eps
        out.append(new)
    return out
