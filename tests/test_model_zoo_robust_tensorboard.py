"""The ``robust_*`` metrics of ``robust_validation.json`` reach a Model Zoo user's own TensorBoard and log (issue 12).

The override appends ``RobustnessValidationHandler`` to their ``validate#handlers``, after their ``StatsHandler`` and
``TensorBoardStatsHandler``; the handler writes the metrics on the evaluator's last iteration, so their handlers log
them at ``EPOCH_COMPLETED`` next to their own ``val_*`` metrics. Both Zoo bundles of ``tests/model_zoo`` (their
configs unchanged), the Zoo CI's dummy data (``tests/model_zoo_bundles.py``; 32x32, 1 epoch, CPU), robust validation
every epoch, through ``python -m monai.bundle run``; then their evaluate-only run (``evaluate.json``, whose
``StatsHandler`` prints the robust metrics too).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from model_zoo_bundles import (BUNDLES, CLASSIFICATION, OVERRIDES, SEGMENTATION, copy_bundle, make_dummy_data, ok,
                               run_bundle, tensorboard_tags)

pytestmark = pytest.mark.slow

TRAIN = "configs/train.json"
ROBUST_VALIDATION = str(OVERRIDES / "robust_validation.json")
#: their own validation metrics (``validate#key_metric`` and ``validate#additional_metrics``)
THEIR_METRICS = {CLASSIFICATION: {"val_accu"}, SEGMENTATION: {"val_iou", "val_mean_dice"}}


def _tb_scalar(folder: Path, tag: str) -> list[tuple[int, float]]:
    """``[(step, value), ...]`` of scalar ``tag`` over the event files under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points = []
    for events in folder.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            points += [(e.step, e.value) for e in acc.Scalars(tag)]
    return points


def _robust_keys(name: str) -> set[str]:
    metric = "accuracy" if name == CLASSIFICATION else "dice"
    return {f"robust_{row}_{metric}" for row in ("clean", "10_pgd", "worst_case")}


def _summary(out: str) -> dict[str, float]:
    """The handler's own ``epoch 1 robustness: key=value, ...`` line as ``{key: value}``."""
    match = re.search(r"epoch 1 robustness: (.*?) \(", out)
    assert match, out[-3000:]
    return {k: float(v) for k, v in re.findall(r"(robust_\w+)=([0-9.]+)", match.group(1))}


def _their_epoch_line(out: str, their_metrics: set[str]) -> str:
    """Their validation ``StatsHandler``'s ``Epoch[1] Metrics -- ...`` line (the one with their ``val_*``)."""
    lines = [line for line in out.splitlines() if "Epoch[1] Metrics -- " in line
             and all(f"{m}: " in line for m in their_metrics)]
    assert len(lines) == 1, "\n".join(line for line in out.splitlines() if "Metrics --" in line) or out[-3000:]
    return lines[0]


def _assert_logged(line: str, summary: dict[str, float], keys: set[str]) -> None:
    for key in keys:
        assert f"{key}: {summary[key]:.4f}" in line, line


@pytest.fixture(scope="module", params=BUNDLES)
def trained(request, tmp_path_factory):
    """Their bundle trained 1 epoch with robust_validation.json composed after their train.json, interval 1."""
    name = request.param
    tmp_path = tmp_path_factory.mktemp(name)
    bundle = copy_bundle(name, tmp_path)
    overrides = make_dummy_data(name, tmp_path, bundle_root=bundle, per_class=3 if name == CLASSIFICATION else 1)
    overrides["robust_val_interval"] = 1
    out = ok(*run_bundle(bundle, [TRAIN, ROBUST_VALIDATION], overrides))
    return name, bundle, overrides, out


def test_robust_scalars_in_their_tensorboard_and_stats_line(trained):
    """Their ``eval/`` TensorBoard holds the robust_* scalars next to their val_* ones, at the validation epoch,
    with the values the handler logged; their StatsHandler's epoch line prints them with their metrics."""
    name, bundle, _, out = trained
    theirs, keys = THEIR_METRICS[name], _robust_keys(name)
    summary = _summary(out)
    assert keys <= set(summary), summary
    tags = tensorboard_tags(bundle / "eval")
    assert theirs | keys <= tags, sorted(tags)
    for key in keys:
        assert _tb_scalar(bundle / "eval", key) == [(1, pytest.approx(summary[key], abs=5e-5))]
    _assert_logged(_their_epoch_line(out, theirs), summary, keys)


def test_robust_metrics_in_their_evaluate_only_stats_line(trained):
    """Their evaluate.json (after train.json, as the Zoo runs it) then robust_validation.json, on the trained
    model: their evaluate StatsHandler's epoch line prints the robust metrics next to their val_* ones."""
    name, bundle, overrides, _ = trained
    assert (bundle / "models" / "model.pt").is_file()
    out = ok(*run_bundle(bundle, [TRAIN, "configs/evaluate.json", ROBUST_VALIDATION], overrides))
    theirs, keys = THEIR_METRICS[name], _robust_keys(name)
    summary = _summary(out)
    _assert_logged(_their_epoch_line(out, theirs), summary, keys)
