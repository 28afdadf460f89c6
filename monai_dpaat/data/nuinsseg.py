"""H&E nuclei segmentation tiles in the NuInsSeg layout (Mahbod et al. 2024)::

    root/<organ>/tissue images/<name>.png     # RGB tile
    root/<organ>/label masks/<name>.tif       # instance ids (uint16, 0 = background)
    root/<organ>/mask binary/<name>.png       # 0/255 nucleus mask

``root`` may also be a single organ folder (holding ``tissue images`` itself). Images and masks are
paired by file stem; an image without its mask is an error, never skipped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data import PILReader
from monai.transforms import (
    AsDiscreted,
    Compose,
    EnsureTyped,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandRotate90d,
    RandSpatialCropSamplesd,
    SpatialPadd,
)

from monai_dpaat.data.transforms import CheckedLoadImaged, CheckSameSpatialShaped, _positive_size, rgb_image_loading
from monai_dpaat.data.utils import (
    PathLike,
    as_mask,
    check_dir,
    check_image_file,
    load_datalist,
    logger,
    reindex,
)

__all__ = ["nuinsseg_datalist", "split_datalist", "nuinsseg_train_transforms", "nuinsseg_eval_transforms"]

IMAGE_FOLDER = "tissue images"
MASK_FOLDERS = {"binary": "mask binary", "instance": "label masks"}
IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith("."):
            if f.stem in files:
                raise ValueError(f"two files with stem {f.stem!r} in {str(folder)!r}: {files[f.stem].name}, {f.name}.")
            files[f.stem] = f
    return files


def _organ_dirs(root: Path) -> list[Path]:
    if (root / IMAGE_FOLDER).is_dir():
        return [root]
    organs = [d for d in sorted(root.iterdir()) if d.is_dir() and (d / IMAGE_FOLDER).is_dir()]
    if not organs:
        raise FileNotFoundError(
            f"no NuInsSeg organ folder under {str(root)!r}: expected {str(root)!r}/<organ>/{IMAGE_FOLDER}/*.png."
        )
    return organs


def nuinsseg_datalist(root: PathLike, target: str = "binary", validate: bool = True) -> list[dict]:
    """Pair every tissue image with its mask, across all organ folders of ``root``.

    Args:
        root: NuInsSeg root (organ folders inside) or one organ folder.
        target: ``"binary"`` (``mask binary/*.png``) or ``"instance"`` (``label masks/*.tif``).
        validate: read each image and mask header with PIL (cheap) and raise when a file is
            unreadable/corrupt, holds several frames (multi-frame TIFF) or a mask's size differs
            from its image's.

    Returns:
        items ``{"image": str, "label": str, "organ": str, "name": str (file stem), "index": int}``,
        ordered by organ then name.

    Raises:
        FileNotFoundError: ``root``, an organ's mask folder, or an image's mask is missing (the
            message names the image and the expected mask folder).
        ValueError: unknown ``target``, no images at all, corrupt file or size mismatch (``validate``).
    """
    if target not in MASK_FOLDERS:
        raise ValueError(f"target must be one of {sorted(MASK_FOLDERS)}, got {target!r}.")
    root = check_dir(root, "NuInsSeg root")
    items = []
    for organ_dir in _organ_dirs(root):
        images = _files_by_stem(organ_dir / IMAGE_FOLDER)
        mask_dir = check_dir(organ_dir / MASK_FOLDERS[target], f"NuInsSeg {target} mask folder")
        masks = _files_by_stem(mask_dir)
        for name, image in images.items():
            if name not in masks:
                raise FileNotFoundError(
                    f"image {str(image)!r} has no mask: expected {str(mask_dir / name)!r}.<png|tif> ({target} target)."
                )
            items.append({"image": str(image), "label": str(masks[name]), "organ": organ_dir.name, "name": name})
        orphans = sorted(set(masks) - set(images))
        if orphans:
            logger.warning("NuInsSeg: %d mask(s) without an image in %s ignored: %s", len(orphans), mask_dir, orphans)
    if not items:
        raise ValueError(f"no tissue images found under {str(root)!r} (looked in */{IMAGE_FOLDER}/).")
    if validate:
        for item in items:
            image_size = check_image_file(item["image"])
            mask_size = check_image_file(item["label"])
            if image_size != mask_size:
                raise ValueError(
                    f"mask {item['label']!r} is {mask_size[0]}x{mask_size[1]} (HxW) but its image "
                    f"{item['image']!r} is {image_size[0]}x{image_size[1]}; expected equal sizes."
                )
    return reindex(items)


