"""Shared fixtures: where the real sample data lives (``../shared/data`` beside the checkout, or the
``MONAI_DPAAT_DATA`` environment variable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MONAI_DPAAT_DATA", REPO_ROOT.parent / "shared" / "data"))

# pytest-xdist runs two workers on the two cores: one intra-op thread each avoids oversubscription, which
# makes the tiny models of the tests many times slower
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"sample data folder {DATA_DIR} is absent (set MONAI_DPAAT_DATA to its path)")
    return DATA_DIR


@pytest.fixture(scope="session")
def ham(data_dir):
    """``(net, x, y)``: a tiny CNN trained briefly on real HAM10000 images (nv vs mel, 32x32) and 48 held-out
    images of other lesions (see ``helpers.py``); shared by the APGD and gradient-masking tests."""
    from helpers import load_ham, trained_ham_cnn

    net = trained_ham_cnn(data_dir)
    x, y = load_ham(data_dir, 24, offset=96)  # held-out lesions
    return net, x, y
