"""The package's layering (docs/architecture.md): imports flow downwards only and form no cycle.

Every ``import`` / ``from ... import`` in ``monai_dpaat/`` is read with ``ast``, the ones inside functions too (a lazy
import hides a cycle from Python, not from a reader), and checked against the layer table below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "monai_dpaat"

#: module (first component below monai_dpaat) -> layer; a module may import only from its own layer or lower ones
LAYERS = {
    "conventions": 0, "atomic_io": 0, "error_hook": 0, "utils": 0,
    "attacks": 1, "networks": 1, "data": 1,
    "training": 2,
    "evaluation": 3,
    "handlers": 4, "bundle_overrides": 4, "reproduce": 4,
    "cli": 5, "__main__": 5, "__init__": 5,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(absolute module name, line)`` of every import of our package in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("monai_dpaat")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "monai_dpaat":  # "from monai_dpaat import attacks": the named subpackages
                out += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
            elif name.startswith("monai_dpaat"):
                out.append((name, node.lineno))
    return out


def _graph() -> dict[str, set[str]]:
    """Import graph between the layer units (``attacks``, ``training``, ...)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        unit = _unit(path)
        for name, _ in _imports(path):
            parts = name.split(".")
            if len(parts) > 1 and parts[1] != unit:
                graph.setdefault(unit, set()).add(parts[1])
    return graph


def test_every_module_has_a_layer():
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set(LAYERS), f"modules without a layer in LAYERS (add them to docs/architecture.md too): {units - set(LAYERS)}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_downwards(path):
    unit = _unit(path)
    upward = []
    for name, line in _imports(path):
        parts = name.split(".")
        if len(parts) == 1:  # "import monai_dpaat": the package root
            if unit not in ("__init__", "__main__", "cli"):
                upward.append(f"line {line}: {name}")
            continue
        target = parts[1]
        if target != unit and LAYERS.get(target, 99) > LAYERS[unit]:
            upward.append(f"line {line}: {name} (layer {LAYERS.get(target)} > {LAYERS[unit]})")
    assert not upward, f"{path.relative_to(PACKAGE)} imports from a higher layer: {upward}"


def test_no_import_cycle_between_units():
    graph = _graph()
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack + [node, nxt])}")
            if nxt not in seen:
                visit(nxt, stack + [node])
        seen[node] = 2

    for unit in sorted(graph):
        if unit not in seen and unit != "__init__":
            visit(unit, [])
