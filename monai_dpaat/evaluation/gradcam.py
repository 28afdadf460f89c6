"""Grad-CAM comparisons of several models on the same inputs (``monai.visualize.GradCAM``).

- :func:`gradcam_maps`: raw, non-negative Grad-CAM maps ``(N, 1, *spatial)`` of one network, leaving the
  network exactly as found (train/eval flags, parameters' ``.grad``, no hooks left behind) - MONAI's
  ``GradCAM`` zeroes and fills ``.grad``, registers hooks it never removes and needs grad enabled.
- :func:`cam_energy_in_mask`: the share of CAM energy inside a lesion mask (1.0 = all attention on it).
- :func:`compare_gradcam` + :func:`save_gradcam_grid` / :func:`log_gradcam_grid`: rows = images,
  columns = the original and each model's CAM overlay, written as a PNG (atomically) and to TensorBoard.
- :func:`find_target_layer`: the layer Grad-CAM reads for common networks (override with ``target_layers``).
- :func:`gradcam_cli`: what ``python -m monai_dpaat gradcam ...`` calls: models (or checkpoint + network
  specs) and a HAM10000 folder in, a grid PNG, a JSON of energies and TensorBoard images out;
  :func:`check_gradcam_args` checks its arguments, as a command line gives them, before any model is built.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from monai.visualize import GradCAM, ModelWithHooks

from monai_dpaat.atomic_io import atomic_write
from monai_dpaat.attacks.base import restore_model_state
from monai_dpaat.data.ham10000 import ham10000_image_files, load_ham10000_image, read_ham10000_metadata
from monai_dpaat.utils import (check_bool, check_config_is_safe, check_device, check_int, check_writable_dir,
                               load_weights)

__all__ = [
    "find_target_layer",
    "layer_with_map_side",
    "gradcam_maps",
    "cam_energy_in_mask",
    "compare_gradcam",
    "gradcam_figure",
    "save_gradcam_grid",
    "log_gradcam_grid",
    "read_model_specs",
    "load_model_specs",
    "load_ham10000_images",
    "otsu_lesion_mask",
    "gradcam_cli",
    "check_gradcam_args",
]

#: layer names Grad-CAM conventionally reads, tried before the last-convolution fallback
KNOWN_TARGET_LAYERS = (
    "class_layers.relu",  # monai.networks.nets.DenseNet121/169/201/264
    "layer4",  # monai ResNet / SEResNet / SENet, torchvision ResNet
    "features.norm5",  # torchvision DenseNet
)


# ---------------------------------------------------------------------------------------------- layers
def find_target_layer(network: nn.Module, target_layer: str | None = None) -> str:
    """Name of the layer whose activations and gradients Grad-CAM uses.

    ``target_layer`` (when given) is checked to exist and returned. Otherwise the first of
    :data:`KNOWN_TARGET_LAYERS` present in ``network`` is used, else the last convolution
    (``nn.Conv1d/2d/3d`` in registration order, which is forward order for the usual nets).
    """
    names = dict(network.named_modules())
    if target_layer is not None:
        if target_layer not in names:
            close = [n for n in names if n and (n.endswith(target_layer) or target_layer in n)][:5]
            raise ValueError(f"target layer {target_layer!r} is not a module of {type(network).__name__}"
                             + (f"; did you mean one of {close}?" if close else ""))
        return target_layer
    for name in KNOWN_TARGET_LAYERS:
        if name in names:
            return name
    convs = [n for n, m in network.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not convs:
        raise ValueError(f"no convolution found in {type(network).__name__}; pass target_layers explicitly")
    return convs[-1]


def layer_with_map_side(network: nn.Module, example: torch.Tensor, min_side: int,
                        max_depth: int = 2) -> tuple[str, tuple[int, ...]]:
    """The deepest layer of ``network`` whose output map has every spatial side ``>= min_side`` for inputs like
    ``example`` ``(N, C, *spatial)``, and that map's spatial shape.

    For low-resolution inputs, where the conventional layer (:func:`find_target_layer`) is 1x1 or 2x2 and a
    Grad-CAM of it says nothing about where the network looks (every map is then almost uniform, so its energy
    in a lesion is about the lesion's area). "Deepest" is the last module to finish its forward among those
    called once, not in-place, with an ``(N, C, *spatial)`` output and at most ``max_depth`` levels below the
    root (``layer2``, ``features.denseblock2``, ``net.Mixed_5d``: whole stages and blocks, not one branch inside
    a block); one forward of ``example`` in eval mode, the network left as found.
    """
    if min_side < 1:
        raise ValueError(f"min_side must be >= 1, got {min_side}")
    done: list[tuple[str, tuple[int, ...]]] = []
    calls: dict[str, int] = {}

    def hook(name):
        def record(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            in_place = getattr(module, "inplace", False)
            if isinstance(output, torch.Tensor) and output.ndim == example.ndim and not in_place:
                done.append((name, tuple(output.shape[2:])))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in network.named_modules() if n]
    try:
        with torch.no_grad(), _preserved(network):
            network(example[:1])
    finally:
        for h in handles:
            h.remove()
    for name, side in reversed(done):
        if calls[name] == 1 and min(side) >= min_side and name.count(".") < max_depth:
            return name, side
    raise ValueError(f"no layer of {type(network).__name__} has a map of side >= {min_side} for input "
                     f"{tuple(example.shape[2:])}")


@contextlib.contextmanager
def _preserved(network: nn.Module):
    """Put back parameters' ``.grad``, train/eval flags, buffers (and the ``inplace`` flags Grad-CAM turns off on
    its target layer) after the block. Hooks need no restoring: :func:`_layer_hooks` removes its own."""
    grads = [(p, p.grad) for p in network.parameters()]
    inplace = [(m, m.__dict__.get("inplace")) for m in network.modules()]
    try:
        with restore_model_state(network, "eval"):
            yield network
    finally:
        for p, g in grads:
            p.grad = g
        for m, flag in inplace:
            if flag is not None:
                m.__dict__["inplace"] = flag


@contextlib.contextmanager
def _layer_hooks(network: nn.Module, layer: str):
    """MONAI's ``ModelWithHooks`` caching ``layer``'s output and its gradient, through hooks registered with torch's
    public API and removed (by their ``RemovableHandle``) after the block.

    The gradient comes from a hook on the layer's output tensor (registered by the forward hook), the same
    ``grad_output[0]`` a full backward hook sees, so the module itself is left exactly as found (a full backward
    hook would leave it marked as having one, and then refuse a later ``register_backward_hook``)."""
    hooked = ModelWithHooks(network, layer, register_forward=False, register_backward=False)
    hooked.register_forward = hooked.register_backward = True
    module = hooked.get_layer(layer)
    keep_activation, keep_gradient = hooked.forward_hook(layer), hooked.backward_hook(layer)

    def forward_hook(mod, inputs, output):
        keep_activation(mod, inputs, output)
        first = output if isinstance(output, torch.Tensor) else next(
            (o for o in output if isinstance(o, torch.Tensor)), None) if isinstance(output, (tuple, list)) else None
        if first is not None and first.requires_grad:
            first.register_hook(lambda grad: keep_gradient(mod, None, (grad,)))

    if module.__dict__.get("inplace"):  # as MONAI does: an in-place target layer would overwrite its input
        module.__dict__["inplace"] = False
    handle = module.register_forward_hook(forward_hook)
    try:
        yield hooked
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------- maps
def gradcam_maps(
    network: nn.Module,
    images: torch.Tensor,
    target_layer: str | None = None,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Grad-CAM of ``network`` for ``images`` ``(N, C, *spatial)`` -> ``(N, 1, *spatial)``, float, >= 0.

    The maps are MONAI's ``GradCAM`` ``ReLU(sum_c w_c A_c)`` upsampled (bilinear / trilinear) to the
    input size, *not* normalised (so energies can be compared); ``class_idx`` ``None`` explains each
    image's predicted class, an int or a ``(N,)`` sequence a given class. Images are processed one at a
    time (MONAI's ``class_score`` mixes classes across a batch). The network runs in eval mode and is
    left as found; works under ``torch.no_grad()``.
    """
    if not isinstance(images, torch.Tensor) or images.ndim < 3:
        raise ValueError(f"images must be a (N, C, *spatial) tensor, got {getattr(images, 'shape', type(images))}")
    layer = find_target_layer(network, target_layer)
    n = images.shape[0]
    if class_idx is None or isinstance(class_idx, int):
        classes: list[int | None] = [class_idx] * n
    else:
        classes = [int(c) for c in torch.as_tensor(class_idx).reshape(-1).tolist()]
        if len(classes) != n:
            raise ValueError(f"class_idx must be an int or have one entry per image ({n}), got {len(classes)}")
    maps = []
    with torch.inference_mode(False), torch.enable_grad(), _preserved(network), _layer_hooks(network, layer) as hooked:
        cam = GradCAM(nn_module=hooked, target_layers=layer, postprocessing=lambda m: m)
        for i in range(n):
            x = images[i:i + 1].detach().clone().requires_grad_(True)
            maps.append(cam(x, class_idx=classes[i]).detach().float())
    return torch.cat(maps).clamp_min(0.0)


