"""Build attacks by the names the papers use: ``build_attack("mi-fgsm", eps=4 / 255)`` is ``MIFGSM(eps=4 / 255)``.

Configs describe an attack as a MONAI ``_target_`` object (``{"_target_": "monai_dpaat.attacks.PGD", "steps": 20}``);
this registry is the Python name -> class API behind it. Step counts are constructor arguments, not part of the
name (the CLI's ``20-pgd`` shorthand is parsed by the CLI).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from .base import Attack

__all__ = ["ATTACKS", "register_attack", "build_attack", "canonical_name"]

#: canonical name -> attack class (or factory). Extended by :func:`register_attack`.
ATTACKS: dict[str, Callable[..., Attack]] = {}
_ALIASES: dict[str, str] = {}


def register_attack(name: str, factory: Callable[..., Attack], aliases: tuple[str, ...] = ()) -> None:
    """Make ``factory`` (an :class:`Attack` subclass or a function returning one) buildable by ``name`` and
    ``aliases`` (case-, space- and underscore-insensitive). A name registered again is replaced. An attack
    class keeps the first canonical name it is registered under as its ``registered_name`` (the ``name`` of
    :meth:`Attack.config`)."""
    if not callable(factory):
        raise ValueError(f"register_attack({name!r}): factory must be callable, got {factory!r}")
    key = canonical_name(name)
    ATTACKS[key] = factory
    for alias in aliases:
        _ALIASES[canonical_name(alias)] = key
    if isinstance(factory, type) and issubclass(factory, Attack) and "registered_name" not in factory.__dict__:
        factory.registered_name = key


def canonical_name(name: str) -> str:
    """``"SI_NI FGSM"`` -> ``"si-ni-fgsm"``."""
    return re.sub(r"[\s_]+", "-", str(name).strip().lower())


def build_attack(name: str, **kwargs: Any) -> Attack:
    """Return an attack from a case-insensitive name: ``fgsm``, ``i-fgsm`` (``bim``), ``pgd``, ``pgd-l2``,
    ``mi-fgsm``, ``ni-fgsm``, ``ti-fgsm``, ``di-fgsm``, ``si-di-fgsm``, ``si-ni-fgsm``, ``gn``, ``fgsm-rs``, ``n-fgsm``, ``apgd``,
    ``apgd-dlr``, ``segpgd``, ``cospgd``.

    Keyword arguments go to the attack's constructor (``eps``, ``alpha``, ``steps``, ``loss_function``,
    ``value_range``, ``random_start``, ``decay``, ``std``, ...). The step count is one of them:
    ``build_attack("pgd", steps=20)``; a name with a step count (``"20-pgd"``) is a ValueError saying so.

    Raises:
        ValueError: an unknown name (the message lists the known ones), a name with a step count, or a keyword
            the attack does not take.
    """
    key = canonical_name(name)
    match = re.fullmatch(r"(\d+)-(.+)", key)
    if match and match.group(2) in {**ATTACKS, **_ALIASES}:
        base = _ALIASES.get(match.group(2), match.group(2))
        raise ValueError(f"attack names carry no step count: write build_attack({base!r}, "
                         f"steps={int(match.group(1))}) instead of build_attack({name!r})")
    key = _ALIASES.get(key, key)
    if key not in ATTACKS:
        known = sorted(ATTACKS) + sorted(_ALIASES)
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(known)}")
    factory = ATTACKS[key]
    _check_keywords(name, factory, kwargs)
    try:
        return factory(**kwargs)
    except TypeError as err:  # a factory that checks its own **kwargs (FGSM, GN)
        if "unexpected keyword" not in str(err):
            raise
        raise ValueError(f"attack {name!r}: {err}") from err


def _check_keywords(name: str, factory: Callable[..., Attack], kwargs: dict[str, Any]) -> None:
    """A config typo (``"stpes": 10``) gets a ValueError naming the attack and the keywords it takes."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the factory checks its own **kwargs
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"attack {name!r} got unknown keyword(s) {unknown}; it takes {', '.join(params)}")
