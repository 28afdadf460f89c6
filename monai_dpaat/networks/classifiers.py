"""The six ImageNet CNNs of the DPAAT paper (Li et al. 2024) as ``num_classes``/``in_channels`` classifiers,
plus a tiny :class:`SmallCNN` for CPU tests and demos.

``build_classifier`` is the one entry point (a bundle builds it with
``{"_target_": "monai_dpaat.networks.build_classifier", "name": "densenet121", "num_classes": 2}``):

========================  ==========================================================================
name                      network
========================  ==========================================================================
``resnet34``              ``monai.networks.nets.ResNet`` (basic blocks 3-4-6-3), configured like
                          torchvision's: 7x7 stride-2 stem, no bias in the shortcut convolutions
``densenet121``           ``monai.networks.nets.DenseNet121``
``inception_v3``          :class:`InceptionV3Classifier` around ``torchvision.models.Inception3``
``mobilenet_v2``          ``torchvision.models.mobilenet_v2``
``shufflenet_v2``         ``torchvision.models.shufflenet_v2_x1_0``
``squeezenet``            ``torchvision.models.squeezenet1_1`` (its head is a 1x1 conv + ReLU + global
                          average pool, so its logits are >= 0, as in torchvision)
``small_cnn``             :class:`SmallCNN`
========================  ==========================================================================

All take ``(N, in_channels, H, W)`` and return logits ``(N, num_classes)`` in train and eval mode.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

from monai.networks.blocks import Convolution
from monai.networks.nets import DenseNet121, ResNet

__all__ = ["SmallCNN", "InceptionV3Classifier", "build_classifier", "CLASSIFIER_NAMES", "pretrained_weights_path"]


class SmallCNN(nn.Module):
    """A three-convolution classifier for CPU tests and demos.

    ``features``: conv(in -> w) -> conv(w -> 2w, stride 2) -> conv(2w -> 4w, stride 2) -> global average
    pool -> flatten; ``head``: ``Linear(4w, num_classes)``. Each conv is a MONAI ``Convolution``
    (3x3, norm then activation).

    Args:
        in_channels: input channels.
        num_classes: number of logits.
        width: channels ``w`` of the first convolution.
        spatial_dims: 2 or 3.
        act: MONAI activation name/tuple.
        norm: MONAI norm name/tuple.
        dropout: dropout rate before the head.

    Shapes:
        ``(N, in_channels, *spatial)`` -> ``(N, num_classes)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 16,
        spatial_dims: int = 2,
        act: str | tuple = "RELU",
        norm: str | tuple = "BATCH",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive_int(in_channels=in_channels, num_classes=num_classes, width=width)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        conv = dict(spatial_dims=spatial_dims, act=act, norm=norm)
        self.features = nn.Sequential(
            Convolution(in_channels=in_channels, out_channels=width, **conv),
            Convolution(in_channels=width, out_channels=2 * width, strides=2, **conv),
            Convolution(in_channels=2 * width, out_channels=4 * width, strides=2, **conv),
            nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1),
            nn.Flatten(1),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *spatial)`` -> ``(N, num_classes)``."""
        return self.head(self.features(x))


class InceptionV3Classifier(nn.Module):
    """``torchvision.models.Inception3`` that returns logits only and accepts small images.

    Inception-v3 needs at least 75x75 input. Images whose shorter side is below ``min_size`` are bilinearly
    up-sampled (aspect ratio kept, sizes rounded up) so that their shorter side is ``min_size``; larger
    images pass unchanged. Use ``min_size=299`` to feed the network its ImageNet resolution. The auxiliary
    classifier is not built, so training mode returns the ``(N, num_classes)`` logits too, not
    ``InceptionOutputs``. The up-sampling is differentiable, so attacks still act on the original pixels.

    Note: with batch norm, training needs more than one value per channel at the last 1x1 feature map, i.e.
    batches of at least 2 at ``min_size`` 75.

    Args:
        num_classes: number of logits.
        in_channels: input channels (the first convolution is built for it).
        min_size: shorter-side size that smaller inputs are up-sampled to; at least 75.
        dropout: dropout rate before the final linear layer.
        transform_input: torchvision's re-normalisation from ImageNet mean/std to [-1, 1] (for its pretrained
            weights; 3 channels only).

    Shapes:
        ``(N, in_channels, H, W)`` -> ``(N, num_classes)``.
    """

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        min_size: int = 75,
        dropout: float = 0.5,
        transform_input: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int(num_classes=num_classes, in_channels=in_channels)
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 75:
            raise ValueError(f"min_size must be an int >= 75 (Inception-v3's smallest input), got {min_size!r}")
        if transform_input and in_channels != 3:
            raise ValueError(f"transform_input needs 3 input channels, got in_channels={in_channels}")
        self.min_size = min_size
        self.net = tvm.Inception3(
            num_classes=num_classes,
            aux_logits=False,
            transform_input=transform_input,
            init_weights=True,
            dropout=dropout,
        )
        if in_channels != 3:
            _replace_first_conv(self.net, "Conv2d_1a_3x3.conv", in_channels, keep_weights=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` -> ``(N, num_classes)``."""
        if x.dim() != 4:
            raise ValueError(f"InceptionV3Classifier expects (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        short = min(h, w)
        if short < self.min_size:
            scale = self.min_size / short
            size = (max(self.min_size, math.ceil(h * scale)), max(self.min_size, math.ceil(w * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.net(x)


def _check_positive_int(**values: object) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _replace_first_conv(model: nn.Module, path: str, in_channels: int, keep_weights: bool) -> None:
    """Swap the ``nn.Conv2d`` at ``path`` for one taking ``in_channels`` inputs.

    With ``keep_weights`` (pretrained), the new kernel is the old one averaged over its input channels and
    repeated, scaled by ``3 / in_channels`` so the response to a grey image is unchanged.
    """
    old = model.get_submodule(path)
    if not isinstance(old, nn.Conv2d):
        raise TypeError(f"expected an nn.Conv2d at {path!r}, found {type(old).__name__}")
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if keep_weights:
        with torch.no_grad():
            mean = old.weight.mean(dim=1, keepdim=True)
            new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (old.in_channels / in_channels))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def _replace_head(model: nn.Module, path: str, num_classes: int) -> None:
    """Swap the final ``nn.Linear`` / 1x1 ``nn.Conv2d`` at ``path`` for a freshly initialised one with
    ``num_classes`` outputs."""
    old = model.get_submodule(path)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    elif isinstance(old, nn.Conv2d):  # squeezenet: 1x1 conv, initialised as torchvision does
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=old.kernel_size)
        nn.init.normal_(new.weight, mean=0.0, std=0.01)
        nn.init.zeros_(new.bias)
    else:
        raise TypeError(f"expected nn.Linear or nn.Conv2d at {path!r}, found {type(old).__name__}")
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, new)


def pretrained_weights_path(url: str) -> str:
    """Where ``torch.hub`` caches (and first looks for) the weights file of ``url``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _load_weights(name: str, url: str) -> dict:
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, map_location="cpu", weights_only=True)
    except Exception as e:  # offline (URLError/OSError), blocked proxy, corrupt cache file, ...
        raise RuntimeError(
            f"pretrained=True for {name!r} needs the ImageNet weights {url}: they are not in the torch hub cache "
            f"({pretrained_weights_path(url)}) and could not be fetched ({type(e).__name__}: {e}). Copy the file "
            "there (or set TORCH_HOME), or use pretrained=False."
        ) from e


# torchvision's published file uses the old names (``denselayer1.norm.1.weight``), a torchvision model's
# state dict the new ones (``denselayer1.norm1.weight``); MONAI wraps them in ``layers``
# (``denselayer1.layers.norm1.weight``)
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


def _torchvision_densenet_to_monai(state: dict) -> dict:
    """torchvision DenseNet keys (old ``denselayer1.norm.1.weight`` or new ``denselayer1.norm1.weight``;
    ``classifier.weight``) -> MONAI's (``denselayer1.layers.norm1.weight``; ``class_layers.out.weight``)."""
    out = {}
    for key, value in state.items():
        m = _DENSENET_KEY.match(key)
        if m:
            key = f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}"
        elif key.startswith("classifier."):
            key = "class_layers.out." + key[len("classifier.") :]
        out[key] = value
    return out