def cam_energy_in_mask(cam: torch.Tensor | np.ndarray, mask: torch.Tensor | np.ndarray) -> float:
    """Share of CAM energy inside ``mask``: ``sum(cam * [mask > 0]) / sum(cam)``.

    ``cam`` and ``mask`` have the same spatial shape, optionally with batch / channel dims:
    ``(*spatial)``, ``(1, *spatial)`` or ``(N, 1, *spatial)``; a batch gives the mean of the per-image
    shares. ``cam`` must be non-negative (Grad-CAM is ReLU'd). Returns NaN when the CAM is all zero.
    """
    c = torch.as_tensor(np.asarray(cam) if isinstance(cam, np.ndarray) else cam).detach().float().cpu()
    m = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).detach().cpu() > 0
    if c.shape != m.shape:
        if c.numel() == m.numel():
            m = m.reshape(c.shape)
        else:
            try:  # one mask for a batch of maps
                m = torch.broadcast_to(m, c.shape)
            except RuntimeError:
                raise ValueError(f"cam shape {tuple(c.shape)} and mask shape {tuple(m.shape)} do not match") from None
    if (c < 0).any():
        raise ValueError(f"cam must be non-negative (a ReLU'd Grad-CAM), min is {float(c.min())}")
    if not torch.isfinite(c).all():
        raise ValueError("cam contains NaN or Inf")
    batched = c.ndim >= 4  # (N, 1, *spatial) or (1, *3d spatial): mean of per-leading-index shares
    if batched:
        total = c.flatten(1).sum(1)
        inside = (c * m).flatten(1).sum(1)
        ok = total > 0
        return float((inside[ok] / total[ok]).mean()) if ok.any() else float("nan")
    total = float(c.sum())
    return float((c * m).sum()) / total if total > 0 else float("nan")


