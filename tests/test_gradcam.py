"""Grad-CAM comparison: energy-in-mask by hand, Grad-CAM on a network whose answer is known, the model left
as found, and the grid PNG / JSON / TensorBoard output for three tiny models on real HAM10000 images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from monai_dpaat.evaluation.gradcam import (
    cam_energy_in_mask,
    find_target_layer,
    gradcam_cli,
    gradcam_maps,
    load_model_specs,
    otsu_lesion_mask,
)


def tiny_cnn(norm=False):
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if norm else nn.Identity(), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    )


class PatchNet(nn.Module):
    """features = x (a 1x1 identity conv); logits = (+mean, -mean) of the features. Grad-CAM of class 0 is
    ``ReLU(x / HW)``, i.e. proportional to the image; of class 1 it is 0 everywhere."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(1, 1, 1, bias=False)
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.features.weight.fill_(1.0)
            self.fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


# --------------------------------------------------------------------------- energy in mask
def test_cam_energy_in_mask_hand_computed():
    cam = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.tensor([[1, 0], [0, 1]])
    assert cam_energy_in_mask(cam, mask) == pytest.approx(5 / 10)
    assert cam_energy_in_mask(cam.numpy(), mask.numpy().astype(bool)) == pytest.approx(0.5)
    # batch (N, 1, H, W): mean of per-image shares (0.5 and 5 / 5 = 1.0)
    batch = torch.stack([cam, torch.tensor([[0.0, 0.0], [0.0, 5.0]])])[:, None]
    assert cam_energy_in_mask(batch, torch.stack([mask, mask])[:, None]) == pytest.approx(0.75)
    assert cam_energy_in_mask(batch, mask) == pytest.approx(0.75)  # one mask for the batch
    assert math.isnan(cam_energy_in_mask(torch.zeros(2, 2), mask))
    with pytest.raises(ValueError, match="non-negative"):
        cam_energy_in_mask(-cam, mask)
    with pytest.raises(ValueError, match="do not match"):
        cam_energy_in_mask(cam, torch.ones(3, 3))


def test_gradcam_of_a_known_network():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 2:6, 2:6] = 1.0  # the "lesion": 16 pixels of 1
    x[..., 6:8, 6:8] = 0.5  # 4 pixels of 0.5 outside it
    mask = x == 1.0
    net = PatchNet()
    assert find_target_layer(net) == "features"
    cam = gradcam_maps(net, x, class_idx=0)
    assert cam.shape == (1, 1, 8, 8)
    assert torch.allclose(cam / cam.max(), x, atol=1e-6), "class-0 Grad-CAM must be proportional to the image"
    assert cam_energy_in_mask(cam, mask) == pytest.approx(16 / 18, rel=1e-5)
    assert gradcam_maps(net, x, class_idx=1).max() == 0  # negative evidence is cut by the ReLU
    assert torch.allclose(gradcam_maps(net, x), cam)  # predicted class is 0


def test_network_left_as_found():
    torch.manual_seed(0)
    net = tiny_cnn(norm=True).train()
    net[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    for p in net.parameters():
        p.grad = torch.full_like(p, 7.0)
    calls = []
    net[4].register_forward_hook(lambda m, i, o: calls.append(1))  # the user's own hook must survive
    running = net[1].running_mean.clone()
    hooks_before = [(dict(m._forward_hooks), dict(m._backward_hooks)) for m in net.modules()]
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():  # as inside an evaluator
        cam = gradcam_maps(net, x)
    assert cam.shape == (3, 1, 16, 16) and (cam >= 0).all()
    assert all(m.training for m in net.modules())
    assert torch.equal(net[1].running_mean, running)
    assert all(p.grad is not None and (p.grad == 7.0).all() for p in net.parameters())
    assert not net[0].weight.requires_grad
    assert [(dict(m._forward_hooks), dict(m._backward_hooks)) for m in net.modules()] == hooks_before
    n_calls = len(calls)
    net(x)
    assert len(calls) == n_calls + 1


def test_target_layer_detection_and_errors():
    from monai.networks.nets import DenseNet121, ResNet

    assert find_target_layer(tiny_cnn()) == "4"  # the last convolution
    assert find_target_layer(DenseNet121(spatial_dims=2, in_channels=3, out_channels=2)) == "class_layers.relu"
    resnet = ResNet("basic", [1, 1, 1, 1], [4, 8, 8, 8], spatial_dims=2, n_input_channels=3, num_classes=2)
    assert find_target_layer(resnet) == "layer4"
    assert find_target_layer(resnet, "layer3") == "layer3"
    with pytest.raises(ValueError, match="layer9"):
        find_target_layer(resnet, "layer9")
    with pytest.raises(ValueError, match="no convolution"):
        find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="'network'"):
        load_model_specs({"STD": {"checkpoint": "x.pt"}})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_specs({"STD": {"network": tiny_cnn(), "checkpoint": "/nonexistent/x.pt"}})
    with pytest.raises(ValueError, match="'name'"):
        load_model_specs([{"network": tiny_cnn()}])


