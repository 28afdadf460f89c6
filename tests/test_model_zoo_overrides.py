"""The override files (``monai_dpaat/bundle_overrides``, ``bundles/overrides`` in a checkout) composed onto two real
MONAI Model Zoo bundles (issue 12).

The bundles are byte-identical copies of the Zoo's configs (``tests/model_zoo/``, see its README); the data is
the small random data of the Zoo's own CI tests (``tests/model_zoo_bundles.py``), 32x32, 1 epoch, CPU. Each
run goes through ``python -m monai.bundle run`` in a subprocess whose cwd is a fresh temporary folder.

The first two tests prove the fixture: each bundle's own ``train.json`` trains unchanged, and trains with
``adversarial_train.json`` + ``methods/dpaat.json`` composed after it. The ``test_trap_*`` tests pin the
behaviour behind the issue's ten points that a Model Zoo user still meets; each is inverted into a
``test_fixed<N>_*`` test (asserting the fixed behaviour) by the change that removes the trap (all ten are
done). The points:

1. relative paths: without ``--bundle_root`` the classification bundle stops at
   ``FileNotFoundError: [Errno 2] No such file or directory: './label/train_samples.json'``;
2. the override files are not package data (a ``pip install`` has none of them);
3. no ``AdversarialStatsHandler``: no ``adv_*`` numbers in the log nor in TensorBoard;
4. robust validation never runs when ``robust_val_interval`` (5) > epochs, nor in an evaluate-only run (one
   evaluator epoch, epoch 1, at the default interval);
5. segmentation without ``--robust_val_task segmentation``: ``RuntimeError: shape '[2]' is invalid for input of
   size 2048`` (``suite.py _class_labels``; batch 2 of 32x32 masks);
6. ``multi_gpu_train.json`` and ``robust_validation.json`` both set ``validate#evaluator#val_handlers``: the last
   one composed wins (rank>0 gating or robust validation lost);
7. z-scored inputs: the default budget 8/255 is a tiny fraction of their intensity range, with no warning;
8. ``CrossEntropyLoss(reduction="sum")``: AMAT's ``loss_clean`` is the batch sum (x batch size) and ``loss_adv``
   the sum over the clean-correct subset only (x its size), so beta's weighting silently changes;
9. their ``CheckpointSaver`` saves only the model: no DPAAT per-sample table in ``models/model.pt``;
10. the default robust-validation preset (six attacks up to 50-step PGD) prints no progress (the handler builds
    its evaluator with ``progress=False``); here 2 validation images at 32x32 take ~6-7 s on one thread (the
    issue measured 293 s for 4 images at 256x256).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from model_zoo_bundles import (BUNDLES, CLASSIFICATION, OVERRIDES, REPO, SEGMENTATION, adversarial_configs,
                               copy_bundle, ok, prepare_bundle, run_bundle, tensorboard_tags)

pytestmark = pytest.mark.slow

TRAIN = "configs/train.json"
# a robust-validation metric or summary line (``robust_`` alone also matches temporary folder names)
ROBUST = re.compile(r"\brobust_\w+_(accuracy|dice)\b|robustness:")


@pytest.fixture(scope="module")
def dpaat_cls(tmp_path_factory):
    """The classification bundle trained 1 epoch with adversarial_train.json + methods/dpaat.json."""
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path_factory.mktemp("dpaat_cls"))
    t0 = time.time()
    out = ok(*run_bundle(bundle, [TRAIN, *adversarial_configs("dpaat")], overrides))
    return bundle, overrides, out, time.time() - t0


@pytest.fixture(scope="module")
def robust_cls(tmp_path_factory):
    """The classification bundle trained 1 epoch with robust_validation.json at its defaults."""
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path_factory.mktemp("rv_cls"))
    out = ok(*run_bundle(bundle, [TRAIN, str(OVERRIDES / "robust_validation.json")], overrides))
    return bundle, overrides, out


# --- the fixture works ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUNDLES)
def test_zoo_bundle_trains_unchanged_on_dummy_data(name, tmp_path):
    """Their own train.json, only the Zoo CI's overrides (+ 1 epoch, CPU, no workers): it trains and validates."""
    bundle, overrides = prepare_bundle(name, tmp_path)
    out = ok(*run_bundle(bundle, [TRAIN], overrides))
    assert "Epoch[1] Complete" in out
    assert (bundle / "models" / "model.pt").is_file()
    tags = tensorboard_tags(bundle / "eval")
    assert "train_loss" in tags and ("val_accu" in tags or "val_iou" in tags), tags


