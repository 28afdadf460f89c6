"""Square Attack on dense outputs: the score-based black-box check of the segmentation protocol, 2D and 3D.

:class:`~monai_dpaat.attacks.square.Square`'s random search (its stripes start, ``p`` schedule and window updates,
reused) with a segmentation score instead of the classification margin: a query is kept when it lowers the
per-sample **soft Dice** (MONAI's :class:`~monai.losses.DiceLoss` on the softmax / sigmoid probabilities, foreground
classes, one minus its value), a continuous stand-in for the hard Dice that a single window rarely changes; a sample
is done when its hard Dice (:func:`monai_dpaat.conventions.per_sample_dice`) reaches 0. It reads only the
network's outputs, never a gradient, so where it lowers Dice below every gradient attack, gradients are masked.
"""

from __future__ import annotations

import torch

from monai.losses import DiceLoss

from monai_dpaat.conventions import label_map, per_sample_dice

from .segpgd import _dense_output, pixel_terms
from .square import Square

__all__ = ["DenseSquare"]


class DenseSquare(Square):
    """Score-based L-inf Square Attack on a segmentation network (outputs ``(N, K, *spatial)``; ``K = 1``: a sigmoid
    foreground channel). Images ``(N, C, H, W)`` or ``(N, C, D, H, W)``; targets label maps ``(N, 1, *spatial)`` /
    ``(N, *spatial)`` or one-hot ``(N, K, *spatial)``.

    Args:
        eps, steps (queries, default 5000; alias ``n_queries``), p_init, rescale_schedule, value_range, generator:
            as :class:`Square`. One restart: the search runs on every sample until its Dice is 0.

    Returns the best point per sample (the lowest soft Dice reached). :attr:`queries` ``(N,)`` as :class:`Square`.
    """

    tasks = ("segmentation",)

    def __init__(self, eps=8 / 255, steps: int = 5000, p_init: float = 0.8, rescale_schedule: bool = True,
                 value_range="data", generator=None, n_queries: int | None = None, n_restarts: int = 1,
                 alpha=None, decay=None, random_start=None, loss="soft-dice"):
        if n_restarts != 1:
            raise ValueError(f"DenseSquare runs one restart on every sample, got n_restarts={n_restarts!r}")
        if loss != "soft-dice":
            raise ValueError(f"DenseSquare's score is the soft Dice, got loss={loss!r}")
        super().__init__(eps=eps, steps=steps, n_restarts=1, p_init=p_init, loss="margin",
                         rescale_schedule=rescale_schedule, value_range=value_range, generator=generator,
                         n_queries=n_queries)
        self.loss_name = "soft-dice"

    def __repr__(self) -> str:
        return f"DenseSquare(eps={self.eps!r}, n_queries={self.n_queries})"

    def margin_and_loss(self, network, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hard Dice, soft Dice)`` per sample ``(n,)``: the search stops at hard Dice 0, keeps lower soft Dice."""
        out = _dense_output(network(x)).float()
        k = out.shape[1]
        target = label_map(y, out)
        soft = DiceLoss(include_background=k == 1, to_onehot_y=k > 1, softmax=k > 1, sigmoid=k == 1,
                        reduction="none")(out, target if k > 1 else (target > 0).float())
        soft_dice = 1.0 - soft.reshape(out.shape[0], -1).mean(1)
        return per_sample_dice(out, target), soft_dice

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        with torch.no_grad():
            pixel_terms(_dense_output(network(x)), y)  # targets that do not fit the output: named before any query
            queries, adv = self.attack_single_run(network, x, y, eps, lo, hi)
        self.queries = queries
        return adv
