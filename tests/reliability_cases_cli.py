"""Bad-input rows of the command line (``python -m monai_dpaat ...``), run by ``test_reliability.py``.

The whole command line, and every file it names, is checked before anything is read, built or written: rows
wrapped in :func:`_upfront` replace the work itself (reading a checkpoint or the data, an attack, training,
Grad-CAM) by a failure, so a command that got that far fails the row even when it ends with the right message.
Their commands name a real (tiny) data folder, so the suite *would* run. Configs given on the command line never
run code: their ``$`` expression (or ``_target_``) would create a marker file, and the row checks it does not exist.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from reliability_table import CLIFailed, _cli, _cli_checkpoint, _ham_root, _nifti, case


# ---------------------------------------------------------------------------------------------- helpers
def _forbidden(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran although the command line should have been refused first")

    return fail


def _upfront(call):
    """``call`` with every piece of work replaced by an ``AssertionError``: passes only when the command is refused
    before reading a checkpoint or the data, attacking, training or computing Grad-CAM."""

    def run():
        from monai.engines import SupervisedTrainer

        from monai_dpaat import data, utils
        from monai_dpaat.evaluation import RobustnessEvaluator, gradcam

        work = [(utils, "load_weights"), (gradcam, "load_weights"), (data, "ham10000_datalists"),
                (data, "nuinsseg_datalist"), (gradcam, "load_ham10000_images"), (gradcam, "compare_gradcam"),
                (RobustnessEvaluator, "__call__"), (RobustnessEvaluator, "sweep"), (SupervisedTrainer, "run")]
        with contextlib.ExitStack() as stack:
            for owner, name in work:
                stack.enter_context(mock.patch.object(owner, name, _forbidden(f"{owner.__name__}.{name}")))
            call()

    return run


def _robustness(ctx, *extra: str, **flags: str | None) -> list[str]:
    """A ``robustness`` command line that would run (small_cnn, a 4-image HAM10000 folder, FGSM, 16x16) into a new
    ``report`` folder; ``flags`` override (``None`` drops one), ``extra`` tokens are appended."""
    base = {"network": "small_cnn", "checkpoint": _cli_checkpoint(ctx), "data": str(_ham_root(ctx.tmp)),
            "attacks": "fgsm", "image_size": "16", "limit": "2", "progress": "False",
            "output_dir": str(ctx.tmp / "report")}
    base.update(flags)
    argv = ["robustness"]
    for key, value in base.items():
        if value is not None:
            argv += [f"--{key}", value]
    return argv + list(extra)


def _marker(ctx) -> Path:
    return ctx.tmp / "code_ran"


def _touch(ctx) -> str:
    """A ``$`` expression that creates the marker file, then evaluates to 2."""
    return f"$__import__('pathlib').Path({str(_marker(ctx))!r}).touch() or 2"


def _no_marker(ctx):
    def after():
        assert not _marker(ctx).exists(), "the config's code ran"

    return after


def _json(path: Path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def _small_cnn_config(**overrides) -> dict:
    return {"_target_": "monai_dpaat.networks.build_classifier", "name": "small_cnn", "num_classes": 2, **overrides}


def _unet_2d(ctx, in_channels: int) -> tuple[str, str]:
    """``(network config, checkpoint)`` of a small 2D MONAI UNet with one foreground channel (the CLI builds
    segmentation networks from a config or a bundle only)."""
    from monai.bundle import ConfigParser

    config = {"_target_": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": in_channels,
              "out_channels": 1, "channels": [4, 8], "strides": [2], "num_res_units": 0}
    torch.manual_seed(0)
    torch.save(ConfigParser(config).get_parsed_content().state_dict(), ctx.tmp / "unet.pt")
    return _json(ctx.tmp / "unet.json", config), str(ctx.tmp / "unet.pt")


def _gradcam(ctx, *extra: str, models=None, output_dir=None) -> list[str]:
    ckpt = _cli_checkpoint(ctx)
    if models is None:
        models = _json(ctx.tmp / "models.json", {"STD": {"network": _small_cnn_config(), "checkpoint": ckpt}})
    return ["gradcam", "--models", models, "--data_dir", str(_ham_root(ctx.tmp)), "--output_dir",
            str(output_dir or ctx.tmp / "out"), "--n_images", "2", "--spatial_size", "16", "--tensorboard", "False",
            *extra]


# ---------------------------------------------------------------------------------------------- flags
@case("cli-misspelled-flag-runs-nothing", CLIFailed, r"^exit 2: error: robustness: unknown flag --esp; "
      r"did you mean --eps\?")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, "--esp", "2/255")))


@case("cli-misspelled-flag-gradcam", CLIFailed, r"^exit 2: error: gradcam: unknown flag --n_image; "
      r"did you mean --n_images\?")
def _(ctx):
    return _upfront(_cli(*_gradcam(ctx, "--n_image", "2")))


@case("cli-misspelled-flag-demo", CLIFailed, r"^exit 2: error: demo: unknown flag --epoch; did you mean --epochs\?")
def _(ctx):
    return _upfront(_cli("demo", "--data", str(_ham_root(ctx.tmp)), "--epoch", "1", "--n_train", "1", "--n_test", "1",
                         "--image_size", "16", "--attacks", "fgsm", "--output_dir", str(ctx.tmp / "out")))


@case("cli-unknown-command", CLIFailed, r"^exit 2: error: unknown command 'robustnes'; did you mean 'robustness'\?")
def _(ctx):
    return _cli("robustnes", "--network", "small_cnn")


@case("cli-flag-given-twice", CLIFailed, r"^exit 2: error: robustness: --eps is given twice")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, "--eps", "2/255", "--eps", "8/255")))


@case("cli-stray-value", CLIFailed, r"^exit 2: error: robustness: unexpected argument '4/255'")
def _(ctx):  # a sweep written with spaces: fire took the second budget for --bundle
    return _upfront(_cli(*_robustness(ctx, "--eps", "2/255", "4/255")))


@case("cli-gradcam-missing-required-flag", CLIFailed, r"^exit 2: error: gradcam: missing required flag\(s\) "
      r"--output_dir")
def _(ctx):
    return _upfront(_cli(*_gradcam(ctx)[:5]))


# ---------------------------------------------------------------------------------------------- configs run no code
@case("cli-network-config-dollar-expression", CLIFailed, r"^exit 2: error: network config '.*net\.json' key "
      r"'num_classes' holds a '\$' expression.*--trust_config")
def _(ctx):
    net = _json(ctx.tmp / "net.json", _small_cnn_config(num_classes=_touch(ctx)))
    return _upfront(_cli(*_robustness(ctx, network=net))), _no_marker(ctx)


@case("cli-network-config-dollar-behind-a-reference", CLIFailed, r"^exit 2: error: network config '.*net\.json' key "
      r"'classes' \(used by 'network_def::num_classes'\) holds a '\$' expression.*--trust_config")
def _(ctx):
    config = {"network_def": _small_cnn_config(num_classes="@classes"), "classes": _touch(ctx)}
    net = _json(ctx.tmp / "net.json", config)
    return _upfront(_cli(*_robustness(ctx, network=net))), _no_marker(ctx)


@case("cli-network-config-macro", CLIFailed, r"^exit 2: error: network config '.*net\.json' key 'num_classes' "
      r"holds a '%' macro.*--trust_config")
def _(ctx):
    other = _json(ctx.tmp / "other.json", {"n": _touch(ctx)})  # the macro pulls an expression from another file
    net = _json(ctx.tmp / "net.json", _small_cnn_config(num_classes=f"%{other}#n"))
    return _upfront(_cli(*_robustness(ctx, network=net))), _no_marker(ctx)


@case("cli-network-config-foreign-target", CLIFailed, r"^exit 2: error: network config '.*net\.json': "
      r"_target_ 'os\.system' is not a torch\.nn\.Module class.*--trust_config")
def _(ctx):
    net = _json(ctx.tmp / "net.json", {"_target_": "os.system", "command": f"touch '{_marker(ctx)}'"})
    return _upfront(_cli(*_robustness(ctx, network=net))), _no_marker(ctx)


@case("cli-network-config-target-reached-through-torch", CLIFailed, r"^exit 2: error: network config '.*net\.json': "
      r"_target_ 'torch\.os\.system' is not a torch\.nn\.Module class.*--trust_config")
def _(ctx):  # torch imports os: the dotted name starts with 'torch' but is os.system
    net = _json(ctx.tmp / "net.json", {"_target_": "torch.os.system", "command": f"touch '{_marker(ctx)}'"})
    return _upfront(_cli(*_robustness(ctx, network=net))), _no_marker(ctx)


@case("cli-network-config-code-loading-torch-function", CLIFailed, r"^exit 2: error: network config '.*net\.json': "
      r"_target_ 'torch\.hub\.load' is not a torch\.nn\.Module class or a network factory.*--trust_config")
def _(ctx):  # inside a trusted package, but it imports the repository's hubconf.py
    repo = ctx.tmp / "repo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(f"import pathlib\npathlib.Path({str(_marker(ctx))!r}).touch()\n"
                                     "def m():\n    import torch\n    return torch.nn.Conv2d(3, 2, 3)\n")
    net = _json(ctx.tmp / "net.json", {"_target_": "torch.hub.load", "repo_or_dir": str(repo), "model": "m",
                                       "source": "local", "trust_repo": True})
    return _upfront(_cli(*_robustness(ctx, network=net))), _no_marker(ctx)


@case("cli-gradcam-models-dollar-expression", CLIFailed, r"^exit 2: error: model spec '.*models\.json' key "
      r"'STD::network::num_classes' holds a '\$' expression.*--trust_config")
def _(ctx):
    models = _json(ctx.tmp / "models.json", {"STD": {"network": _small_cnn_config(num_classes=_touch(ctx))}})
    return _upfront(_cli(*_gradcam(ctx, models=models))), _no_marker(ctx)


# ---------------------------------------------------------------------------------------------- the output folder
@contextlib.contextmanager
def _read_only(folder: Path):
    """Creating a file in ``folder`` fails with EROFS (as root, permission bits would not stop the test):
    ``os.open`` is what ``tempfile.mkstemp`` and the atomic writers create files with."""
    real = os.open

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and Path(os.fsdecode(path)).resolve().parent == folder.resolve():
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real(path, flags, *args, **kwargs)

    with mock.patch.object(os, "open", fake_open):
        yield


@case("cli-output-dir-read-only-runs-nothing", CLIFailed, r"^exit 2: error: output_dir '.*out' is not writable: "
      r"Read-only file system")
def _(ctx):
    call = _upfront(_cli(*_robustness(ctx, output_dir=str(ctx.tmp / "out"))))

    def run():
        with _read_only(ctx.tmp / "out"):
            call()

    return run


@case("cli-output-dir-under-a-file-runs-nothing", CLIFailed, r"^exit 2: error: output_dir '.*model\.pt/report' "
      r"cannot be created: '.*model\.pt' is not a folder")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, output_dir=str(ctx.tmp / "out" / "model.pt" / "report"))))


@case("cli-gradcam-output-dir-under-a-file-runs-nothing", CLIFailed, r"^exit 2: error: output_dir "
      r"'.*model\.pt/cams' cannot be created")
def _(ctx):
    return _upfront(_cli(*_gradcam(ctx, output_dir=ctx.tmp / "out" / "model.pt" / "cams")))


@contextlib.contextmanager
def _disk_fills_up(free: int = 4096):
    """Files written (``fsync``-ed) after the first ``free`` bytes fail with ENOSPC, as a full disk reports them."""
    real, used = os.fsync, [0]

    def fsync(fd):
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode):
            used[0] += info.st_size
            if used[0] > free:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    with mock.patch.object(os, "fsync", fsync):
        yield


@case("cli-report-write-disk-full", CLIFailed, r"^exit 2: error: cannot write report to '.*report': "
      r"No space left on device")
def _(ctx):  # the suite runs; the report (PNG plots: tens of KB) does not fit
    call = _cli(*_robustness(ctx))

    def run():
        with _disk_fills_up():
            call()

    return run


# ---------------------------------------------------------------------------------------------- values
@case("cli-device-cuda-without-gpu", CLIFailed, r"^exit 2: error: --device 'cuda(:\d+)?': "
      r"(no CUDA GPU is usable here|this machine has \d+ CUDA device)")
def _(ctx):
    device = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"  # one that is not there
    return _upfront(_cli(*_robustness(ctx, device=device)))


@case("cli-3d-volume-into-2d-classification", CLIFailed, r"^exit 2: error: image '.*vol\.nii\.gz' is a 3D volume of "
      r"shape \(12, 12, 12\), but classification takes 2D images .*\(C, H, W\)")
def _(ctx):
    volume = _nifti(ctx.tmp / "vol.nii.gz", np.random.default_rng(0).random((12, 12, 12)).astype(np.float32))
    datalist = _json(ctx.tmp / "datalist.json", {"test": [{"image": str(volume), "label": 0}]})
    return _cli(*_robustness(ctx, data=None, datalist=datalist))


@case("cli-3d-volume-into-2d-segmentation-network", CLIFailed, r"^exit 2: error: image '.*vol\.nii\.gz' is a 3D volume "
      r"of shape \(16, 16, 16\), but the network is 2D and takes \(C, H, W\) images")
def _(ctx):
    rng = np.random.default_rng(0)
    volume = _nifti(ctx.tmp / "vol.nii.gz", rng.random((16, 16, 16)).astype(np.float32) + 1)
    label = _nifti(ctx.tmp / "lab.nii.gz", (rng.random((16, 16, 16)) > 0.5).astype(np.uint8))
    datalist = _json(ctx.tmp / "datalist.json", {"test": [{"image": str(volume), "label": str(label)}]})
    net, ckpt = _unet_2d(ctx, in_channels=1)
    return _cli(*_robustness(ctx, task="segmentation", network=net, checkpoint=ckpt, data=None, datalist=datalist,
                             image_size=None, roi_size="16", hd95="False"))


@case("cli-image-size-zero", CLIFailed, r"^exit 2: error: --image_size must be >= 1, got 0")
def _(ctx):  # fire passed 0 on and the images kept their size
    return _upfront(_cli(*_robustness(ctx, image_size="0")))


@case("cli-limit-zero", CLIFailed, r"^exit 2: error: --limit must be >= 1, got 0")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, limit="0")))


@case("cli-num-classes-not-an-integer", CLIFailed, r"^exit 2: error: --num_classes must be an integer >= 1, got 'two'")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, num_classes="two")))


@case("cli-num-classes-zero", CLIFailed, r"^exit 2: error: --num_classes must be >= 1, got 0")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, num_classes="0")))


@case("cli-batch-size-fraction", CLIFailed, r"^exit 2: error: --batch_size must be an integer >= 1, got 2\.5")
def _(ctx):  # int(2.5) silently gave batches of 2
    return _upfront(_cli(*_robustness(ctx, batch_size="2.5")))


@case("cli-gradcam-n-images-zero", CLIFailed, r"^exit 2: error: --n_images must be >= 1, got 0")
def _(ctx):
    argv = _gradcam(ctx)
    argv[argv.index("--n_images") + 1] = "0"
    return _upfront(_cli(*argv))


# ---------------------------------------------------------------------------------------------- budgets
@case("cli-eps-above-value-range", CLIFailed, r"^exit 2: error: --eps 1e\+06 is above the data's value range "
      r"\(1: the images are scaled to \[0, 1\]\)")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, eps="1e6")))


@case("cli-eps-sweep-above-value-range", CLIFailed, r"^exit 2: error: --eps 1\.17647 is above the data's value range")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, eps="2/255,300/255")))


@case("cli-eps-negative", CLIFailed, r"^exit 2: error: --eps must be >= 0, got '-2/255'")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, eps="-2/255")))


@case("cli-eps-nan", CLIFailed, r"^exit 2: error: --eps must be a finite number, got 'nan'")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, eps="nan")))


@case("cli-eps-inf", CLIFailed, r"^exit 2: error: --eps must be a finite number, got 'inf'")
def _(ctx):
    return _upfront(_cli(*_robustness(ctx, eps="inf")))


@case("cli-demo-eps-above-value-range", CLIFailed, r"^exit 2: error: --eps 8 is above the data's value range")
def _(ctx):  # 8 meant as 8/255
    return _upfront(_cli("demo", "--data", str(_ham_root(ctx.tmp)), "--eps", "8", "--n_train", "1", "--n_test", "1",
                         "--image_size", "16", "--attacks", "fgsm", "--output_dir", str(ctx.tmp / "out")))



# ---------------------------------------------------------------------------------------------- the report folder
@case("cli-output-dir-empty-string-runs-nothing", CLIFailed, r"^exit 2: error: --output_dir is empty; give a folder")
def _(ctx):  # "" was the current directory: the report replaced it (and left the shell in a deleted folder)
    return _upfront(_cli(*_robustness(ctx, output_dir="")))


@case("cli-output-dir-with-foreign-files-runs-nothing", CLIFailed, r"^exit 2: error: output_dir '.*out' holds entries "
      r"that are not part of a previous report \('model\.pt', 'small_cnn\.pt'\).*give an empty folder or a previous report's folder")
def _(ctx):  # the swap would have replaced the folder holding the checkpoint
    return _before_data(_cli(*_robustness(ctx, output_dir=str(ctx.tmp / "out"))))


def _before_data(call):
    """``call`` with reading the data and attacking replaced by an ``AssertionError`` (the weights may be read)."""

    def run():
        from monai_dpaat import data
        from monai_dpaat.evaluation import RobustnessEvaluator

        work = [(data, "ham10000_datalists"), (data, "nuinsseg_datalist"), (RobustnessEvaluator, "__call__"),
                (RobustnessEvaluator, "sweep")]
        with contextlib.ExitStack() as stack:
            for owner, name in work:
                stack.enter_context(mock.patch.object(owner, name, _forbidden(f"{owner.__name__}.{name}")))
            call()

    return run


@case("cli-output-dir-dangling-symlink-runs-nothing", CLIFailed, r"^exit 2: error: output_dir '.*link' is a broken "
      r"symlink \(to '.*gone'\)")
def _(ctx):
    os.symlink(ctx.tmp / "gone", ctx.tmp / "link")
    return _upfront(_cli(*_robustness(ctx, output_dir=str(ctx.tmp / "link"))))


@case("cli-output-dir-symlink-loop-runs-nothing", CLIFailed, r"^exit 2: error: output_dir '.*loop' is a symlink loop")
def _(ctx):
    os.symlink(ctx.tmp / "loop", ctx.tmp / "loop")
    return _upfront(_cli(*_robustness(ctx, output_dir=str(ctx.tmp / "loop"))))


# ---------------------------------------------------------------------------------------------- data errors
def _jpgs(ctx, n: int = 2) -> list[str]:
    from reliability_table import _jpg

    return [str(_jpg(ctx.tmp / f"img{i}.jpg", seed=i)) for i in range(n)]


def _labelled(ctx, labels) -> str:
    items = [{"image": image, "label": label} for image, label in zip(_jpgs(ctx, len(labels)), labels)]
    return _json(ctx.tmp / "datalist.json", {"test": items})


for _label, _shown in ((0.5, r"0\.5"), (-1, "-1"), ("nv", "'.*nv'"), (None, "None"), (2, "2")):
    @case(f"cli-datalist-label-{_label}-runs-nothing", CLIFailed, r"^exit 2: error: datalist '.*datalist\.json' item 1: "
          rf"label {_shown} of '.*img1\.jpg' is not a class index: expected an integer in \[0, 1\]")
    def _(ctx, label=_label):
        return _upfront(_cli(*_robustness(ctx, data=None, datalist=_labelled(ctx, [0, label]))))


@case("cli-datalist-image-missing-runs-nothing", CLIFailed, r"^exit 2: error: datalist '.*datalist\.json' item 1: "
      r"image '.*nope\.jpg' does not exist")
def _(ctx):
    items = [{"image": _jpgs(ctx, 1)[0], "label": 0}, {"image": str(ctx.tmp / "nope.jpg"), "label": 1}]
    return _upfront(_cli(*_robustness(ctx, data=None, datalist=_json(ctx.tmp / "datalist.json", {"test": items}))))


@case("cli-datalist-image-is-a-folder-runs-nothing", CLIFailed, r"^exit 2: error: datalist '.*datalist\.json' item 0: "
      r"image '.*adir' is a folder")
def _(ctx):
    (ctx.tmp / "adir").mkdir()
    items = [{"image": str(ctx.tmp / "adir"), "label": 0}]
    return _upfront(_cli(*_robustness(ctx, data=None, datalist=_json(ctx.tmp / "datalist.json", {"test": items}))))


@case("cli-datalist-empty-test-split-runs-nothing", CLIFailed, r"^exit 2: error: datalist JSON '.*e\.json' has no "
      r"items under 'test'")
def _(ctx):  # MONAI's reader raised IndexError: list index out of range
    return _upfront(_cli(*_robustness(ctx, data=None, datalist=_json(ctx.tmp / "e.json", {"test": []}))))


@case("cli-truncated-jpeg-is-one-error-line", CLIFailed, r"^exit 2: error: [^\n]*'.*bad\.jpg'[^\n]*\n?$")
def _(ctx):  # found only when its batch is read: MONAI's "applying transform" RuntimeError hid it (exit 1)
    from reliability_table import _corrupt

    items = [{"image": _jpgs(ctx, 1)[0], "label": 0}, {"image": str(_corrupt(ctx.tmp / "bad.jpg")), "label": 1}]
    return _cli(*_robustness(ctx, data=None, datalist=_json(ctx.tmp / "datalist.json", {"test": items})))


@case("cli-nuinsseg-rgb-mask-is-one-error-line", CLIFailed, r"^exit 2: error: mask '.*a\.png' is an RGB image whose "
      r"channels differ[^\n]*\n?$")
def _(ctx):
    from reliability_table import _nuinsseg_root, _png

    root = _nuinsseg_root(ctx.tmp)
    _png(root / "liver" / "mask binary" / "a.png", mode="RGB", seed=3)
    net, ckpt = _unet_2d(ctx, in_channels=3)
    return _cli(*_robustness(ctx, task="segmentation", network=net, checkpoint=ckpt, data=str(root), image_size=None,
                             roi_size="16", hd95="False"))


@case("cli-network-name-unet-refused-runs-nothing", CLIFailed, r"^exit 2: error: --network 'unet' is not a network "
      r"name any more: evaluate a bundle-trained model with --bundle")
def _(ctx):  # the CLI's own UNet (channels 16-128) did not fit a bundle-trained checkpoint (32-256)
    from reliability_table import _nuinsseg_root

    return _upfront(_cli(*_robustness(ctx, task="segmentation", network="unet", data=str(_nuinsseg_root(ctx.tmp)),
                                      image_size=None)))


# ---------------------------------------------------------------------------------------------- --bundle
def _bundle_robustness(ctx, *extra: str, output_dir: str | None = None) -> list[str]:
    """``robustness --bundle`` on a copy of the HAM10000 bundle (quick config) with a model.pt of its network."""
    from reliability_table import _bundle_copy

    root = _bundle_copy(ctx)
    (root / "models").mkdir()
    (root / "models" / "model.pt").write_bytes(Path(_cli_checkpoint(ctx)).read_bytes())
    return ["robustness", "--bundle", str(root), "--config_file", "['configs/quick.json']", "--dataset_dir",
            str(_ham_root(ctx.tmp)), "--n_train", "2", "--n_test", "1", "--image_size", "16", "--attacks", "fgsm",
            "--output_dir", output_dir or str(ctx.tmp / "report"), *extra]


@case("cli-bundle-misspelled-override-runs-nothing", CLIFailed, r"^exit 2: error: unknown config key 'max_epoch' "
      r"\(override --max_epoch\).*did you mean 'max_epochs'")
def _(ctx):
    return _upfront(_cli(*_bundle_robustness(ctx, "--max_epoch", "1")))


@case("cli-bundle-misspelled-flag-runs-nothing", CLIFailed, r"^exit 2: error: robustness: unknown flag --esp; "
      r"did you mean --eps\?")
def _(ctx):
    return _upfront(_cli(*_bundle_robustness(ctx, "--esp", "2/255")))


@case("cli-bundle-missing-extra-config-runs-nothing", CLIFailed, r"^exit 2: error: config file 'configs/nope\.json' "
      r"is neither in the bundle '.*bundle' nor in the working directory")
def _(ctx):
    return _upfront(_cli(*_bundle_robustness(ctx, "--config_file", "configs/nope.json")))


@case("cli-bundle-unreadable-checkpoint-runs-nothing", CLIFailed, r"^exit 2: error: cannot read checkpoint "
      r"'.*empty\.pt': the file is empty")
def _(ctx):
    (ctx.tmp / "empty.pt").write_bytes(b"")
    return _upfront(_cli(*_bundle_robustness(ctx, "--checkpoint", str(ctx.tmp / "empty.pt"))))


@case("cli-bundle-eps-above-value-range-runs-nothing", CLIFailed, r"^exit 2: error: --eps 8 is above the data's "
      r"value range \(1: the images are scaled to \[0, 1\]\)")
def _(ctx):
    return _upfront(_cli(*_bundle_robustness(ctx, "--eps", "8")))


@case("cli-bundle-report-folder-with-foreign-files-runs-nothing", CLIFailed, r"^exit 2: error: output_dir '.*out' "
      r"holds entries that are not part of a previous report")
def _(ctx):
    return _upfront(_cli(*_bundle_robustness(ctx, output_dir=str(ctx.tmp / "out"))))


@case("cli-bundle-network-flag-refused-runs-nothing", CLIFailed, r"^exit 2: error: --network does not apply with "
      r"--bundle \(the bundle's configs define it\)$")
def _(ctx):  # it replaced the bundle's network object by the string 'unet', then failed with a traceback
    return _upfront(_cli(*_bundle_robustness(ctx, "--network", "unet")))


@case("cli-bundle-task-flag-refused-runs-nothing", CLIFailed, r"^exit 2: error: --task does not apply with --bundle "
      r"\(the bundle's configs define it\)$")
def _(ctx):  # it said "unknown config key 'task'"
    return _upfront(_cli(*_bundle_robustness(ctx, "--task", "segmentation")))


# ---------------------------------------------------------------------------------------------- --attacks files
@case("cli-attacks-file-old-spec-list-runs-nothing", CLIFailed, r"^exit 2: error: attack config '.*suite\.json' "
      r"holds a list of \{'name': \.\.\.\} specs, a form that is removed; write a \{label: \{'_target_': "
      r"'monai_dpaat\.attacks\.<Class>'")
def _(ctx):
    suite = _json(ctx.tmp / "suite.json", [{"name": "pgd", "steps": 3}])
    return _upfront(_cli(*_robustness(ctx, attacks=suite)))


@case("cli-attacks-file-bad-keyword-runs-nothing", CLIFailed, r"^exit 2: error: attack config '.*suite\.json': "
      r"attack 'P' \(PGD\) takes no keyword 'stepz'; its keywords: eps, alpha, steps")
def _(ctx):
    suite = _json(ctx.tmp / "suite.json", {"P": {"_target_": "monai_dpaat.attacks.PGD", "stepz": 3}})
    return _upfront(_cli(*_robustness(ctx, attacks=suite)))


@case("cli-attacks-file-foreign-target-runs-nothing", CLIFailed, r"^exit 2: error: attack config '.*suite\.json': "
      r"attack 'P' has _target_ 'os\.system'; an attacks file builds only the attack classes of "
      r"monai_dpaat\.attacks .*--trust_config")
def _(ctx):
    suite = _json(ctx.tmp / "suite.json", {"P": {"_target_": "os.system", "command": f"touch '{_marker(ctx)}'"}})
    return _upfront(_cli(*_robustness(ctx, attacks=suite))), _no_marker(ctx)


@case("cli-attacks-file-dollar-expression-runs-nothing", CLIFailed, r"^exit 2: error: attack config '.*suite\.json' "
      r"key 'P#steps' holds a '\$' expression.*--trust_config")
def _(ctx):
    suite = _json(ctx.tmp / "suite.json", {"P": {"_target_": "monai_dpaat.attacks.PGD", "steps": _touch(ctx)}})
    return _upfront(_cli(*_robustness(ctx, attacks=suite))), _no_marker(ctx)
