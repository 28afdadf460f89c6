"""Reproductions of the two papers this package implements (``python -m monai_dpaat reproduce <paper>``).

- ``dpaat``: Li et al. 2024, DPAAT on HAM10000 (six CNNs x STD/AT/SAT/AMAT/DPAAT; Tables I-II, the ablation,
  confusion matrices, Grad-CAM energy in the lesion) -- :mod:`monai_dpaat.reproduce.dpaat`.
- ``unet-attacks``: Koishiyeva et al. 2025, UNet vs Residual-Attention UNet++ under eight attacks on
  NuInsSeg-layout tiles -- :mod:`monai_dpaat.reproduce.unet_attacks`.

Each runs at a ``scale`` (:data:`SCALES`): ``smoke`` (tests, minutes on 2 CPU cores), ``quick`` (under an hour on 2
CPU cores, every reduction stated in the output) or ``paper`` (the papers' settings, for a GPU and the full data).
Every number is a mean and standard deviation over seeds, next to the published number and the difference
(:mod:`~monai_dpaat.reproduce.stats`); results go to ``docs/results/`` as Markdown + JSON with the command,
commit and machine (:mod:`~monai_dpaat.reproduce.results`).
"""

from __future__ import annotations

#: the run sizes of every reproduction
SCALES = ("smoke", "quick", "paper")

__all__ = ["SCALES", "check_scale"]


def check_scale(scale: str) -> str:
    """``scale`` if it is one of :data:`SCALES`, else ``ValueError`` naming them."""
    if scale not in SCALES:
        raise ValueError(f"--scale must be one of {list(SCALES)}, got {scale!r}")
    return scale
