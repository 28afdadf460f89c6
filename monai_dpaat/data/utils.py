"""Small shared helpers of :mod:`monai_dpaat.data`: input checks with clear messages, the logger,
picklable PIL converters, :func:`image_files` (a glob for bundle configs) and :func:`load_datalist`
(a Decathlon-style JSON or an in-memory list)."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "DataError", "logger", "check_dir", "check_file", "check_image_file", "image_files", "load_datalist", "to_rgb",
    "as_image", "as_mask", "reindex",
]

logger = logging.getLogger("monai_dpaat.data")

PathLike = str | os.PathLike

#: PIL modes of 16-bit grayscale images (PNG, TIFF), read at their 16-bit scale by :func:`as_image`.
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class DataError(ValueError):
    """A data file, datalist or data argument is wrong; the message already names it and says what was expected
    (so :class:`~monai_dpaat.data.CheckedLoadImaged` passes it on as it is)."""


def check_dir(path: PathLike, what: str = "folder") -> Path:
    """Return ``path`` as a :class:`~pathlib.Path`; raise ``FileNotFoundError`` naming it when it is not a folder."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist or is not a folder.")
    return p


def check_file(path: PathLike, what: str = "file") -> Path:
    """Return ``path`` as a :class:`~pathlib.Path`; raise ``FileNotFoundError`` naming it when it is not a file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist or is not a file.")
    return p


def check_image_file(path: PathLike) -> tuple[int, int]:
    """Read the header of a 2D image with PIL (cheap: pixels are decoded lazily, but a truncated
    file is caught by ``verify``) and return its size as ``(height, width)``.

    Raises:
        ValueError: naming the file when PIL cannot identify or verify it (corrupt / not an image), or
            when it holds several frames (a multi-frame TIFF: the loaders would read only the first).
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            _check_one_frame(im, path)
            im.verify()
    except DataError:
        raise
    except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError...)
        raise ValueError(f"image file {str(path)!r} is unreadable or corrupt: {e}") from e
    return height, width


def _check_one_frame(img: Image.Image, path: PathLike | None = None) -> None:
    n = getattr(img, "n_frames", 1)
    if n > 1:
        raise DataError(
            f"image file {str(path or img.filename)!r} has {n} frames (a multi-frame TIFF or animation); expected "
            f"one 2D image per file: save each frame as its own file."
        )


def to_rgb(img: Image.Image) -> Image.Image:
    """PIL converter for :class:`monai.data.PILReader`: any mode (L, P, RGBA, CMYK) -> 3-channel RGB.

    8-bit only: a 16-bit image is clipped to 255 by PIL; the loaders of this package use :func:`as_image`."""
    return img if img.mode == "RGB" else img.convert("RGB")


def as_image(img: Image.Image) -> Image.Image:
    """PIL converter for :class:`monai.data.PILReader` that keeps the real bit depth: every 8-bit mode
    (L, P, LA, RGBA, CMYK) becomes RGB (``uint8`` ``(H, W, 3)``, scaled by 255 in
    :class:`~monai_dpaat.data.ToRGBFloatd`); 16-bit grayscale (PNG/TIFF ``I;16``) becomes float ``F``
    holding value / 65535 (MONAI would turn a ``uint16`` array into ``int32``, losing its full scale).
    PIL itself reads 16-bit colour as 8-bit RGB (right scale, 8-bit precision).

    Raises:
        DataError: naming the file for a multi-frame file or a 32-bit integer/float image (no known full scale).
    """
    _check_one_frame(img)
    if img.mode in _GRAY16_MODES or _stored_16_bit(img):
        return Image.fromarray((np.asarray(img, dtype=np.float64) / 65535.0).astype(np.float32), mode="F")
    if img.mode in ("I", "F"):
        kind = "integer" if img.mode == "I" else "float"
        raise DataError(
            f"image file {str(img.filename)!r} is a 32-bit {kind} image (PIL mode {img.mode!r}) whose full scale is "
            f"unknown; expected 8- or 16-bit RGB or grayscale: convert it, e.g. to a 16-bit PNG."
        )
    return img if img.mode == "RGB" else img.convert("RGB")


def _stored_16_bit(img: Image.Image) -> bool:
    """A 32-bit ``I`` image whose file stores 16 bits (older Pillow opens 16-bit grayscale PNGs as ``I``):
    the raw mode of its tiles is ``I;16*``."""
    if img.mode != "I":
        return False
    raw = [t[3] if isinstance(t[3], str) else (t[3] or ("",))[0] for t in getattr(img, "tile", None) or []]
    return bool(raw) and all(str(r).startswith("I;16") for r in raw)


