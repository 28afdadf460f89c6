"""Dict transforms of :mod:`monai_dpaat.data` that MONAI lacks: label remapping with an explicit
policy for unmapped values, a same-spatial-shape check that names the offending files, and a
foreground selector for images whose background is a constant minimum (z-scored MRI)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import LoadImaged, MapTransform, Transform

__all__ = [
    "CheckedLoadImaged", "CheckFinited", "RemapLabels", "RemapLabelsd", "CheckSameSpatialShaped", "above_background",
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


class CheckedLoadImaged(LoadImaged):
    """:class:`monai.transforms.LoadImaged` whose failure is a ``ValueError`` naming the key and the
    file(s) that could not be read (MONAI's own message suggests installing reader libraries, which
    misleads when the file is simply corrupt). Same arguments as ``LoadImaged``."""

    def __call__(self, data, reader=None):
        try:
            return super().__call__(data, reader)
        except Exception as e:
            names = {k: data.get(k) for k in self.keys if k in data}
            first = (str(e).strip().splitlines() or [""])[0]
            raise ValueError(
                f"could not load {names}: a file is missing, unreadable or corrupt ({type(e).__name__}: {first})"
            ) from e


def _as_tuple(x: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (int(x),) * n if isinstance(x, (int, np.integer)) else tuple(int(v) for v in x)