def test_classification_trains_with_adversarial_dpaat_override(dpaat_cls):
    bundle, _, out, _ = dpaat_cls
    assert "DPAATIteration budgets" in out, "the DPAAT iteration did not run"
    assert "Epoch[1] Complete" in out and (bundle / "models" / "model.pt").is_file()


def test_segmentation_trains_with_adversarial_dpaat_override(tmp_path):
    """The segmentation bundle too: the DPAAT iteration runs, its ``adv_*`` numbers and epsilon histogram are in
    their TensorBoard (point 3), their checkpoint holds the table and ``--adversarial_resume true`` restores it
    (point 9), with robust validation on the final epoch (point 4) and no task flag (point 5)."""
    bundle, overrides = prepare_bundle(SEGMENTATION, tmp_path)
    out = ok(*run_bundle(bundle, [TRAIN, *adversarial_configs("dpaat", robust_validation=True)], overrides))
    assert "DPAATIteration budgets" in out
    assert "Epoch[1] Complete" in out and (bundle / "models" / "model.pt").is_file()
    tags = tensorboard_tags(bundle / "eval")
    assert {"adv_loss_adv", "adv_table_eps_mean", "epsilon", "val_mean_dice"} <= tags, tags
    assert any(re.fullmatch(r"robust_\w+_dice", tag) for tag in tags), tags
    saved = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert sorted(saved) == ["adversarial", "model"] and "epsilon" in saved["adversarial"]
    out = ok(*run_bundle(bundle, [TRAIN, *adversarial_configs("dpaat")], {**overrides, "adversarial_resume": True}))
    assert "resumed the DPAATIteration state from" in out, out[-3000:]


@pytest.mark.parametrize("name,adversary,attack",
                         [(CLASSIFICATION, "n-fgsm", "NFGSM"), (SEGMENTATION, "free", "FreeAT")])
def test_single_step_and_free_dpaat_train_their_bundle(name, adversary, attack, tmp_path):
    """The fast adversaries of issue 15 through the override files: ``--adversarial_adversary`` (Free AT with
    ``--adversarial_free_replays``) on their own trainer, one epoch; the DPAAT table is in their checkpoint."""
    bundle, overrides = prepare_bundle(name, tmp_path)
    out = ok(*run_bundle(bundle, [TRAIN, *adversarial_configs("dpaat")],
                         {**overrides, "adversarial_adversary": adversary, "adversarial_free_replays": 2}))
    assert re.search(rf"DPAATIteration budgets: .*attack {attack}\(", out), out[-3000:]
    assert "Epoch[1] Complete" in out
    saved = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "epsilon" in saved["adversarial"]


def test_overfitting_guard_on_their_trainer(tmp_path):
    """``--adversarial_co_guard true`` attaches the catastrophic-overfitting guard to their trainer (FGSM-RS DPAAT):
    its checks reach their TensorBoard as epoch metrics and as ``co/*`` curves; off by default (the fixture run)."""
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path)
    out = ok(*run_bundle(bundle, [TRAIN, *adversarial_configs("dpaat")],
                         {**overrides, "adversarial_adversary": "fgsm-rs", "adversarial_co_guard": True,
                          "adversarial_co_guard_interval": 1}))
    assert "Epoch[1] Complete" in out
    tags = tensorboard_tags(bundle / "eval")
    assert {"co/single_acc", "co/multi_acc", "co/gap", "co/collapse"} <= tags, tags
    assert {"co_gap", "co_single_acc"} <= tags, tags  # their TensorBoardStatsHandler logged the epoch's values


def test_overfitting_guard_is_off_by_default(dpaat_cls):
    bundle, _, out, _ = dpaat_cls
    assert not any(tag.startswith("co") for tag in tensorboard_tags(bundle / "eval"))


