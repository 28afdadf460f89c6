"""Every module that the package, the tests, the benchmarks and the bundles import is declared in ``setup.cfg``.

A fresh machine has nothing but Python and what the README's commands install, so an import that only works
because a developer's machine happens to have the package (pandas, once) must fail here, not on a new user's
machine. The check is static (``ast`` for ``.py`` files, ``$import x`` / ``_target_`` for bundle configs) and
maps each top-level module to the distribution that provides it in this environment.
"""

from __future__ import annotations

import ast
import configparser
import importlib.metadata as md
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the package and the tests' and benchmarks' own modules (a benchmark imports its sibling scripts)
LOCAL = {"monai_dpaat"} | {p.stem for folder in ("tests", "benchmarks") for p in (REPO / folder).glob("*.py")}
CONFIG_IMPORT = re.compile(r"^\$\s*(?:import|from)\s+([A-Za-z_][\w]*)")


def _requirement_name(line: str) -> str:
    return re.split(r"[\s<>=!~;\[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def declared() -> dict[str, set[str]]:
    """``{"runtime": {...}, "dev": {...}}``: normalised distribution names from ``setup.cfg``."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    runtime = {_requirement_name(r) for r in cfg["options"]["install_requires"].splitlines() if r.strip()}
    extras = {name: {_requirement_name(r) for r in value.splitlines() if r.strip()}
              for name, value in cfg["options.extras_require"].items()}
    return {"runtime": runtime, **extras}


def python_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value.split(".")[0])
    return names


def config_imports(path: Path) -> set[str]:
    """Top-level modules a bundle config imports: ``"$import x"`` lines and ``_target_`` paths."""
    names = set()

    def walk(value):
        if isinstance(value, dict):
            target = value.get("_target_")
            if isinstance(target, str) and "." in target and not target.startswith(("$", "@")):
                names.add(target.split(".")[0])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            m = CONFIG_IMPORT.match(value)
            if m:
                names.add(m.group(1))

    walk(json.loads(path.read_text()))
    return names


def provider(module: str) -> set[str]:
    """Normalised names of the installed distributions that provide top-level ``module``."""
    return {d.lower().replace("_", "-") for d in md.packages_distributions().get(module, [])}


def undeclared(files: list[Path], allowed: set[str], read) -> list[str]:
    problems = []
    for path in files:
        for module in sorted(read(path)):
            if module in sys.stdlib_module_names or module in LOCAL or module.startswith("reliability_cases_"):
                continue
            dists = provider(module)
            if not dists:
                problems.append(f"{path.relative_to(REPO)}: imports {module!r}, which no installed distribution provides")
            elif not dists & allowed:
                problems.append(f"{path.relative_to(REPO)}: imports {module!r} from {sorted(dists)}, not declared in setup.cfg")
    return problems


def test_setup_cfg_declares_ranges_not_exact_pins():
    """The library's own requirements are tested ranges; exact pins belong to the README, CI and constraints.txt."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    pinned = [r.strip() for r in cfg["options"]["install_requires"].splitlines() if "==" in r]
    assert not pinned, f"install_requires pins exact versions: {pinned}"


def test_library_and_bundles_import_only_runtime_dependencies():
    allowed = declared()["runtime"]
    files = sorted((REPO / "monai_dpaat").rglob("*.py"))
    problems = undeclared(files, allowed, python_imports)
    problems += undeclared(sorted((REPO / "bundles").rglob("*.json")), allowed, config_imports)
    assert not problems, "\n".join(problems)


def test_tests_and_benchmarks_import_only_declared_dependencies():
    groups = declared()
    allowed = groups["runtime"] | groups["dev"]
    files = sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.py"))
    problems = undeclared(files, allowed, python_imports)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source, expected", [
    ("import pandas as pd\nfrom PIL import Image\nfrom . import x\n", {"pandas", "PIL"}),
    ("def f():\n    import yaml.constructor\n    importlib.import_module('scipy.ndimage')\n", {"yaml", "scipy"}),
])
def test_python_imports_finds_nested_and_dynamic_imports(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert python_imports(path) == expected


def test_an_undeclared_import_is_reported(tmp_path):
    """The check itself can fail: a file importing a package outside the allowed set is named."""
    path = REPO / "tests" / "conftest.py"  # any real file: re-read with a fake reader
    problems = undeclared([path], {"torch"}, lambda p: {"numpy", "torch", "os", "no_such_module_xyz"})
    assert any("'numpy'" in p and "not declared" in p for p in problems), problems
    assert any("no_such_module_xyz" in p for p in problems), problems
    assert not any("'torch'" in p or "'os'" in p for p in problems), problems


def readme_command(name: str) -> str:
    """The fenced ``bash`` block after the README's ``<!-- readme-command: NAME -->`` marker."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- readme-command: {re.escape(name)} -->\s*```bash\n(.*?)\n```", text, re.S)
    assert match is not None, f"README.md has no '<!-- readme-command: {name} -->' block"
    return match.group(1).strip()


def test_ci_runs_the_readme_commands():
    """``.ci/run`` runs the README's two commands verbatim, each a line of its own, the test command first."""
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    test, main = readme_command("test"), readme_command("main")
    assert test.startswith("pip install") and "pytest" in test
    assert "monai.bundle run" in main
    assert test in ci_lines and main in ci_lines, "the README's commands and .ci/run differ"
    assert ci_lines.index(test) < ci_lines.index(main)
