"""Give every sample a stable id, so per-sample training state (AMAT, DPAAT epsilons) can follow it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import Dataset as _TorchDataset

__all__ = ["IndexedDataset"]


class IndexedDataset(_TorchDataset):
    """Wrap any map-style dataset of dict items and add ``item[key] = i`` (its position in ``dataset``).

    This is how an override file adds DPAAT/AMAT to an existing MONAI bundle whose datalist has no ids::

        "train#dataloader#dataset": "$monai_dpaat.data.IndexedDataset(@train#dataset)"

    Items that are lists of dicts (e.g. ``RandCropByPosNegLabeld(num_samples=k)``) get the same id on every
    patch: the patches of one image share its epsilon. An item that already has ``key`` keeps it.

    Args:
        dataset: a map-style dataset (``monai.data.Dataset``, ``CacheDataset``, ...).
        key: the id key (the training iterations' ``index_key``, default ``"index"``).
    """

    def __init__(self, dataset: Sequence, key: str = "index") -> None:
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)

    def _tag(self, item: Any, index: int) -> Any:
        if isinstance(item, Mapping):
            if self.key in item:
                return item
            return {**item, self.key: index}
        if isinstance(item, (list, tuple)):
            return type(item)(self._tag(x, index) for x in item)
        raise TypeError(f"IndexedDataset needs dict items (or lists of them), got {type(item).__name__} at {index}")

    def __getitem__(self, index: int) -> Any:
        return self._tag(self.dataset[index], int(index))