def compare_gradcam(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    masks: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    target_layers: str | Mapping[str, str] | None = None,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Grad-CAM of each model on the same ``images`` ``(N, C, *spatial)``.

    Returns ``(cams, energies)``: ``cams[name]`` ``(N, 1, *spatial)``; ``energies[name]`` the per-image share
    of CAM energy inside ``masks`` (``(N, 1, *spatial)`` or a list with ``None`` where an image has no mask;
    NaN there), empty lists when no masks are given. ``target_layers``: one name for all models, a
    ``{model name: layer}`` dict, or ``None`` (auto-detect per model).
    """
    if not models:
        raise ValueError("models must hold at least one {name: network}")
    cams, energies = {}, {}
    for name, net in models.items():
        layer = target_layers.get(name) if isinstance(target_layers, Mapping) else target_layers
        cams[name] = gradcam_maps(net, images, layer, class_idx)
        energies[name] = []
        if masks is not None:
            for i in range(images.shape[0]):
                m = masks[i]
                energies[name].append(float("nan") if m is None else cam_energy_in_mask(cams[name][i], m))
    return cams, energies


# ---------------------------------------------------------------------------------------------- figures
def _display_image(img: torch.Tensor) -> np.ndarray:
    """``(C, *spatial)`` -> 2D display array (H, W) or (H, W, 3) in [0, 1] (3D: the middle slice)."""
    a = img.detach().float().cpu()
    while a.ndim > 3:  # (C, D, H, W): middle slice of the first spatial axis
        a = a[:, a.shape[1] // 2]
    a = a[:3].permute(1, 2, 0) if a.shape[0] >= 3 else a[0]
    a = a.numpy()
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _display_map(m: torch.Tensor) -> np.ndarray:
    a = m.detach().float().cpu()
    while a.ndim > 2:
        a = a[0] if a.shape[0] == 1 else a[a.shape[0] // 2]
    a = a.numpy()
    hi = float(a.max())
    return a / hi if hi > 0 else a


def gradcam_figure(
    images: torch.Tensor,
    cams: Mapping[str, torch.Tensor],
    masks: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    energies: Mapping[str, Sequence[float]] | None = None,
    row_titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    cell_inches: float = 2.0,
):
    """A matplotlib ``Figure`` (Agg, no pyplot state): rows = images, columns = original + one CAM overlay
    per model (``jet``, each map scaled to its max), mask outlines in white, energies in the titles."""
    from matplotlib.figure import Figure

    n, names = images.shape[0], list(cams)
    fig = Figure(figsize=(cell_inches * (len(names) + 1), cell_inches * n), dpi=100)
    axes = fig.subplots(n, len(names) + 1, squeeze=False)
    for i in range(n):
        shown = _display_image(images[i])
        mask = None if masks is None or masks[i] is None else _display_map(torch.as_tensor(masks[i]) > 0)
        for j, name in enumerate(["image"] + names):
            ax = axes[i][j]
            ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
            if j:
                ax.imshow(_display_map(cams[name][i]), cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
            if mask is not None and mask.any() and not mask.all():
                ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=0.8)
            title = (row_titles[i] if row_titles else f"#{i}") if j == 0 else name
            share = (energies or {}).get(name, [])[i] if j and i < len((energies or {}).get(name, [])) else None
            if share is not None and share == share:  # not NaN
                title += f"\nin mask {share:.0%}"
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig


def _figure_rgb(fig) -> np.ndarray:
    """Render a Figure to ``(3, H, W)`` uint8."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1))


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> Path:
    """:func:`monai_dpaat.atomic_io.atomic_write`, creating the folder first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)


def save_gradcam_grid(
    path: str | os.PathLike,
    images: torch.Tensor,
    cams: Mapping[str, torch.Tensor],
    masks=None,
    energies: Mapping[str, Sequence[float]] | None = None,
    row_titles: Sequence[str] | None = None,
    dpi: int = 100,
) -> Path:
    """Write the comparison grid (see :func:`gradcam_figure`) as a PNG, atomically. Returns the path."""
    fig = gradcam_figure(images, cams, masks, energies, row_titles)
    return _atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=dpi))


def log_gradcam_grid(
    writer,
    images: torch.Tensor,
    cams: Mapping[str, torch.Tensor],
    masks=None,
    energies: Mapping[str, Sequence[float]] | None = None,
    tag: str = "gradcam",
    global_step: int | None = None,
    row_titles: Sequence[str] | None = None,
) -> None:
    """Add the grid to TensorBoard (``writer``: a ``SummaryWriter`` or a log dir) with ``add_image``, and
    each model's mean in-mask energy with ``add_scalar`` (``{tag}/energy_in_mask/{model}``)."""
    from torch.utils.tensorboard import SummaryWriter

    own = not hasattr(writer, "add_image")
    tb = SummaryWriter(log_dir=str(writer)) if own else writer
    try:
        tb.add_image(tag, _figure_rgb(gradcam_figure(images, cams, masks, energies, row_titles)), global_step,
                     dataformats="CHW")
        for name, values in (energies or {}).items():
            finite = [v for v in values if v == v]
            if finite:
                tb.add_scalar(f"{tag}/energy_in_mask/{name}", float(np.mean(finite)), global_step)
        tb.flush()
    finally:
        if own:
            tb.close()


# ---------------------------------------------------------------------------------------------- CLI
def _build_network(spec: Any) -> nn.Module:
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, Mapping) and "_target_" in spec:
        from monai.bundle import ConfigParser

        return ConfigParser({"network": dict(spec)}).get_parsed_content("network")
    raise ValueError(f"network must be an nn.Module or a config dict with '_target_', got {spec!r}")


