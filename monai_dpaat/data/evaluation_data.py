"""The samples a robustness evaluation of a trained model reads (``robustness --network`` of the CLI): a Decathlon
datalist or a dataset folder (HAM10000 for classification, NuInsSeg layout or NIfTI volumes for segmentation),
a class-balanced subset of it and its loader.

Everything that can be checked without decoding an image is checked before any attack runs: image files exist,
classification labels are class indices, the images' dimensionality fits the network's. Errors are
:class:`~monai_dpaat.data.utils.DataError` (a ``ValueError``) naming the file, the item and what was expected.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.data import DataLoader, Dataset
from torch import nn

from monai_dpaat.data.ham10000 import ham10000_datalists, ham10000_transforms
from monai_dpaat.data.nifti import check_nifti_file, nifti_transforms
from monai_dpaat.data.nuinsseg import nuinsseg_datalist, nuinsseg_eval_transforms
from monai_dpaat.data.transforms import CheckClassLabeld
from monai_dpaat.data.utils import DataError, load_datalist

__all__ = ["balanced_subset", "first_image", "is_volume", "check_datalist_labels", "read_evaluation_datalist",
           "folder_items", "check_image_dims", "evaluation_loader"]


def balanced_subset(items: Sequence[dict], limit: int | None) -> list[dict]:
    """At most ``limit`` items (all for ``None``), taken round-robin over labels (datalists are sorted by label)."""
    if limit is None or limit >= len(items):
        return list(items)
    groups: dict[str, list[dict]] = {}
    for item in items:
        groups.setdefault(str(item.get("label")), []).append(item)
    rounds = max(len(g) for g in groups.values())
    return [g[i] for i in range(rounds) for g in groups.values() if i < len(g)][:limit]


def first_image(items: Sequence[dict]) -> str:
    """The image path of the first item (its first file when it lists several), ``""`` for no items."""
    first = items[0].get("image", "") if items else ""
    return str(first[0] if isinstance(first, (list, tuple)) and first else first)


def is_volume(items: Sequence[dict] | None) -> bool:
    """Whether ``items`` are NIfTI volumes, which keep their (z-scored) intensities; photos and tiles are scaled
    to [0, 1]. ``None`` (a dataset folder not read yet) is no volume."""
    return items is not None and first_image(items).lower().endswith((".nii", ".nii.gz"))


def check_datalist_labels(items: Sequence[dict], datalist: Any, num_classes: int | None) -> None:
    """Every item of a classification datalist has an existing image file and a class-index label (an integer
    >= 0, below ``num_classes`` when known), checked before any attack without decoding an image."""
    check = CheckClassLabeld("label", num_classes=num_classes)
    for i, item in enumerate(items):
        image = item.get("image")
        first = image[0] if isinstance(image, (list, tuple)) and image else image
        if isinstance(first, (str, os.PathLike)) and not Path(first).is_file():
            what = "is a folder" if Path(first).is_dir() else "does not exist"
            raise DataError(f"datalist {str(datalist)!r} item {i}: image {str(first)!r} {what}")
        if "label" not in item:
            raise DataError(f"datalist {str(datalist)!r} item {i} ({str(first)!r}) has no 'label'")
        try:
            check.class_index(item["label"], first, "label")
        except ValueError as err:
            raise DataError(f"datalist {str(datalist)!r} item {i}: {err}") from None


def read_evaluation_datalist(datalist: Any, split: str, task: str, num_classes: int | None) -> list[dict]:
    """The ``split`` items of the Decathlon datalist JSON ``datalist``; for classification their images and labels
    are checked (:func:`check_datalist_labels`)."""
    if not Path(datalist).is_file():
        raise DataError(f"datalist file {datalist!r} does not exist")
    items = load_datalist(datalist, split=split)
    if task == "classification":
        check_datalist_labels(items, datalist, num_classes)
    return items


def folder_items(task: str, root: Path, split: str, classes: Sequence[str], seed: int) -> tuple[list, list | None]:
    """``(items, class names)`` of a dataset folder: the NuInsSeg tiles for segmentation (no class names), the
    ``split`` of HAM10000's ``classes`` (no validation split) for classification."""
    if task == "segmentation":
        return nuinsseg_datalist(root), None
    lists = ham10000_datalists(root, classes=list(classes), seed=seed, val_fraction=None)
    if split not in lists:
        raise DataError(f"unknown split {split!r}; HAM10000 splits are {sorted(lists)}")
    return lists[split], list(classes)


def check_image_dims(task: str, items: Sequence[dict], network: nn.Module) -> None:
    """A volume fed to a 2D path (or a tile to a 3D network) would fail deep in a transform or a convolution:
    say which file and what shape was expected instead. Reads the first image's header only."""
    image, data_dims, shape = first_image(items), 2, None
    if is_volume(items):
        shape = check_nifti_file(image)  # the header only
        data_dims = 3 if len(shape) >= 3 else 2
    convs = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
    net_dims = 2 if task == "classification" else next(
        (n for m in network.modules() for conv, n in convs.items() if isinstance(m, conv)), None)
    if net_dims is None or net_dims == data_dims:
        return
    found = f"a 3D volume of shape {shape}" if data_dims == 3 else "a 2D image"
    if task == "classification":
        raise DataError(f"image {image!r} is {found}, but classification takes 2D images (PNG/JPEG/TIFF, read as "
                        "(C, H, W)); evaluate volumes with --task segmentation and a 3D network config, or a bundle")
    expected = "(C, H, W) images" if net_dims == 2 else "(C, D, H, W) volumes"
    raise DataError(f"image {image!r} is {found}, but the network is {net_dims}D and takes {expected}; give a "
                    f"{data_dims}D network with --network <config> or --bundle")


def evaluation_loader(task: str, items: Sequence[dict], image_size: int, batch_size: int) -> DataLoader:
    """A ``DataLoader`` of ``items`` with the evaluation transforms of their kind: HAM10000 at ``image_size``
    (batches of ``batch_size``), NIfTI volumes or NuInsSeg tiles whole (one a batch: they differ in size)."""
    if task == "classification":
        transforms = ham10000_transforms(image_size, train=False)
    elif is_volume(items):
        transforms = nifti_transforms(spatial_size=None, track_meta=False)
    else:
        transforms = nuinsseg_eval_transforms(track_meta=False)
    bs = batch_size if task == "classification" else 1  # tiles differ in size
    return DataLoader(Dataset(list(items), transforms), batch_size=bs, shuffle=False, num_workers=0)
