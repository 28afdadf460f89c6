"""A real Model Zoo bundle's ``configs/multi_gpu_train.json`` composed with this project's override files and run
in a 2-process ``torchrun`` on CPU (gloo), in both composition orders (issue 12):

- ``[train.json, multi_gpu_train.json, *ours, shim]``
- ``[train.json, *ours, multi_gpu_train.json, shim]``

with ``ours = adversarial_configs("dpaat", robust_validation=True)`` (``adversarial_train.json``,
``methods/dpaat.json``, ``robust_validation.json``). Each run trains 2 epochs with robust validation every epoch,
so rank 0 attacks the network in epoch 1's validation and both ranks then train epoch 2: an attack that went
through DDP's forward on rank 0 alone (buffer broadcast, a reducer waiting for a backward) would hang or raise
there.

The CPU shim (:data:`CPU_GLOO_SHIM`, written to ``tmp_path`` and composed last) replaces only what their file
hard-codes for GPUs and a CPU run cannot take:

- ``device``: ``torch.device('cuda:' + LOCAL_RANK)`` -> ``torch.device('cpu')`` (every rank on the CPU);
- ``network#device_ids``: ``[@device]`` -> ``null`` (DDP takes no ``device_ids`` for a CPU module);
- ``initialize#1``: ``init_process_group(backend='nccl')`` -> ``backend='gloo'`` (NCCL needs GPUs), with a
  120 s collective timeout so a hang fails with a traceback (and the workers exit) instead of blocking for
  gloo's default 30 minutes;
- ``initialize#2``: ``torch.cuda.set_device(@device)`` -> ``None`` (a no-op; the item is replaced, not removed,
  so the items after it, theirs and ours, keep their places).

Everything else of theirs (``DistributedSampler``s, the rank>0 handler gating, ``set_determinism``, logger
levels, ``finalize``) runs as written; :func:`test_cpu_shim_replaces_only_the_gpu_items` pins that.

Data: the Zoo CI's random JPEGs (``tests/model_zoo_bundles.py``), 32x32, sized so every rank gets one full
training batch of 2 (a batch of 1 stops their BatchNorm layers) and one validation image.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import rerun_once_on_gloo_abort
from model_zoo_bundles import (CLASSIFICATION, SEGMENTATION, adversarial_configs, copy_bundle, make_dummy_data,
                               run_bundle)

pytestmark = pytest.mark.slow

TRAIN = "configs/train.json"
MULTI_GPU = "configs/multi_gpu_train.json"
WORLD = 2
#: per class images so that each of the 2 ranks gets 2 training images (one batch) and 1 or 2 validation ones
PER_CLASS = {CLASSIFICATION: 4, SEGMENTATION: 2}
#: the shim's replacements (see the module docstring); composed after everything else
CPU_GLOO_SHIM = {
    "device": "$torch.device('cpu')",
    "network#device_ids": None,
    "initialize#1": "$dist.is_initialized() or dist.init_process_group(backend='gloo', "
                    "timeout=__import__('datetime').timedelta(seconds=120))",
    "initialize#2": "$None",
}
#: what the shim's ``initialize`` items replace in their file (the shim is wrong if these move)
REPLACED = {1: "dist.init_process_group(backend='nccl')", 2: "torch.cuda.set_device(@device)"}
RANK_LINE = re.compile(r"^\[rank(\d)\] (.*)$")
ROBUST = re.compile(r"\brobust_\w+_(accuracy|dice)=\d")


def _tb_tags(folder: Path) -> dict[str, set[str]]:
    """``{writer process id: its scalar and histogram tags}`` of the TensorBoard event files under ``folder``
    (``events.out.tfevents.<time>.<host>.<pid>.<n>``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, set[str]] = {}
    for events in folder.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        found = acc.Tags()
        pid = events.name.split(".")[-2]
        tags.setdefault(pid, set()).update(found.get("scalars", []), found.get("histograms", []))
    return tags


def _write_shim(folder: Path) -> Path:
    path = Path(folder) / "cpu_gloo_shim.json"
    path.write_text(json.dumps(CPU_GLOO_SHIM, indent=4))
    return path