# --- the traps, as they are today (invert each when fixed) ---------------------------------------------


def _printed_command(*args: str) -> str:
    """The last line of ``python -m monai_dpaat overrides ARGS`` (the ready ``monai.bundle run`` command)."""
    proc = subprocess.run([sys.executable, "-m", "monai_dpaat", "overrides", *args], capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_fixed1_printed_command_runs_from_anywhere(tmp_path):
    """Was trap 1 (``No such file or directory: './label/train_samples.json'`` without ``--bundle_root``): the
    command ``python -m monai_dpaat overrides dpaat --bundle <theirs>`` prints carries ``--bundle_root``, and runs
    from an unrelated folder with only the Zoo CI's data overrides added."""
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path)
    command = _printed_command("dpaat", "--bundle", str(bundle), "--norobust_validation")
    assert f'--bundle_root "{bundle.resolve()}"' in command
    del overrides["bundle_root"]
    extra = " ".join(f"--{k} {shlex.quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in overrides.items())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = command.replace("python -m", f"{shlex.quote(sys.executable)} -m", 1)
    proc = subprocess.run(f"{command} {extra}", shell=True, cwd=elsewhere, capture_output=True, text=True,
                          timeout=300, env=env)
    out = ok(proc.returncode, proc.stdout + proc.stderr)
    assert "DPAATIteration budgets" in out and "Epoch[1] Complete" in out
    assert (bundle / "models" / "model.pt").is_file() and not list(elsewhere.iterdir())


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel of the package built from a copy of the sources (nothing is written into the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "monai_dpaat", src / "monai_dpaat", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("monai_dpaat-*.whl")
    return wheel


def test_fixed2_override_files_are_package_data_of_a_non_editable_install(tmp_path):
    """Was trap 2 (the files only in a git checkout): a wheel (what ``pip install .`` installs) holds every
    override file, and installed from it, ``python -m monai_dpaat overrides`` names the installed copies, which
    ``adversarial_train.json``'s method check names too."""
    import zipfile

    wheel = _build_wheel(tmp_path)
    shipped = {Path(n).relative_to("monai_dpaat/bundle_overrides").as_posix() for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("monai_dpaat/bundle_overrides/")}
    expected = {p.relative_to(OVERRIDES).as_posix() for p in OVERRIDES.rglob("*") if p.is_file()
                and "__pycache__" not in p.parts}
    assert expected <= shipped, sorted(expected - shipped)
    assert {"adversarial_train.json", "robust_validation.json", "methods/dpaat.json", "README.md"} <= shipped
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "monai_dpaat", "overrides", "dpaat"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    installed = site / "monai_dpaat" / "bundle_overrides"
    assert lines[:3] == [str(installed / "adversarial_train.json"), str(installed / "methods" / "dpaat.json"),
                         str(installed / "robust_validation.json")]
    assert all(Path(p).is_file() for p in lines[:3])
    # the method check (TrainHandlers, which adversarial_train.json gives no methods_dir) names the installed files
    train = json.loads((OVERRIDES / "adversarial_train.json").read_text())
    assert "methods_dir" not in train["adversarial_train_handlers"]
    probe = ("from monai_dpaat.bundle_overrides import TrainHandlers; "
             "print(TrainHandlers(iteration=None, method='at').methods_dir)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(installed / "methods")


def test_fixed3_adversarial_stats_in_their_logs_and_tensorboard(dpaat_cls):
    """Was trap 3 (no ``adv_*`` numbers): their own ``StatsHandler`` prints and ``TensorBoardStatsHandler``
    plots the ``adv_*`` epoch metrics, and the epsilon histogram is in their ``eval/`` folder."""
    bundle, _, out, _ = dpaat_cls
    assert re.search(r"adv_loss_adv: \d", out), out[-3000:]
    tags = tensorboard_tags(bundle / "eval")
    assert "train_loss" in tags
    assert {"adv_loss_adv", "adv_loss_clean", "adv_table_eps_mean", "epsilon"} <= tags, tags


def test_fixed4_robust_validation_runs_on_the_final_epoch_of_a_short_training(robust_cls):
    """Was trap 4 (``robust_val_interval`` 5 > epochs: never ran): at its defaults it runs on the last epoch."""
    _, _, out = robust_cls
    assert "val_accu" in out
    assert "epoch 1 robustness:" in out and re.search(r"robust_worst_case_accuracy=\d", out), out[-3000:]


def test_fixed4_robust_validation_runs_in_an_evaluate_only_run(robust_cls):
    """Was trap 4 (an evaluate-only run is one evaluator epoch: never ran at interval 5): their evaluate.json
    (composed after train.json, as the Zoo does) then robust_validation.json at its defaults runs it."""
    bundle, overrides, _ = robust_cls
    assert (bundle / "models" / "model.pt").is_file()
    rc, out = run_bundle(bundle, [TRAIN, "configs/evaluate.json", str(OVERRIDES / "robust_validation.json")],
                         overrides)
    ok(rc, out)
    assert "val_accu" in out
    assert "robustness:" in out and re.search(r"robust_worst_case_accuracy=\d", out), out[-3000:]


def test_fixed5_segmentation_runs_without_the_task_flag(tmp_path):
    """Was trap 5 (``RuntimeError: shape '[2]' is invalid for input of size 2048`` in ``suite.py
    _class_labels`` without ``--robust_val_task segmentation``): ``robust_val_task`` defaults to ``null``, and
    the task is inferred from the first batch (masks: segmentation, dice metrics)."""
    bundle, overrides = prepare_bundle(SEGMENTATION, tmp_path, per_class=1)
    out = ok(*run_bundle(bundle, [TRAIN, str(OVERRIDES / "robust_validation.json")],
                          {**overrides, "robust_val_interval": 1}))
    assert "_class_labels" not in out
    assert re.search(r"robustness: .*robust_\S+_dice=\d", out), out[-3000:]


@pytest.mark.parametrize("name", BUNDLES)
def test_fixed6_multi_gpu_composes_in_either_order(name, tmp_path):
    """Was trap 6 (both files set ``validate#evaluator#val_handlers``, the last one won): robust validation
    appends to ``validate#handlers``, so in either order their rank>0 gating expression is kept and, on rank 0,
    resolves to their handlers plus robust validation; ``adversarial_train.json`` leaves their per-rank slice of
    ``train#handlers`` alone (its handlers go to ``train#trainer#additional_metrics``)."""
    from monai.bundle import ConfigParser

    bundle = copy_bundle(name, tmp_path)
    mgpu = str(bundle / "configs" / "multi_gpu_train.json")
    ours = adversarial_configs("dpaat", robust_validation=True)
    train = str(bundle / TRAIN)
    theirs = ConfigParser()
    theirs.read_config([train, mgpu])
    for files in ([train, mgpu, *ours], [train, *ours, mgpu]):
        parser = ConfigParser()
        parser.read_config(files)
        assert parser["validate#evaluator#val_handlers"] == theirs["validate#evaluator#val_handlers"]
        assert "get_rank" in parser["validate#evaluator#val_handlers"]
        assert parser["train#trainer#train_handlers"] == theirs["train#trainer#train_handlers"]
        assert parser["train#handlers"] == theirs["train#handlers"]
        assert parser["validate#handlers"] == [*theirs["validate#handlers"], "@robust_validation"]
        assert parser["train#trainer#additional_metrics"] == {"adversarial": "@adversarial_train_handlers"}


def test_fixed7_budget_is_a_fraction_of_their_intensity_range(dpaat_cls, tmp_path):
    """Was trap 7 (their ``NormalizeIntensityd`` z-scores each image, and 8/255 stayed an absolute budget, a
    tiny fraction of their intensity range, with no warning): ``adversarial_eps_units`` defaults to ``"range"``,
    so 8/255 is that fraction of each sample's own range, and the absolute budget is logged; with
    ``--adversarial_eps_units absolute`` the run warns that the budget is almost no perturbation."""
    from monai.bundle import ConfigParser

    bundle, overrides, out, _ = dpaat_cls
    parser = ConfigParser()
    parser.read_config([str(bundle / TRAIN), *adversarial_configs("dpaat")])
    parser.update(overrides)
    image = parser.get_parsed_content("validate#dataset")[0]["image"]
    lo, hi = float(image.min()), float(image.max())
    assert lo < 0 < hi and abs(float(image.mean())) < 0.2  # z-scored, not [0, 1]
    assert parser.get_parsed_content("adversarial_eps") == pytest.approx(8 / 255)
    assert parser.get_parsed_content("adversarial_attack").eps_units == "range"
    # the absolute budget of the first batch is logged: 8/255 of ranges several units wide
    match = re.search(r"eps_units='range'\): absolute eps ([0-9.e-]+) on the first batch", out)
    assert match, out[-3000:]
    assert float(match.group(1)) > 8 / 255 * 2  # their images span more than 2 units
    assert not re.search(r"WARNING.*almost no perturbation", out)

    bundle2, overrides2 = prepare_bundle(CLASSIFICATION, tmp_path)
    out2 = ok(*run_bundle(bundle2, [TRAIN, *adversarial_configs("at")],
                           {**overrides2, "adversarial_eps_units": "absolute"}))
    warning = re.search(r"WARNING - PGD: eps=0\.03137\d* is ([0-9.]+)% of the widest sample's intensity range", out2)
    assert warning and float(warning.group(1)) < 1, out2[-3000:]


def test_fixed8_sum_reduction_keeps_amat_weighting(tmp_path):
    """Was trap 8 (with their ``CrossEntropyLoss(reduction="sum")`` AMAT's loss_adv was summed over the
    clean-correct subset only, k of the 6 samples, so beta's weighting changed by 6/k): one iteration of all 6
    training images against the same run with reduction="mean": both terms scale by the batch size."""
    from monai.bundle import ConfigWorkflow

    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path, batch_size=6)
    stats = {}
    for reduction in ("sum", "mean"):
        workflow = ConfigWorkflow(workflow_type="train", config_file=[str(bundle / TRAIN), *adversarial_configs("amat")],
                                  meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False,
                                  **overrides, **{"loss#reduction": reduction, "val_interval": 100})
        workflow.initialize()
        workflow.run()
        stats[reduction] = dict(workflow.parser.get_parsed_content("train#trainer").state.adversarial)
        workflow.finalize()
    clean_ratio = stats["sum"]["loss_clean"] / stats["mean"]["loss_clean"]
    adv_ratio = stats["sum"]["loss_adv"] / stats["mean"]["loss_adv"]
    assert clean_ratio == pytest.approx(6.0, rel=1e-4)
    assert adv_ratio == pytest.approx(clean_ratio, rel=1e-4)  # the ratio of the two terms is the same
    assert adv_ratio == pytest.approx(6.0, rel=1e-4)  # the batch size, whatever the clean-correct subset


def test_fixed9_dpaat_table_restored_after_a_resume_from_their_checkpoint(dpaat_cls, tmp_path):
    """Was trap 9 (their ``CheckpointSaver`` kept only the network): the DPAAT state is an entry of their
    checkpoint (``models/model.pt`` = ``{"model": ..., "adversarial": ...}``, the same epoch as the weights);
    ``--adversarial_resume true`` loads both before the resumed run's first epoch, and a MONAI
    ``CheckpointLoader`` the user adds to ``train#handlers`` restores the table too. Their evaluate.json still
    loads the nested file (its loader takes the ``model`` entry)."""
    from monai.bundle import ConfigWorkflow

    bundle, overrides, _, _ = dpaat_cls
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["model.pt"]
    saved = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert sorted(saved) == ["adversarial", "model"]
    assert {"epsilon", "running_mean", "num_updates"} <= set(saved["adversarial"])
    assert all(type(v) is torch.Tensor for v in saved["adversarial"].values())  # plain tensors, no MetaTensor

    def start(configs, **extra):
        workflow = ConfigWorkflow(workflow_type="train", config_file=[str(bundle / TRAIN), *configs],
                                  meta_file=str(bundle / "configs" / "metadata.json"), logging_file=False,
                                  **overrides, **extra)
        workflow.initialize()
        trainer = workflow.parser.get_parsed_content("train#trainer")  # constructing it attaches (and resumes)
        return workflow, trainer

    workflow, _ = start(adversarial_configs("dpaat"))
    fresh = workflow.parser.get_parsed_content("adversarial_iteration")
    assert not torch.equal(fresh.epsilon, saved["adversarial"]["epsilon"])  # one epoch moved the budgets

    workflow, _ = start(adversarial_configs("dpaat"), adversarial_resume=True)
    resumed = workflow.parser.get_parsed_content("adversarial_iteration")
    network = workflow.parser.get_parsed_content("network")
    assert torch.equal(resumed.epsilon, saved["adversarial"]["epsilon"])
    assert int(resumed.num_updates) == int(saved["adversarial"]["num_updates"]) > 0
    assert all(torch.equal(network.state_dict()[k].cpu(), v) for k, v in saved["model"].items())

    # their own way to resume: a CheckpointLoader in train#handlers (loads at the trainer's STARTED event)
    loader = tmp_path / "loader.json"
    loader.write_text(json.dumps({"+train#handlers": [{"_target_": "CheckpointLoader", "load_path": "$@ckpt_dir + '/model.pt'",
                                                       "load_dict": {"model": "@network"}}]}))
    workflow, trainer = start([*adversarial_configs("dpaat"), str(loader)])
    loaded = workflow.parser.get_parsed_content("adversarial_iteration")
    assert not torch.equal(loaded.epsilon, saved["adversarial"]["epsilon"])
    from ignite.engine import Events

    trainer.add_event_handler(Events.STARTED, lambda engine: engine.terminate())  # after the loader: no epoch
    trainer.run()
    assert torch.equal(loaded.epsilon, saved["adversarial"]["epsilon"])

    # their evaluate.json reads the nested checkpoint (MONAI's CheckpointLoader takes its "model" entry)
    rc, out = run_bundle(bundle, [TRAIN, "configs/evaluate.json"], overrides)
    assert "Restored all variables from" in ok(rc, out) and "val_accu" in out


def _stamp(line: str) -> datetime:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")


def test_fixed10_default_robust_validation_is_one_fast_attack_with_progress(tmp_path):
    """Was trap 10 (the default ``dpaat-table`` preset, six attacks up to 50-step PGD, and no progress): the
    default is one 10-step PGD, with a progress bar on stderr while it runs; its duration is printed."""
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path)
    out = ok(*run_bundle(bundle, [TRAIN, str(OVERRIDES / "robust_validation.json")],
                          {**overrides, "robust_val_interval": 1}))
    lines = out.splitlines()
    start = next(line for line in lines if "SupervisedEvaluator - INFO - Engine run resuming" in line)
    done = next(line for line in lines if "epoch 1 robustness:" in line)
    assert "robust_50_pgd_accuracy" not in done and "robust_worst_case_accuracy" in done, done
    assert re.search(r"robustness.*\|.*batch", out), out[-3000:]  # the tqdm bar
    seconds = (_stamp(done) - _stamp(start)).total_seconds()
    print(f"robust validation (default attack, 2 images 32x32, CPU): {seconds:.1f} s")
    assert seconds > 0


def test_trainer_without_a_key_metric_still_gets_the_adversarial_handlers(tmp_path):
    """MONAI attaches ``additional_metrics`` only to a trainer with a ``key_train_metric`` (two Model Zoo train
    configs have none): the override's handlers then attach at the first iteration, with the same effect: the
    ``adv_*`` numbers are in their TensorBoard and the DPAAT table in their checkpoint."""
    bundle, overrides = prepare_bundle(CLASSIFICATION, tmp_path)
    out = ok(*run_bundle(bundle, [TRAIN, *adversarial_configs("dpaat")],
                          {**overrides, "train#trainer#key_train_metric": "$None"}))
    assert "no key_train_metric" in out and "train_accu" not in tensorboard_tags(bundle / "eval")
    assert {"adv_loss_adv", "epsilon"} <= tensorboard_tags(bundle / "eval")
    saved = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert sorted(saved) == ["adversarial", "model"]
