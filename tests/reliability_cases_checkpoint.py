"""Bad-input rows for checkpoints and bundle output folders (run by ``test_reliability.py``): a resume that would
train on another split, a folder of unreadable checkpoints, a checkpoint that records no training data, a
second training started in a bundle folder another live run is writing to, and a ``--method`` override without
its ``configs/methods`` file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import torch

from reliability_table import REPO, BUNDLE, BUNDLE_CONFIGS, _bundle_copy, _bundle_run, _small_cnn, case

RESUME_CONFIGS = "['configs/train.json','configs/quick.json','configs/resume.json']"


def _truncated(path: Path, like: Path) -> Path:
    """A checkpoint cut short (what a copy or tool killed mid-write leaves)."""
    data = like.read_bytes()
    path.write_bytes(data[: len(data) - 10])
    return path


def _training_data(seed: int, n: int = 48, n_test: int = 12):
    """A seeded split of ``n + n_test`` synthetic items into train / test, as a TrainingData."""
    import random

    from monai_dpaat.handlers.checkpoint import TrainingData

    items = [{"image_id": f"ISIC_{i:04d}", "image": f"/data/ISIC_{i:04d}.jpg"} for i in range(n + n_test)]
    random.Random(seed).shuffle(items)
    train = sorted(items[:n], key=lambda x: x["image_id"])
    return TrainingData(train, seed=seed, test=items[n:])


# ---------------------------------------------------------------------------------------------- resume
@case("ckpt-resume-other-seed", ValueError, r"checkpoint '.*models/checkpoint_epoch=2\.pt' was trained on seed 0 / "
      r"48 training items \(ids sha256 [0-9a-f]{12}\), this run has seed 1 / 48 training items \(ids sha256 "
      r"[0-9a-f]{12}\): seed 0 -> 1; \d+ of the 48 per-sample table rows would belong to other items; \d+ former "
      r"training items are no longer trained on; \d+ former test items would be trained on")
def _(ctx):
    from monai_dpaat.utils import resume_checkpoint

    models = ctx.tmp / "models"
    models.mkdir()
    torch.save({"model": _small_cnn().state_dict(), "data": _training_data(0).state_dict()},
               models / "checkpoint_epoch=2.pt")
    return lambda: resume_checkpoint(str(models), training=_training_data(1))


@case("ckpt-resume-no-record-of-training-data", ValueError,
      r"checkpoint '.*models/checkpoint_epoch=3\.pt' records no training data \(seed, split, training ids\)")
def _(ctx):
    from monai_dpaat.utils import resume_checkpoint

    models = ctx.tmp / "models"
    models.mkdir()
    torch.save({"model": _small_cnn().state_dict()}, models / "checkpoint_epoch=3.pt")
    return lambda: resume_checkpoint(str(models), training=_training_data(0))


@case("ckpt-resume-no-readable-checkpoint", ValueError, r"no readable checkpoint to resume from in '.*models': "
      r"'.*models/checkpoint_epoch=2\.pt' \(\w+Error: .+\); '.*models/checkpoint_epoch=1\.pt' \(\w+Error: "
      r".+\)")
def _(ctx):
    from monai_dpaat.utils import resume_checkpoint

    models = ctx.tmp / "models"
    models.mkdir()
    _truncated(models / "checkpoint_epoch=2.pt", ctx.tmp / "out" / "model.pt")
    good = (ctx.tmp / "out" / "model.pt").read_bytes()
    (models / "checkpoint_epoch=1.pt").write_bytes(good[: len(good) // 2])
    return lambda: resume_checkpoint(str(models))


def _ham_bundle_with(ctx, checkpoints) -> Path:
    """The classification bundle with ``checkpoints(models)`` written into its ``models/``."""
    root = _bundle_copy(ctx)
    (root / "models").mkdir()
    checkpoints(root / "models")
    return root


@case("ckpt-bundle-resume-other-seed", RuntimeError, r"ValueError: checkpoint '.*models/checkpoint_epoch=2\.pt' was "
      r"trained on seed 0 / \d+ training items .*this run has seed 1 / \d+ training items .*: seed 0 -> 1; \d+ of the "
      r"\d+ per-sample table rows would belong to other items.*former test items would be trained on")
def _(ctx):
    from monai.bundle import ConfigParser

    def checkpoint(models):  # what the quick training with seed 0 records
        parser = ConfigParser()
        parser.read_config([str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "quick.json")])
        parser["dataset_dir"] = str(ctx.data_dir / "ham10000")
        record = parser.get_parsed_content("training_data").state_dict()
        torch.save({"model": _small_cnn(2).state_dict(), "data": record}, models / "checkpoint_epoch=2.pt")

    root = _ham_bundle_with(ctx, checkpoint)
    return _bundle_run(root, "--config_file", RESUME_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.data_dir / "ham10000"), "--seed", "1")


@case("ckpt-bundle-resume-no-readable-checkpoint", RuntimeError, r"ValueError: no readable checkpoint to resume from "
      r"in '.*bundle/models': '.*checkpoint_epoch=2\.pt' \(.*\); '.*checkpoint_epoch=1\.pt' \(.*\)")
def _(ctx):
    def checkpoints(models):
        for n in (1, 2):
            _truncated(models / f"checkpoint_epoch={n}.pt", ctx.tmp / "out" / "model.pt")

    root = _ham_bundle_with(ctx, checkpoints)
    return _bundle_run(root, "--config_file", RESUME_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.data_dir / "ham10000"))


# ---------------------------------------------------------------------------------------------- run lock
_HOLDER = """
import sys, time
from monai_dpaat.handlers.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _live_holder(ctx, folder: Path) -> subprocess.Popen:
    """Another live process holding ``folder``'s run lock (its command line ends with 'holder-of-the-lock')."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder), "holder-of-the-lock"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ctx.request.addfinalizer(lambda: (proc.kill(), proc.wait(), proc.stdout.close(), proc.stderr.close()))
    line = proc.stdout.readline().strip()
    assert line == "locked", f"the lock holder did not start: {line} {proc.stderr.read() if proc.poll() else ''}"
    return proc


def _make_locked_bundle_cases() -> None:
    for name in ("ham10000_dpaat_classification", "nuinsseg_adversarial_segmentation",
                 "brats_adversarial_segmentation_3d"):

        def locked(ctx, name=name):
            root = ctx.tmp / "bundle"
            shutil.copytree(REPO / "bundles" / name / "configs", root / "configs")
            _live_holder(ctx, root / "models")
            # no data: the refusal must come before any data is read or anything is written
            return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                               "--dataset_dir", str(ctx.tmp / "no_data_needed"))

        case(f"ckpt-bundle-folder-locked-{name.split('_')[0]}", RuntimeError,
             r"the output folder '.*bundle/models' is in use by another run \(lock '.*bundle/models/run\.lock' held by "
             r"pid \d+ on host '.+', started \d{4}-\d\d-\d\dT.*, command: .*holder-of-the-lock\)\. "
             r"Nothing was written")(locked)


_make_locked_bundle_cases()


# ---------------------------------------------------------------------------------------------- unreadable checkpoints
# one reader (monai_dpaat.utils.read_checkpoint) for every entry point: one line naming the file and the reason
def _unreadable_files(ctx) -> dict[str, Path]:
    """An empty file, a truncated checkpoint, a text file and a folder, each named like a checkpoint."""
    bad = ctx.tmp / "bad"
    bad.mkdir()
    (bad / "empty.pt").write_bytes(b"")
    _truncated(bad / "truncated.pt", ctx.tmp / "out" / "model.pt")
    (bad / "notes.pt").write_text("these are my notes, not a checkpoint\n")
    (bad / "folder.pt").mkdir()
    return {p.stem: p for p in bad.iterdir()}


_UNREADABLE = {
    "empty": r"the file is empty \(0 bytes",
    "truncated": r"the file is truncated or corrupt \(\d+ bytes; \w+Error: [^\n]+\)",
    "notes": r"not a PyTorch checkpoint \(the file starts with b'thes'",
    "folder": r"it is a directory, not a checkpoint file",
}

for _what, _reason_re in _UNREADABLE.items():

    def _load_weights_case(ctx, what=_what):
        from monai_dpaat.utils import load_weights

        path = _unreadable_files(ctx)[what]
        return lambda: load_weights(_small_cnn(num_classes=2), path)

    case(f"ckpt-load-weights-{_what}", ValueError,
         rf"^cannot read checkpoint '.*bad/{_what}\.pt': {_reason_re}[^\n]*$")(_load_weights_case)


def _seg_bundle(ctx, name: str) -> Path:
    root = ctx.tmp / "bundle"
    shutil.copytree(REPO / "bundles" / name, root, ignore=shutil.ignore_patterns("models", "eval", "__pycache__"))
    return root


_BUNDLE_NAMES = {"ham": "ham10000_dpaat_classification", "nuinsseg": "nuinsseg_adversarial_segmentation",
                 "brats": "brats_adversarial_segmentation_3d"}

for _short, _name in _BUNDLE_NAMES.items():

    def _inference_unreadable(ctx, name=_name):
        # `: > model.pt` in the folder --ckpt_dir names; no data: the check comes before any data is read
        root = _seg_bundle(ctx, name)
        ckpts = ctx.tmp / "elsewhere"
        ckpts.mkdir()
        (ckpts / "model.pt").write_bytes(b"")
        return _bundle_run(root, "--config_file", "configs/inference.json", "--bundle_root", str(root),
                           "--ckpt_dir", str(ckpts), "--dataset_dir", str(ctx.tmp / "no_data_needed"))

    case(f"ckpt-bundle-inference-empty-model-{_short}", RuntimeError,
         r"CheckpointError: cannot read checkpoint '.*elsewhere/model\.pt': the file is empty \(0 bytes")(
        _inference_unreadable)

    def _evaluate_truncated(ctx, name=_name):
        root = _seg_bundle(ctx, name)
        (root / "models").mkdir()
        _truncated(root / "models" / "model.pt", ctx.tmp / "out" / "model.pt")
        return _bundle_run(root, "--config_file", "['configs/train.json','configs/quick.json','configs/evaluate.json']",
                           "--bundle_root", str(root), "--dataset_dir", str(ctx.tmp / "no_data_needed"))

    case(f"ckpt-bundle-evaluate-truncated-model-{_short}", RuntimeError,
         r"CheckpointError: cannot read checkpoint '.*bundle/models/model\.pt': the file is truncated or corrupt")(
        _evaluate_truncated)

    def _inference_typo(ctx, name=_name):
        root = _seg_bundle(ctx, name)
        return _bundle_run(root, "--config_file", "configs/inference.json", "--bundle_root", str(root),
                           "--dataset_dri", str(ctx.tmp / "no_data_needed"))

    if _short != "ham":  # the classification inference checked its overrides already
        case(f"bundle-inference-misspelled-override-{_short}", RuntimeError,
             r"unknown config key 'dataset_dri' \(override --dataset_dri\).*did you mean 'dataset_dir'")(_inference_typo)


# ---------------------------------------------------------------------------------------------- classes, val_fraction
@case("bundle-one-class", RuntimeError, r"classes must name at least 2 HAM10000 classes, got \['mel'\]: a classifier "
      r"of one class learns nothing")
def _(ctx):
    root = _bundle_copy(ctx)
    # a one-class run trained to loss 0 and wrote model.pt; no data: the refusal comes from 'initialize'
    return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.tmp / "no_data_needed"), "--classes", "['mel']", "--max_epochs", "1")


@case("bundle-val-fraction-zero", RuntimeError, r"val_fraction must be in \(0, 1\), got 0: a bundle training "
      r"validates on that fraction .*model\.pt.*--val_fraction 0\.1 \(a bundle command line cannot pass None: "
      r"monai\.bundle drops None overrides\)")
def _(ctx):
    root = _bundle_copy(ctx)
    return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.tmp / "no_data_needed"), "--val_fraction", "0", "--max_epochs", "1")


@case("bundle-method-override-names-the-method-file", RuntimeError, r"method 'at' does not match the iteration_update "
      r"DPAATIteration \(method 'dpaat'\): a --method override does not change the training method; compose "
      r"configs/methods/at\.json")
def _(ctx):
    root = _bundle_copy(ctx)

    def after():
        saved = sorted(str(p.relative_to(root)) for p in root.rglob("*.pt"))
        assert not saved, f"the refused run saved {saved}"

    # checked first thing in 'run' (with the folder's lock held), before the trainer is built or anything written
    return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.data_dir / "ham10000"), "--method", "at"), after
