"""Tests for monai_dpaat.networks (Residual-Attention UNet++, the DPAAT classifiers, head-only warm-up) and
the ReleaseBackbone handler."""

from __future__ import annotations

import re
import urllib.error
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm
from ignite.engine import Engine, Events

from monai.engines import SupervisedTrainer
from monai.losses import DiceCELoss

from monai_dpaat.handlers.backbone import ReleaseBackbone
from monai_dpaat.networks import (
    CLASSIFIER_NAMES,
    AttentionGate,
    AttentionUNetPlusPlus,
    SmallCNN,
    build_classifier,
    freeze_backbone,
    head_module,
    head_parameters,
    match_spatial_size,
    pretrained_weights_path,
    unfreeze,
)

SMALL = (4, 8, 16, 32)


# ---------------------------------------------------------------- AttentionUNetPlusPlus


@pytest.mark.parametrize(
    "spatial_dims, shape",
    [(2, (32, 32)), (2, (33, 27)), (2, (17, 8)), (3, (16, 16, 16)), (3, (17, 9, 12))],
)
def test_attunetpp_output_matches_input_shape(spatial_dims, shape):
    torch.manual_seed(0)
    net = AttentionUNetPlusPlus(spatial_dims, in_channels=2, out_channels=3, features=SMALL).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 2, *shape))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, 3, *shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spatial_dims, shape", [(2, (21, 32)), (3, (9, 16, 8))])
def test_attunetpp_deep_supervision_list(spatial_dims, shape):
    torch.manual_seed(0)
    net = AttentionUNetPlusPlus(spatial_dims, 1, 2, features=SMALL, deep_supervision=True)
    out = net(torch.rand(2, 1, *shape))
    assert isinstance(out, list) and len(out) == len(SMALL) - 1
    assert all(o.shape == (2, 2, *shape) for o in out)
    # heads of different nested paths: different outputs, and every head gets a gradient
    assert not torch.allclose(out[0], out[1])
    sum(o.mean() for o in out).backward()
    assert all(h.conv.weight.grad is not None and h.conv.weight.grad.abs().sum() > 0 for h in net.heads)


