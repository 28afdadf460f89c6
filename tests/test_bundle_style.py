"""Bundle configs stay short and readable (issue 11): one readable line per ``$`` expression, budgets written as
``$8/255``, methods composed from ``configs/methods/*.json`` files, and no bundle reaching into the CLI module."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
CONFIGS = sorted(p for p in BUNDLES.rglob("*.json") if "configs" in p.parts or "overrides" in p.parts)
#: a ``$`` expression longer than this is not "one readable line" of a config
MAX_EXPRESSION = 100


def _leaves(value, key=""):
    """``(id, value)`` of every leaf of a config, ids written as MONAI writes them (``train#dataset#data``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{key}#{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{key}#{i}")
    else:
        yield key, value


def test_there_are_configs_to_check():
    assert len(CONFIGS) >= 20, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(BUNDLES)))
def test_config_is_short_and_readable(path):
    config = json.loads(path.read_text(encoding="utf-8"))
    long = [(k, len(v)) for k, v in _leaves(config) if isinstance(v, str) and v.startswith("$") and len(v) > MAX_EXPRESSION]
    assert not long, f"{path}: $ expressions longer than {MAX_EXPRESSION} characters: {long}"
    # 0.03137254901960784 is 8/255 written by a machine: budgets are written as "$8/255"
    unreadable = [(k, v) for k, v in _leaves(config) if isinstance(v, float) and len(repr(v)) > 8]
    assert not unreadable, f"{path}: numbers with many digits (write them as '$8/255'): {unreadable}"
    text = path.read_text(encoding="utf-8")
    assert "monai_dpaat.cli" not in text, f"{path} imports the CLI module"
    assert "method_args" not in text and "adversarial_args" not in text, f"{path}: a copied method table"
    assert not re.search(r'"name":\s*"\d+-[a-z]', text, re.I), f"{path}: an attack name with a step count (use 'steps')"


@pytest.mark.parametrize("bundle", sorted(p.parent.parent for p in BUNDLES.glob("*/configs/train.json")),
                         ids=lambda p: p.name)
def test_methods_are_config_files(bundle):
    methods = {p.stem for p in (bundle / "configs" / "methods").glob("*.json")}
    assert {"std", "at", "sat", "amat", "dpaat", "d-a", "d-b"} <= methods, methods
    for name in methods:
        config = json.loads((bundle / "configs" / "methods" / f"{name}.json").read_text(encoding="utf-8"))
        target = config["iteration_update"]["_target_"]
        assert target.startswith("monai_dpaat.training."), (name, target)