def read_model_specs(models: Any, trust_config: bool = False) -> list[tuple[str, Any]]:
    """``[(name, spec)]`` from the forms :func:`load_model_specs` takes, building nothing. Unless ``trust_config``,
    every network config is checked with :func:`monai_dpaat.utils.check_config_is_safe`: a spec file (or dict) is
    data, so no ``$`` expression runs and only ``nn.Module`` classes / network factories of torch, torchvision,
    monai and monai_dpaat are built; ``UnsafeConfigError`` (a ``ValueError``) names the file and key."""
    source = "models"
    if isinstance(models, (str, os.PathLike)):
        path = Path(models)
        if not path.is_file():
            raise ValueError(f"models must be a dict, a list or a JSON/YAML file; {str(path)!r} does not exist")
        text, source = path.read_text(), str(path)
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                models = yaml.safe_load(text)
            else:
                models = json.loads(text)
        except Exception as err:  # json.JSONDecodeError, yaml.YAMLError
            raise ValueError(f"model spec file {source!r} is not valid JSON/YAML: {err}") from None
    if isinstance(models, Sequence) and not isinstance(models, str):
        items = []
        for i, spec in enumerate(models):
            if not isinstance(spec, Mapping) or "name" not in spec:
                raise ValueError(f"model spec {i} must be a dict with a 'name', got {spec!r}")
            items.append((str(spec["name"]), spec))
    elif isinstance(models, Mapping):
        items = [(str(k), v) for k, v in models.items()]
    else:
        raise ValueError(f"models must be a dict, a list of specs or a file path, got {type(models).__name__}")
    if not items:
        raise ValueError("models is empty")
    for name, spec in items:
        if isinstance(spec, nn.Module):
            continue
        if not isinstance(spec, Mapping) or "network" not in spec:
            raise ValueError(f"model {name!r}: expected an nn.Module or a dict with 'network', got {spec!r}")
        if not trust_config and isinstance(spec["network"], Mapping):
            check_config_is_safe({"network": dict(spec["network"])}, "network", source, what="model spec",
                                 prefix=f"{name}::")
    return items