def _resnet34(num_classes: int, in_channels: int, **kwargs) -> nn.Module:
    return ResNet(
        block="basic",
        layers=[3, 4, 6, 3],
        block_inplanes=[64, 128, 256, 512],
        spatial_dims=2,
        n_input_channels=in_channels,
        conv1_t_size=7,
        conv1_t_stride=2,
        bias_downsample=False,
        num_classes=num_classes,
        **kwargs,
    )


def _densenet121(num_classes: int, in_channels: int, **kwargs) -> nn.Module:
    return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_classes, **kwargs)


def _torchvision(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_channels: int, **kwargs) -> nn.Module:
        return factory(weights=None, num_classes=num_classes, **kwargs)

    return build


def _inception_v3(num_classes: int, in_channels: int, **kwargs) -> nn.Module:
    return InceptionV3Classifier(num_classes=num_classes, in_channels=in_channels, **kwargs)


def _small_cnn(num_classes: int, in_channels: int, **kwargs) -> nn.Module:
    return SmallCNN(in_channels=in_channels, num_classes=num_classes, **kwargs)


# name -> (builder, first conv path, head path, ImageNet weights url, whether the builder takes in_channels,
#          state-dict converter applied to the downloaded weights, prefix of the weights inside the model)
_SPECS: dict[str, tuple] = {
    "resnet34": (_resnet34, "conv1", "fc", tvm.ResNet34_Weights.IMAGENET1K_V1.url, True, None, ""),
    "densenet121": (
        _densenet121, "features.conv0", "class_layers.out", tvm.DenseNet121_Weights.IMAGENET1K_V1.url, True,
        _torchvision_densenet_to_monai, "",
    ),
    "inception_v3": (
        _inception_v3, "net.Conv2d_1a_3x3.conv", "net.fc", tvm.Inception_V3_Weights.IMAGENET1K_V1.url, True,
        lambda s: {k: v for k, v in s.items() if not k.startswith("AuxLogits.")}, "net.",
    ),
    "mobilenet_v2": (
        _torchvision(tvm.mobilenet_v2), "features.0.0", "classifier.1", tvm.MobileNet_V2_Weights.IMAGENET1K_V1.url,
        False, None, "",
    ),
    "shufflenet_v2": (
        _torchvision(tvm.shufflenet_v2_x1_0), "conv1.0", "fc", tvm.ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1.url,
        False, None, "",
    ),
    "squeezenet": (
        _torchvision(tvm.squeezenet1_1), "features.0", "classifier.1", tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1.url,
        False, None, "",
    ),
    "small_cnn": (_small_cnn, "features.0.conv", "head", None, True, None, ""),
}
_ALIASES = {
    "resnet": "resnet34", "densenet": "densenet121", "inception": "inception_v3", "inceptionv3": "inception_v3",
    "mobilenet": "mobilenet_v2", "mobilenetv2": "mobilenet_v2", "shufflenet": "shufflenet_v2",
    "shufflenet_v2_x1_0": "shufflenet_v2", "shufflenetv2": "shufflenet_v2", "squeezenet1_1": "squeezenet",
    "smallcnn": "small_cnn",
}
CLASSIFIER_NAMES: tuple[str, ...] = tuple(_SPECS)