def test_layer_with_map_side_picks_the_deepest_block_with_that_map():
    from monai.networks.nets import ResNet

    from monai_dpaat.evaluation.gradcam import layer_with_map_side

    # 32 px: conv1 32, maxpool 16, layer1 16, layer2 8, layer3 4, layer4 2, avgpool 1
    resnet = ResNet("basic", [1, 1, 1, 1], [4, 8, 8, 8], spatial_dims=2, n_input_channels=3, num_classes=2)
    x = torch.rand(2, 3, 32, 32)
    assert layer_with_map_side(resnet, x, 4) == ("layer3", (4, 4))
    assert layer_with_map_side(resnet, x, 8) == ("layer2", (8, 8))
    assert layer_with_map_side(resnet, x, 2) == ("layer4", (2, 2))
    cam = gradcam_maps(resnet, x, "layer3")
    assert cam.shape == (2, 1, 32, 32) and float(cam[0].std()) > 0
    with pytest.raises(ValueError, match="side >= 64"):
        layer_with_map_side(resnet, x, 64)


def test_model_spec_files_run_no_code_unless_trusted(tmp_path):
    marker = tmp_path / "ran"
    touch = f"$__import__('pathlib').Path({str(marker)!r}).touch() or 4"
    conv = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": touch, "kernel_size": 3}
    spec_file = tmp_path / "models.yaml"
    spec_file.write_text(json.dumps([{"name": "AT", "network": conv}]))  # JSON is YAML
    with pytest.raises(ValueError, match=r"model spec '.*models\.yaml' key 'AT::network::out_channels' holds a '\$' "
                                         r"expression.*--trust_config"):
        load_model_specs(spec_file)
    with pytest.raises(ValueError, match=r"_target_ 'builtins\.exec' is not a torch\.nn\.Module class"):
        load_model_specs({"AT": {"network": {"_target_": "builtins.exec", "source": "1"}}})  # in-memory dicts too
    assert not marker.exists()
    nets, _ = load_model_specs(spec_file, trust_config=True)
    assert marker.exists() and nets["AT"].out_channels == 4
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken\\.json' is not valid JSON/YAML"):
        load_model_specs(tmp_path / "broken.json")


# --------------------------------------------------------------------------- real images, three models
RESNET_CFG = {
    "_target_": "monai.networks.nets.ResNet", "block": "basic", "layers": [1, 1, 1, 1],
    "block_inplanes": [4, 8, 8, 8], "spatial_dims": 2, "n_input_channels": 3, "num_classes": 2,
}


@pytest.mark.slow
def test_grid_png_json_and_tensorboard_for_three_models_on_ham10000(data_dir, tmp_path):
    from monai.bundle import ConfigParser
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    std = tiny_cnn()
    at = ConfigParser({"n": RESNET_CFG}).get_parsed_content("n")
    torch.save({"model": at.state_dict()}, tmp_path / "at.pt")  # MONAI CheckpointSaver layout
    dpaat = tiny_cnn()
    torch.save(dpaat.state_dict(), tmp_path / "dpaat.pt")  # a bare state dict
    spec_file = tmp_path / "models.json"
    spec_file.write_text(json.dumps([
        {"name": "AT", "network": RESNET_CFG, "checkpoint": str(tmp_path / "at.pt")},
    ]))
    nets, _ = load_model_specs(spec_file)
    assert torch.equal(nets["AT"].conv1.weight, at.conv1.weight)

    models = {
        "STD": std,
        "AT": {"network": RESNET_CFG, "checkpoint": str(tmp_path / "at.pt"), "target_layer": "layer3"},
        "DPAAT": {"network": tiny_cnn(), "checkpoint": str(tmp_path / "dpaat.pt")},
    }
    out = tmp_path / "out"
    n = 4
    result = gradcam_cli(models, data_dir, out, n_images=n, spatial_size=32, mask_dir="otsu")

    png = Image.open(result["png"])
    assert png.format == "PNG" and png.size == (200 * (1 + 3), 200 * n)  # 2-inch cells at 100 dpi
    assert sorted(p.name for p in out.iterdir()) == ["gradcam_energy.json", "gradcam_grid.png", "tensorboard"]
    summary = json.loads((out / "gradcam_energy.json").read_text())
    assert len(summary["image_ids"]) == n and summary["dx"].count("mel") == n // 2
    assert summary["target_layers"] == {"STD": "4", "AT": "layer3", "DPAAT": "4"}
    for name in models:
        values = [v for v in summary["energy_in_mask_per_image"][name] if v is not None]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert result["energy_in_mask"][name] is None or 0.0 <= result["energy_in_mask"][name] <= 1.0

    events = EventAccumulator(result["tensorboard"])
    events.Reload()
    assert "gradcam" in events.Tags()["images"]
    scalars = events.Tags()["scalars"]
    assert any(t.startswith("gradcam/energy_in_mask/") for t in scalars)


def test_otsu_lesion_mask_finds_the_dark_blob_not_the_vignette():
    img = torch.full((3, 40, 40), 0.8)
    img[:, 15:25, 12:22] = 0.3  # the lesion
    img[:, :3, :3] = 0.05  # dark corner (vignette) touching the border
    mask = otsu_lesion_mask(img)
    assert mask.shape == (1, 40, 40)
    assert mask[0, 15:25, 12:22].all() and mask.sum() == 100
