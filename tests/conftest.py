"""Shared fixtures: where the real sample data lives (``../shared/data`` beside the checkout, or the
``MONAI_DPAAT_DATA`` environment variable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MONAI_DPAAT_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"sample data folder {DATA_DIR} is absent (set MONAI_DPAAT_DATA to its path)")
    return DATA_DIR
