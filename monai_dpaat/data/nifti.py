"""3D NIfTI segmentation data, e.g. BraTS 2013 (a folder per case) or flat files (``*.nii`` +
``*_label.nii.gz``). Several modalities of one case become the channels of one image."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandFlipd,
    Resized,
)

from monai_dpaat.data.transforms import (
    CheckedLoadImaged,
    CheckFinited,
    CheckSameSpatialShaped,
    RemapLabelsd,
    _positive_size,
    above_background,
)
from monai_dpaat.data.utils import DataError, PathLike, check_dir, reindex

__all__ = ["BRATS_WHOLE_TUMOUR", "nifti_datalist", "nifti_transforms", "check_nifti_file", "CheckNiftiFilesd"]

#: BraTS ``OTMultiClass`` labels (1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing) -> whole tumour.
BRATS_WHOLE_TUMOUR = {0: 0, 1: 1, 2: 1, 3: 1, 4: 1}

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _strip_nifti(name: str) -> str:
    for s in _NIFTI_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return Path(name).stem


def check_nifti_file(path: PathLike, volume: bool = False) -> tuple[int, ...]:
    """Read a NIfTI header with nibabel and return the array shape; raise ``ValueError`` naming the
    file when it is unreadable or corrupt (the voxel data is not read), or, with ``volume``, when it
    is not one 3D volume (2D, or 4D with several volumes; ``(H, W, D, 1)`` passes)."""
    import nibabel as nib

    try:
        shape = tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, gzip.BadGzipFile...
        raise ValueError(f"NIfTI file {str(path)!r} is unreadable or corrupt: {e}") from e
    if volume and not (len(shape) == 3 or (len(shape) > 3 and all(s == 1 for s in shape[3:]))):
        fix = ("split it into one 3D file per modality / time point" if len(shape) > 3
               else "a 2D image belongs in a 2D pipeline")
        raise DataError(
            f"NIfTI file {str(path)!r} is {len(shape)}D (shape {shape}); expected one 3D volume (H, W, D) per file: "
            f"{fix}."
        )
    return shape


class CheckNiftiFilesd(MapTransform):
    """Before loading: read the header of every file of ``keys`` (a path or a list of paths, one per
    modality) and raise naming the file when it is unreadable or not one 3D volume
    (:func:`check_nifti_file`), so a 4D series never reaches the network as extra channels.
    Returns the data unchanged."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> Mapping:
        for key in self.key_iterator(data):
            files = data[key]
            for f in [files] if isinstance(files, (str, Path)) else files:
                check_nifti_file(f, volume=True)
        return data


def _one_match(folder: Path, pattern: str, case: str) -> Path:
    matches = sorted(p for p in folder.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, pattern))
    if len(matches) != 1:
        found = [p.name for p in matches]
        raise FileNotFoundError(
            f"case {case!r}: expected exactly one file matching {pattern!r} in {str(folder)!r}, "
            f"found {found or 'none'}."
        )
    return matches[0]


def nifti_datalist(
    root: PathLike,
    image_patterns: str | Sequence[str] = ("Flair*.nii.gz", "T1c*.nii.gz"),
    label_pattern: str | None = "OTMultiClass.nii.gz",
    layout: str = "auto",
    validate: bool = True,
) -> list[dict]:
    """A datalist of NIfTI cases, one or more modality files per case.

    Layouts:
        - ``"folders"``: each (non-hidden) subfolder of ``root`` is a case; every pattern (a glob,
          ``{case}`` replaced by the folder name) must match exactly one file in it.
        - ``"flat"``: files in ``root``; the first image pattern (a glob) finds the cases, the case
          name is the file name without ``.nii``/``.nii.gz``; the other patterns and
          ``label_pattern`` are formatted with ``{case}``, e.g. tiny_nifti:
          ``image_patterns="*.nii", label_pattern="{case}_label.nii.gz"``. Files matching the
          label pattern (``{case}`` -> ``*``) are never cases.
        - ``"auto"``: ``"folders"`` when ``root`` has a subfolder, else ``"flat"``.

    Args:
        root: data folder.
        image_patterns: one pattern per modality (channel order).
        label_pattern: label file pattern, or ``None`` for unlabelled data (no ``"label"`` key).
        layout: ``"auto"``, ``"folders"`` or ``"flat"``.
        validate: read every header (nibabel, cheap) and raise on a corrupt file, a file that is
            not one 3D volume (2D, 4D) or when the modalities and label of a case differ in shape.

    Returns:
        items ``{"image": [str, ...] (one path per modality), "label": str, "case": str, "index": int}``,
        sorted by case name. ``LoadImaged`` stacks the image list into channels ``(C, H, W, D)``.

    Raises:
        FileNotFoundError: missing ``root``, or a pattern matching no file / several files in a case.
        ValueError: bad layout, no case found, corrupt file or shape mismatch (``validate``).
    """
    root = check_dir(root, "NIfTI root")
    patterns = [image_patterns] if isinstance(image_patterns, str) else list(image_patterns)
    if not patterns:
        raise ValueError("image_patterns must name at least one modality.")
    if layout == "auto":
        layout = "folders" if any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()) else "flat"
    items = []
    if layout == "folders":
        for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            case = case_dir.name
            item = {"image": [str(_one_match(case_dir, p.format(case=case), case)) for p in patterns], "case": case}
            if label_pattern is not None:
                item["label"] = str(_one_match(case_dir, label_pattern.format(case=case), case))
            items.append(item)
    elif layout == "flat":
        label_glob = label_pattern.format(case="*") if label_pattern is not None else None
        first = patterns[0].format(case="*")
        for f in sorted(p for p in root.iterdir() if p.is_file() and fnmatch.fnmatch(p.name, first)):
            if label_glob is not None and fnmatch.fnmatch(f.name, label_glob):
                continue
            case = _strip_nifti(f.name)
            item = {"image": [str(f)] + [str(_one_match(root, p.format(case=case), case)) for p in patterns[1:]],
                    "case": case}
            if label_pattern is not None:
                item["label"] = str(_one_match(root, label_pattern.format(case=case), case))
            items.append(item)
    else:
        raise ValueError(f"layout must be 'auto', 'folders' or 'flat', got {layout!r}.")
    if not items:
        raise ValueError(f"no NIfTI case found in {str(root)!r} ({layout} layout, image patterns {patterns}).")
    if validate:
        for item in items:
            files = item["image"] + ([item["label"]] if "label" in item else [])
            shapes = {f: check_nifti_file(f, volume=True)[:3] for f in files}
            if len(set(shapes.values())) > 1:
                detail = ", ".join(f"{Path(f).name}: {s}" for f, s in shapes.items())
                raise ValueError(f"case {item['case']!r}: files differ in shape (expected equal): {detail}.")
    return reindex(items)