def load_model_specs(
    models: Any, device: str | torch.device = "cpu", trust_config: bool = False
) -> tuple[dict[str, nn.Module], dict[str, str | None]]:
    """``{name: network}`` and ``{name: target layer or None}`` from any of:

    - ``{name: nn.Module}``;
    - ``{name: {"network": nn.Module | {"_target_": ...}, "checkpoint": path, "key": "model",
      "target_layer": "layer4"}}`` (``checkpoint``, ``key`` and ``target_layer`` optional);
    - a list of such spec dicts with a ``"name"`` each;
    - a path to a JSON / YAML file holding the dict or list.

    Network configs are checked before anything is built (see :func:`read_model_specs`; ``trust_config``
    builds them as MONAI would, ``$`` expressions included).
    """
    nets, layers = {}, {}
    for name, spec in read_model_specs(models, trust_config):
        if isinstance(spec, nn.Module):
            nets[name], layers[name] = spec, None
            continue
        net = _build_network(spec["network"])
        if spec.get("checkpoint"):
            load_weights(net, spec["checkpoint"], key=spec.get("key"), map_location=device)
        nets[name], layers[name] = net.to(device), spec.get("target_layer")
    return nets, layers


def otsu_lesion_mask(image: torch.Tensor) -> torch.Tensor:
    """A rough lesion mask for a dermoscopy image ``(3, H, W)`` in [0, 1] -> ``(1, H, W)`` bool, for when no
    manual segmentation exists: pixels darker than the Otsu threshold of the grey image, the largest
    connected region not touching the border (the dark vignette of many dermoscopes), else the largest.
    An approximation for CAM-energy statistics, not a segmentation."""
    from scipy import ndimage

    grey = image.detach().float().cpu().mean(0).numpy()
    hist, edges = np.histogram(grey, bins=256, range=(float(grey.min()), float(grey.max()) + 1e-8))
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    omega, mu = np.cumsum(p), np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.clip(omega * (1 - omega), 1e-12, None)
    threshold = edges[int(np.argmax(between)) + 1]
    dark = grey < threshold
    labels, n = ndimage.label(dark)
    if n == 0:
        return torch.from_numpy(dark)[None]
    sizes = ndimage.sum(dark, labels, index=np.arange(1, n + 1))
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))) - {0}
    inner = [i for i in range(1, n + 1) if i not in border]
    pick = max(inner, key=lambda i: sizes[i - 1]) if inner else int(np.argmax(sizes)) + 1
    return torch.from_numpy(labels == pick)[None]


