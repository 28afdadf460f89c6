"""The HAM10000 classification bundle run through ``monai.bundle`` on the real sample data.

Each test copies the bundle into ``tmp_path`` (outputs never land in the repo) and points ``dataset_dir`` at the
sample data. The runs use ``configs/quick.json`` (small_cnn, 64x64, mel vs nv, 120 images per class, 5 epochs).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "ham10000_dpaat_classification"
OVERRIDES = REPO / "bundles" / "overrides"

pytestmark = pytest.mark.slow


def _epoch(ckpt: dict) -> int:
    """The trainer's epoch in a checkpoint (ignite saves the iteration and the epoch length)."""
    return ckpt["trainer"]["iteration"] // ckpt["trainer"]["epoch_length"]


def _copy_bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    shutil.copytree(BUNDLE / "configs", root / "configs")
    return root


def _configs(*names: str) -> str:
    return "[" + ",".join(f"'configs/{n}.json'" for n in names) + "]"


def _bundle_cmd(root: Path, data_dir: Path, configs: str, *extra: str, launcher=(sys.executable, "-m")) -> list[str]:
    return [*launcher, "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(root),
            "--dataset_dir", str(data_dir / "ham10000"), *extra]


def _run_rc(cmd: list[str], cwd: Path, timeout: int = 300) -> tuple[int, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> str:
    rc, out = _run_rc(cmd, cwd, timeout)
    assert rc == 0, f"{' '.join(cmd)} failed ({rc}):\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """One quick DPAAT training run shared by the evaluate/robustness/inference tests."""
    root = _copy_bundle(tmp_path_factory.mktemp("cls"))
    log = _run(_bundle_cmd(root, data_dir, _configs("train", "quick")), cwd=root)
    return root, log


def test_train_writes_checkpoints_events_and_logs_adversarial_numbers(trained):
    root, log = trained
    assert (root / "models" / "model.pt").is_file()
    assert (root / "models" / "checkpoint_epoch=5.pt").is_file()
    assert list((root / "eval").glob("events.out.tfevents.*")), "no TensorBoard events written"
    # DPAAT's per-epoch numbers and the robust validation reach the logs (and so TensorBoard)
    assert "adv_eps_mean" in log and "adv_fragile_fraction" in log
    assert "robust_worst_case_accuracy" in log
    ckpt = torch.load(root / "models" / "checkpoint_epoch=5.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "method", "data", "best_model_saver", "early_stop"} <= set(
        ckpt)
    assert _epoch(ckpt) == 5
    # the best-model tracking of model.pt (what it holds, and its score) and the early-stopping patience: a resume
    # continues them
    best = ckpt["best_model_saver"]
    assert len(best["key_metric"]) == 1 and best["key_metric"][0][0] == best["best_metric"]
    assert 1 <= best["best_metric_epoch"] <= 5 and ckpt["early_stop"]["best_score"] == best["best_metric"]
    assert ckpt["early_stop"]["counter"] == 5 - best["best_metric_epoch"]
    assert ckpt["method"]["epsilon"].numel() > 0
    # what it was trained on: a resume checks it (one training id per row of the per-sample epsilon table)
    assert ckpt["data"]["seed"] == 0 and len(ckpt["data"]["ids"]["train"]) == ckpt["method"]["epsilon"].numel()
    assert not (root / "models" / "run.lock").exists(), "the finished run did not release its lock"


def test_evaluate_writes_metrics_csv(trained, data_dir):
    root, _ = trained
    _run(_bundle_cmd(root, data_dir, _configs("train", "quick", "evaluate")), cwd=root)
    metrics = (root / "eval" / "metrics.csv").read_text()
    assert "val_accuracy" in metrics
    # MetricsSaver writes "name,value" lines: both scalars, val_f1 the macro-F1 (tests/test_ham_val_metrics.py)
    values = dict(line.split(",") for line in metrics.strip().splitlines())
    assert {"val_accuracy", "val_f1"} <= set(values), metrics
    assert all(0 <= float(values[k]) <= 1 for k in ("val_accuracy", "val_f1")), metrics


def test_robustness_writes_the_dpaat_table(trained, data_dir):
    root, _ = trained
    out = _run(_bundle_cmd(root, data_dir, _configs("train", "quick", "robustness")), cwd=root)
    report = root / "eval" / "robustness"
    data = json.loads((report / "report.json").read_text())
    rows = data["tables"]["accuracy"]["rows"]
    for row in ("Original", "FGSM", "10-IFGSM", "20-IFGSM", "20-PGD", "50-PGD", "Worst case"):
        assert row in rows, f"row {row} missing from the accuracy table: {rows}"
    assert (report / "table_accuracy.csv").is_file() and (report / "accuracy_vs_eps.png").is_file()
    assert "| 50-PGD |" in out  # the table is printed at the end of the run


def test_inference_saves_predictions_and_verifies_net_io(trained, data_dir):
    root, _ = trained
    quick = ["--network_name", "small_cnn", "--image_size", "64", "--classes", "['mel','nv']"]
    _run(_bundle_cmd(root, data_dir, "configs/inference.json", *quick), cwd=root)
    rows = (root / "eval" / "predictions.csv").read_text().strip().splitlines()
    assert len(rows) == 16 and all(len(r.split(",")) == 3 for r in rows)
    # the network the metadata describes (resnet34, 3 classes, 224 px)
    _run([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "--net_id", "network_def", "--meta_file",
          "configs/metadata.json", "--config_file", "configs/inference.json"], cwd=root)
    _run([sys.executable, "-m", "monai.bundle", "ckpt_export", "--net_id", "network_def", "--filepath",
          str(root / "models" / "model.ts"), "--ckpt_file", str(root / "models" / "model.pt"),
          "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", *quick], cwd=root)
    assert (root / "models" / "model.ts").is_file()


def test_two_process_gloo_torchrun(tmp_path, data_dir):
    from helpers import rerun_once_on_gloo_abort

    launcher = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m")
    roots = []

    def attempt(i: int) -> tuple[int, str]:
        roots.append(_copy_bundle(tmp_path / f"attempt{i}"))
        return _run_rc(_bundle_cmd(roots[-1], data_dir, _configs("train", "quick", "multi_gpu_train"), "--max_epochs",
                                   "1", "--robust_val_interval", "5", launcher=launcher), cwd=roots[-1])

    rc, out = rerun_once_on_gloo_abort(attempt)
    assert rc == 0, f"2-rank torchrun failed ({rc}):\n{out[-4000:]}"
    root = roots[-1]
    assert (root / "models" / "checkpoint_epoch=1.pt").is_file(), out[-2000:]
    ckpt = torch.load(root / "models" / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert _epoch(ckpt) == 1


def test_killed_run_resumes_with_method_state(tmp_path, data_dir):
    root = _copy_bundle(tmp_path)
    cmd = _bundle_cmd(root, data_dir, _configs("train", "quick"), "--max_epochs", "4", "--robust_val_interval", "9")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    second = root / "models" / "checkpoint_epoch=2.pt"
    deadline = time.time() + 240
    while not second.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGSTOP)  # frozen mid-training: alive, holding the folder's lock
    try:
        # a second training in the same folder is refused before it writes anything, naming the first
        refused = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert refused.returncode != 0, refused.stdout[-2000:]
    owner = f"is in use by another run (lock '{root}/models/run.lock' held by pid {proc.pid} on host"
    assert owner in refused.stderr, refused.stderr[-3000:]
    assert second.is_file(), "the run never wrote its epoch-2 checkpoint"
    finished = root / "models" / "checkpoint_epoch=4.pt"
    if finished.exists():
        pytest.skip("the run finished before it could be killed")
    lock = root / "models" / "run.lock"
    assert json.loads(lock.read_text())["pid"] == proc.pid  # the killed run could not release it
    before = torch.load(second, map_location="cpu", weights_only=True)
    log = _run(_bundle_cmd(root, data_dir, _configs("train", "quick", "resume"), "--max_epochs", "4",
                           "--robust_val_interval", "9"), cwd=root)
    assert "resuming from iteration" in log or "Engine run resuming" in log
    assert f"taking over the lock '{root}/models/run.lock' left by pid {proc.pid}" in log
    assert not lock.exists(), "the resumed run did not release its lock"
    after = torch.load(finished, map_location="cpu", weights_only=True)
    assert _epoch(after) == 4
    # the best-model tracking continued: model.pt was replaced only by a better model than the best before the kill
    old_best, new_best = before["best_model_saver"], after["best_model_saver"]
    assert new_best["best_metric"] >= old_best["best_metric"]
    if new_best["best_metric"] == old_best["best_metric"]:
        assert new_best["best_metric_epoch"] == old_best["best_metric_epoch"]
    else:
        assert new_best["best_metric_epoch"] > 2
    assert after["early_stop"]["best_score"] == new_best["best_metric"]
    # DPAAT's running statistics continued from the checkpoint, not from scratch
    iters_per_epoch = after["trainer"]["iteration"] // 4
    restored = int(before["method"]["num_updates"]) + 2 * iters_per_epoch
    assert int(after["method"]["num_updates"]) == restored


PLAIN_BUNDLE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "dataset_dir": "",
    "device": "$torch.device('cpu')",
    "images": "$sorted(glob.glob(os.path.join(@dataset_dir, 'HAM10000_images_part_1', '*.jpg')))[:24]",
    "network_def": {"_target_": "Classifier", "in_shape": [3, 32, 32], "classes": 2, "channels": [8, 16],
                    "strides": [2, 2]},
    "network": "$@network_def.to(@device)",
    "loss": {"_target_": "torch.nn.CrossEntropyLoss"},
    "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
    "train": {
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True, "ensure_channel_first": True},
            {"_target_": "ScaleIntensityd", "keys": "image"},
            {"_target_": "Resized", "keys": "image", "spatial_size": [32, 32]},
            {"_target_": "EnsureTyped", "keys": "image", "track_meta": False},
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': f, 'label': i % 2} for i, f in enumerate(@images)]",
                    "transform": "@train#preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 8, "shuffle": True},
        "inferer": {"_target_": "SimpleInferer"},
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 2, "device": "@device",
                    "train_data_loader": "@train#dataloader", "network": "@network", "loss_function": "@loss",
                    "optimizer": "@optimizer", "inferer": "@train#inferer"},
    },
    "run": ["$@train#trainer.run()"],
}


def test_robustness_max_samples_takes_every_class(data_dir):
    """The test list is sorted by class: its first 20 images were all 'mel'; the limit takes the classes in turn."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / f) for f in ("train.json", "quick.json", "robustness.json")])
    parser.update({"dataset_dir": str(data_dir / "ham10000"), "bundle_root": str(BUNDLE), "robustness_max_samples": 20})
    labels = [item["label"] for item in parser.get_parsed_content("robustness#dataset#data")]
    assert len(labels) == 20 and labels.count(0) == labels.count(1) == 10, labels
    assert parser.get_parsed_content("attack_value_range") == [0.0, 1.0]
    attacks = parser.get_parsed_content("robustness_attacks")
    assert all(tuple(a.value_range) == (0.0, 1.0) for a in attacks.values()), attacks


def test_check_overrides_takes_component_arguments_and_refuses_misspelled_ones():
    """A nested override's last key may be an argument the component's ``_target_`` takes, written in the config
    or not (``temperature``); a name the target does not take is refused before it reaches the constructor."""
    from monai_dpaat.utils import check_overrides

    base = ["run", "--config_file", f"['{BUNDLE}/configs/train.json','{BUNDLE}/configs/quick.json']"]
    check_overrides(base + ["--iteration_update#eps_max", "0.1"])  # written in train.json
    check_overrides(base + ["--iteration_update#temperature", "2"])  # a DPAATIteration argument train.json omits
    check_overrides(base + ["--train#trainer#epoch_length", "3"])  # a SupervisedTrainer argument (bare _target_)
    check_overrides(base + ["--network_def#width", "8"])  # build_classifier takes **kwargs
    with pytest.raises(ValueError, match=r"'eps_maxx' is not an id at iteration_update .*did you mean 'eps_max'"):
        check_overrides(base + ["--iteration_update#eps_maxx", "0.1"])
    with pytest.raises(ValueError, match=r"'amps' is not an id at train#trainer .*did you mean 'amp'"):
        check_overrides(base + ["--train#trainer#amps", "true"])
    overrides = [str(REPO / "bundles" / "ham10000_dpaat_classification" / "configs" / "train.json"),
                 str(OVERRIDES / "adversarial_train.json")]
    with pytest.raises(ValueError, match=r"'adversarial_epss' .*did you mean 'adversarial_eps'"):
        check_overrides(["run", "--config_file", repr(overrides), "--adversarial_epss", "0.1"])


@pytest.mark.parametrize("override", ["dpaat_train", "adversarial_train"])
def test_override_adds_adversarial_training_to_a_plain_monai_bundle(tmp_path, data_dir, override):
    from monai.bundle import ConfigWorkflow

    plain = tmp_path / "train.json"
    plain.write_text(json.dumps(PLAIN_BUNDLE))
    assert "monai_dpaat" not in plain.read_text()
    # one override file; its default method is AT, DPAAT comes from composing the override's method file
    method_file = [str(OVERRIDES / "methods" / "dpaat.json")] if override == "dpaat_train" else []
    # it has no train#handlers / validate#handlers (the Model Zoo's ids), so no checkpoint handlers to extend
    workflow = ConfigWorkflow(config_file=[str(plain), str(OVERRIDES / "adversarial_train.json"), *method_file],
                              workflow_type=None, dataset_dir=str(data_dir / "ham10000"), bundle_root=str(tmp_path),
                              adversarial_checkpoint_handlers=[])
    workflow.initialize()
    workflow.run()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    method = workflow.parser.get_parsed_content("adversarial_iteration")
    assert trainer.state.epoch == 2
    assert type(method).__name__ == {"dpaat_train": "DPAATIteration", "adversarial_train": "ATIteration"}[override]
    assert "loss_adv" in trainer.state.adversarial  # the adversarial loss was computed every step
    if override == "dpaat_train":
        eps = method.state_dict()["epsilon"]
        assert not torch.allclose(eps, torch.full_like(eps, float(eps[0]))) or float(eps[0]) != method.eps_init
    workflow.finalize()


def test_fresh_training_moves_the_earlier_runs_files_aside_and_resume_continues_the_new_run(tmp_path, data_dir):
    """QA F1: a fresh training with fewer epochs in a folder of an earlier run left that run's higher-numbered
    checkpoints beside its own, and ``resume.json`` then continued the earlier run. Now the fresh run moves them
    into ``models/earlier_runs/<timestamp>/`` (warning naming it), and the resume continues the fresh run."""
    root = _copy_bundle(tmp_path)
    models = root / "models"
    quick = ("--robust_val_interval", "9")
    _run(_bundle_cmd(root, data_dir, _configs("train", "quick"), "--max_epochs", "2", *quick), cwd=root)
    first = {p.name: p.read_bytes() for p in models.glob("*.pt")}
    assert sorted(first) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt", "model.pt"], sorted(first)
    log = _run(_bundle_cmd(root, data_dir, _configs("train", "quick"), "--max_epochs", "1", "--lr", "0.0005",
                           *quick), cwd=root)
    archived = list((models / "earlier_runs").iterdir())
    assert len(archived) == 1, archived
    assert f"moved them into '{archived[0]}'" in log, log[-3000:]
    assert {p.name: p.read_bytes() for p in archived[0].iterdir()} == first  # nothing lost, bytes unchanged
    assert sorted(p.name for p in models.glob("*.pt")) == ["checkpoint_epoch=1.pt", "model.pt"]
    second = torch.load(models / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert second["optimizer"]["param_groups"][0]["initial_lr"] == 0.0005  # the fresh run's own checkpoint

    log = _run(_bundle_cmd(root, data_dir, _configs("train", "quick", "resume"), "--max_epochs", "2", *quick), cwd=root)
    assert "moved them into" not in log  # a resume never archives
    assert len(list((models / "earlier_runs").iterdir())) == 1
    resumed = torch.load(models / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    assert _epoch(resumed) == 2 and resumed["optimizer"]["param_groups"][0]["initial_lr"] == 0.0005
    assert (archived[0] / "checkpoint_epoch=2.pt").read_bytes() == first["checkpoint_epoch=2.pt"]
