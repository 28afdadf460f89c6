"""Reliability table: every user-facing entry point fails on bad input with one clear error that names the file,
key or value and what was expected, and damages nothing already written.

Each case builds its bad input in ``tmp_path`` (which already holds a "previous run": ``out/report.json`` and
``out/model.pt``), makes the failing call and checks the error type and message; the runner then checks that
every file that existed before is byte-identical and that no temporary file was left behind. Cases whose check
is still missing in a module owned by someone else are ``xfail(strict=True)`` with the exact change they need.

Entry points: loaders (:mod:`monai_dpaat.data`), attacks, training iterations, :func:`monai_dpaat.utils.load_weights`,
the checkpoint saver, the report writer, the CLI (``python -m monai_dpaat``) and the classification bundle
(``python -m monai.bundle run``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reliability_table import (  # noqa: F401 (helpers used by the rows below)
    CASES, case, Ctx, CLIFailed, REPO, BUNDLE, _png, _jpg,
    _corrupt, _nifti, _ham_root, _nuinsseg_root, _unwrapped, _snapshot, _state, _assert_same_state,
    _small_cnn, _cli_checkpoint, _cli, _bundle_copy, _bundle_run, BUNDLE_CONFIGS,
)

# ---------------------------------------------------------------------------------------------- loaders
@case("data-ham-missing-root", FileNotFoundError, r"HAM10000 root '.*nope' does not exist")
def _(ctx):
    from monai_dpaat.data import ham10000_datalists

    return lambda: ham10000_datalists(ctx.tmp / "nope")


@case("data-ham-metadata-missing-column", ValueError, r"HAM10000_metadata\.csv' lacks column\(s\) \['dx'\]")
def _(ctx):
    from monai_dpaat.data import ham10000_datalists

    root = _ham_root(ctx.tmp, columns="lesion_id,image_id")
    return lambda: ham10000_datalists(root, classes=("mel", "nv"), n_train=1, n_test=1, val_fraction=None)


@case("data-ham-corrupt-image-validate", ValueError, r"ISIC_3\.jpg' is unreadable or corrupt")
def _(ctx):
    from monai_dpaat.data import ham10000_datalists

    root = _ham_root(ctx.tmp, corrupt="ISIC_3")
    return lambda: ham10000_datalists(root, classes=("mel", "nv"), n_train=1, n_test=1, val_fraction=None,
                                      validate=True)


@case("data-ham-transform-corrupt-image", ValueError, r"could not load .*bad\.jpg.*corrupt")
def _(ctx):
    from monai_dpaat.data import ham10000_transforms

    bad = _corrupt(ctx.tmp / "bad.jpg")
    return _unwrapped(lambda: ham10000_transforms(16)({"image": str(bad), "label": 0}))


@case("data-ham-transform-missing-image", ValueError, r"could not load .*gone\.jpg.*missing")
def _(ctx):
    from monai_dpaat.data import ham10000_transforms

    return _unwrapped(lambda: ham10000_transforms(16)({"image": str(ctx.tmp / "gone.jpg"), "label": 0}))


@case("data-nuinsseg-image-without-mask", FileNotFoundError, r"b\.png' has no mask: expected .*mask binary")
def _(ctx):
    from monai_dpaat.data import nuinsseg_datalist

    root = _nuinsseg_root(ctx.tmp, drop_mask=True)
    return lambda: nuinsseg_datalist(root)


@case("data-nuinsseg-corrupt-mask", ValueError, r"mask binary/b\.png' is unreadable or corrupt")
def _(ctx):
    from monai_dpaat.data import nuinsseg_datalist

    root = _nuinsseg_root(ctx.tmp, corrupt_mask=True)
    return lambda: nuinsseg_datalist(root)


@case("data-nifti-corrupt-file", ValueError, r"NIfTI file '.*case1\.nii\.gz' is unreadable or corrupt")
def _(ctx):
    from monai_dpaat.data import nifti_datalist

    root = ctx.tmp / "nifti"
    root.mkdir()
    _nifti(root / "case0.nii.gz", np.zeros((4, 4, 4), np.float32))
    _nifti(root / "case0_label.nii.gz", np.zeros((4, 4, 4), np.uint8))
    (root / "case1.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 4)[:30])
    _nifti(root / "case1_label.nii.gz", np.zeros((4, 4, 4), np.uint8))
    return lambda: nifti_datalist(root, image_patterns="*.nii.gz", label_pattern="{case}_label.nii.gz", layout="flat")


@case("data-nifti-nan-voxels", ValueError, r"img\.nii\.gz' holds 2 NaN and 1 Inf value\(s\) in 'image'")
def _(ctx):
    from monai_dpaat.data import nifti_transforms

    volume = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    volume[0, 0, :2] = np.nan
    volume[1, 1, 1] = np.inf
    image = _nifti(ctx.tmp / "img.nii.gz", volume)
    label = _nifti(ctx.tmp / "lab.nii.gz", np.zeros((6, 6, 6), np.uint8))
    return _unwrapped(lambda: nifti_transforms(None)({"image": [str(image)], "label": str(label)}))


@case("data-nifti-label-out-of-mapping", ValueError, r"label values \[7\.0\] in '.*lab\.nii\.gz' are not in the mapping")
def _(ctx):
    from monai_dpaat.data import BRATS_WHOLE_TUMOUR, nifti_transforms

    image = _nifti(ctx.tmp / "img.nii.gz", np.random.default_rng(0).random((6, 6, 6)).astype(np.float32) + 1)
    lab = np.zeros((6, 6, 6), np.uint8)
    lab[2, 2, 2] = 7
    label = _nifti(ctx.tmp / "lab.nii.gz", lab)
    return _unwrapped(lambda: nifti_transforms(None, label_mapping=BRATS_WHOLE_TUMOUR, crop_foreground=False)(
        {"image": [str(image)], "label": str(label)}))


@case("data-datalist-missing-split", ValueError, r"datalist JSON '.*list\.json'.*validation")
def _(ctx):
    from monai_dpaat.data import load_datalist

    path = ctx.tmp / "list.json"
    path.write_text(json.dumps({"training": [{"image": "a.png", "label": 0}]}))
    return lambda: load_datalist(path, split="validation")


# ---------------------------------------------------------------------------------------------- attacks
def _attack_setup(name: str, channels: int = 3):
    """``(attack, network, images, targets)`` for ``name``: a 3-class small CNN for classification attacks,
    a 3-channel conv for the dense (segmentation-only) ones."""
    from monai_dpaat.attacks import build_attack

    attack = build_attack(name, eps=0.03, steps=1) if name != "fgsm" else build_attack(name, eps=0.03)
    torch.manual_seed(0)
    x = torch.rand(2, channels, 16, 16)
    if "classification" in attack.tasks:
        return attack, _small_cnn().eval(), x, torch.tensor([0, 2])
    return attack, torch.nn.Conv2d(3, 3, 3, padding=1), x, torch.randint(0, 3, (2, 1, 16, 16))


def _attack_names() -> list[str]:
    from monai_dpaat.attacks import ATTACKS

    return sorted(ATTACKS)




def _make_attack_cases() -> None:
    for name in _attack_names():

        def nan_images(ctx, name=name):
            attack, net, x, y = _attack_setup(name)
            x[1, 0, 3, 3] = float("nan")
            return lambda: attack(net, x, y)

        case(f"attack-nan-images-{name}", ValueError, r"images \(shape \(2, 3, 16, 16\)\) contain NaN or Inf")(nan_images)

        def eps_length(ctx, name=name):
            attack, net, x, y = _attack_setup(name)
            return lambda: attack(net, x, y, eps=torch.tensor([0.01, 0.02, 0.03]))

        case(f"attack-eps-length-{name}", ValueError, r"eps must be a number or a tensor of shape \(2,\).*got shape \(3,\)")(
            eps_length)

        if name != "gn":  # Gaussian noise never looks at the labels

            def labels_out_of_range(ctx, name=name):
                attack, net, x, y = _attack_setup(name)
                y = y.clone()
                y.view(-1)[0] = 5
                return lambda: attack(net, x, y)

            case(f"attack-labels-out-of-range-{name}", ValueError, r"\[0, 2\]",
                 )(labels_out_of_range)

            def wrong_channels(ctx, name=name):
                attack, net, x, y = _attack_setup(name, channels=1)
                return lambda: attack(net, x, y)

            case(f"attack-wrong-channel-count-{name}", ValueError, r"1 channel.*expects 3|expects 3.*1 channel",
)(wrong_channels)


_make_attack_cases()


@case("attack-integer-images", ValueError, r"images must be a floating point tensor, got dtype torch\.uint8")
def _(ctx):
    attack, net, x, y = _attack_setup("pgd")
    return lambda: attack(net, (x * 255).to(torch.uint8), y)


@case("attack-unknown-name", ValueError, r"unknown attack 'pgdd'; known attacks: .*pgd")
def _(ctx):
    from monai_dpaat.attacks import build_attack

    return lambda: build_attack("pgdd")


@case("attack-misspelled-keyword", ValueError, r"attack 'pgd' got unknown keyword\(s\) \['stpes'\]")
def _(ctx):
    from monai_dpaat.attacks import build_attack

    return lambda: build_attack("pgd", stpes=3)


# ---------------------------------------------------------------------------------------------- training
def _trainer(method: str, loss_function=None, images: torch.Tensor | None = None, index_shift: int = 0):
    from monai.engines import SupervisedTrainer

    from monai_dpaat.attacks import PGD
    from monai_dpaat.training import build_iteration

    net = _small_cnn(num_classes=2)
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16) if images is None else images
    data = [{"image": x[i], "label": i % 2, "index": i + index_shift} for i in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    kwargs = {} if method == "std" else {"attack": PGD(steps=1, value_range=None)}
    if method in ("amat", "dpaat"):
        kwargs["num_samples"] = 4
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
                                optimizer=optimizer, loss_function=loss_function or torch.nn.CrossEntropyLoss(),
                                iteration_update=build_iteration(method, **kwargs))
    return trainer, net, optimizer


def _nan_loss(pred, target):
    return torch.nn.functional.cross_entropy(pred, target) * float("nan")






def _make_training_cases() -> None:
    for method in ("std", "at", "sat", "amat", "dpaat"):

        def nan_loss(ctx, method=method):
            trainer, net, optimizer = _trainer(method, loss_function=_nan_loss)
            weights = {k: v.detach().clone() for k, v in net.named_parameters()}

            def after():
                changed = [k for k, v in net.named_parameters() if not torch.equal(v, weights[k])]
                assert not changed, f"the optimizer stepped on the NaN loss: {changed[:5]} changed"
                assert not optimizer.state, "the optimizer stepped (momentum buffers exist)"

            return trainer.run, after

        case(f"train-nan-loss-{method}", ValueError, r"the training loss is nan \(not finite\) at iteration 1.*"
             r"Refusing to step the optimizer")(nan_loss)


@case("train-nan-loss-keeps-batchnorm-stats-dpaat", ValueError, r"the training loss is nan \(not finite\)")
def _(ctx):
    trainer, net, _ = _trainer("dpaat", loss_function=_nan_loss)
    state = _state(net)  # parameters and buffers
    return trainer.run, lambda: _assert_same_state(net, state, "the network's state (incl. BatchNorm statistics)")


_make_training_cases()


@case("train-nan-images-dpaat", ValueError, r"images \(shape \(4, 3, 16, 16\)\) contain NaN or Inf")
def _(ctx):
    x = torch.rand(4, 3, 16, 16)
    x[2, 1, 5, 5] = float("nan")
    trainer, net, _ = _trainer("dpaat", images=x)
    weights = _state(net)
    return trainer.run, lambda: _assert_same_state(net, weights, "the network's weights")


@case("train-sample-ids-out-of-range-dpaat", ValueError, r"batch\['index'\] has ids outside \[0, 4\)")
def _(ctx):
    trainer, net, _ = _trainer("dpaat", index_shift=2)
    weights = _state(net)
    return trainer.run, lambda: _assert_same_state(net, weights, "the network's weights")


@case("train-unknown-method", ValueError, r"unknown training method 'dpat'; expected one of .*'dpaat'")
def _(ctx):
    from monai_dpaat.training import build_iteration

    return lambda: build_iteration("dpat", num_samples=4)


# ---------------------------------------------------------------------------------------------- checkpoints
@case("ckpt-other-num-classes", ValueError, r"checkpoint '.*three\.pt' does not fit the network SmallCNN.*"
      r"shape mismatch \['head\.weight: checkpoint \(3, ")
def _(ctx):
    from monai_dpaat.utils import load_weights

    path = ctx.tmp / "three.pt"
    torch.save({"model": _small_cnn(num_classes=3, seed=1).state_dict()}, path)
    net = _small_cnn(num_classes=2)
    weights = _state(net)
    return lambda: load_weights(net, path), lambda: _assert_same_state(net, weights, "the network's weights")


@case("ckpt-other-architecture", ValueError, r"checkpoint '.*linear\.pt' does not fit the network SmallCNN.*missing keys")
def _(ctx):
    from monai_dpaat.utils import load_weights

    path = ctx.tmp / "linear.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    net = _small_cnn(num_classes=2)
    weights = _state(net)
    return lambda: load_weights(net, path), lambda: _assert_same_state(net, weights, "the network's weights")


@case("ckpt-truncated-file", ValueError, r"cannot read checkpoint '.*out/model\.pt.partial'")
def _(ctx):
    from monai_dpaat.utils import load_weights

    good = (ctx.tmp / "out" / "model.pt").read_bytes()
    partial = ctx.tmp / "out" / "model.pt.partial"
    partial.write_bytes(good[: len(good) // 2])
    return lambda: load_weights(_small_cnn(num_classes=2), partial)


@case("ckpt-pickled-code", ValueError, r"cannot read checkpoint '.*evil\.pt'.*[Ww]eights only load failed")
def _(ctx):
    from monai_dpaat.utils import load_weights

    path = ctx.tmp / "evil.pt"
    torch.save({"model": _small_cnn(num_classes=2).state_dict(), "extra": Ctx}, path)  # a class: needs unpickling code
    return lambda: load_weights(_small_cnn(num_classes=2), path)


@case("ckpt-missing-file", FileNotFoundError, r"checkpoint '.*nothing\.pt' does not exist")
def _(ctx):
    from monai_dpaat.utils import load_weights

    return lambda: load_weights(_small_cnn(num_classes=2), ctx.tmp / "nothing.pt")


@case("ckpt-saver-dir-under-a-file", ValueError, r"checkpoint save_dir '.*out/model\.pt/ckpts' cannot be created")
def _(ctx):
    from monai_dpaat.handlers.checkpoint import AtomicCheckpointSaver

    return lambda: AtomicCheckpointSaver(str(ctx.tmp / "out" / "model.pt" / "ckpts"), {"model": _small_cnn()})


# ---------------------------------------------------------------------------------------------- report writer
def _result():
    from monai_dpaat.evaluation import RobustnessResult

    rows = {"Original": {"accuracy": 1.0}, "FGSM": {"accuracy": 0.5}, "Worst case": {"accuracy": 0.5}}
    return RobustnessResult(task="classification", rows=rows, num_samples=2)


@case("report-output-dir-under-a-file", ValueError, r"output_dir '.*out/report\.json/sub' cannot be created")
def _(ctx):
    from monai_dpaat.evaluation import write_report

    return lambda: write_report({"STD": _result()}, ctx.tmp / "out" / "report.json" / "sub", plots=False)


@case("report-unknown-metric", ValueError, r"unknown metric 'acuracy' for classification; known: .*accuracy")
def _(ctx):
    from monai_dpaat.evaluation import write_report

    return lambda: write_report({"STD": _result()}, ctx.tmp / "out", metrics=["acuracy"], plots=False)


@case("report-write-interrupted", OSError, r"disk full")
def _(ctx):
    from monai_dpaat.evaluation import report

    def call():
        real = os.replace

        def failing_replace(src, dst):
            raise OSError(28, "disk full")

        report.os.replace = failing_replace
        try:
            report.atomic_write_text(ctx.tmp / "out" / "report.json", "new contents")
        finally:
            report.os.replace = real

    return call


@case("report-load-corrupt-json", ValueError, r"report file '.*out/report\.json' is not valid JSON")
def _(ctx):
    from monai_dpaat.evaluation.report import load_report

    (ctx.tmp / "out" / "report.json").write_text('{"title": "previous rep')  # cut short by a crash
    return lambda: load_report(ctx.tmp / "out")


# ---------------------------------------------------------------------------------------------- CLI
@case("cli-unknown-attack", CLIFailed, r"^exit 2: error: unknown attack or preset 'pgdd'")
def _(ctx):
    return _cli("robustness", "--network", "small_cnn", "--checkpoint", _cli_checkpoint(ctx),
                "--attacks", "fgsm,pgdd", "--output_dir", str(ctx.tmp / "out"))


@case("cli-unknown-model", CLIFailed, r"^exit 2: error: unknown model 'resnet_9000'.*expected one of")
def _(ctx):
    return _cli("robustness", "--network", "resnet_9000", "--checkpoint", _cli_checkpoint(ctx),
                "--attacks", "fgsm", "--output_dir", str(ctx.tmp / "out"))


@case("cli-missing-checkpoint", CLIFailed, r"^exit 2: error: checkpoint '.*missing\.pt' does not exist")
def _(ctx):
    return _cli("robustness", "--network", "small_cnn", "--checkpoint", str(ctx.tmp / "missing.pt"),
                "--attacks", "fgsm", "--output_dir", str(ctx.tmp / "out"))


@case("cli-checkpoint-of-another-network", CLIFailed, r"^exit 2: error: checkpoint '.*small_cnn\.pt' does not fit the network")
def _(ctx):
    return _cli("robustness", "--network", "small_cnn", "--num_classes", "5", "--checkpoint", _cli_checkpoint(ctx),
                "--data", str(_ham_root(ctx.tmp)), "--attacks", "fgsm", "--output_dir", str(ctx.tmp / "out"))


@case("cli-output-dir-under-a-file", CLIFailed, r"^exit 2: error: output_dir '.*model\.pt/report' cannot be created")
def _(ctx):
    images = ctx.tmp / "images"
    images.mkdir()
    items = [{"image": str(_png(images / f"{i}.png", seed=i)), "label": i % 2} for i in range(2)]
    datalist = ctx.tmp / "datalist.json"
    datalist.write_text(json.dumps({"test": items}))
    return _cli("robustness", "--network", "small_cnn", "--checkpoint", _cli_checkpoint(ctx),
                "--datalist", str(datalist), "--image_size", "16", "--attacks", "fgsm", "--progress", "False",
                "--output_dir", str(ctx.tmp / "out" / "model.pt" / "report"))


# a dependency may warn on import (MONAI 1.5 on torch.jit): the error is still the one line that ends stderr
@case("cli-subprocess-missing-checkpoint", CLIFailed, r"^exit 2: (?:.*\n)*?error: checkpoint '.*missing\.pt' does not exist\n$")
def _(ctx):
    def call():
        proc = subprocess.run([sys.executable, "-m", "monai_dpaat", "robustness", "--network", "small_cnn",
                               "--checkpoint", str(ctx.tmp / "missing.pt"), "--attacks", "fgsm"],
                              capture_output=True, text=True, timeout=300, cwd=ctx.tmp,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise CLIFailed(f"exit {proc.returncode}: {proc.stderr}")

    return call


# ---------------------------------------------------------------------------------------------- bundle
@case("bundle-unknown-method", RuntimeError, r"unknown training method 'dpaatt'; expected one of")
def _(ctx):
    root = _bundle_copy(ctx)
    return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.data_dir / "ham10000"), "--method", "dpaatt")


@case("bundle-misspelled-override-key", RuntimeError, r"unknown config key 'max_epoch' \(override --max_epoch\).*"
      r"did you mean 'max_epochs'")
def _(ctx):
    root = _bundle_copy(ctx)
    # nothing to run: the check must come from 'initialize', before any data is read or training starts
    return _bundle_run(root, "--config_file", BUNDLE_CONFIGS, "--bundle_root", str(root),
                       "--dataset_dir", str(ctx.tmp / "no_data_needed"), "--max_epoch", "1", "--run", "[]")


# ---------------------------------------------------------------------------------------------- the runner
# rows kept beside their area (data loaders, CLI, checkpoints, reports, training), one module each
for _area in sorted(p.stem for p in Path(__file__).parent.glob("reliability_cases_*.py")):
    importlib.import_module(_area)


@pytest.mark.parametrize("make, error, match", CASES)
def test_bad_input_fails_clearly_and_damages_nothing(make, error, match, tmp_path, request):
    out = tmp_path / "out"  # what a previous run left behind
    out.mkdir()
    (out / "report.json").write_text('{"title": "previous report", "models": {}}\n')
    torch.save({"model": _small_cnn(num_classes=2).state_dict()}, out / "model.pt")
    made = make(Ctx(tmp_path, request))
    call, after = made if isinstance(made, tuple) else (made, None)
    before = _snapshot(tmp_path)

    with pytest.raises(error, match=re.compile(match, re.S)) as info:
        call()

    message = str(info.value)
    if error is CLIFailed and "bundle" not in request.node.callspec.id:
        assert "Traceback" not in message, message
    now = _snapshot(tmp_path)
    damaged = [p for p, h in before.items() if now.get(p) != h]
    assert not damaged, f"files changed or removed by the failed call: {damaged}"
    leftovers = [p for p in now if p not in before and re.search(r"(^|/)(\.|tmp)|\.tmp$", p)]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    if after is not None:
        after()


def test_check_overrides_accepts_known_keys_and_names_unknown_ones():
    from monai_dpaat.utils import check_overrides

    configs = f"['{BUNDLE}/configs/train.json','{BUNDLE}/configs/quick.json']"
    base = ["run", "--config_file", configs, "--bundle_root", "b", "--dataset_dir=d", "--max_epochs", "2",
            "--train#trainer#amp", "true", "--network_def#width", "8", "--meta_file", "m.json"]
    check_overrides(base)  # known ids, nested ids and an extra component argument pass
    check_overrides(["-m", "pytest", "-k", "x"])  # not a bundle run: nothing to check
    for bad, expected in (("--max_epoch", r"'max_epoch'.*did you mean 'max_epochs'"),
                          ("--train#trainr#amp", r"'trainr' is not an id at train.*did you mean 'trainer'"),
                          ("--methd=dpaat", r"'methd'.*did you mean 'method'")):
        with pytest.raises(ValueError, match=expected):
            check_overrides(base + [bad, "1"] if "=" not in bad else base + [bad])
