"""HAM10000 dermatoscopy classification data (Tschandl et al. 2018), sampled as in the DPAAT paper
(Li et al. 2024, following Margeloiu et al. 2020): three classes, 800 training and 299 test images
per class, split by ``lesion_id`` so no lesion appears in two splits.

Expected layout (the official download)::

    root/HAM10000_metadata.csv          # columns lesion_id, image_id, dx, ...
    root/HAM10000_images_part_1/ISIC_*.jpg
    root/HAM10000_images_part_2/ISIC_*.jpg   # optional

or the images in ``root`` itself, or in the folders given by ``image_dirs``.
"""

from __future__ import annotations

import csv
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from monai.data import PILReader
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandFlipd,
    RandRotate90d,
    Resized,
    ScaleIntensityRanged,
)

from monai_dpaat.data.transforms import CheckedLoadImaged
from monai_dpaat.data.utils import PathLike, check_dir, check_file, check_image_file, logger, reindex, to_rgb

__all__ = ["HAM10000_CLASSES", "ham10000_datalists", "ham10000_transforms", "read_ham10000_metadata"]

#: diagnosis codes of HAM10000 and their names.
HAM10000_CLASSES = {
    "akiec": "actinic keratoses / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesions",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevi",
    "vasc": "vascular lesions",
}

METADATA_FILE = "HAM10000_metadata.csv"
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")


def read_ham10000_metadata(csv_path: PathLike) -> list[dict]:
    """Rows of ``HAM10000_metadata.csv`` as dicts (all columns as strings).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a required column (``lesion_id``, ``image_id``, ``dx``) is missing, naming the file.
    """
    path = check_file(csv_path, "HAM10000 metadata")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"HAM10000 metadata {str(path)!r} lacks column(s) {missing}; found {reader.fieldnames}."
            )
        return [dict(row) for row in reader]


def _find_images(image_dirs: Sequence[Path]) -> dict[str, Path]:
    """Map image id (file stem) -> path for every image file in ``image_dirs`` (first folder wins)."""
    found: dict[str, Path] = {}
    for d in image_dirs:
        for entry in sorted(d.iterdir()):
            if entry.suffix.lower() in IMAGE_EXTENSIONS and entry.stem not in found:
                found[entry.stem] = entry
    return found


def _resolve_image_dirs(root: Path, image_dirs: PathLike | Sequence[PathLike] | None) -> list[Path]:
    if image_dirs is None:
        dirs = [root / d for d in IMAGE_DIRS if (root / d).is_dir()]
        return dirs or [root]
    if isinstance(image_dirs, (str, Path)):
        image_dirs = [image_dirs]
    return [check_dir(root / d, "HAM10000 image folder") for d in image_dirs]


