"""Attacks described as MONAI ``_target_`` configs (the one config form of an attack), read from files that are
data: ``{label: {"_target_": "monai_dpaat.attacks.PGD", "steps": 5}}``.

A file given on a command line is not trusted like a bundle: :func:`check_attack_config` allows only the attack
classes of :mod:`monai_dpaat.attacks`, their own keywords, and values without ``$`` / ``%`` code.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from monai_dpaat.error_hook import user_error_of
from monai_dpaat.utils import check_config_is_safe, read_config_file

__all__ = ["ATTACKS_FILE_FORM", "attack_class", "read_attack_configs", "check_attack_config", "with_attack_defaults",
           "build_attack_configs"]

#: what an attacks file holds (written in its error messages)
ATTACKS_FILE_FORM = ("a {label: {'_target_': 'monai_dpaat.attacks.<Class>', ...keyword arguments}} mapping, e.g. "
                     "{'PGD-5': {'_target_': 'monai_dpaat.attacks.PGD', 'steps': 5}}")


def attack_class(target: Any) -> type | None:
    """The :class:`~monai_dpaat.attacks.Attack` class ``target`` names in :mod:`monai_dpaat.attacks`
    (``"monai_dpaat.attacks.PGD"``), else None; nothing outside that package is imported."""
    from monai_dpaat import attacks as A  # the package's public names, complete only once it is imported

    module, _, name = str(target).rpartition(".")
    obj = getattr(A, name, None) if module == A.__name__ else None
    return obj if isinstance(obj, type) and issubclass(obj, A.Attack) else None


def read_attack_configs(path: str) -> dict[str, dict[str, Any]]:
    """``{label: _target_ config}`` of a JSON/YAML attacks file (read, not built). Raises ``ValueError`` naming the
    file for a missing file, the removed list-of-``{"name": ...}`` form, or an entry that is not a config."""
    from pathlib import Path

    if not Path(path).is_file():
        raise ValueError(f"attack config file {path!r} does not exist")
    data = read_config_file(path)
    old = data.get("attacks") if isinstance(data, Mapping) and set(data) == {"attacks"} else data
    if isinstance(old, list):
        raise ValueError(f"attack config {path!r} holds a list of {{'name': ...}} specs, a form that is removed; "
                         f"write {ATTACKS_FILE_FORM}")
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"attack config {path!r} must hold {ATTACKS_FILE_FORM}; got {type(data).__name__}")
    for label, config in data.items():
        if not (isinstance(config, Mapping) and isinstance(config.get("_target_"), str)):
            raise ValueError(f"attack config {path!r}: attack {str(label)!r} must be a {{'_target_': "
                             f"'monai_dpaat.attacks.<Class>', ...}} config, got {config!r}; the file holds "
                             f"{ATTACKS_FILE_FORM}")
    return {str(label): dict(config) for label, config in data.items()}


def check_attack_config(label: str, config: Mapping[str, Any], source: str) -> None:
    """An attacks file's entry is safe to build: its ``_target_`` is an attack class of :mod:`monai_dpaat.attacks`,
    its keywords are that class's, and its values pass :func:`~monai_dpaat.utils.check_config_is_safe` (no ``$`` /
    ``%``, only network ``_target_``s such as a loss). Raises ``ValueError`` naming the file, label and keyword."""
    cls = attack_class(config["_target_"])
    if cls is None:
        raise ValueError(f"attack config {source!r}: attack {label!r} has _target_ {config['_target_']!r}; an attacks "
                         "file builds only the attack classes of monai_dpaat.attacks (monai_dpaat.attacks.<Class>) "
                         "unless --trust_config")
    params = inspect.signature(cls).parameters
    unknown = [k for k in config if k != "_target_" and k not in params]
    if unknown:
        raise ValueError(f"attack config {source!r}: attack {label!r} ({cls.__name__}) takes no keyword "
                         f"{unknown[0]!r}; its keywords: {', '.join(params)}")
    arguments = {k: v for k, v in config.items() if k != "_target_"}  # the attack class itself is checked above
    check_config_is_safe(arguments, source=source, what="attack config", prefix=f"{label}#")


def with_attack_defaults(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each of ``defaults`` (not None) that its attack class takes and the config does not give
    (only ``eps`` when the class is not one of :mod:`monai_dpaat.attacks`)."""
    cls = attack_class(config.get("_target_"))
    takes = inspect.signature(cls).parameters if cls is not None else {"eps": None}
    return {**config, **{k: v for k, v in defaults.items() if v is not None and k in takes and k not in config}}


def build_attack_configs(configs: Mapping[str, Mapping[str, Any]], source: str | None = None,
                         value_range: Any = None) -> dict[str, Any]:
    """``{label: Attack}`` built by MONAI's ``ConfigParser`` from ``{label: _target_ config}``; with ``source`` (the
    file they came from, not trusted) each entry is checked by :func:`check_attack_config` first. ``value_range``
    (None: the classes' default) goes to every attack that does not set its own. A config that cannot be built
    raises one ``ValueError`` naming the label."""
    from monai.bundle import ConfigParser

    built = {}
    for label, config in configs.items():
        if source is not None:
            check_attack_config(label, config, source)
        config = with_attack_defaults(config, {"value_range": value_range})
        try:
            built[label] = ConfigParser(config).get_parsed_content()
        except Exception as err:  # a bad value (eps < 0...): one line naming the attack
            raise ValueError(f"attack {label!r} ({config}) cannot be built: {user_error_of(err) or err}") from None
    return built
