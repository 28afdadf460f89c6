"""Gradient and input transforms of the transfer attacks, for any number of spatial dims.

- :func:`gaussian_smooth`: TI-FGSM's translation-invariance smoothing, an N-D depthwise Gaussian
  applied as one 1-D convolution per spatial axis (the N-D Gaussian kernel is separable, so this equals
  torchattacks' 2-D ``conv2d`` with the outer-product kernel, at a fraction of the cost in 3D).
- :func:`input_diversity`: DI-FGSM's random shrink-and-pad, keeping the spatial size and applying the
  same geometric transform to dense targets.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["gaussian_kernel1d", "gaussian_smooth", "input_diversity", "is_dense_target"]


def gaussian_kernel1d(length: int = 15, nsig: float = 3.0, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian sampled on ``linspace(-nsig, nsig, length)`` (torchattacks' TI kernel)."""
    if length < 1:
        raise ValueError(f"kernel length must be >= 1, got {length}")
    x = torch.linspace(-nsig, nsig, length, dtype=torch.float64)
    k = torch.exp(-0.5 * x**2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def gaussian_smooth(grad: torch.Tensor, length: int = 15, nsig: float = 3.0) -> torch.Tensor:
    """Smooth ``grad`` ``(N, C, *spatial)`` channel-wise with a separable Gaussian, zero padding, same size."""
    spatial = grad.ndim - 2
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    channels = grad.shape[1]
    k1 = gaussian_kernel1d(length, nsig, grad.dtype, grad.device)
    out = grad
    for axis in range(spatial):
        shape = [1] * spatial
        shape[axis] = length
        weight = k1.reshape(1, 1, *shape).expand(channels, 1, *shape)
        padding = [0] * spatial
        padding[axis] = length // 2
        out = conv(out, weight, padding=tuple(padding), groups=channels)
    return out


def is_dense_target(target: Any, images: torch.Tensor) -> bool:
    """True when ``target`` is a per-pixel/voxel map aligned with ``images``' spatial dims."""
    if not isinstance(target, torch.Tensor):
        return False
    spatial = images.shape[2:]
    return target.ndim >= 1 + len(spatial) and tuple(target.shape[-len(spatial):]) == tuple(spatial)


def _resize_pad(t: torch.Tensor, size: list[int], pads: list[int], mode: str) -> torch.Tensor:
    kwargs = {"align_corners": False} if mode != "nearest" else {}
    resized = F.interpolate(t, size=size, mode=mode, **kwargs)
    return F.pad(resized, pads, value=0.0)


def input_diversity(
    images: torch.Tensor,
    target: Any,
    resize_rate: float = 0.9,
    diversity_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, Any]:
    """With probability ``diversity_prob``, shrink ``images`` to a random size in
    ``[floor(resize_rate * S), S)`` per spatial axis and zero-pad at a random offset back to ``S``.

    One random transform per batch (as torchattacks). Dense targets get the same transform with
    nearest-neighbour resizing (padding is label 0, background), so prediction and target stay aligned.
    ``resize_rate >= 1`` or axes too small to shrink leave those axes unchanged.
    """
    if torch.rand(1, generator=generator).item() >= diversity_prob:
        return images, target
    spatial = list(images.shape[2:])
    size, pads_per_axis = [], []
    for s in spatial:
        low = min(int(s * resize_rate), s)
        new = s if low >= s else int(torch.randint(low, s, (1,), generator=generator).item())
        rem = s - new
        before = int(torch.randint(0, rem, (1,), generator=generator).item()) if rem > 0 else 0
        size.append(new)
        pads_per_axis.append((before, rem - before))
    pads: list[int] = []
    for before, after in reversed(pads_per_axis):  # F.pad takes the last axis first
        pads += [before, after]
    mode = ("linear", "bilinear", "trilinear")[len(spatial) - 1]
    out = _resize_pad(images, size, pads, mode)
    if is_dense_target(target, images):
        t = target if target.ndim == images.ndim else target.unsqueeze(1)
        moved = _resize_pad(t.float(), size, pads, "nearest").to(target.dtype)
        target = moved if target.ndim == images.ndim else moved[:, 0]
    return out, target