def load_ham10000_images(
    data_dir: str | os.PathLike,
    n_images: int = 8,
    spatial_size: int | Sequence[int] = 224,
    classes: Sequence[str] = ("mel", "nv"),
    mask_dir: str | os.PathLike | None = None,
    seed: int = 0,
    image_ids: Sequence[str] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor | None], list[str], list[str]]:
    """``n_images`` HAM10000 images (alternating over ``classes``, one per lesion, seeded choice) as
    ``(N, 3, H, W)`` float in [0, 1] (read by :func:`monai_dpaat.data.load_ham10000_image`, as training reads
    them), plus masks (``{image_id}_segmentation.png`` or ``{image_id}.png`` in
    ``mask_dir``, ISIC 2018 naming; ``None`` where absent; ``mask_dir="otsu"``: :func:`otsu_lesion_mask`
    proxies), image ids and diagnoses.

    ``data_dir`` is the ``ham10000`` folder (with ``HAM10000_metadata.csv``) or its parent.
    """
    from PIL import Image

    if isinstance(classes, str):  # "mel,nv" from a command line
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    if isinstance(image_ids, str):
        image_ids = [i.strip() for i in image_ids.split(",") if i.strip()]
    root = Path(data_dir)
    if not (root / "HAM10000_metadata.csv").is_file() and (root / "ham10000" / "HAM10000_metadata.csv").is_file():
        root = root / "ham10000"
    meta = root / "HAM10000_metadata.csv"
    if not meta.is_file():
        raise ValueError(f"data_dir {str(data_dir)!r} has no HAM10000_metadata.csv (nor a ham10000/ folder with one)")
    if int(n_images) < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    size = (int(spatial_size),) * 2 if isinstance(spatial_size, (int, float)) else tuple(int(s) for s in spatial_size)
    files = ham10000_image_files(root)
    rows: dict[str, list[str]] = {c: [] for c in classes}
    dx_of: dict[str, str] = {}
    seen = set()
    for row in read_ham10000_metadata(meta):
        if row["image_id"] in files:
            dx_of[row["image_id"]] = row["dx"]
            if row["dx"] in rows and row["lesion_id"] not in seen:
                seen.add(row["lesion_id"])
                rows[row["dx"]].append(row["image_id"])
    if image_ids is not None:
        missing = [i for i in image_ids if i not in files]
        if missing:
            raise ValueError(f"image ids not found under {str(root)!r}: {missing}")
        chosen = list(image_ids)
    else:
        rng = random.Random(seed)
        pools = [sorted(rows[c]) for c in classes]
        for p in pools:
            rng.shuffle(p)
        chosen = []
        while len(chosen) < n_images and any(pools):
            for p in pools:
                if p and len(chosen) < n_images:
                    chosen.append(p.pop())
        if not chosen:
            raise ValueError(f"no images of classes {list(classes)} found under {str(root)!r}")
    imgs, masks = [], []
    for image_id in chosen:
        imgs.append(load_ham10000_image(files[image_id], size))
        mask = None
        if isinstance(mask_dir, str) and mask_dir.lower() == "otsu":  # from the full-resolution image
            m = otsu_lesion_mask(load_ham10000_image(files[image_id]))
            m = Image.fromarray(m[0].numpy().astype(np.uint8) * 255).resize(size[::-1], Image.NEAREST)
            mask = torch.from_numpy(np.asarray(m) > 127)[None]
        elif mask_dir is not None:
            for cand in (f"{image_id}_segmentation.png", f"{image_id}.png"):
                if (Path(mask_dir) / cand).is_file():
                    m = Image.open(Path(mask_dir) / cand).convert("L").resize(size[::-1], Image.NEAREST)
                    mask = torch.from_numpy(np.asarray(m) > 127)[None]
                    break
        masks.append(mask)
    return torch.stack(imgs), masks, chosen, [dx_of.get(i, "?") for i in chosen]