def test_attunetpp_structure_and_variants():
    net = AttentionUNetPlusPlus(2, 3, 2, features=SMALL)
    depth = len(SMALL) - 1
    assert len(net.decoder) == depth * (depth + 1) // 2  # nodes X^{i,j}, j >= 1, i + j <= L
    assert len(net.heads) == 1
    assert sum(isinstance(m, AttentionGate) for m in net.modules()) == len(net.decoder)
    # plain-convolution nodes, batch norm, ReLU, dropout
    plain = AttentionUNetPlusPlus(2, 1, 1, features=(4, 8), num_res_units=0, act="RELU", norm="BATCH", dropout=0.1)
    assert not any(type(m).__name__ == "ResidualUnit" for m in plain.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert plain(torch.rand(2, 1, 15, 10)).shape == (2, 1, 15, 10)


def test_attunetpp_torchscript_matches_eager():
    torch.manual_seed(0)
    """``ckpt_export`` scripts the network: the scripted module must give the eager output (odd sizes too)."""
    x = torch.rand(1, 1, 19, 24)
    net = AttentionUNetPlusPlus(2, 1, 2, features=(4, 8, 16)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated in torch 2.x
        scripted = torch.jit.script(net)
    with torch.no_grad():
        assert torch.allclose(net(x), scripted(x), atol=1e-6)


def test_attention_gate_and_match_spatial_size():
    torch.manual_seed(0)
    gate = AttentionGate(2, gate_channels=4, skip_channels=6, inter_channels=2)
    x, g = torch.randn(2, 6, 8, 8), torch.randn(2, 4, 8, 8)
    y = gate(g, x)
    assert y.shape == x.shape
    ratio = y / x  # the attention map, the same for every channel, in (0, 1)
    assert torch.all((ratio > 0) & (ratio < 1))
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)

    a = torch.arange(12.0).reshape(1, 1, 3, 4)
    padded = match_spatial_size(a, torch.zeros(1, 5, 4, 5))
    assert padded.shape == (1, 1, 4, 5)
    assert torch.equal(padded[..., :3, :4], a) and torch.equal(padded[..., 3, :4], a[..., 2, :])  # replicate
    assert torch.equal(match_spatial_size(a, torch.zeros(1, 1, 2, 2)), a[..., :2, :2])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spatial_dims": 1},
        {"features": (8,)},
        {"features": (8, 0)},
        {"features": (8, 16.0)},
        {"in_channels": 0},
        {"out_channels": -2},
        {"num_res_units": -1},
        {"dropout": 1.0},
    ],
)
def test_attunetpp_bad_args(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        AttentionUNetPlusPlus(**kwargs)


def test_attunetpp_bad_input():
    net = AttentionUNetPlusPlus(2, 1, 2, features=SMALL)
    with pytest.raises(ValueError, match="spatial dims"):
        net(torch.rand(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match=">= 8"):
        net(torch.rand(1, 1, 7, 32))


@pytest.mark.slow
def test_attunetpp_overfits_one_he_tile(data_dir):
    """Training Dice on one real H&E crop (nuclei vs background) must exceed 0.9 (it goes 0.41 -> 0.99)."""
    from PIL import Image

    folder = data_dir / "nuclei_he" / "tcga_miccai2015"
    name = "tcga_miccai2015_14.png"
    if not (folder / "tissue images" / name).is_file():
        pytest.skip(f"{folder / 'tissue images' / name} is absent")
    image = np.asarray(Image.open(folder / "tissue images" / name).convert("RGB"), dtype=np.float32) / 255.0
    mask = np.asarray(Image.open(folder / "mask binary" / name)) > 127
    size = 128
    y0, x0 = (mask.shape[0] - size) // 2, (mask.shape[1] - size) // 2
    x = torch.from_numpy(image[y0 : y0 + size, x0 : x0 + size]).permute(2, 0, 1)[None].contiguous()
    y = torch.from_numpy(mask[y0 : y0 + size, x0 : x0 + size])[None, None].float()
    assert 0.05 < y.mean() < 0.6  # the crop holds nuclei and background

    torch.manual_seed(0)
    net = AttentionUNetPlusPlus(2, 3, 2, features=(8, 16, 32, 64), num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def dice() -> float:
        with torch.no_grad():
            pred = (net(x).argmax(1, keepdim=True) == 1).float()
        return float(2 * (pred * y).sum() / (pred.sum() + y.sum()))

    net.eval()
    before = dice()
    net.train()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    net.eval()
    after = dice()
    assert after > 0.9, f"training Dice {after:.3f} (before training {before:.3f})"
    assert after > before


# ---------------------------------------------------------------- classifiers


@pytest.mark.parametrize("name", CLASSIFIER_NAMES)
def test_classifier_logits_shape(name):
    torch.manual_seed(0)
    for in_channels in (1, 3):
        net = build_classifier(name, num_classes=3, in_channels=in_channels).eval()
        with torch.no_grad():
            logits = net(torch.rand(2, in_channels, 64, 64))
        assert logits.shape == (2, 3), (name, in_channels)
        assert torch.isfinite(logits).all()
        head = head_parameters(net)
        assert head[0].shape[0] == 3  # the head found is the layer producing the logits


def test_classifier_config_aliases_and_kwargs():
    from monai.bundle import ConfigParser

    config = {"_target_": "monai_dpaat.networks.build_classifier", "name": "Small-CNN", "num_classes": 5, "width": 4}
    parser = ConfigParser({"net": config})
    net = parser.get_parsed_content("net")
    assert isinstance(net, SmallCNN) and net.head.in_features == 16
    assert net.eval()(torch.rand(1, 3, 20, 20)).shape == (1, 5)
    assert isinstance(build_classifier("shufflenet_v2_x1_0", 2), tvm.ShuffleNetV2)
    assert isinstance(build_classifier("squeezenet1_1", 2, in_channels=4), tvm.SqueezeNet)


def test_inception_small_input_and_training_output():
    net = build_classifier("inception_v3", num_classes=2, in_channels=1)
    seen = []
    net.net.Conv2d_1a_3x3.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    out = net.train()(torch.rand(2, 1, 40, 60))  # training mode: logits only, no InceptionOutputs
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2)
    assert seen[-1] == (75, 113)  # shorter side up-sampled to 75, aspect ratio kept
    with torch.no_grad():
        net.eval()(torch.rand(1, 1, 80, 90))
    assert seen[-1] == (80, 90)  # large enough: unchanged
    with pytest.raises(ValueError, match="min_size"):
        build_classifier("inception_v3", 2, min_size=64)


@pytest.mark.parametrize(
    "args, match",
    [
        (("vgg16", 2), "unknown classifier name 'vgg16'"),
        (("resnet34", 0), "num_classes"),
        (("densenet121", 2, 0), "in_channels"),
        (("small_cnn", 2, 3, True), "no pretrained weights"),
        ((None, 2), "name must be a string"),
    ],
)
def test_build_classifier_bad_args(args, match):
    with pytest.raises(ValueError, match=match):
        build_classifier(*args)


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    yield tmp_path
    torch.hub.set_dir(old)


@pytest.mark.parametrize(
    "name, reference, first_conv",
    [
        ("squeezenet", tvm.squeezenet1_1, "features.0"),
        ("resnet34", tvm.resnet34, "conv1"),  # torchvision weights onto MONAI's ResNet
        ("densenet121", tvm.densenet121, "features.conv0"),  # keys renamed for MONAI's DenseNet
    ],
)
def test_pretrained_weights_from_hub_cache(hub_dir, name, reference, first_conv):
    """pretrained=True reads torchvision's ImageNet file from the torch hub cache (here a stand-in with random
    values under the real file name) into the network, then swaps head and first convolution."""
    from monai_dpaat.networks.classifiers import _SPECS

    url = _SPECS[name][3]
    path = pretrained_weights_path(url)
    assert path.startswith(str(hub_dir))
    ref = reference(weights=None, num_classes=1000)
    state = ref.state_dict()
    if name == "densenet121":  # the published file has torchvision's old key names and no BN counters
        state = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        assert "features.denseblock1.denselayer1.norm.1.weight" in state
    hub_dir.joinpath("checkpoints").mkdir()
    torch.save(state, path)

    net = build_classifier(name, num_classes=3, in_channels=2, pretrained=True)
    ref_conv = ref.get_submodule(first_conv).weight
    new_conv = net.get_submodule(first_conv).weight
    assert new_conv.shape[1] == 2
    assert torch.allclose(new_conv, ref_conv.mean(1, keepdim=True).repeat(1, 2, 1, 1) * 1.5)
    # a backbone weight deep inside arrives unchanged
    if name == "densenet121":
        a = ref.features.denseblock4.denselayer16.conv2.weight
        b = net.features.denseblock4.denselayer16.layers.conv2.weight
    elif name == "resnet34":
        a, b = ref.layer4[2].conv2.weight, net.layer4[2].conv2.weight
    else:
        a, b = ref.features[12].expand3x3.weight, net.features[12].expand3x3.weight
    assert torch.equal(a, b)
    assert head_parameters(net)[0].shape[0] == 3
    assert net.eval()(torch.rand(1, 2, 64, 64)).shape == (1, 3)


def test_pretrained_offline_raises_clear_error(hub_dir, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", offline)  # no network: the cache is empty
    with pytest.raises(RuntimeError, match="pretrained=True for 'mobilenet_v2'.*checkpoints"):
        build_classifier("mobilenet_v2", 2, pretrained=True)


# ---------------------------------------------------------------- head-only warm-up


@pytest.mark.parametrize("name", ["small_cnn", "mobilenet_v2"])
def test_freeze_backbone_and_unfreeze(name):
    torch.manual_seed(0)
    net = build_classifier(name, num_classes=2, in_channels=1)
    head = {id(p) for p in head_parameters(net)}
    assert 0 < len(head) < len(list(net.parameters()))

    assert freeze_backbone(net) is net
    for p in net.parameters():
        assert p.requires_grad == (id(p) in head)
    net.train()(torch.rand(2, 1, 32, 32)).sum().backward()
    assert all((p.grad is not None) == (id(p) in head) for p in net.parameters())

    assert unfreeze(net) is net
    assert all(p.requires_grad for p in net.parameters())


def test_head_module_known_and_unknown():
    assert head_module(nn.DataParallel(SmallCNN(1, 2))).out_features == 2
    assert isinstance(head_module(tvm.resnet18(num_classes=3)), nn.Linear)
    with pytest.raises(ValueError, match="cannot find the classification head of Sequential"):
        head_parameters(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="torch.nn.Module"):
        unfreeze("model")


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def test_release_backbone_in_supervised_trainer():
    torch.manual_seed(0)
    net = SmallCNN(in_channels=1, num_classes=2, width=4)
    head = {n for n, p in net.named_parameters() if any(p is q for q in head_parameters(net))}
    data = [{"image": torch.rand(1, 12, 12), "label": torch.tensor(i % 2)} for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=3,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), 1e-2),  # all parameters, frozen or not
        loss_function=nn.CrossEntropyLoss(),
    )
    ReleaseBackbone(release_epoch=2).attach(trainer)
    snaps, trainable = [_snapshot(net)], []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: snaps.append(_snapshot(net)))
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: trainable.append(sum(p.requires_grad for p in net.parameters()))
    )
    trainer.run()

    n_all = len(list(net.parameters()))
    assert trainable == [len(head), n_all, n_all]
    changed = [{k for k in snaps[0] if not torch.equal(before[k], after[k])} for before, after in zip(snaps, snaps[1:])]
    assert changed[0] == head  # epoch 1: only the head moves
    assert changed[1] == set(snaps[0])  # epoch 2: everything moves


def test_release_backbone_plain_engine_and_bad_args():
    net = SmallCNN(1, 2, width=4)
    states = []
    def step(engine, batch):
        states.append(net.head.weight.requires_grad and not net.features[0].conv.weight.requires_grad)

    engine = Engine(step)
    ReleaseBackbone(3, network=net).attach(engine)
    engine.run([0, 1], max_epochs=4)
    assert states == [True, True, True, True, False, False, False, False]  # frozen in epochs 1-2 only
    assert all(p.requires_grad for p in net.parameters())

    with pytest.raises(ValueError, match="release_epoch"):
        ReleaseBackbone(0)
    with pytest.raises(ValueError, match="release_epoch"):
        ReleaseBackbone(2.5)
    with pytest.raises(ValueError, match="network="):
        ReleaseBackbone(2).attach(Engine(lambda e, b: None))
