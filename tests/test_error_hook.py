"""Bundle runs print a user's mistake as one ``error:`` line (exit 1), and a bug keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from monai_dpaat.error_hook import user_error_of

REPO = Path(__file__).resolve().parents[1]


def _wrapped(make_root):
    """``make_root()`` raised inside a MONAI-like wrapper: RuntimeError from ... from the root error."""
    try:
        try:
            make_root()
        except Exception as err:
            raise RuntimeError("Failed to evaluate ConfigExpression: $...") from err
    except RuntimeError as outer:
        return outer


def test_a_package_check_at_the_root_of_the_chain_is_a_user_error():
    from monai_dpaat.data import ham10000_datalists

    err = _wrapped(lambda: ham10000_datalists("/nonexistent/ham"))
    root = user_error_of(err)
    assert isinstance(root, FileNotFoundError) and "/nonexistent/ham" in str(root)


def test_errors_raised_outside_the_package_or_bugs_are_not_user_errors():
    def outside():
        raise ValueError("raised by the caller, not by monai_dpaat")

    assert user_error_of(_wrapped(outside)) is None
    from monai_dpaat.error_hook import _root_cause

    assert user_error_of(_wrapped(lambda: _root_cause(None))) is None  # AttributeError inside the package: a bug


@pytest.mark.slow
def test_bundle_run_prints_one_line_and_exits_1(tmp_path):
    bundle = REPO / "bundles" / "ham10000_dpaat_classification"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "['configs/train.json','configs/quick.json']",
         "--bundle_root", str(tmp_path), "--dataset_dir", str(tmp_path / "no_such_folder")],
        cwd=bundle, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "no_such_folder" in last, proc.stderr[-2000:]


@pytest.mark.slow
def test_override_on_a_bundle_without_the_hook_prints_one_line_and_exits_1(tmp_path):
    """``overrides/adversarial_train.json`` installs the hook itself: a Model Zoo bundle does not."""
    import json

    their = tmp_path / "configs" / "train.json"
    their.parent.mkdir()
    their.write_text(json.dumps({
        "network": {"_target_": "Classifier", "in_shape": [3, 16, 16], "classes": 2, "channels": [4], "strides": [2]},
        "train": {"dataset": {"_target_": "Dataset", "data": []}, "dataloader": {"_target_": "DataLoader",
                  "dataset": "@train#dataset"}, "trainer": {"_target_": "SupervisedTrainer"}},
        "run": ["$@train#trainer.run()"]}))
    files = repr([str(their), "bundles/overrides/adversarial_train.json"])
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--adversarial_method", "dpaat"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: method 'dpaat' does not match") and "--adversarial_method" in last, last
    from monai_dpaat.bundle_overrides import METHODS_DIR, override_path

    assert f"'{override_path('adversarial_train')}','{METHODS_DIR / 'dpaat.json'}'" in last, last
