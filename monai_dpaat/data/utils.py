"""Small shared helpers of :mod:`monai_dpaat.data`: input checks with clear messages, the logger,
picklable PIL converters and :func:`load_datalist` (a Decathlon-style JSON or an in-memory list)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

__all__ = ["logger", "check_dir", "check_file", "check_image_file", "load_datalist", "to_rgb", "reindex"]

logger = logging.getLogger("monai_dpaat.data")

PathLike = str | os.PathLike


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
        ValueError: naming the file when PIL cannot identify or verify it (corrupt / not an image).
    """
    try:
        with Image.open(path) as im:
            width, height = im.size
            im.verify()
    except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError...)
        raise ValueError(f"image file {str(path)!r} is unreadable or corrupt: {e}") from e
    return height, width


def to_rgb(img: Image.Image) -> Image.Image:
    """PIL converter for :class:`monai.data.PILReader`: any mode (L, P, RGBA, CMYK) -> 3-channel RGB."""
    return img if img.mode == "RGB" else img.convert("RGB")


def reindex(datalist: Sequence[dict]) -> list[dict]:
    """Copy the items of ``datalist`` and set each ``"index"`` to its position ``0..len-1``."""
    return [{**item, "index": i} for i, item in enumerate(datalist)]


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
        ValueError: ``split`` is not in the JSON, or the list holds something other than dicts.
        TypeError: ``source`` is neither a path nor a list.
    """
    if isinstance(source, (str, os.PathLike)):
        from monai.data import load_decathlon_datalist

        path = check_file(source, "datalist JSON")
        try:
            items = load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=split, base_dir=base_dir)
        except ValueError as e:
            raise ValueError(f"datalist JSON {str(path)!r}: {e}") from e
    elif isinstance(source, Sequence):
        bad = [i for i, item in enumerate(source) if not isinstance(item, dict)]
        if bad:
            raise ValueError(f"datalist items must be dicts; item {bad[0]} is {type(source[bad[0]]).__name__}.")
        items = [dict(item) for item in source]
    else:
        raise TypeError(f"datalist source must be a JSON path or a list of dicts, got {type(source).__name__}.")
    if add_index and any("index" not in item for item in items):
        items = reindex(items)
    return items