def nifti_transforms(
    spatial_size: int | Sequence[int] | None = (64, 64, 64),
    train: bool = False,
    label_mapping: Mapping[float, float] | None = None,
    label_default: float | None = None,
    crop_foreground: bool = True,
    normalize: bool = False,
    axcodes: str | None = None,
    prob: float = 0.5,
    track_meta: bool = True,
    with_label: bool = True,
) -> Compose:
    """Transforms for :func:`nifti_datalist` items: check each file is one 3D volume, load and stack
    the modalities into channels (a constant modality, e.g. an empty export, raises naming its file),
    crop to the foreground, remap the label, resize to a small volume for CPU demos (image: area
    averaging, label: nearest neighbour).

    Output: image ``(C, *spatial_size)`` float32 (intensities kept as in the files, e.g. z-scored
    BraTS, unless ``normalize``); label ``(1, *spatial_size)`` float32 (nearest-neighbour resized).

    Args:
        spatial_size: output size (int or 3 ints, positive); ``None`` keeps the (cropped) full
            resolution, for sliding-window inference.
        train: add random flips along the three axes.
        label_mapping: e.g. :data:`BRATS_WHOLE_TUMOUR`; ``None`` keeps the labels.
        label_default: value for label values missing from ``label_mapping`` (``None`` raises,
            see :class:`~monai_dpaat.data.transforms.RemapLabelsd`).
        crop_foreground: crop to the box of voxels above each channel's minimum (the background).
        normalize: z-score each channel over its non-zero voxels.
        axcodes: reorient, e.g. ``"RAS"``; ``None`` keeps the file orientation.
        prob: probability of each flip.
        track_meta: keep :class:`~monai.data.MetaTensor` outputs.
        with_label: the items have a ``"label"`` (set ``False`` for unlabelled inference data).
    """
    keys = ("image", "label") if with_label else ("image",)
    size = None if spatial_size is None else _positive_size(spatial_size, 3, "spatial_size")
    xforms: list = [
        CheckNiftiFilesd(keys=keys),
        CheckedLoadImaged(keys=keys, reader="NibabelReader", image_only=True, ensure_channel_first=True,
                          nonconstant_keys="image"),
        CheckFinited(keys=keys),  # a NaN voxel would otherwise turn every loss and gradient into NaN
    ]
    if with_label:
        xforms.append(CheckSameSpatialShaped(keys=keys))
    if axcodes:
        xforms.append(Orientationd(keys=keys, axcodes=axcodes))
    if crop_foreground:
        xforms.append(CropForegroundd(keys=keys, source_key="image", select_fn=above_background, allow_smaller=True))
    if with_label and label_mapping is not None:  # after the crop: fewer voxels to remap
        xforms.append(RemapLabelsd(keys="label", mapping=label_mapping, default=label_default))
    if normalize:
        xforms.append(NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True))
    if size is not None:
        # "area" = box-filter averaging: anti-aliased downsampling at a tenth of the cost of a Gaussian
        xforms.append(Resized(keys="image", spatial_size=size, mode="area"))
        if with_label:
            xforms.append(Resized(keys="label", spatial_size=size, mode="nearest"))
    if train:
        xforms += [RandFlipd(keys=keys, prob=prob, spatial_axis=a) for a in range(3)]
    xforms.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=track_meta))
    return Compose(xforms)
