"""A network seen through a MONAI inferer, as one ``nn.Module`` (so attacks differentiate through it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from monai.inferers import SlidingWindowInferer

__all__ = ["InfererNetwork"]


class InfererNetwork(nn.Module):
    """``network`` and an inferer (e.g. :class:`monai.inferers.SlidingWindowInferer`) as one module, so an
    attack computes gradients through exactly the forward a trainer or evaluator uses (the sliding window on
    large tiles, the extra arguments of a ``prepare_batch``).

    Args:
        network: the model, ``(B, C, *roi) -> (B, K, *roi)``.
        inferer: a MONAI inferer called as ``inferer(inputs, network, *args, **kwargs)``; ``None`` builds a
            ``SlidingWindowInferer(roi_size, sw_batch_size, overlap, mode)``.
        roi_size, sw_batch_size, overlap, mode: the sliding window's settings when ``inferer`` is None.
        args, kwargs: extra arguments passed on to the inferer (and so to the network).

    ``forward(images (N, C, *spatial)) -> logits (N, K, *spatial)``.
    """

    def __init__(self, network: nn.Module, inferer: Callable | None = None, roi_size: Sequence[int] | int | None = None,
                 sw_batch_size: int = 4, overlap: float = 0.25, mode: str = "gaussian", args: tuple = (),
                 kwargs: dict | None = None) -> None:
        super().__init__()
        if inferer is None:
            if roi_size is None:
                raise ValueError("InfererNetwork needs an inferer or a roi_size for the sliding window")
            inferer = SlidingWindowInferer(roi_size=roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode)
        self.network = network
        self.inferer = inferer
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})

    def forward(self, images: torch.Tensor) -> Any:
        return self.inferer(images, self.network, *self.args, **self.kwargs)
