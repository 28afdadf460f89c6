"""Print one of the README's two commands (``main`` or ``test``): the fenced ``bash`` block after the README's
``<!-- readme-command: NAME -->`` marker. ``.ci/run`` runs exactly what the README tells a new user to run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command(name: str, readme: Path = README) -> str:
    text = readme.read_text()
    match = re.search(rf"<!-- readme-command: {re.escape(name)} -->\s*```bash\n(.*?)\n```", text, re.S)
    if match is None:
        raise SystemExit(f"error: {readme} has no '<!-- readme-command: {name} -->' block")
    return match.group(1).strip()


if __name__ == "__main__":
    print(readme_command(sys.argv[1]))