#: the most images (grid rows) one Grad-CAM grid takes: each is a row of panels, so 100000 would run for minutes
#: and write a PNG hundreds of thousands of pixels tall
MAX_GRADCAM_IMAGES = 64


def gradcam_cli(
    models: Any,
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    n_images: int = 8,
    spatial_size: int | Sequence[int] = 224,
    target_layers: str | Mapping[str, str] | None = None,
    mask_dir: str | os.PathLike | None = None,
    classes: Sequence[str] = ("mel", "nv"),
    device: str = "cpu",
    seed: int = 0,
    image_ids: Sequence[str] | None = None,
    tensorboard: bool = True,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    filename: str = "gradcam_grid.png",
    trust_config: bool = False,
) -> dict[str, Any]:
    """Compare models' Grad-CAM on the same HAM10000 images; the function the ``gradcam`` CLI command calls.

    Args:
        models: see :func:`load_model_specs` (dict / list of specs / JSON or YAML file).
        data_dir: the HAM10000 folder (or its parent). output_dir: where the outputs go (created).
        n_images: images in the grid (rows), at most :data:`MAX_GRADCAM_IMAGES`. spatial_size: the size the
            models take (images resized to it).
        target_layers: one layer name for all models or ``{name: layer}``; per-model ``target_layer`` in a
            spec wins; default auto-detect (:func:`find_target_layer`).
        mask_dir: optional lesion masks (ISIC 2018 ``{image_id}_segmentation.png``) -> energy in mask;
            ``"otsu"`` uses rough automatic masks (:func:`otsu_lesion_mask`) where no manual ones exist.
        transform: optional callable applied to the ``(N, 3, H, W)`` [0, 1] batch before the models
            (e.g. the normalisation they were trained with); the grid shows the untransformed images.
        trust_config: build network configs in ``models`` as MONAI would (``$`` expressions run, any
            ``_target_``); by default they are checked first (see :func:`read_model_specs`).

    Writes ``output_dir/filename`` (PNG), ``output_dir/gradcam_energy.json`` (per-image and mean in-mask
    energies, image ids) and, with ``tensorboard``, an image + scalars under ``output_dir/tensorboard``.
    Returns ``{"png": path, "json": path, "tensorboard": dir | None, "image_ids": [...],
    "energy_in_mask": {model: mean or None}}``.
    """
    if not isinstance(n_images, bool) and isinstance(n_images, int) and n_images > MAX_GRADCAM_IMAGES:
        raise ValueError(f"n_images must be at most {MAX_GRADCAM_IMAGES} (one grid row per image), got {n_images}")
    nets, layers = load_model_specs(models, device, trust_config)
    for name in nets:
        if layers[name] is None:
            layers[name] = target_layers.get(name) if isinstance(target_layers, Mapping) else target_layers
    images, masks, ids, dx = load_ham10000_images(data_dir, n_images, spatial_size, classes, mask_dir, seed, image_ids)
    model_input = transform(images) if transform is not None else images
    cams, energies = compare_gradcam(nets, model_input.to(device), masks if mask_dir else None, layers)
    cams = {k: v.cpu() for k, v in cams.items()}
    out = Path(output_dir)
    titles = [f"{i} ({d})" for i, d in zip(ids, dx)]
    png = save_gradcam_grid(out / filename, images, cams, masks if mask_dir else None, energies, titles)
    means = {}
    for name, values in energies.items():
        finite = [v for v in values if v == v]
        means[name] = float(np.mean(finite)) if finite else None
    summary = {"image_ids": ids, "dx": dx, "target_layers": {k: find_target_layer(nets[k], layers[k]) for k in nets},
               "energy_in_mask": means,
               "energy_in_mask_per_image": {k: [v if v == v else None for v in vs] for k, vs in energies.items()}}
    js = _atomic_write(out / "gradcam_energy.json", lambda f: f.write(json.dumps(summary, indent=2).encode("utf-8")))
    tb_dir = None
    if tensorboard:
        tb_dir = out / "tensorboard"
        log_gradcam_grid(tb_dir, images, cams, masks if mask_dir else None, energies, row_titles=titles)
    return {"png": str(png), "json": str(js), "tensorboard": None if tb_dir is None else str(tb_dir),
            "image_ids": ids, "energy_in_mask": means}


