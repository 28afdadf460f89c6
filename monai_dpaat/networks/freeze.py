"""Head-only warm-up: train the classification head alone, then release the backbone.

The DPAAT paper (Li et al. 2024) first trains the fully connected layers alone, "to avoid exploding
gradients", then releases all layers. :func:`freeze_backbone` / :func:`unfreeze` switch ``requires_grad``;
:class:`monai_dpaat.handlers.backbone.ReleaseBackbone` does it from an ignite engine's events.
"""

from __future__ import annotations

import torch.nn as nn
import torchvision.models as tvm

from monai.networks.nets import DenseNet, ResNet

from .classifiers import InceptionV3Classifier, SmallCNN

__all__ = ["head_module", "head_parameters", "freeze_backbone", "unfreeze"]

# most specific first; the attribute path of the classification head of each architecture
_HEADS: tuple[tuple[type, str], ...] = (
    (InceptionV3Classifier, "net.fc"),
    (SmallCNN, "head"),
    (ResNet, "fc"),
    (DenseNet, "class_layers"),
    (tvm.Inception3, "fc"),
    (tvm.ResNet, "fc"),
    (tvm.DenseNet, "classifier"),
    (tvm.MobileNetV2, "classifier"),
    (tvm.MobileNetV3, "classifier"),
    (tvm.ShuffleNetV2, "fc"),
    (tvm.SqueezeNet, "classifier"),
)
_GENERIC_HEADS = ("head", "fc", "classifier", "class_layers")


def _unwrap(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        model = model.module
    return model


def head_module(model: nn.Module) -> nn.Module:
    """The classification head of ``model`` (a network from :func:`~monai_dpaat.networks.build_classifier`, a
    torchvision/MONAI classifier of a known type, or any module with a ``head``/``fc``/``classifier``/
    ``class_layers`` child), looking through ``DataParallel``/``DistributedDataParallel``.

    Raises:
        ValueError: when the head cannot be identified.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    net = _unwrap(model)
    for cls, path in _HEADS:
        if isinstance(net, cls):
            return net.get_submodule(path)
    for name in _GENERIC_HEADS:
        child = getattr(net, name, None)
        if isinstance(child, nn.Module):
            return child
    raise ValueError(
        f"cannot find the classification head of {type(net).__name__}: expected one of the build_classifier "
        f"networks or a module with a child named one of {list(_GENERIC_HEADS)}"
    )


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of :func:`head_module` (e.g. the final ``Linear``'s weight and bias)."""
    params = list(head_module(model).parameters())
    if not params:
        raise ValueError(f"the classification head of {type(_unwrap(model)).__name__} has no parameters")
    return params


def freeze_backbone(model: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter except the head's (which get ``True``); returns ``model``.

    Only gradients are switched off: batch-norm layers of the backbone still update their running statistics
    in train mode. Optimizers skip parameters whose ``.grad`` is ``None``, so an optimizer built over all
    parameters before freezing trains the head only, and all layers after :func:`unfreeze`.
    """
    head = {id(p) for p in head_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Set ``requires_grad=True`` on every parameter of ``model``; returns ``model``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for p in model.parameters():
        p.requires_grad_(True)
    return model