def split_datalist(
    datalist: Sequence[dict], by: str = "organ", val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Split a datalist into ``(train, val)``, each re-indexed (``"index"`` 0..len-1).

    Args:
        datalist: items (any loader's output), or a Decathlon-style JSON path read with
            :func:`~monai_dpaat.data.load_datalist` (its ``"training"`` list).
        by: ``"organ"`` keeps each organ (item key ``"organ"``) in one split (needs >= 2 organs);
            ``"image"`` splits items independently. Any other item key works as a group key too.
        val_fraction: fraction of groups in validation, in (0, 1); at least one group each side.
        seed: seed of the shuffle (deterministic).

    Raises:
        ValueError: bad fraction, a missing group key, or fewer than 2 groups.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    items = load_datalist(datalist, add_index=False) if isinstance(datalist, (str, PathLike)) else list(datalist)
    if by == "image":
        groups = [[item] for item in items]
    else:
        missing = [i for i, item in enumerate(items) if by not in item]
        if missing:
            bad = items[missing[0]]
            raise ValueError(f"cannot split by {by!r}: item {missing[0]} has no {by!r} key (keys {sorted(bad)}).")
        keys = list(dict.fromkeys(item[by] for item in items))
        groups = [[item for item in items if item[by] == k] for k in keys]
    if len(groups) < 2:
        raise ValueError(
            f"cannot split {len(items)} item(s) by {by!r}: found {len(groups)} group(s), need at least 2"
            + (" (use by='image' for a single organ)." if by == "organ" else ".")
        )
    random.Random(seed).shuffle(groups)
    n_val = min(max(1, round(val_fraction * len(groups))), len(groups) - 1)
    val = [item for g in groups[:n_val] for item in g]
    train = [item for g in groups[n_val:] for item in g]
    order = {id(item): i for i, item in enumerate(items)}
    return reindex(sorted(train, key=lambda x: order[id(x)])), reindex(sorted(val, key=lambda x: order[id(x)]))


def _load_and_prepare(target: str, with_label: bool = True) -> list:
    """Load RGB (3, H, W) in [0, 1] (8- or 16-bit, by the file's bit depth) and the mask (1, H, W):
    {0, 1} for binary, instance ids kept. An RGB mask with equal channels is read as grayscale."""
    if target not in MASK_FOLDERS:
        raise ValueError(f"target must be one of {sorted(MASK_FOLDERS)}, got {target!r}.")
    xforms = rgb_image_loading("image")
    if not with_label:
        return xforms
    xforms += [
        CheckedLoadImaged(
            keys="label", reader=PILReader(converter=as_mask, reverse_indexing=False), image_only=True,
            ensure_channel_first=True,
        ),
        CheckSameSpatialShaped(keys=("image", "label")),
    ]
    if target == "binary":
        xforms.append(AsDiscreted(keys="label", threshold=0.5))  # 0/255 or 0/1 or ids -> {0, 1}
    return xforms


def _finalize(target: str, track_meta: bool, with_label: bool = True) -> list:
    label_dtype = torch.float32 if target == "binary" else torch.int64
    xforms = [EnsureTyped(keys="image", dtype=torch.float32, track_meta=track_meta)]
    if with_label:
        xforms.append(EnsureTyped(keys="label", dtype=label_dtype, track_meta=track_meta))
    return xforms


def nuinsseg_train_transforms(
    patch_size: int | Sequence[int] = (256, 256),
    num_samples: int = 4,
    target: str = "binary",
    sampler: str = "posneg",
    prob: float = 0.5,
    track_meta: bool = False,
) -> Compose:
    """Training transforms: load, pad tiles smaller than ``patch_size``, sample ``num_samples``
    random patches per tile, random flips and 90-degree rotations (square patches).

    Output per patch: image ``(3, *patch_size)`` float32 in [0, 1]; label ``(1, *patch_size)``
    float32 in {0, 1} (binary) or int64 instance ids (instance). A :class:`monai.data.DataLoader`
    with ``batch_size=B`` yields ``(B * num_samples, ...)`` batches (MONAI flattens the samples).

    Args:
        patch_size: patch ``(H, W)`` or one int, positive.
        num_samples: patches per tile.
        target: ``"binary"`` or ``"instance"`` (must match the datalist's).
        sampler: ``"posneg"`` (:class:`~monai.transforms.RandCropByPosNegLabeld`, half the patches
            centred on nuclei) or ``"uniform"`` (:class:`~monai.transforms.RandSpatialCropSamplesd`).
        prob: probability of each flip / rotation.
        track_meta: keep :class:`~monai.data.MetaTensor` outputs (default plain tensors).
    """
    size = _positive_size(patch_size, 2, "patch_size")
    keys = ("image", "label")
    xforms = _load_and_prepare(target) + [SpatialPadd(keys=keys, spatial_size=size)]
    if sampler == "posneg":
        xforms.append(RandCropByPosNegLabeld(keys=keys, label_key="label", spatial_size=size, pos=1, neg=1,
                                             num_samples=num_samples))
    elif sampler == "uniform":
        xforms.append(RandSpatialCropSamplesd(keys=keys, roi_size=size, num_samples=num_samples, random_size=False))
    else:
        raise ValueError(f"sampler must be 'posneg' or 'uniform', got {sampler!r}.")
    xforms += [RandFlipd(keys=keys, prob=prob, spatial_axis=0), RandFlipd(keys=keys, prob=prob, spatial_axis=1)]
    if size[0] == size[1]:
        xforms.append(RandRotate90d(keys=keys, prob=prob, max_k=3))
    return Compose(xforms + _finalize(target, track_meta))


def nuinsseg_eval_transforms(target: str = "binary", track_meta: bool = True, with_label: bool = True) -> Compose:
    """Evaluation transforms: full tiles, no crop (for :class:`monai.inferers.SlidingWindowInferer`).

    Output: image ``(3, H, W)`` float32 in [0, 1]; label ``(1, H, W)`` ({0, 1} float32 or int64 ids).
    Tiles differ in size, so batch with ``batch_size=1`` (or pad). ``track_meta`` keeps the
    :class:`~monai.data.MetaTensor` metadata (default) for saving predictions. ``with_label=False``
    for unlabelled inference items (``{"image": path}``).
    """
    return Compose(_load_and_prepare(target, with_label) + _finalize(target, track_meta, with_label))
