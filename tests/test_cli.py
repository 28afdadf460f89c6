"""The command line: error paths exit non-zero with a one-line message (no traceback); the robustness
command evaluates real sample data end to end; the demo trains and reports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from monai_dpaat.cli import main


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
    # the saved weights evaluate again from a bundle folder and a Decathlon datalist of the same test images
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes((tmp_path / "model.pt").read_bytes())
    network_def = {"_target_": "monai_dpaat.networks.build_classifier", "name": "small_cnn", "num_classes": 2}
    (bundle / "configs" / "inference.json").write_text(json.dumps({"network_def": network_def}))
    from monai_dpaat.data import ham10000_datalists

    tests = [{"image": i["image"], "label": i["label"]} for i in ham10000_datalists(
        data_dir / "ham10000", classes=("mel", "nv"), n_train=16, n_test=4, val_fraction=0.0)["test"]]
    (tmp_path / "datalist.json").write_text(json.dumps({"test": tests}))
    code = main(["robustness", "--bundle", str(bundle), "--datalist", str(tmp_path / "datalist.json"),
                 "--image_size", "32", "--attacks", "fgsm,10-ifgsm", "--output_dir", str(tmp_path / "again"),
                 "--progress", "False"])
    assert code == 0, capsys.readouterr().err
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["models"]["model"]["rows"] == report["models"]["STD"]["rows"]
    (bundle / "models" / "model.pt").unlink()
    _fails(capsys, ["robustness", "--bundle", str(bundle), "--datalist", str(tmp_path / "datalist.json")],
           "model.pt' does not exist")


def test_gradcam_subcommand_is_wired(capsys):
    try:
        import monai_dpaat.evaluation.gradcam  # noqa: F401
    except ImportError:
        _fails(capsys, ["gradcam"], "Grad-CAM is unavailable")
    else:
        _fails(capsys, ["gradcam"], "missing a required argument: 'models'")
        _fails(capsys, ["gradcam", "--models", "x.json", "--data_dir", ".", "--output_dir", ".", "--bogus", "1"],
               "unexpected keyword argument 'bogus'")


def test_attack_suite_from_a_yaml_config(tmp_path, capsys):
    from monai_dpaat.cli import _parse_attacks
    from monai_dpaat.evaluation import build_suite

    (tmp_path / "suite.yaml").write_text("attacks:\n  - {name: fgsm, eps: 0.01}\n  - {name: pgd, label: PGD-5, steps: 5}\n")
    suite = build_suite(_parse_attacks(str(tmp_path / "suite.yaml")))
    assert [e.label for e in suite] == ["FGSM", "PGD-5"]
    assert suite[0].attack.eps == 0.01 and suite[1].attack.steps == 5
    _fails(capsys, ["robustness", "--attacks", str(tmp_path / "missing.yaml")], "missing.yaml' does not exist")
    (tmp_path / "bad.json").write_text('{"attacks": "pgd"}')
    _fails(capsys, ["robustness", "--attacks", str(tmp_path / "bad.json")], "must hold a list")