def check_gradcam_args(**kwargs: Any) -> dict[str, Any]:
    """Check the arguments of :func:`gradcam_cli` as a command line gives them (``"8"`` for 8 too), before any
    model is built: the numbers and flags, that ``data_dir`` (and ``mask_dir`` unless ``"otsu"``) is a folder,
    ``filename`` a bare file name, ``output_dir`` writable, the device present, and the ``models`` specs readable
    and safe (:func:`read_model_specs`). Messages name the ``gradcam`` command's flags (``--n_images``); errors
    are ``ValueError``, or ``TypeError`` for an argument :func:`gradcam_cli` does not take or one missing.
    Returns all of :func:`gradcam_cli`'s arguments, defaults filled in."""
    bound = inspect.signature(gradcam_cli).bind(**kwargs)
    bound.apply_defaults()
    a = bound.arguments
    if check_int(a["n_images"], "--n_images", 1) > MAX_GRADCAM_IMAGES:
        raise ValueError(f"--n_images must be at most {MAX_GRADCAM_IMAGES} (one grid row per image), "
                         f"got {a['n_images']!r}")
    sizes = list(a["spatial_size"]) if isinstance(a["spatial_size"], (list, tuple)) else [a["spatial_size"]]
    if len(sizes) not in (1, 2):
        raise ValueError(f"--spatial_size must be an integer or two, got {a['spatial_size']!r}")
    for size in sizes:
        check_int(size, "--spatial_size", 1)
    check_int(a["seed"], "--seed", 0)
    check_bool(a["tensorboard"], "--tensorboard")
    check_device(a["device"])
    if not Path(str(a["data_dir"])).is_dir():
        raise ValueError(f"--data_dir {str(a['data_dir'])!r} does not exist or is not a folder")
    mask_dir = a["mask_dir"]
    if mask_dir is not None and str(mask_dir).lower() != "otsu" and not Path(str(mask_dir)).is_dir():
        raise ValueError(f"--mask_dir {str(mask_dir)!r} does not exist or is not a folder (or give 'otsu')")
    if not isinstance(a["filename"], str) or not a["filename"] or Path(a["filename"]).name != a["filename"]:
        raise ValueError(f"--filename must be a file name (no folder), got {a['filename']!r}")
    read_model_specs(a["models"], trust_config=check_bool(a["trust_config"], "--trust_config"))
    check_writable_dir(a["output_dir"])
    return dict(a)