def as_mask(img: Image.Image) -> Image.Image:
    """PIL converter for masks: one frame, one channel. An RGB(A) mask whose three colour channels are
    equal (a grayscale mask saved as RGB) becomes ``L``; ``1`` and ``LA`` become ``L``; ``L``, ``P`` and
    16/32-bit instance-id modes are kept as they are.

    Raises:
        DataError: naming the file for a multi-frame file or an RGB mask whose channels differ (a colour overlay
            or a colour-coded mask, which would reach the loss as 3 channels).
    """
    _check_one_frame(img)
    if img.mode in ("RGB", "RGBA"):
        rgb = np.asarray(img)[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise DataError(
                f"mask {str(img.filename)!r} is an RGB image whose channels differ (a colour overlay or colour-coded "
                f"mask?); expected a single-channel mask (0/255 or instance ids): save it as grayscale."
            )
        return Image.fromarray(rgb[..., 0])
    if img.mode in ("1", "LA"):
        return img.convert("L")
    return img


def image_files(root: PathLike, pattern: str) -> list[str]:
    """The files under ``root`` matching the glob ``pattern`` (``**`` recurses), sorted; for bundle
    configs: ``"$[{'image': f} for f in monai_dpaat.data.image_files(@dataset_dir, @image_glob)]"``.

    ``root`` is escaped (:func:`glob.escape`), so a folder named like ``scans[1]`` is taken literally
    rather than as a character class that silently matches nothing.

    Raises:
        FileNotFoundError: ``root`` is not a folder (naming it).
        ValueError: no file matches (naming the folder and the pattern): an empty dataset would make an
            inference run exit 0 with nothing predicted.
    """
    root = check_dir(root, "image folder")
    matches = glob.glob(os.path.join(glob.escape(str(root)), pattern), recursive=True)
    files = sorted(f for f in matches if os.path.isfile(f))
    if not files:
        raise DataError(
            f"no file matches {pattern!r} in {str(root)!r}; check dataset_dir and the pattern (image_glob)."
        )
    return files


def reindex(datalist: Sequence[dict]) -> list[dict]:
    """Copy the items of ``datalist`` and set each ``"index"`` to its position ``0..len-1``."""
    return [{**item, "index": i} for i, item in enumerate(datalist)]


def _check_split(path: Path, split: str) -> None:
    """``split`` of the datalist JSON ``path`` is a non-empty list (MONAI's reader fails on an empty one with an
    ``IndexError``, on a missing key with a bare ``ValueError``)."""
    import json

    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"datalist JSON {str(path)!r} cannot be read as JSON: {e}") from e
    if not isinstance(content, dict):
        raise DataError(f"datalist JSON {str(path)!r} holds a {type(content).__name__}; expected an object whose "
                        f"key {split!r} lists the items.")
    if split not in content:
        keys = ", ".join(repr(k) for k in content) or "none"
        raise DataError(f"datalist JSON {str(path)!r} has no split {split!r} (its keys: {keys}).")
    items = content[split]
    if not isinstance(items, list) or not items:
        shown = "is empty" if items == [] else f"is a {type(items).__name__}"
        raise DataError(f"datalist JSON {str(path)!r} has no items under {split!r} (the split {shown}); expected a "
                        "non-empty list.")


def load_datalist(
    source: PathLike | Sequence[dict],
    split: str = "training",
    base_dir: PathLike | None = None,
    add_index: bool = True,
) -> list[dict]:
    """A datalist from either a MONAI Decathlon-style JSON file or an in-memory list of dicts.

    Every loader of this package accepts what this returns, and every place that takes a datalist
    (bundle configs: ``"$monai_dpaat.data.load_datalist(@datalist_file, 'validation')"``) may pass
    either form.

    Args:
        source: path to a JSON file read with :func:`monai.data.load_decathlon_datalist`
            (relative paths inside are resolved against ``base_dir``, default the JSON's folder),
            or a list/tuple of dicts used as it is (copied).
        split: the JSON key to read (``"training"``, ``"validation"``, ``"test"``...). Ignored for a list.
        base_dir: folder that relative paths in the JSON are joined to.
        add_index: set ``"index"`` to each item's position in the list when items lack it (the
            adversarial training methods key per-sample state by ``"index"``).

    Returns:
        a new list of dicts.

    Raises:
        FileNotFoundError: the JSON file does not exist.
        ValueError: ``split`` is not in the JSON or holds no items, or the list is empty or holds something
            other than dicts.
        TypeError: ``source`` is neither a path nor a list.
    """
    if isinstance(source, (str, os.PathLike)):
        from monai.data import load_decathlon_datalist

        path = check_file(source, "datalist JSON")
        _check_split(path, split)
        try:
            items = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=split, base_dir=base_dir)
        except ValueError as e:
            raise ValueError(f"datalist JSON {str(path)!r}: {e}") from e
        if not items:
            raise DataError(f"datalist JSON {str(path)!r} has no items under {split!r}; expected a non-empty list.")
    elif isinstance(source, Sequence):
        if not source:
            raise DataError("the datalist is empty; expected a non-empty list of dicts.")
        bad = [i for i, item in enumerate(source) if not isinstance(item, dict)]
        if bad:
            raise ValueError(f"datalist items must be dicts; item {bad[0]} is {type(source[bad[0]]).__name__}.")
        items = [dict(item) for item in source]
    else:
        raise TypeError(f"datalist source must be a JSON path or a list of dicts, got {type(source).__name__}.")
    if add_index and any("index" not in item for item in items):
        items = reindex(items)
    return items
