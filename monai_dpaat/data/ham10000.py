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
import io
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from monai.transforms import (
    Compose,
    EnsureTyped,
    RandFlipd,
    RandRotate90d,
    Resized,
)

from monai_dpaat.data.transforms import CheckClassLabeld, _positive_size, rgb_image_loading
from monai_dpaat.data.utils import (
    DataError,
    PathLike,
    check_dir,
    check_file,
    check_image_file,
    logger,
    reindex,
)

__all__ = [
    "HAM10000_CLASSES", "ham10000_datalists", "ham10000_transforms", "read_ham10000_metadata", "load_ham10000_image",
    "ham10000_image_files",
]

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

    The file may be UTF-8 (with or without the byte-order mark Excel writes) or Latin-1; spaces
    around column names are ignored.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: naming the file: a required column (``lesion_id``, ``image_id``, ``dx``) is missing,
            a row leaves one empty, or an ``image_id`` is listed twice (under one or two ``lesion_id``:
            either would put the image in two splits of the lesion-disjoint split).
    """
    path = check_file(csv_path, "HAM10000 metadata")
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in _REQUIRED_COLUMNS if c not in reader.fieldnames]
    if missing:
        raise ValueError(f"HAM10000 metadata {str(path)!r} lacks column(s) {missing}; found {reader.fieldnames}.")
    rows, where = [], defaultdict(list)  # image_id -> [(line, lesion_id)]
    for row in reader:
        empty = [c for c in _REQUIRED_COLUMNS if not (row.get(c) or "").strip()]
        if empty:
            raise DataError(
                f"HAM10000 metadata {str(path)!r} row {reader.line_num} has an empty {empty[0]!r} "
                f"({', '.join(f'{c}={row.get(c)!r}' for c in _REQUIRED_COLUMNS)}); fill it in or remove the row."
            )
        where[row["image_id"]].append((reader.line_num, row["lesion_id"]))
        rows.append(dict(row))
    _check_unique_images(path, where)
    return rows


def _read_text(path: Path) -> str:
    """The file's text: UTF-8 (a byte-order mark dropped), else Latin-1 (which decodes any bytes)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.info("HAM10000 metadata %r is not UTF-8; read as Latin-1.", str(path))
        return data.decode("latin-1")


def _check_unique_images(path: Path, where: dict[str, list[tuple[int, str]]]) -> None:
    dups = {image_id: places for image_id, places in where.items() if len(places) > 1}
    if not dups:
        return
    image_id, places = next(iter(dups.items()))
    lesions = ", ".join(repr(lesion) for lesion in dict.fromkeys(lesion for _, lesion in places))
    more = f" ({len(dups) - 1} more image_id(s) listed twice: {sorted(dups)[:5]})" if len(dups) > 1 else ""
    raise DataError(
        f"HAM10000 metadata {str(path)!r}: image_id {image_id!r} is listed on rows "
        f"{', '.join(str(line) for line, _ in places)} under lesion_id {lesions}{more}; every image must be listed "
        f"once, under one lesion_id (else the lesion-disjoint split can put it in two splits): remove the extra rows."
    )


def _find_images(image_dirs: Sequence[Path]) -> dict[str, Path]:
    """Map image id (file stem) -> path for every image file in ``image_dirs`` (first folder wins)."""
    found: dict[str, Path] = {}
    for d in image_dirs:
        for entry in sorted(d.iterdir()):
            if entry.suffix.lower() in IMAGE_EXTENSIONS and entry.stem not in found:
                found[entry.stem] = entry
    if not found:
        raise DataError(
            f"no HAM10000 image ({', '.join(IMAGE_EXTENSIONS)}) in {[str(d) for d in image_dirs]}; check dataset_dir "
            f"(the root holding {METADATA_FILE}) and image_dirs."
        )
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


def check_classes(classes: str | Sequence[str]) -> list[str]:
    """``classes`` as a list, or ``ValueError`` naming the key: unknown ``dx`` codes, repeats, fewer than 2.

    :func:`ham10000_datalists` calls it; a bundle's ``initialize`` does too
    (``"$monai_dpaat.data.ham10000.check_classes(@classes)"``), so a bad ``--classes`` is refused before any data
    is read or anything is written.
    """
    classes = [classes] if isinstance(classes, str) else list(classes)
    unknown = [c for c in classes if c not in HAM10000_CLASSES]
    if unknown:
        raise ValueError(f"unknown HAM10000 class name(s) {unknown}; known: {sorted(HAM10000_CLASSES)}.")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a list of distinct names, got {classes}.")
    if len(classes) < 2:
        raise ValueError(
            f"classes must name at least 2 HAM10000 classes, got {classes}: a classifier of one class learns nothing "
            "(its loss is 0 from the start). Give e.g. classes=['mel', 'nv'] (a bundle: --classes \"['mel','nv']\")."
        )
    return classes


