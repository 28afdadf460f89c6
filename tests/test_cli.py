"""The command line: error paths exit non-zero with a one-line message (no traceback); the robustness
command evaluates real sample data end to end; the demo trains and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_dpaat.cli import CLIError, main

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


@pytest.fixture(scope="module")
def small_cnn_checkpoint(tmp_path_factory):
    from monai_dpaat.networks import build_classifier

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "small_cnn.pt"
    torch.save({"model": build_classifier("small_cnn", num_classes=2, in_channels=3).state_dict()}, path)
    return path


def _fails(capsys, argv, message):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    return err


def test_error_paths_exit_non_zero_with_a_message(capsys, tmp_path, small_cnn_checkpoint, data_dir):
    ckpt, ham = str(small_cnn_checkpoint), str(data_dir / "ham10000")
    base = ["robustness", "--network", "small_cnn", "--checkpoint", ckpt, "--data", ham, "--output_dir", str(tmp_path)]
    err = _fails(capsys, base + ["--attacks", "fgsm,nope"], "unknown attack or preset 'nope'")
    assert "dpaat-table" in err and "pgd" in err  # lists what is known
    _fails(capsys, base + ["--attacks", "unet-papr"], "unknown attack or preset 'unet-papr'")
    _fails(capsys, ["robustness", "--network", "resnet_9000", "--checkpoint", ckpt, "--data", ham],
           "unknown model 'resnet_9000'")
    _fails(capsys, ["robustness", "--network", "small_cnn", "--checkpoint", str(tmp_path / "missing.pt"), "--data", ham],
           "missing.pt' does not exist")
    _fails(capsys, ["robustness", "--network", "small_cnn", "--data", ham], "--network needs --checkpoint")
    _fails(capsys, ["robustness", "--network", "small_cnn", "--checkpoint", ckpt, "--data", str(tmp_path / "nodata")],
           "nodata' does not exist")
    _fails(capsys, ["robustness", "--bundle", str(tmp_path / "nobundle")], "bundle folder")
    _fails(capsys, base + ["--eps", "8/zero"], "eps must be a number")
    _fails(capsys, ["robustness", "--network", "small_cnn", "--checkpoint", ckpt, "--num_classes", "3", "--data", ham],
           "does not fit the network")
    _fails(capsys, ["combine", str(tmp_path / "none.json")], "does not exist")
    _fails(capsys, ["demo", "--data", str(tmp_path / "nodata")], "does not exist")
    for name in ("unet", "attention-unet++"):
        _fails(capsys, ["robustness", "--task", "segmentation", "--network", name, "--checkpoint", ckpt, "--data", ham],
               f"--network {name!r} is not a network name any more: evaluate a bundle-trained model with --bundle")


def test_module_entry_point_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "monai_dpaat", "robustness", "--attacks", "bogus-attack"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error: unknown attack or preset 'bogus-attack'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_robustness_command_on_real_ham10000_with_an_eps_sweep(capsys, tmp_path, small_cnn_checkpoint, data_dir):
    out = tmp_path / "report"
    code = main(["robustness", "--network", "small_cnn", "--checkpoint", str(small_cnn_checkpoint),
                 "--data", str(data_dir / "ham10000"), "--limit", "6", "--image_size", "32", "--attacks", "fgsm,10-ifgsm",
                 "--eps", "2/255,8/255", "--output_dir", str(out), "--progress", "False", "--name", "STD"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| Attack | STD |" in captured.out and "| Worst case |" in captured.out
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["STD"]["num_samples"] == 6
    assert report["models"]["STD"]["class_names"] == ["mel", "nv"]
    assert set(report["sweeps"]["STD"]) == {repr(2 / 255), repr(8 / 255)}
    assert (out / "accuracy_vs_eps.png").read_bytes()[:4] == b"\x89PNG"
    # the table is the largest budget's
    assert report["models"]["STD"]["attacks"]["FGSM"]["eps"] == pytest.approx(8 / 255)
    # a second model's report combines with this one into one table
    code = main(["combine", str(out), str(out / "report.json"), "--names", "STD,AT", "--output_dir", str(tmp_path / "c")])
    assert code == 0
    combined = json.loads((tmp_path / "c" / "report.json").read_text())
    assert combined["tables"]["accuracy"]["columns"] == ["STD", "AT"]


@pytest.mark.slow
def test_robustness_from_a_bundle_with_its_extra_config_and_overrides(capsys, tmp_path, small_cnn_checkpoint,
                                                                       data_dir):
    """``robustness --bundle`` builds everything from the bundle's configs (+ quick.json, + overrides), as
    ``python -m monai.bundle run`` does; the CLI's flags set its robustness keys."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES / "ham10000_dpaat_classification" / "configs", bundle / "configs")
    out = tmp_path / "report"
    code = main(["robustness", "--bundle", str(bundle), "--config_file", "configs/quick.json", "--checkpoint",
                 str(small_cnn_checkpoint), "--dataset_dir", str(data_dir / "ham10000"), "--n_train", "4",
                 "--n_test", "2", "--image_size", "32", "--attacks", "fgsm,10-pgd", "--eps", "2/255,8/255",
                 "--limit", "3", "--name", "STD", "--device", "cpu", "--output_dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["STD"]["num_samples"] == 3
    attacks = report["models"]["STD"]["attacks"]
    assert list(attacks) == ["FGSM", "10-PGD"] and attacks["10-PGD"]["steps"] == 10
    assert attacks["FGSM"]["eps"] == pytest.approx(8 / 255)  # the table is the largest budget's
    assert set(report["sweeps"]["STD"]) == {repr(2 / 255), repr(8 / 255)}
    assert not (bundle / "models").exists()  # nothing trained: the checkpoint given was evaluated


@pytest.mark.slow
def test_robustness_command_segmentation_from_a_network_config(capsys, tmp_path, data_dir):
    from monai.bundle import ConfigParser

    config = {"_target_": "monai.networks.nets.UNet", "spatial_dims": 2, "in_channels": 3, "out_channels": 1,
              "channels": [4, 8], "strides": [2], "num_res_units": 0}
    (tmp_path / "net.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    torch.save(ConfigParser(config).get_parsed_content().state_dict(), tmp_path / "unet.pt")
    code = main(["robustness", "--task", "segmentation", "--network", str(tmp_path / "net.json"),
                 "--checkpoint", str(tmp_path / "unet.pt"), "--data", str(data_dir / "nuclei_he"), "--limit", "1",
                 "--roi_size", "96", "--attacks", "fgsm", "--hd95", "False", "--output_dir", str(tmp_path / "out"),
                 "--progress", "False"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["task"] == "segmentation"
    assert list(report["tables"]["dice"]["rows"]) == ["Original", "FGSM", "Worst case"]
    assert "| Attack | model |" in captured.out


@pytest.mark.slow
def test_demo_trains_and_reports(capsys, tmp_path, data_dir):
    code = main(["demo", "--data", str(data_dir / "ham10000"), "--output_dir", str(tmp_path), "--epochs", "1",
                 "--n_train", "16", "--n_test", "4", "--image_size", "32", "--batch_size", "8",
                 "--attacks", "fgsm,10-ifgsm", "--progress", "False"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "epoch 1/1: loss" in captured.out
    assert "| 10-IFGSM |" in captured.out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["tables"]["accuracy"]["columns"] == ["STD"]
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "report.md").is_file()
    # the saved weights evaluate again from the bundle (a copy holding them as models/model.pt) and from a
    # Decathlon datalist of the same test images
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES / "ham10000_dpaat_classification" / "configs", bundle / "configs")
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes())
    same_run = ["--config_file", "['configs/quick.json']", "--dataset_dir", str(data_dir / "ham10000"),
                "--n_train", "16", "--n_test", "4", "--image_size", "32", "--batch_size", "8"]
    code = main(["robustness", "--bundle", str(bundle), *same_run, "--attacks", "fgsm,10-ifgsm", "--name", "model",
                 "--device", "cpu", "--output_dir", str(tmp_path / "again")])
    assert code == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["models"]["model"]["rows"] == report["models"]["STD"]["rows"]
    from monai_dpaat.data import ham10000_datalists

    tests = [{"image": i["image"], "label": i["label"]} for i in ham10000_datalists(
        data_dir / "ham10000", classes=("mel", "nv"), n_train=16, n_test=4, val_fraction=0.2)["test"]]
    (tmp_path / "datalist.json").write_text(json.dumps({"test": tests}))
    code = main(["robustness", "--network", "small_cnn", "--checkpoint", str(tmp_path / "model.pt"), "--datalist",
                 str(tmp_path / "datalist.json"), "--image_size", "32", "--batch_size", "8", "--attacks",
                 "fgsm,10-ifgsm", "--output_dir", str(tmp_path / "again2"), "--progress", "False"])
    assert code == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "again2" / "report.json").read_text())
    assert again["models"]["model"]["rows"] == report["models"]["STD"]["rows"]
    (bundle / "models" / "model.pt").unlink()
    capsys.readouterr()  # the bundle run's progress bars
    _fails(capsys, ["robustness", "--bundle", str(bundle), *same_run], "model.pt' does not exist")


def test_gradcam_subcommand_is_wired(capsys):
    try:
        import monai_dpaat.evaluation.gradcam  # noqa: F401
    except ImportError:
        _fails(capsys, ["gradcam"], "Grad-CAM is unavailable")
    else:
        _fails(capsys, ["gradcam"], "missing required flag(s) --models, --data_dir, --output_dir")
        _fails(capsys, ["gradcam", "--models", "x.json", "--data_dir", ".", "--output_dir", ".", "--bogus", "1"],
               "gradcam: unknown flag --bogus")
        _fails(capsys, ["gradcam", "--models", "x.json", "--data_dir", ".", "--output_dir", ".", "--transform", "x"],
               "unknown flag --transform")  # a Python callable: not a command-line flag


def test_attack_suite_from_a_yaml_config(tmp_path, capsys):
    from monai_dpaat.cli import _parse_attacks
    from monai_dpaat.evaluation import build_suite

    (tmp_path / "suite.yaml").write_text("FGSM: {_target_: monai_dpaat.attacks.FGSM, eps: 0.01}\n"
                                         "PGD-5: {_target_: monai_dpaat.attacks.PGD, steps: 5}\n")
    suite = build_suite(_parse_attacks(str(tmp_path / "suite.yaml")))
    assert [e.label for e in suite] == ["FGSM", "PGD-5"]
    assert suite[0].attack.eps == 0.01 and suite[1].attack.steps == 5
    _fails(capsys, ["robustness", "--attacks", str(tmp_path / "missing.yaml")], "missing.yaml' does not exist")
    (tmp_path / "bad.json").write_text('{"attacks": "pgd"}')
    _fails(capsys, ["robustness", "--attacks", str(tmp_path / "bad.json")],
           "attack 'attacks' must be a {'_target_': 'monai_dpaat.attacks.<Class>', ...} config, got 'pgd'")


# --------------------------------------------------------------------------- the command line is checked first
def test_help_for_every_command_exits_0(capsys):
    from monai_dpaat.cli import COMMANDS

    for command in COMMANDS:
        for flag in ("--help", "-h"):
            assert main([command, flag]) == 0, command
            out = capsys.readouterr().out
            assert out.startswith(f"usage: monai-dpaat {command}"), out
    assert main(["robustness", "--eps", "8/255", "--help"]) == 0  # help wins over the rest of the line
    out = capsys.readouterr().out
    assert "--eps" in out and "--trust_config" in out and "(default: 'dpaat-table')" in out
    assert main(["gradcam", "--help"]) == 0  # gradcam_cli's flags, not **kwargs
    out = capsys.readouterr().out
    assert "--models" in out and "(required)" in out and "--n_images" in out and "--transform" not in out
    assert main(["--help"]) == 0 and "robustness" in capsys.readouterr().out
    _fails(capsys, [], "give a command")


def test_module_help_subprocess_exits_0():
    proc = subprocess.run([sys.executable, "-m", "monai_dpaat", "gradcam", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: monai-dpaat gradcam --models MODELS")


def test_unknown_flags_are_named_with_the_closest_valid_one(capsys):
    _fails(capsys, ["robustness", "--esp", "2/255"], "robustness: unknown flag --esp; did you mean --eps?")
    _fails(capsys, ["robustness", "--output-dri=x"], "unknown flag --output-dri; did you mean --output_dir?")
    _fails(capsys, ["demo", "--epoch", "1"], "demo: unknown flag --epoch; did you mean --epochs?")
    _fails(capsys, ["combine", "a.json", "--name", "A"], "combine: unknown flag --name; did you mean --names?")
    err = _fails(capsys, ["presets", "--bogus"], "presets: unknown flag --bogus")
    assert "did you mean" not in err
    _fails(capsys, ["presets", "extra"], "presets: unexpected argument 'extra'")
    _fails(capsys, ["robustness", "-x", "1"], "unknown flag -x")  # no flag starts with x
    _fails(capsys, ["robustnes"], "unknown command 'robustnes'; did you mean 'robustness'?")


def test_parse_command_line_follows_fire_syntax():
    from monai_dpaat.cli import parse_command_line

    args, kwargs = parse_command_line("robustness", ["--eps=2/255,8/255", "--nohd95", "--progress", "--limit", "4",
                                                     "--classes", "mel,nv", "--seed", "-1",
                                                     "--output-dir", "out", "--roi_size", "None"])
    assert args == []
    assert kwargs == {"eps": "2/255,8/255", "hd95": False, "progress": True, "limit": 4, "classes": ("mel", "nv"),
                      "seed": -1, "output_dir": "out", "roi_size": None}
    assert parse_command_line("robustness", ["-e", "8/255"])[1] == {"eps": "8/255"}  # a unique first letter
    assert parse_command_line("combine", ["a", "b", "--names", "A,B"]) == (["a", "b"], {"names": ("A", "B")})


def test_values_are_checked_before_any_work(capsys, tmp_path, small_cnn_checkpoint):
    base = ["robustness", "--network", "small_cnn", "--checkpoint", str(small_cnn_checkpoint), "--data", str(tmp_path)]
    _fails(capsys, base + ["--limit", "0"], "--limit must be >= 1, got 0")
    _fails(capsys, base + ["--image_size", "0"], "--image_size must be >= 1, got 0")
    _fails(capsys, base + ["--roi_size", "-1"], "--roi_size must be >= 0, got -1")
    _fails(capsys, base + ["--num_classes", "2.5"], "--num_classes must be an integer >= 1, got 2.5")
    _fails(capsys, base + ["--hd95", "maybe"], "--hd95 must be True or False")
    _fails(capsys, base + ["--task", "detection"], "--task must be 'classification' or 'segmentation'")
    _fails(capsys, base + ["--device", "gpu0"], "--device 'gpu0' is not a device")
    _fails(capsys, base + ["--eps", "1e6"], "--eps 1e+06 is above the data's value range")
    _fails(capsys, base + ["--eps", "nan"], "--eps must be a finite number")
    _fails(capsys, base + ["--eps", "-2/255"], "--eps must be >= 0")
    _fails(capsys, base + ["--classes", ","], "--classes must name the HAM10000 classes")
    _fails(capsys, base + ["--network", "x"], "--network is given twice")
    _fails(capsys, ["demo", "--lr", "0"], "--lr must be a finite number > 0")
    _fails(capsys, ["demo", "--epochs", "0"], "--epochs must be >= 1")
    _fails(capsys, ["gradcam", "--models", "m.json", "--data_dir", ".", "--output_dir", ".", "--spatial_size", "0"],
           "--spatial_size must be >= 1, got 0")


def test_a_large_eps_warns(capsys, caplog, tmp_path, small_cnn_checkpoint):
    from monai_dpaat.cli import check_eps_range

    (tmp_path / "file").write_text("")
    with caplog.at_level("WARNING", logger="monai_dpaat.cli"):
        _fails(capsys, ["robustness", "--network", "small_cnn", "--checkpoint", str(small_cnn_checkpoint), "--data",
                        str(tmp_path), "--eps", "100/255", "--output_dir", str(tmp_path / "file" / "out")],
               "cannot be created")  # the output folder is checked right after the budget
    assert [r.getMessage() for r in caplog.records if "64/255" in r.getMessage()] == [
        "--eps 0.3922 is more than 64/255 of the data's value range [0, 1]: such a perturbation can change what the "
        "image shows; was 8/255 meant?"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="monai_dpaat.cli"):
        check_eps_range([8 / 255, 64 / 255], 1.0)
        check_eps_range([5.0], None)  # z-scored volumes: no bound is known before the data is read
    assert not caplog.records


def test_check_output_dir_creates_nothing(tmp_path):
    from monai_dpaat.cli import CLIError, check_output_dir

    assert check_output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []  # probed in the nearest existing folder, then removed
    (tmp_path / "f").write_text("x")
    with pytest.raises(CLIError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(CLIError, match="cannot be created: '.*f' is not a folder"):
        check_output_dir(tmp_path / "f" / "sub")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


# --------------------------------------------------------------------------- what configs may build
def test_network_configs_build_safe_content_and_refuse_code_unless_trusted(tmp_path):
    from monai_dpaat.cli import UnsafeConfigError, load_network

    safe = {"network_def": {"_target_": "UNet", "spatial_dims": 2, "in_channels": "@channels", "out_channels": 1,
                            "channels": [4, 8], "strides": [2]},
            "channels": 3, "unused": "$print('not built, not checked')"}
    (tmp_path / "safe.json").write_text(json.dumps(safe))
    net = load_network(str(tmp_path / "safe.json"), "segmentation")
    assert type(net).__name__ == "UNet"
    factory = {"_target_": "torchvision.models.resnet18", "num_classes": 2}
    (tmp_path / "factory.yaml").write_text(json.dumps(factory))  # JSON is YAML
    assert type(load_network(str(tmp_path / "factory.yaml"))).__name__ == "ResNet"

    marker = tmp_path / "ran"
    code = {"_target_": "monai_dpaat.networks.build_classifier", "name": "small_cnn",
            "num_classes": f"$__import__('pathlib').Path({str(marker)!r}).touch() or 2"}
    (tmp_path / "code.json").write_text(json.dumps(code))
    with pytest.raises(UnsafeConfigError, match=r"code\.json' key 'num_classes' holds a '\$' expr.*--trust_config"):
        load_network(str(tmp_path / "code.json"))
    assert not marker.exists()
    assert type(load_network(str(tmp_path / "code.json"), trust_config=True)).__name__ == "SmallCNN"
    assert marker.exists()  # the user vouched for the file
    for bad, message in (({"_target_": "monai.bundle.run", "config_file": "x.json"}, "'monai.bundle.run' is not"),
                         ({"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 3,
                           "_mode_": "debug"}, "_mode_ 'debug' is not allowed"),
                         ({"_target_": "$torch.nn.Conv2d"}, "_target_ must be a name")):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(UnsafeConfigError, match=message):
            load_network(str(tmp_path / "bad.json"))


def test_bundle_configs_are_trusted_like_code(capsys, tmp_path, small_cnn_checkpoint):
    """A --bundle is the user's own code (as for ``python -m monai.bundle run``): its '$' network_def runs."""
    import numpy as np
    from PIL import Image

    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(small_cnn_checkpoint.read_bytes())
    train = {"bundle_root": ".", "ckpt_dir": "$@bundle_root + '/models'", "output_dir": "$@bundle_root + '/eval'",
             "device": "$torch.device('cpu')", "datalist": None, "image_size": 64, "progress": True,
             "network_def": "$@net.train(False)", "network": "@network_def",
             "net": {"_target_": "monai_dpaat.networks.build_classifier", "name": "small_cnn", "num_classes": 2}}
    robustness = {
        "imports": ["$import monai_dpaat", "$import monai_dpaat.data", "$import monai_dpaat.evaluation",
                    "$import monai_dpaat.utils"],
        "robustness_preset": "dpaat-table", "robustness_eps": "$8/255", "robustness_eps_sweep": [],
        "robustness_attacks": {"_target_": "monai_dpaat.evaluation.preset", "name": "@robustness_preset",
                               "eps": "@robustness_eps"},
        "robustness_max_samples": None, "robustness_dir": "$@output_dir + '/robustness'",
        "model_path": "$@ckpt_dir + '/model.pt'", "model_name": "model",
        "data": "$monai_dpaat.data.load_datalist(@datalist, 'test')",
        "transform": "$monai_dpaat.data.ham10000_transforms(@image_size, train=False)",
        "loader": {"_target_": "DataLoader", "batch_size": 2,
                   "dataset": {"_target_": "Dataset", "data": "@data", "transform": "@transform"}},
        "evaluator": {"_target_": "monai_dpaat.evaluation.RobustnessEvaluator", "attacks": "@robustness_attacks",
                      "max_samples": "@robustness_max_samples", "device": "@device", "progress": "@progress"},
        "result": "$@evaluator(@network, @loader)",
        "run": ["$monai_dpaat.utils.load_weights(@network, @model_path)",
                "$monai_dpaat.evaluation.write_report({@model_name: @result}, @robustness_dir)"]}
    (bundle / "configs" / "train.json").write_text(json.dumps(train))
    (bundle / "configs" / "robustness.json").write_text(json.dumps(robustness))
    rng = np.random.default_rng(0)
    items = []
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        items.append({"image": str(tmp_path / f"{i}.png"), "label": i})
    (tmp_path / "datalist.json").write_text(json.dumps({"test": items}))
    code = main(["robustness", "--bundle", str(bundle), "--datalist", str(tmp_path / "datalist.json"), "--image_size",
                 "16", "--attacks", "fgsm", "--output_dir", str(tmp_path / "out"), "--progress", "False"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["models"]["model"]["num_samples"] == 2


def test_boolean_flags_accept_true_and_false_in_any_case(capsys):
    from monai_dpaat.cli import CLIError, _bool_arg, parse_command_line

    _, kwargs = parse_command_line("robustness", ["--progress=false", "--hd95", "TRUE", "--check_masking", "False"])
    assert [_bool_arg(k, v) for k, v in kwargs.items()] == [False, True, False]
    with pytest.raises(CLIError, match="--progress must be True or False"):
        _bool_arg("progress", "no")


def test_an_unusable_device_is_one_line_not_a_dispatcher_dump(monkeypatch):
    from monai_dpaat.cli import CLIError, check_device

    dump = ("Could not run 'aten::empty.memory_format' with arguments from the 'XPU' backend. This could be because "
            "the operator doesn't exist.\n" + "\n".join(f"Backend{i}: registered at aten/src/x.cpp:{i}" for i in range(55)))

    def empty(*args, **kwargs):
        raise NotImplementedError(dump)

    monkeypatch.setattr(torch, "empty", empty)
    with pytest.raises(CLIError) as info:
        check_device("xpu")
    message = str(info.value)
    assert "\n" not in message and message.endswith("from the 'XPU' backend"), message
    monkeypatch.undo()
    if not torch.backends.mps.is_available():
        with pytest.raises(CLIError, match=r"^--device 'mps': no MPS \(Apple GPU\) device is usable here"):
            check_device("mps")


def test_gradcam_n_images_is_capped(capsys, tmp_path):
    from monai_dpaat.evaluation.gradcam import MAX_GRADCAM_IMAGES, gradcam_cli

    _fails(capsys, ["gradcam", "--models", "m.json", "--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "g"),
                    "--n_images", "100000"], f"--n_images must be at most {MAX_GRADCAM_IMAGES} (one grid row per image)")
    with pytest.raises(ValueError, match=f"n_images must be at most {MAX_GRADCAM_IMAGES}"):
        gradcam_cli({}, tmp_path, tmp_path / "g", n_images=MAX_GRADCAM_IMAGES + 1)
    assert list(tmp_path.iterdir()) == []


def test_check_output_dir_refuses_empty_and_broken_links_and_foreign_folders(tmp_path):
    from monai_dpaat.cli import CLIError, check_output_dir
    from monai_dpaat.evaluation import write_report
    from monai_dpaat.evaluation.suite import ORIGINAL, RobustnessResult

    for empty in ("", "  "):
        with pytest.raises(CLIError, match="--output_dir is empty"):
            check_output_dir(empty)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(CLIError, match=r"'.*dangling' is a broken symlink \(to '.*gone'\)"):
        check_output_dir(tmp_path / "dangling")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(CLIError, match=r"'.*loop' is a symlink loop"):
        check_output_dir(tmp_path / "loop")
    with pytest.raises(CLIError, match=r"'.*loop/sub' cannot be used"):
        check_output_dir(tmp_path / "loop" / "sub")
    report = tmp_path / "report"
    write_report(RobustnessResult("classification", {ORIGINAL: {"accuracy": 1.0}}), report, metrics=["accuracy"],
                 plots=False, check_masking=False)
    assert check_output_dir(report, report=True) == report  # a previous report's folder
    (report / "events.out.tfevents").write_text("x")
    with pytest.raises(CLIError, match=r"holds entries that are not part of a previous report "
                                       r"\('events\.out\.tfevents'\).*give an empty folder"):
        check_output_dir(report, report=True)
    assert check_output_dir(report) == report  # a plain writable folder (gradcam)
    assert not (tmp_path / "gone").exists()


# --------------------------------------------------------------------------- --bundle: the bundle's own configs
def test_bundle_command_line_takes_extra_configs_and_overrides():
    from monai_dpaat.cli import parse_command_line

    _, kwargs = parse_command_line("robustness", [
        "--bundle", "b", "--config_file", "['configs/quick.json']", "--config_file", "x.json,y.json",
        "--max_epochs", "1", "--train#trainer#amp", "True", "--image_size", "32", "--eps", "8/255"])
    assert kwargs == {"bundle": "b", "config_file": ["configs/quick.json", "x.json", "y.json"], "max_epochs": 1,
                      "train#trainer#amp": True, "image_size": 32, "eps": "8/255"}


def test_attack_names_with_step_counts_become_target_configs():
    from monai_dpaat.cli import CLIError, _parse_attacks, attack_configs

    assert attack_configs("fgsm,20-pgd,bim", alpha=None) == {  # alpha=None: the classes' default step size
        "FGSM": {"_target_": "monai_dpaat.attacks.FGSM", "eps": "@robustness_eps"},
        "20-PGD": {"_target_": "monai_dpaat.attacks.PGD", "steps": 20, "eps": "@robustness_eps"},
        "BIM": {"_target_": "monai_dpaat.attacks.IFGSM", "eps": "@robustness_eps"}}
    assert attack_configs("dpaat_table") == "dpaat-table"  # a preset: the bundle's robustness_preset
    built = _parse_attacks("10-ifgsm,fgsm,fgsm")
    assert list(built) == ["10-IFGSM", "FGSM", "FGSM (2)"] and built["10-IFGSM"].steps == 10
    with pytest.raises(CLIError, match="one preset"):
        attack_configs("fgsm,dpaat-table")


def test_bundle_config_files_resolve_against_the_bundle_then_the_cwd(tmp_path, monkeypatch):
    from monai_dpaat.utils import bundle_config_files

    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    for name in ("train.json", "robustness.json", "quick.json"):
        (bundle / "configs" / name).write_text("{}")
    (tmp_path / "mine.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    files = bundle_config_files(bundle, ("train.json", "robustness.json"), "['configs/quick.json', 'mine.json']")
    assert files == [bundle / "configs" / "train.json", bundle / "configs" / "robustness.json",
                     bundle / "configs" / "quick.json", Path("mine.json")]
    with pytest.raises(ValueError, match="bundle '.*bundle' has no configs/inference.json"):
        bundle_config_files(bundle, ("inference.json",))


def test_bundle_overrides_are_checked_before_anything_runs(capsys, tmp_path):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES / "ham10000_dpaat_classification" / "configs", bundle / "configs")
    base = ["robustness", "--bundle", str(bundle), "--output_dir", str(tmp_path / "out")]
    _fails(capsys, base + ["--max_epoch", "1"], "unknown config key 'max_epoch' (override --max_epoch)")
    _fails(capsys, base + ["--esp", "8/255"], "robustness: unknown flag --esp; did you mean --eps?")
    _fails(capsys, base + ["--train#trainr#max_epochs", "1"], "'trainr' is not an id at train")
    _fails(capsys, base, "checkpoint '")  # the bundle's own model_path: models/model.pt of the bundle
    assert sorted(p.name for p in bundle.iterdir()) == ["configs"] and not (tmp_path / "out").exists()


def test_flag_checks_live_in_the_library(tmp_path):
    from monai_dpaat.evaluation.gradcam import check_gradcam_args
    from monai_dpaat.utils import check_bool, check_int, unique_keys

    assert check_int("8", "--limit", 1) == 8 and check_int(None, "--limit", optional=True) is None
    with pytest.raises(ValueError, match=r"^--limit must be an integer >= 1, got 1\.5$"):
        check_int(1.5, "--limit", 1)
    assert check_bool("TRUE", "--hd95") is True
    with pytest.raises(ValueError, match=r"^--hd95 must be True or False \(or --hd95 / --nohd95\), got 'no'$"):
        check_bool("no", "--hd95")
    assert list(unique_keys([("PGD", 1), ("FGSM", 2), ("PGD", 3), ("PGD", 4)])) == ["PGD", "FGSM", "PGD (2)", "PGD (3)"]
    with pytest.raises(ValueError, match=r"^--spatial_size must be an integer or two"):
        check_gradcam_args(models={}, data_dir=tmp_path, output_dir=tmp_path, spatial_size=[1, 2, 3])
    with pytest.raises(TypeError):
        check_gradcam_args(models={}, data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_named_multi_step_attacks_step_at_eps_over_4_in_the_bundles_value_range():
    """As the presets: 20-PGD at --eps 4/255 steps 1/255, not the class default 2/255; ``value_range`` is the
    bundle's ``attack_value_range`` when it has one."""
    from monai.bundle import ConfigParser

    from monai_dpaat.cli import attack_configs
    from monai_dpaat.evaluation.presets import preset

    configs = attack_configs("fgsm,20-pgd,gn", value_range="@attack_value_range")
    assert configs["FGSM"] == {"_target_": "monai_dpaat.attacks.FGSM", "eps": "@robustness_eps",
                               "value_range": "@attack_value_range"}  # single step: no alpha
    assert configs["20-PGD"] == {"_target_": "monai_dpaat.attacks.PGD", "steps": 20, "eps": "@robustness_eps",
                                 "alpha": "$@robustness_eps / 4", "value_range": "@attack_value_range"}
    assert "alpha" not in configs["GN"]
    parser = ConfigParser({"robustness_eps": "$4/255", "attack_value_range": [0.0, 1.0], **configs})
    pgd = parser.get_parsed_content("20-PGD")
    assert pgd.alpha == pytest.approx(1 / 255) == pytest.approx(preset("dpaat-table", eps=4 / 255)["20-PGD"].alpha)
    assert "value_range" not in attack_configs("20-pgd")["20-PGD"]  # None: the class default


def _tiny_bundle(tmp_path, checkpoint, **extra) -> Path:
    """A bundle whose configs hold only what ``robustness --bundle`` reads before it runs the bundle."""
    bundle = tmp_path / "tiny"
    (bundle / "configs").mkdir(parents=True, exist_ok=True)
    train = {"bundle_root": ".", "device": "cpu", "network": "$torch.nn.Identity()", "image_size": 16, **extra}
    robustness = {"robustness_preset": "dpaat-table", "robustness_eps": "$8/255", "robustness_eps_sweep": [],
                  "robustness_attacks": None, "robustness_max_samples": None, "model_name": "model",
                  "robustness_dir": str(tmp_path / "out"), "model_path": str(checkpoint)}
    (bundle / "configs" / "train.json").write_text(json.dumps(train))
    (bundle / "configs" / "robustness.json").write_text(json.dumps(robustness))
    return bundle


def test_bundle_attacks_get_the_bundles_value_range_when_it_has_one(tmp_path, small_cnn_checkpoint, monkeypatch):
    import monai_dpaat.cli as cli

    runs = []
    monkeypatch.setattr(cli, "run_bundle", lambda files, overrides: runs.append(overrides))
    for extra, value_range in (({"attack_value_range": [0.0, 1.0]}, "@attack_value_range"), ({}, None)):
        bundle = _tiny_bundle(tmp_path, small_cnn_checkpoint, **extra)
        assert main(["robustness", "--bundle", str(bundle), "--attacks", "fgsm,20-pgd", "--eps", "4/255"]) == 0
        attacks = runs[-1]["robustness_attacks"]
        assert attacks["20-PGD"]["alpha"] == "$@robustness_eps / 4" and runs[-1]["robustness_eps"] == 4 / 255
        assert attacks["20-PGD"].get("value_range") == value_range
    # an attacks file is the bundle's own config (trusted like it): passed as robustness_attacks, given the defaults
    suite = {"P": {"_target_": "monai_dpaat.attacks.PGD", "steps": 3}}
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    assert main(["robustness", "--bundle", str(bundle), "--attacks", str(tmp_path / "suite.json")]) == 0
    assert runs[-1]["robustness_attacks"] == {"P": {**suite["P"], "eps": "@robustness_eps",
                                                    "alpha": "$@robustness_eps / 4"}}


def test_network_flags_are_refused_with_a_bundle(capsys, tmp_path, small_cnn_checkpoint, monkeypatch):
    """``--network unet`` replaced the bundle's network object by a string (a traceback followed); ``--task``
    was an unknown config key. A flag the bundle defines as a plain value is an override of it."""
    import monai_dpaat.cli as cli

    runs = []
    monkeypatch.setattr(cli, "run_bundle", lambda files, overrides: runs.append(overrides))
    bundle = _tiny_bundle(tmp_path, small_cnn_checkpoint)
    base = ["robustness", "--bundle", str(bundle)]
    for flag, value in (("network", "unet"), ("network", "resnet34"), ("task", "segmentation"), ("data", "."),
                        ("datalist", "d.json"), ("split", "val"), ("num_classes", "3"), ("roi_size", "96"),
                        ("trust_config", "True")):
        err = _fails(capsys, base + [f"--{flag}", value], f"--{flag} does not apply with --bundle (the bundle's "
                                                           "configs define it)")
        assert err.count("\n") == 1
    assert not runs
    assert main(base + ["--image_size", "32"]) == 0 and runs[-1]["image_size"] == 32  # the bundle's plain value
    with pytest.raises(CLIError, match="--network does not apply with --bundle"):  # the Python API alike
        cli.robustness(bundle=str(bundle), network="unet")
    main(["robustness", "--help"])
    help_text = capsys.readouterr().out
    assert "--bundle           (default: None) [bundle only]" in help_text
    assert "--network          (default: None) [network only]" in help_text
    assert "--limit            (default: None) [bundle: robustness_max_samples]" in help_text


def test_attacks_files_hold_target_configs_checked_unless_trusted(capsys, tmp_path):
    from monai_dpaat.attacks import PGD
    from monai_dpaat.cli import _parse_attacks

    (tmp_path / "suite.json").write_text(json.dumps({"P": {"_target_": "monai_dpaat.attacks.PGD", "steps": 3}}))
    built = _parse_attacks(str(tmp_path / "suite.json"))
    assert isinstance(built["P"], PGD) and built["P"].steps == 3
    (tmp_path / "old.json").write_text(json.dumps({"attacks": [{"name": "pgd", "steps": 3}]}))
    _fails(capsys, ["robustness", "--attacks", str(tmp_path / "old.json")],
           "holds a list of {'name': ...} specs, a form that is removed; write a {label: {'_target_': "
           "'monai_dpaat.attacks.<Class>', ...keyword arguments}} mapping")
    (tmp_path / "typo.json").write_text(json.dumps({"P": {"_target_": "monai_dpaat.attacks.PGD", "stepz": 3}}))
    err = _fails(capsys, ["robustness", "--attacks", str(tmp_path / "typo.json")],
                 "attack 'P' (PGD) takes no keyword 'stepz'")
    assert err.count("\n") == 1 and "Traceback" not in err
    (tmp_path / "loss.json").write_text(json.dumps({"P": {"_target_": "monai_dpaat.attacks.PGD", "steps": 2,
                                                          "loss_function": {"_target_": "torch.nn.MSELoss"}}}))
    assert type(_parse_attacks(str(tmp_path / "loss.json"))["P"].loss_function).__name__ == "MSELoss"
    code = {"P": {"_target_": "monai_dpaat.attacks.PGD", "steps": "$1 + 1"}}
    (tmp_path / "code.json").write_text(json.dumps(code))
    with pytest.raises(CLIError, match=r"key 'P#steps' holds a '\$' expression"):
        _parse_attacks(str(tmp_path / "code.json"))
    assert _parse_attacks(str(tmp_path / "code.json"), trust_config=True)["P"].steps == 2
    (tmp_path / "value.json").write_text(json.dumps({"P": {"_target_": "monai_dpaat.attacks.PGD", "eps": -1}}))
    err = _fails(capsys, ["robustness", "--attacks", str(tmp_path / "value.json")], "attack 'P' (")
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- overrides: the files for any bundle
def test_overrides_prints_the_installed_files_and_a_command_that_runs_anywhere(capsys, tmp_path):
    """``overrides [method]``: the installed override files (package data) in composition order, the
    ``--config_file`` list and the ``monai.bundle run`` command, with ``--bundle_root`` and absolute paths."""
    from monai.bundle import ConfigParser

    from monai_dpaat import bundle_overrides

    installed = bundle_overrides.OVERRIDES_DIR
    assert main(["overrides"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [str(installed / "adversarial_train.json"), str(installed / "robust_validation.json")]
    assert lines[-1].startswith("python -m monai.bundle run --config_file \"['<their bundle>/configs/train.json',")
    assert '--bundle_root "<their bundle>"' in lines[-1]

    bundle = tmp_path / "their_bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "train.json").write_text(json.dumps({"train": {"dataloader": {}, "trainer": {}}}))
    assert main(["overrides", "dpaat", "--bundle", str(bundle), "--norobust_validation"]) == 0
    lines = capsys.readouterr().out.splitlines()
    files = [str(installed / "adversarial_train.json"), str(installed / "methods" / "dpaat.json")]
    assert lines[:2] == files and len(lines) == 4
    config_list = [str(bundle / "configs" / "train.json"), *files]
    assert lines[2] == f'--config_file "{config_list!r}"'.replace("', '", "','")
    assert f'--bundle_root "{bundle}"' in lines[3] and f'"{bundle}/configs/metadata.json"' in lines[3]
    assert all(Path(f).is_file() for f in files)
    parser = ConfigParser()
    parser.read_config([str(bundle / "configs" / "train.json")] + files)  # valid files, composed in that order
    assert parser["adversarial_method"] == "dpaat"


def test_overrides_refuses_an_unknown_method_or_a_folder_without_train_json(capsys, tmp_path):
    _fails(capsys, ["overrides", "dpat"], "overrides: unknown method 'dpat'; expected one of ['at', 'sat', 'amat'")
    _fails(capsys, ["overrides", "at", "sat"], "overrides: give one method")
    _fails(capsys, ["overrides", "--bundle", str(tmp_path)], "has no configs/train.json")
    _fails(capsys, ["overrides", "--bundel", str(tmp_path)], "did you mean --bundle?")


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "dpat"], "unknown paper 'dpat'; expected one of ['dpaat', 'unet-attacks']; did you mean 'dpaat'?"),
    (["reproduce", "dpaat", "--scale", "fast"], "--scale must be one of ['smoke', 'quick', 'paper'], got 'fast'"),
    (["reproduce", "unet-attacks", "--seeds", "0"], "--seeds must be a whole number >= 1, got 0"),
    (["reproduce"], "give one paper"),
    (["reproduce", "dpaat", "--render", "/nonexistent/dpaat_quick.json"],
     "reproduce --render: results file '/nonexistent/dpaat_quick.json' does not exist"),
    (["reproduce", "dpaat", "--rendr", "x.json"], "did you mean --render?"),
])
def test_reproduce_refuses_bad_input_before_any_work(argv, message, tmp_path, capsys):
    from monai_dpaat.cli import main

    assert main([*argv, "--output_dir", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