def _group_by_lesion(items: Iterable[dict]) -> dict[str, list[dict]]:
    """``{lesion_id: [items]}`` in first-seen order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        groups[item["lesion_id"]].append(item)
    return dict(groups)


def _split_quotas(n_available: int, n_train: int, n_test: int) -> tuple[int, int]:
    """(train, test) image quotas of a class: the requested counts, scaled down in proportion when
    the class has fewer than ``n_train + n_test`` images."""
    if n_available >= n_train + n_test:
        return n_train, n_test
    q_test = round(n_available * n_test / max(n_train + n_test, 1))
    return n_available - q_test, q_test


def _fill(groups: list[list[dict]], quotas: Sequence[int]) -> tuple[list[list[dict]], list[list[dict]]]:
    """Assign whole lesion groups (in the given order) to bins of image quotas ``quotas``.

    A group goes to the bin with the largest relative deficit that it fits in; a bin still empty
    takes a group even if it overshoots (so a tiny class reaches every split it can). Groups that fit
    nowhere are left over (returned second) for the caller.
    """
    bins: list[list[dict]] = [[] for _ in quotas]
    counts = [0] * len(quotas)
    left: list[list[dict]] = []
    for g in groups:
        need = [q - c for q, c in zip(quotas, counts)]
        fits = [i for i, q in enumerate(quotas) if q > 0 and (need[i] >= len(g) or counts[i] == 0)]
        if not fits:
            left.append(g)
            continue
        i = max(fits, key=lambda k: (need[k] / quotas[k], -k))
        bins[i].extend(g)
        counts[i] += len(g)
    return bins, left


def ham10000_datalists(
    root: PathLike,
    classes: Sequence[str] = ("mel", "bkl", "nv"),
    n_train: int = 800,
    n_test: int = 299,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_dirs: PathLike | Sequence[PathLike] | None = None,
    validate: bool = False,
) -> dict[str, list[dict]]:
    """Lesion-disjoint train/val/test datalists of HAM10000, sampled per class as in the DPAAT paper.

    For each class the lesions (groups of images sharing ``lesion_id``) are shuffled with ``seed``
    and whole lesions are dealt to a test pool of ``n_test`` images and a training pool of
    ``n_train`` images. When a class has fewer than ``n_train + n_test`` images both quotas shrink in
    proportion (e.g. 1000 present images -> 728 train pool / 272 test). ``val_fraction`` of the
    training pool (again whole lesions, per class) becomes the validation split. Quotas may be
    missed by a few images because lesions are never cut; a class with too few lesions may be
    absent from some split (logged as a warning).

    Rows of the metadata whose image file is absent are dropped and their number is logged
    (logger ``"monai_dpaat.data"``, level INFO); nothing else is skipped silently.

    Args:
        root: folder holding ``HAM10000_metadata.csv`` and the image folder(s).
        classes: ``dx`` codes to keep, in label order (label = position in this sequence).
            Known codes: akiec, bcc, bkl, df, mel, nv, vasc.
        n_train: training pool (train + val) images per class.
        n_test: test images per class.
        val_fraction: fraction of each class's training pool moved to validation, in [0, 1).
            With 0 the ``"val"`` list is empty.
        seed: seed of the shuffle; the result is identical for equal arguments.
        image_dirs: folder(s) holding the images, relative to ``root`` or absolute. Default:
            ``HAM10000_images_part_1`` and ``HAM10000_images_part_2`` where present, else ``root``.
        validate: also open every selected image's header with PIL and raise on unreadable files.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each item
        ``{"image": str path, "label": int, "index": int (0..len-1 within its split),
        "image_id": str, "lesion_id": str, "dx": str}``, sorted by label then image id.

    Raises:
        FileNotFoundError: ``root``, the metadata or an ``image_dirs`` folder is missing.
        ValueError: unknown class name, a class with no images present, bad ``val_fraction`` /
            counts, an empty split, or (``validate=True``) a corrupt image.
    """
    root = check_dir(root, "HAM10000 root")
    classes = [classes] if isinstance(classes, str) else list(classes)
    unknown = [c for c in classes if c not in HAM10000_CLASSES]
    if unknown:
        raise ValueError(f"unknown HAM10000 class name(s) {unknown}; known: {sorted(HAM10000_CLASSES)}.")
    if len(set(classes)) != len(classes) or not classes:
        raise ValueError(f"classes must be a non-empty list of distinct names, got {classes}.")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got n_train={n_train}, n_test={n_test}.")

    rows = read_ham10000_metadata(root / METADATA_FILE)
    dirs = _resolve_image_dirs(root, image_dirs)
    images = _find_images(dirs)
    present = [r for r in rows if r["image_id"] in images]
    n_dropped = len(rows) - len(present)
    if n_dropped:
        logger.info(
            "HAM10000: %d of %d metadata rows dropped (image not found in %s); %d kept.",
            n_dropped, len(rows), [str(d) for d in dirs], len(present),
        )

    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(classes):
        lesions = _group_by_lesion(
            {"image": str(images[r["image_id"]]), "label": label, "image_id": r["image_id"],
             "lesion_id": r["lesion_id"], "dx": cls}
            for r in present
            if r["dx"] == cls
        )
        if not lesions:
            raise ValueError(f"HAM10000 class {cls!r} has no images present under {[str(d) for d in dirs]}.")
        groups = [sorted(lesions[k], key=lambda x: x["image_id"]) for k in sorted(lesions)]
        rng.shuffle(groups)
        q_train, q_test = _split_quotas(sum(map(len, groups)), n_train, n_test)
        (pool, test), _ = _fill(groups, (q_train, q_test))
        pool_groups = list(_group_by_lesion(pool).values())  # keeps the shuffled lesion order
        q_val = round(val_fraction * len(pool))
        if q_val:
            (val, train), _ = _fill(pool_groups, (q_val, len(pool) - q_val))
        else:
            val, train = [], pool
        for name, part in (("train", train), ("val", val), ("test", test)):
            if not part and (name != "val" or val_fraction > 0):
                logger.warning("HAM10000: class %r has no images in split %r (too few lesions).", cls, name)
            splits[name].extend(part)

    out = {}
    for name, items in splits.items():
        if not items and (name != "val" or val_fraction > 0):
            raise ValueError(
                f"HAM10000 split {name!r} is empty (classes={classes}, n_train={n_train}, n_test={n_test}, "
                f"val_fraction={val_fraction}, {len(present)} images present)."
            )
        items = sorted(items, key=lambda x: (x["label"], x["image_id"]))
        if validate:
            for item in items:
                check_image_file(item["image"])
        out[name] = reindex(items)
    return out


def ham10000_transforms(
    image_size: int | Sequence[int] = 224,
    train: bool = False,
    prob: float = 0.5,
    track_meta: bool = False,
    with_label: bool = True,
) -> Compose:
    """Dict transforms for HAM10000 items (keys ``"image"``, ``"label"``).

    Loads the JPEG as RGB with PIL, channel-first ``(3, H, W)`` float32 in [0, 1], resizes to
    ``(image_size, image_size)`` (bilinear with anti-aliasing), adds random flips along both axes
    and a random 90-degree rotation when ``train``, and makes the label a ``torch.long`` scalar.
    Batched by :class:`monai.data.DataLoader`: image ``(N, 3, S, S)``, label ``(N,)``, index ``(N,)``.

    Args:
        image_size: output side (or ``(H, W)``).
        train: add random augmentation.
        prob: probability of each random transform.
        track_meta: keep :class:`monai.data.MetaTensor` outputs (default: plain tensors, which the
            attacks and Grad-CAM prefer).
        with_label: items carry a ``"label"`` (False for inference on unlabelled images).
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    xforms = [
        CheckedLoadImaged(
            keys="image",
            reader=PILReader(converter=to_rgb, reverse_indexing=False),
            image_only=True,
            ensure_channel_first=True,
        ),
        ScaleIntensityRanged(keys="image", a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True),
        Resized(keys="image", spatial_size=size, mode="bilinear", anti_aliasing=True),
    ]
    if train:
        xforms += [
            RandFlipd(keys="image", prob=prob, spatial_axis=0),
            RandFlipd(keys="image", prob=prob, spatial_axis=1),
        ]
        if size[0] == size[1]:  # a 90-degree turn of a non-square image would change its shape
            xforms.append(RandRotate90d(keys="image", prob=prob, max_k=3))
    xforms += [
        EnsureTyped(keys="image", dtype=torch.float32, track_meta=track_meta),
    ]
    if with_label:
        xforms.append(EnsureTyped(keys="label", dtype=torch.long, track_meta=False))
    return Compose(xforms)