def build_classifier(
    name: str, num_classes: int, in_channels: int = 3, pretrained: bool = False, **kwargs
) -> nn.Module:
    """Build one of the DPAAT paper's classifiers (or ``small_cnn``) for ``num_classes`` and ``in_channels``.

    Args:
        name: one of :data:`CLASSIFIER_NAMES` (``resnet34``, ``densenet121``, ``inception_v3``, ``mobilenet_v2``,
            ``shufflenet_v2``, ``squeezenet``, ``small_cnn``), case-insensitive; ``-`` and ``_`` are the same, and
            the torchvision names ``shufflenet_v2_x1_0`` / ``squeezenet1_1`` are accepted.
        num_classes: number of logits.
        in_channels: input channels. Architectures that do not take it are built for 3 channels and their first
            convolution is replaced.
        pretrained: start from the ImageNet weights torchvision publishes (DenseNet/ResNet weights are mapped
            onto MONAI's modules), then replace the head (fresh init) and, for ``in_channels != 3``, the first
            convolution (RGB kernels averaged). The weights are read from the torch hub cache
            (:func:`pretrained_weights_path`) or downloaded; a ``RuntimeError`` says where to put the file when
            neither works (offline). Pretrained networks expect ImageNet mean/std normalised input.
        kwargs: passed to the architecture's constructor, e.g. ``width`` for ``small_cnn``, ``min_size`` /
            ``dropout`` for ``inception_v3``, ``dropout`` for ``mobilenet_v2`` / ``squeezenet``.

    Returns:
        a module mapping ``(N, in_channels, H, W)`` to ``(N, num_classes)`` logits; its classification head is
        what :func:`monai_dpaat.networks.head_parameters` returns.
    """
    if not isinstance(name, str):
        raise ValueError(f"name must be a string, one of {list(CLASSIFIER_NAMES)}, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _SPECS:
        raise ValueError(f"unknown classifier name {name!r}; expected one of {list(CLASSIFIER_NAMES)}")
    _check_positive_int(num_classes=num_classes, in_channels=in_channels)
    builder, first_conv, head, url, takes_in_channels, convert, prefix = _SPECS[key]

    if not pretrained:
        net = builder(num_classes, in_channels, **kwargs)
        if not takes_in_channels and in_channels != 3:
            _replace_first_conv(net, first_conv, in_channels, keep_weights=False)
        return net

    if url is None:
        raise ValueError(f"there are no pretrained weights for {key!r}; use pretrained=False")
    if key == "inception_v3":
        kwargs.setdefault("transform_input", True)  # what torchvision does for these weights
    net = builder(1000, 3, **kwargs)
    state = _load_weights(key, url)
    if convert is not None:
        state = convert(state)
    target = net.get_submodule(prefix[:-1]) if prefix else net
    target.load_state_dict(state, strict=True)
    _replace_head(net, head, num_classes)
    if in_channels != 3:
        if key == "inception_v3":
            net.net.transform_input = False
        _replace_first_conv(net, first_conv, in_channels, keep_weights=True)
    return net
