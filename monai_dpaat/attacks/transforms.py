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
    """Smooth ``grad`` ``(N, C, *spatial)`` (1 to 3 spatial dims) channel-wise with a separable Gaussian,
    zero padding, same size. ``padding="same"`` as torchattacks, so even lengths pad one more after than before."""
    spatial = grad.ndim - 2
    if not 1 <= spatial <= 3:
        raise ValueError(f"gaussian_smooth takes (N, C, *spatial) with 1 to 3 spatial dims, got shape {tuple(grad.shape)}")
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    channels = grad.shape[1]
    k1 = gaussian_kernel1d(length, nsig, grad.dtype, grad.device)
    before, after = (length - 1) // 2, length // 2  # torch's "same": the odd extra zero goes after
    out = grad
    for axis in range(spatial):
        shape = [1] * spatial
        shape[axis] = length
        weight = k1.reshape(1, 1, *shape).expand(channels, 1, *shape)
        if before == after:
            padding = [0] * spatial
            padding[axis] = before
            out = conv(out, weight, padding=tuple(padding), groups=channels)
        else:  # explicit pad: conv's padding="same" would warn and copy anyway
            pads = [0] * (2 * spatial)
            pads[2 * (spatial - 1 - axis)], pads[2 * (spatial - 1 - axis) + 1] = before, after
            out = conv(F.pad(out, pads), weight, groups=channels)
    return out


def is_dense_target(target: Any, images: torch.Tensor) -> bool:
    """True when ``target`` is a per-pixel/voxel map aligned with ``images``' spatial dims."""
    if not isinstance(target, torch.Tensor):
        return False
    spatial = images.shape[2:]
    return target.ndim >= 1 + len(spatial) and tuple(target.shape[-len(spatial):]) == tuple(spatial)


def _resize_pad(t: torch.Tensor, size: list[int], pads: list[int], mode: str) -> torch.Tensor:
    kwargs = {"align_corners": False} if not mode.startswith("nearest") else {}
    resized = F.interpolate(t, size=size, mode=mode, **kwargs)
    return F.pad(resized, pads, value=0.0)


def _diversity_sizes(spatial: list[int], resize_rate: float, randint) -> tuple[list[int], list[int]]:
    """DI's resized sizes and output sizes per spatial axis, from one random size (see :func:`input_diversity`)."""
    out = [s if resize_rate < 1 else max(int(s * resize_rate), s) for s in spatial]
    ref = max(range(len(spatial)), key=lambda a: spatial[a])  # the longest axis (the first of equals)
    s_ref, r_ref = spatial[ref], int(spatial[ref] * resize_rate)
    low, high = (max(r_ref, 1), s_ref) if resize_rate < 1 else (s_ref, r_ref)
    rnd = randint(low, high) if low < high else s_ref
    if all(s == s_ref for s in spatial):  # square / cubic: every axis gets rnd, as torchattacks' [rnd, rnd]
        return [min(rnd, o) for o in out], out
    lows = [max(int(s * resize_rate), 1) if resize_rate < 1 else s for s in spatial]
    size = [min(max(round(s * rnd / s_ref), lo), o) for s, lo, o in zip(spatial, lows, out)]
    return size, out


def input_diversity(
    images: torch.Tensor,
    target: Any,
    resize_rate: float = 0.9,
    diversity_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, Any]:
    """With probability ``diversity_prob``, resize ``images`` ``(N, C, *spatial)`` and zero-pad at a random offset.

    One random size keeps the aspect ratio (Xie et al. 2019; torchattacks' ``DIFGSM.input_diversity``): on the
    longest spatial axis, of size ``S``, with ``R = floor(resize_rate * S)``, a size ``rnd`` is drawn

    - ``resize_rate < 1`` (default 0.9, torchattacks'): in ``[R, S)``, and the result is padded back to the input's
      size (which segmentation networks with fixed strides need);
    - ``resize_rate > 1`` (Xie et al.'s original scheme): in ``[S, R)``, padded to ``floor(resize_rate * s)`` per axis;
    - ``resize_rate == 1``, or an axis too small to change: ``rnd = S``, no resizing.

    A square (cubic) input is resized to ``rnd`` on every axis, so it stays square. Any other input has every axis
    ``s`` scaled by the same factor ``rnd / S`` (rounded to the nearest integer and kept in that axis' own range
    ``[max(floor(resize_rate * s), 1), s]`` when shrinking, ``[s, floor(resize_rate * s)]`` when enlarging): its aspect
    ratio is kept up to rounding. Then each axis' padding before is drawn in ``[0, remainder)``, first axis first.

    The random numbers are drawn in torchattacks' order, ``rnd``, the top (first-axis) pad, the left pad, then the
    ``diversity_prob`` coin, so a square 2-D input with the same RNG state gets exactly torchattacks' transform.
    One random transform per batch, as torchattacks. Dense targets (see :func:`is_dense_target`) get the same
    transform with centred nearest-neighbour resizing ("nearest-exact", which samples where bilinear does; torch's
    legacy "nearest" is half a pixel off) and padding with label 0 (background), so prediction and target stay
    aligned. Random numbers come from ``generator`` (on its device) or torch's global CPU RNG.
    """
    if not resize_rate > 0:
        raise ValueError(f"resize_rate must be > 0, got {resize_rate}")
    device = "cpu" if generator is None else generator.device  # a handful of host-side draws per call

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=generator, device=device).item())

    spatial = list(images.shape[2:])
    size, out = _diversity_sizes(spatial, resize_rate, randint)
    before = [randint(0, o - n) if o > n else 0 for n, o in zip(size, out)]
    if torch.rand(1, generator=generator, device=device).item() >= diversity_prob:
        return images, target
    pads: list[int] = []
    for b, n, o in reversed(list(zip(before, size, out))):  # F.pad takes the last axis first
        pads += [b, o - n - b]
    mode = ("linear", "bilinear", "trilinear")[len(spatial) - 1]
    transformed = _resize_pad(images, size, pads, mode)
    if is_dense_target(target, images):
        t = target if target.ndim == images.ndim else target.unsqueeze(1)
        moved = _resize_pad(t.float(), size, pads, "nearest-exact").to(target.dtype)
        target = moved if target.ndim == images.ndim else moved[:, 0]
    return transformed, target