def check_val_fraction(val_fraction: float | None) -> None:
    """``DataError`` (a ``ValueError``) unless ``val_fraction`` is in (0, 1) or None (the Python API's "no
    validation split"; a bundle command line cannot pass None). Also meant for a bundle's ``initialize``."""
    if val_fraction is not None and not (
        isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool) and 0.0 < val_fraction < 1.0
    ):
        raise DataError(
            f"val_fraction must be in (0, 1), got {val_fraction!r}: a bundle training validates on that fraction of "
            "the training pool to save its best model (model.pt), so give it a value in (0, 1) such as "
            "--val_fraction 0.1 (a bundle command line cannot pass None: monai.bundle drops None overrides); "
            "only the Python API takes val_fraction=None, for no validation split."
        )


def ham10000_datalists(
    root: PathLike,
    classes: Sequence[str] = ("mel", "bkl", "nv"),
    n_train: int = 800,
    n_test: int = 299,
    val_fraction: float | None = 0.1,
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
        classes: ``dx`` codes to keep, in label order (label = position in this sequence); at least 2
            (a one-class classifier learns nothing). Known codes: akiec, bcc, bkl, df, mel, nv, vasc.
        n_train: training pool (train + val) images per class.
        n_test: test images per class.
        val_fraction: fraction of each class's training pool moved to validation, in (0, 1);
            ``None`` (Python API only: ``monai.bundle run`` drops a ``--val_fraction None`` override): no
            validation split (the ``"val"`` list is empty). 0 is refused: a training run validating on
            nothing would never save its best model.
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
        ValueError: unknown class name, fewer than 2 classes, bad metadata (see :func:`read_ham10000_metadata`), no image
            file at all in the image folder(s), a class with no images present, bad ``val_fraction`` /
            counts, an empty split, or (``validate=True``) a corrupt image.
    """
    root = check_dir(root, "HAM10000 root")
    classes = check_classes(classes)
    check_val_fraction(val_fraction)
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
        q_val = round(val_fraction * len(pool)) if val_fraction is not None else 0
        if q_val:
            (val, train), _ = _fill(pool_groups, (q_val, len(pool) - q_val))
        else:
            val, train = [], pool
        for name, part in (("train", train), ("val", val), ("test", test)):
            if not part and (name != "val" or val_fraction is not None):
                logger.warning("HAM10000: class %r has no images in split %r (too few lesions).", cls, name)
            splits[name].extend(part)

    out = {}
    for name, items in splits.items():
        if not items and (name != "val" or val_fraction is not None):
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
    num_classes: int | None = None,
) -> Compose:
    """Dict transforms for HAM10000 items (keys ``"image"``, ``"label"``).

    Loads the image with PIL at its real bit depth as channel-first ``(3, H, W)`` float32 in [0, 1]
    (8-bit / 255, 16-bit / 65535, grayscale repeated to RGB), resizes to ``(image_size, image_size)``
    (bilinear with anti-aliasing), adds random flips along both axes and a random 90-degree rotation
    when ``train``, and makes the label a ``torch.long`` scalar (checked first: a label that is not
    an integer class index raises naming the image, never truncated). Batched by
    :class:`monai.data.DataLoader`: image ``(N, 3, S, S)``, label ``(N,)``, index ``(N,)``.

    Args:
        image_size: output side (or ``(H, W)``), positive.
        train: add random augmentation.
        prob: probability of each random transform.
        track_meta: keep :class:`monai.data.MetaTensor` outputs (default: plain tensors, which the
            attacks and Grad-CAM prefer).
        with_label: items carry a ``"label"`` (False for inference on unlabelled images).
        num_classes: when given, labels must lie in ``[0, num_classes - 1]``.
    """
    size = _positive_size(image_size, 2, "image_size")
    xforms = [CheckClassLabeld(keys="label", num_classes=num_classes)] if with_label else []
    xforms += _image_loading(size)
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
    return Compose(xforms)


def _image_loading(size: Sequence[int] | None) -> list:
    """Load as :func:`~monai_dpaat.data.transforms.rgb_image_loading`, then resize to ``size`` (bilinear with
    anti-aliasing; ``None``: keep the file's size)."""
    xforms = rgb_image_loading("image")
    if size is not None:
        xforms.append(Resized(keys="image", spatial_size=size, mode="bilinear", anti_aliasing=True))
    return xforms


def load_ham10000_image(path: PathLike, image_size: int | Sequence[int] | None = None) -> torch.Tensor:
    """One HAM10000 image file as a plain float32 ``(3, H, W)`` tensor in [0, 1], loaded and resized exactly
    as :func:`ham10000_transforms` does (``image_size=None`` keeps the file's size)."""
    size = None if image_size is None else _positive_size(image_size, 2, "image_size")
    xforms = _image_loading(size) + [EnsureTyped(keys="image", dtype=torch.float32, track_meta=False)]
    return Compose(xforms)({"image": str(path)})["image"]


def ham10000_image_files(
    dataset_dir: PathLike, image_dirs: PathLike | Sequence[PathLike] | None = None
) -> dict[str, Path]:
    """``{image_id: path}`` of the HAM10000 images under ``dataset_dir`` (the folder of
    ``HAM10000_metadata.csv``): in ``image_dirs`` (default: ``HAM10000_images_part_1/2`` where present, else
    the folder itself), first folder wins. Raises ``ValueError`` when there is none."""
    root = check_dir(dataset_dir, "HAM10000 dataset folder")
    return _find_images(_resolve_image_dirs(root, image_dirs))