def _torchrun() -> list[str]:
    """``python -m torch.distributed.run`` with 2 local workers; every output line is prefixed ``[rank<r>] ``."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--standalone",
            "--tee", "3", "--log-line-prefix-template", "[rank${rank}] ", "-m"]


def _rank_lines(out: str) -> dict[int, list[str]]:
    lines: dict[int, list[str]] = {r: [] for r in range(WORLD)}
    for line in out.splitlines():
        match = RANK_LINE.match(line)
        if match:
            lines[int(match.group(1))].append(match.group(2))
    return lines


def _compose(name: str, bundle: Path, order: str, shim: Path) -> list[str]:
    ours = adversarial_configs("dpaat", robust_validation=True)
    files = [TRAIN, MULTI_GPU, *ours] if order == "multi_gpu_first" else [TRAIN, *ours, MULTI_GPU]
    return [*files, str(shim)]


@pytest.mark.parametrize("name", (CLASSIFICATION, SEGMENTATION))
def test_cpu_shim_replaces_only_the_gpu_items(name, tmp_path):
    """In both orders the shim's ``initialize`` items land on their NCCL and ``cuda.set_device`` items, and the
    composed config differs from the one without the shim only in the four replaced values."""
    from monai.bundle import ConfigParser

    bundle = copy_bundle(name, tmp_path)
    shim = _write_shim(tmp_path)
    for order in ("multi_gpu_first", "multi_gpu_last"):
        files = [str(p if Path(p).is_absolute() else bundle / p) for p in _compose(name, bundle, order, shim)]
        without, with_shim = ConfigParser(), ConfigParser()
        without.read_config(files[:-1])
        with_shim.read_config(files)
        for index, call in REPLACED.items():
            assert call in without["initialize"][index], (order, without["initialize"])
        expected = without.get()
        expected["device"] = CPU_GLOO_SHIM["device"]
        expected["network"]["device_ids"] = None
        expected["initialize"][1], expected["initialize"][2] = CPU_GLOO_SHIM["initialize#1"], CPU_GLOO_SHIM["initialize#2"]
        assert with_shim.get() == expected, order


@pytest.mark.parametrize("order", ("multi_gpu_first", "multi_gpu_last"))
@pytest.mark.parametrize("name", (CLASSIFICATION, SEGMENTATION))
def test_two_rank_gloo_run_of_their_multi_gpu_config(name, order, tmp_path):
    def attempt(i: int) -> tuple[int, str]:
        nonlocal bundle
        folder = tmp_path / f"attempt{i}"
        bundle = copy_bundle(name, folder)
        overrides = make_dummy_data(name, folder, bundle_root=bundle, per_class=PER_CLASS[name])
        # robust validation after epoch 1, then a training epoch on both ranks
        overrides.update({"train#trainer#max_epochs": 2, "robust_val_interval": 1})
        files = _compose(name, bundle, order, _write_shim(folder))
        return run_bundle(bundle, files, overrides, timeout=300, launcher=_torchrun())  # a hang: TimeoutExpired

    bundle = None
    start = time.perf_counter()
    rc, out = rerun_once_on_gloo_abort(attempt)
    print(f"{name} {order}: 2-rank torchrun, 2 epochs: {time.perf_counter() - start:.1f} s")
    assert rc == 0, f"torchrun failed ({rc}):\n{out[-6000:]}"
    ranks = _rank_lines(out)

    # both ranks trained with the DPAAT iteration and ran their 2 epochs
    for rank in range(WORLD):
        assert any("DPAATIteration budgets" in line for line in ranks[rank]), (rank, out[-3000:])
    if name == CLASSIFICATION:  # (their segmentation config sets rank>0's trainer logger to WARNING)
        for rank in range(WORLD):
            assert any("SupervisedTrainer - INFO - Epoch[2] Complete" in line for line in ranks[rank]), rank

    # robust validation ran on rank 0 after each epoch, only there (their val_handlers are None on rank > 0)
    robust = {rank: [line for line in ranks[rank] if "robustness:" in line] for rank in range(WORLD)}
    assert [line.split(" robustness:")[0][-7:] for line in robust[0]] == ["epoch 1", "epoch 2"], robust[0]
    assert all(ROBUST.search(line) for line in robust[0]), robust[0]
    assert robust[1] == []
    # ... over the whole validation split, not rank 0's share of their DistributedSampler
    n_val = len(json.loads((bundle / "label" / "val_samples.json").read_text())) if name == CLASSIFICATION else None
    counts = {int(m.group(1)) for line in robust[0] for m in [re.search(r", (\d+) samples,", line)] if m}
    if n_val is not None:
        assert counts == {n_val}, (counts, robust[0])
    else:
        assert len(counts) == 1 and counts.pop() > 1, robust[0]
    # their CheckpointSaver (rank 0) saved the DPAAT table with the weights
    saved = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert sorted(saved) == ["adversarial", "model"] and "epsilon" in saved["adversarial"]

    # their rank>0 gating kept: their validation StatsHandler logs on rank 0 only
    val_metric = "val_accu" if name == CLASSIFICATION else "val_iou"
    logged = {rank: [line for line in ranks[rank] if "Metrics --" in line and val_metric in line] for rank in range(WORLD)}
    assert len(logged[0]) == 2 and logged[1] == [], logged

    # ... and TensorBoard: one process wrote tags (rank 1 constructs their TensorBoardStatsHandlers, whose
    # writers create empty files, but attaches none): their curves, the robust ones and the adv_* stats
    tags = {pid: found for pid, found in _tb_tags(bundle / "eval").items() if found}
    assert len(tags) == 1, tags
    (rank0_tags,) = tags.values()
    assert {"train_loss", val_metric} <= rank0_tags, rank0_tags
    assert {"adv_loss_adv", "adv_loss_clean", "adv_eps_mean", "adv_table_eps_mean", "epsilon"} <= rank0_tags
    assert any(re.fullmatch(r"robust_\w+_(accuracy|dice)", tag) for tag in rank0_tags), rank0_tags
    assert (bundle / "models" / "model.pt").is_file()
