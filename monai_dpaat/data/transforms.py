"""Dict transforms of :mod:`monai_dpaat.data` that MONAI lacks: label remapping with an explicit
policy for unmapped values, a same-spatial-shape check that names the offending files, and a
foreground selector for images whose background is a constant minimum (z-scored MRI)."""

from __future__ import annotations

import atexit
import copy
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, PILReader
from monai.transforms import LoadImaged, MapTransform, Transform

from monai_dpaat.data.utils import DataError, as_image

__all__ = [
    "CheckedLoadImaged", "CheckFinited", "CheckClassLabeld", "RemapLabels", "RemapLabelsd", "CheckSameSpatialShaped",
    "ToRGBFloatd", "above_background", "rgb_image_loading",
]


def _source_name(img, key: Hashable) -> str:
    """The file an array came from (``MetaTensor.meta["filename_or_obj"]``), else the dict key."""
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj")
    return f"{str(name)!r}" if name else f"key {key!r}"


def above_background(img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """``select_fn`` for :class:`monai.transforms.CropForegroundd`: voxels above each channel's
    minimum, shape ``(C, *spatial)`` -> bool of the same shape.

    MONAI's default (``x > 0``) drops half the brain of a z-scored MRI (BraTS here: the background
    is the constant minimum, not 0).
    """
    spatial = tuple(range(1, img.ndim))
    if isinstance(img, torch.Tensor):
        return img > img.amin(dim=spatial, keepdim=True)
    return img > img.min(axis=spatial, keepdims=True)


class RemapLabels(Transform):
    """Map label values, e.g. BraTS ``{1: 1, 2: 1, 3: 1, 4: 1}`` (whole tumour) or
    ``{1: 1, 2: 0, 3: 1, 4: 1}`` (tumour core).

    Policy for values absent from ``mapping``: background ``0`` maps to ``0`` unless ``mapping``
    says otherwise; any other unmapped value raises ``ValueError`` naming the values (and the file
    when the input is a :class:`~monai.data.MetaTensor`), unless ``default`` is given, in which case
    they become ``default``. The dtype and shape of the input are kept.

    Args:
        mapping: ``{old_value: new_value}``.
        default: value for unmapped non-zero values; ``None`` (default) raises instead.
    """

    def __init__(self, mapping: Mapping[float, float], default: float | None = None) -> None:
        if not isinstance(mapping, Mapping) or not mapping:
            raise ValueError(f"mapping must be a non-empty dict {{old: new}}, got {mapping!r}.")
        self.mapping = {float(k): float(v) for k, v in mapping.items()}
        self.mapping.setdefault(0.0, 0.0)
        self.default = default

    def __call__(self, img: torch.Tensor, key: Hashable = "label") -> torch.Tensor:
        """img: label array of any shape, e.g. ``(1, H, W, D)``; returns the remapped array (same type)."""
        x = torch.as_tensor(img)
        values = torch.unique(x).tolist()
        unmapped = [v for v in values if float(v) not in self.mapping]
        if unmapped and self.default is None:
            raise ValueError(
                f"label values {unmapped} in {_source_name(img, key)} are not in the mapping "
                f"{sorted(self.mapping)}; give RemapLabelsd a `default` to map them."
            )
        new = x.clone()
        if unmapped:  # only reached with a default
            keys = torch.tensor(sorted(self.mapping), dtype=x.dtype, device=x.device)
            new[~torch.isin(x, keys)] = self.default
        for old, value in self.mapping.items():
            new[x == old] = value
        if isinstance(img, np.ndarray):
            return new.numpy()
        out = img.clone()  # keeps MetaTensor metadata
        out[...] = new
        return out


class RemapLabelsd(MapTransform):
    """Dict version of :class:`RemapLabels` (see there for the unmapped-value policy).

    Args:
        keys: keys of the label arrays.
        mapping: ``{old_value: new_value}``.
        default: value for unmapped non-zero values; ``None`` raises ``ValueError``.
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mapping: Mapping[float, float],
        default: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.remap = RemapLabels(mapping, default)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.remap(d[key], key)
        return d


class CheckSameSpatialShaped(MapTransform):
    """Raise ``ValueError`` naming the files when the arrays of ``keys`` (channel-first) differ in
    spatial shape, e.g. a mask whose size differs from its image. Returns the data unchanged.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> Mapping:
        shapes = {key: tuple(data[key].shape[1:]) for key in self.key_iterator(data)}
        if len(set(shapes.values())) > 1:
            detail = ", ".join(f"{_source_name(data[k], k)}: {s}" for k, s in shapes.items())
            raise ValueError(f"spatial shapes differ (expected equal): {detail}.")
        return data


class CheckFinited(MapTransform):
    """Raise ``ValueError`` naming the file (or key) and the number of bad values when an array of ``keys``
    holds NaN or Inf (e.g. a NIfTI volume written with NaN background), instead of letting it reach the
    loss/attack as NaN gradients. Returns the data unchanged."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> Mapping:
        for key in self.key_iterator(data):
            x = data[key]
            t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
            if t.is_floating_point() or t.is_complex():
                finite = torch.isfinite(t)
                if not bool(finite.all()):
                    n_nan = int(torch.isnan(t).sum())
                    n_inf = int((~finite).sum()) - n_nan
                    raise ValueError(
                        f"{_source_name(x, key)} holds {n_nan} NaN and {n_inf} Inf value(s) in {key!r} "
                        f"(shape {tuple(t.shape)}); expected finite intensities."
                    )
        return data


class _WritablePILReader(PILReader):
    """:class:`monai.data.PILReader` whose arrays are writable copies: ``np.asarray`` of a PIL image is read-only,
    and MONAI's ``torch.as_tensor`` of it warned "The given NumPy array is not writable" on every run."""

    def get_data(self, img):
        data, meta = super().get_data(img)
        return np.array(data, copy=True), meta


def _writable_reader(reader):
    """``reader`` as a :class:`_WritablePILReader` (same settings) when it is a plain ``PILReader``."""
    if type(reader) is PILReader:
        reader = copy.copy(reader)
        reader.__class__ = _WritablePILReader
    return reader


class CheckedLoadImaged(LoadImaged):
    """:class:`monai.transforms.LoadImaged` whose failure is a ``ValueError`` naming the key and the
    file(s) that could not be read (MONAI's own message suggests installing reader libraries, which
    misleads when the file is simply corrupt). Same arguments as ``LoadImaged``, plus:

    Args:
        nonconstant_keys: keys whose loaded channels must not be constant (a blank or wrongly exported
            volume, which would crop to nothing); the error names the channel's file (one channel per file
            when the key holds a list of files). Needs ``ensure_channel_first=True``.

    A worker thread that runs this loader (``CacheDataset``'s thread pool, ``ThreadDataLoader``) is
    waited for at interpreter exit, see :func:`_wait_for_loader_threads`.
    """

    def __init__(
        self, keys: KeysCollection, reader=None, *args, nonconstant_keys: KeysCollection = (), **kwargs
    ) -> None:
        super().__init__(keys, reader, *args, **kwargs)
        # LoadImage tries its other readers when a given one fails, which would hide the reader's error (and
        # a converter's check) behind a fallback read: a reader instance is passed on every call instead
        self.file_reader = _writable_reader(reader) if isinstance(reader, ImageReader) else None
        self.nonconstant_keys = (nonconstant_keys,) if isinstance(nonconstant_keys, str) else tuple(nonconstant_keys)

    def __call__(self, data, reader=None):
        _note_loader_thread()
        names = {k: data.get(k) for k in self.keys if k in data}
        try:
            d = super().__call__(data, reader if reader is not None else self.file_reader)
        except DataError:
            raise  # already names the file and the fix
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise ValueError(
                f"could not load {names}: a file is missing, unreadable or corrupt ({type(e).__name__}: {first})"
            ) from e
        for key in self.nonconstant_keys:
            if key in d:
                _check_not_constant(d[key], names[key])
        return d


def _check_not_constant(img: torch.Tensor, files) -> None:
    """img: ``(C, *spatial)`` loaded from ``files`` (a path, or one path per channel)."""
    x = torch.as_tensor(img).flatten(1)
    lo, hi = x.amin(1), x.amax(1)
    for c in torch.nonzero(lo == hi).flatten().tolist():
        name = files[c] if isinstance(files, (list, tuple)) and len(files) == x.shape[0] else files
        raise DataError(
            f"image file {str(name)!r} is constant (every voxel is {float(lo[c])}); expected an image with contrast: "
            f"the file is blank or was exported wrongly."
        )


# ---------------------------------------------------------------------------------------------- exit safety
# CPython <= 3.13 ends a daemon thread that asks for the GIL after interpreter finalization began with
# pthread_exit. When that thread is returning from a GIL-releasing torch op (CacheDataset's pool worker still
# busy with the next item after an earlier item's error ended the main thread), the forced unwind crosses a C++
# noexcept frame and std::terminate aborts the process: exit status 134 right after the error was printed.
_loader_threads: weakref.WeakSet = weakref.WeakSet()
_loader_threads_lock = threading.Lock()
_PARKED_IN = (f"{os.sep}threading.py", f"{os.sep}queue.py", f"{os.sep}multiprocessing{os.sep}")


def _note_loader_thread() -> None:
    thread = threading.current_thread()
    if thread is not threading.main_thread():
        with _loader_threads_lock:
            _loader_threads.add(thread)


def _is_busy(thread: threading.Thread) -> bool:
    """Whether ``thread`` is running code (a transform, torch) rather than parked in a queue / lock wait."""
    frame = sys._current_frames().get(thread.ident)
    return frame is not None and not any(p in frame.f_code.co_filename for p in _PARKED_IN)


@atexit.register
def _wait_for_loader_threads(timeout: float = 120.0) -> None:
    """At interpreter exit, wait (at most ``timeout`` seconds) until no thread that ran
    :class:`CheckedLoadImaged` is still busy; parked threads (an idle pool worker, a stopped
    ``ThreadDataLoader`` buffer) are not waited for. Runs before finalization starts (``atexit``)."""
    with _loader_threads_lock:
        threads = [t for t in _loader_threads if t is not threading.current_thread()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [t for t in threads if t.is_alive() and _is_busy(t)]
        if not busy:
            return
        busy[0].join(0.01)


# ---------------------------------------------------------------------------------------------- images and labels
class ToRGBFloatd(MapTransform):
    """Channel-first images as read (``uint8`` / ``uint16`` / ``bool`` / float, 1 or 3 channels, e.g. from
    :func:`~monai_dpaat.data.as_image` with ``LoadImaged(dtype=None)``) -> float32 ``(3, H, W)`` in [0, 1]:
    integers are divided by the full scale of their bit depth (255 or 65535), floating-point input (a
    16-bit image already scaled by ``as_image``) is only cast; one channel is repeated to three.

    Raises:
        DataError: naming the file for another dtype or channel count.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            t = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
            if t.dtype in (torch.uint8, torch.uint16, torch.bool):
                scale = {torch.uint8: 255.0, torch.uint16: 65535.0, torch.bool: 1.0}[t.dtype]
                t = t.float() / scale
            elif t.is_floating_point():
                t = t.float()
            else:
                raise DataError(f"{_source_name(img, key)} has dtype {t.dtype}; expected an 8- or 16-bit image.")
            if t.ndim != 3 or t.shape[0] not in (1, 3):
                raise DataError(
                    f"{_source_name(img, key)} has shape {tuple(t.shape)}; expected a channel-first 2D image with "
                    f"1 or 3 channels (C, H, W)."
                )
            d[key] = t.repeat(3, 1, 1) if t.shape[0] == 1 else t
        return d


class CheckClassLabeld(MapTransform):
    """Class-index labels -> ``torch.long`` scalars; a label that is not an integer (``0.5``, ``"1"``) or
    lies outside ``[0, num_classes - 1]`` (``-1``) raises ``DataError`` naming the value, the valid range
    and the item's file (``source_key``; put this transform before the loader so the path is still there).

    Args:
        keys: label keys.
        num_classes: number of classes; ``None`` checks only that labels are integers >= 0.
        source_key: the key naming the item's file in messages.
    """

    def __init__(
        self, keys: KeysCollection, num_classes: int | None = None, source_key: str = "image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if num_classes is not None and (not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
            raise DataError(f"num_classes must be a positive integer or None, got {num_classes!r}.")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.source_key = source_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.tensor(self.class_index(d[key], d.get(self.source_key), key), dtype=torch.long)
        return d

    def class_index(self, value: Any, source: Any = None, key: Hashable = "label") -> int:
        """``value`` (an int, an integral float or a one-element tensor / array) as a class index, or ``DataError``
        naming ``value``, the valid range, ``source`` (the item's file, or its image's metadata) and ``key``."""
        v = value
        if isinstance(v, torch.Tensor) and v.numel() == 1 or isinstance(v, np.ndarray) and v.size == 1:
            v = v.item()
        integral = isinstance(v, (bool, int, np.integer)) or (
            isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer())
        if integral and v >= 0 and (self.num_classes is None or v < self.num_classes):
            return int(v)
        where = f"{str(source)!r}" if isinstance(source, (str, Path)) else _source_name(source, self.source_key)
        valid = (f"an integer in [0, {self.num_classes - 1}] ({self.num_classes} classes)" if self.num_classes
                 else "an integer >= 0")
        shown = v if isinstance(v, (int, float, np.number)) else repr(v)
        raise DataError(f"label {shown} of {where} is not a class index: expected {valid} (key {key!r}).")


def _as_tuple(x: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (int(x),) * n if isinstance(x, (int, np.integer)) else tuple(int(v) for v in x)


def _positive_size(x: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """``x`` (one int or ``n`` ints) as an ``n``-tuple of positive ints; ``DataError`` naming ``name`` otherwise
    (a size of 0 or -1 would otherwise fail deep inside a resize or crop, or silently keep the input size)."""
    if isinstance(x, (int, float, np.number)):
        size = (x,) * n
    else:
        size = tuple(x) if isinstance(x, (Sequence, np.ndarray)) else None

    def positive_int(v) -> bool:
        return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and float(v).is_integer() and v > 0

    if size is None or len(size) != n or not all(positive_int(v) for v in size):
        raise DataError(f"{name} must be positive integers (one or {n}), got {size if size is not None else x!r}.")
    return tuple(int(v) for v in size)


def rgb_image_loading(keys: KeysCollection = "image") -> list[MapTransform]:
    """Dict transforms that load 2D image files with PIL at their real bit depth as float32 ``(3, H, W)`` in
    [0, 1] (8-bit / 255, 16-bit / 65535, grayscale repeated to RGB): the loading step of the HAM10000 and
    NuInsSeg transforms. Raises a ``ValueError`` naming the file that cannot be read."""
    return [
        CheckedLoadImaged(
            keys=keys,
            reader=PILReader(converter=as_image, reverse_indexing=False),
            image_only=True,
            ensure_channel_first=True,
            dtype=None,  # keep uint8, which ToRGBFloatd divides by 255 (16-bit comes as float from as_image)
        ),
        ToRGBFloatd(keys=keys),
    ]
