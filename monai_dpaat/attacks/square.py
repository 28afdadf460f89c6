"""Square Attack (Andriushchenko et al. 2020): a score-based black-box attack by random search, L-inf.

It never takes a gradient: each query changes one random square window (a cube in 3D) of the current best point by
``+-2 eps`` per channel and keeps it when the margin loss falls. A gradient-masked network (one whose gradients are
useless but whose decisions are not robust) is broken by it where gradient attacks fail, which makes it AutoAttack's
and the benchmark protocol's masking check. Our implementation follows the reference (``fra31/auto-attack``,
torchattacks' ``Square``): the same vertical-stripe start, the same ``p`` schedule, and with torch's global random
generator the same random draws in the same order (the parity test compares images), extended to N-D images and to
per-sample budgets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .apgd import APGD, _take
from .base import Attack

__all__ = ["Square", "square_p_schedule"]


def square_p_schedule(it: int, n_queries: int, p_init: float = 0.8, rescale: bool = True) -> float:
    """The reference schedule of ``p``, the fraction of the image a square covers, at query ``it``."""
    if rescale:
        it = int(it / n_queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
                       (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


class Square(Attack):
    """Score-based L-inf Square Attack on a classification network (outputs ``(N, K)``).

    Args:
        eps: L-inf budget (float or ``(N,)``).
        steps: queries per restart (the reference's ``n_queries``: 5000); ``n_queries`` is accepted as its alias.
        n_restarts: restarts on the samples still robust (the reference: 1).
        p_init: initial square size as a fraction of the image (0.8).
        loss: ``"margin"`` (default: ``z_y - max_{j != y} z_j``) or ``"ce"``.
        rescale_schedule: adapt the ``p`` schedule to ``n_queries`` (the reference's ``resc_schedule``).
        value_range, generator: as :class:`~monai_dpaat.attacks.base.Attack`; ``generator`` None draws from torch's
            global generator as the reference does (seed it with ``torch.manual_seed`` for a reproducible run).
        ``alpha``, ``decay`` and ``random_start`` are accepted and ignored (no step size; the start is always the
        reference's random vertical stripes at ``+-eps``).

    Only samples the network classifies correctly are attacked (a misclassified one is returned clean, as in the
    reference). :attr:`queries` holds the queries each sample of the last call used ``(N,)`` (0 when not attacked).
    """

    tasks = ("classification",)
    uses_gradient = False

    def __init__(self, eps=8 / 255, steps: int = 5000, n_restarts: int = 1, p_init: float = 0.8, loss: str = "margin",
                 rescale_schedule: bool = True, value_range="data", generator=None, n_queries: int | None = None,
                 alpha=None, decay=None, random_start=None):
        if n_queries is not None:  # the reference's name for the step count
            if steps not in (5000, n_queries):
                raise ValueError(f"Square: steps ({steps!r}) and n_queries ({n_queries!r}) both given and differ")
            steps = n_queries
        super().__init__(eps=eps, alpha=0.0, steps=steps, value_range=value_range, random_start=False,
                         model_mode="eval", generator=generator)
        if isinstance(n_restarts, bool) or not isinstance(n_restarts, int) or n_restarts < 1:
            raise ValueError(f"n_restarts must be an integer >= 1, got {n_restarts!r}")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        if loss not in ("margin", "ce"):
            raise ValueError(f"loss must be 'margin' or 'ce', got {loss!r}")
        self.n_queries, self.n_restarts, self.p_init = self.steps, n_restarts, float(p_init)
        self.loss_name, self.rescale_schedule = loss, bool(rescale_schedule)
        self.queries: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (f"Square(eps={self.eps!r}, n_queries={self.n_queries}, n_restarts={self.n_restarts}, "
                f"loss={self.loss_name!r})")

    # ------------------------------------------------------------------ pieces
    def _rand(self, shape, device) -> torch.Tensor:
        # the reference draws with torch.rand(shape).to(device): CPU draws from the generator, then moved
        g = self.generator
        return torch.rand(shape, generator=g, device=g.device if g is not None else "cpu").to(device)

    def _sign(self, shape, device) -> torch.Tensor:
        return torch.sign(2 * self._rand(shape, device) - 1)

    def _int(self, high: int, device) -> int:
        return int((high * self._rand([1], device)).long())

    def margin_and_loss(self, network, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = APGD.logits_of(network(x)).float()
        u = torch.arange(x.shape[0], device=x.device)
        y_corr = logits[u, y].clone()
        others = logits.clone()
        others[u, y] = -float("inf")
        margin = y_corr - others.max(dim=-1)[0]
        if self.loss_name == "ce":
            return margin, -F.cross_entropy(logits, y, reduction="none")
        return margin, margin

    def attack_single_run(self, network, x, y, eps, lo, hi) -> tuple[torch.Tensor, torch.Tensor]:
        """``(queries (n,), best point)`` of one restart on samples ``x`` ``(n, C, *spatial)``."""
        c, spatial = x.shape[1], x.shape[2:]
        n_features = x[0].numel()
        stripes = [x.shape[0], c, *([1] * (len(spatial) - 1)), spatial[-1]]
        x_best = self.clamp_inplace(x + eps * self._sign(stripes, x.device), lo, hi)
        margin_min, loss_min = self.margin_and_loss(network, x_best, y)
        queries = torch.ones(x.shape[0], device=x.device)
        dims = len(spatial)
        for it in range(self.n_queries):
            todo = (margin_min > 0.0).nonzero().flatten()
            if len(todo) == 0:
                break
            x_curr, best_curr, y_curr = x[todo], x_best[todo], y[todo]
            eps_curr = _take(eps, todo)
            p = square_p_schedule(it, self.n_queries, self.p_init, self.rescale_schedule)
            s = max(int(round((p * n_features / c) ** (1 / dims))), 1)
            s = min(s, *spatial)
            corner = [self._int(size - s, x.device) for size in spatial]
            window = (slice(None), slice(None), *(slice(v, v + s) for v in corner))
            x_new = best_curr.clone()
            x_new[window] += 2.0 * eps_curr * self._sign([c, *([1] * dims)], x.device)
            # the reference's min/max form, not Attack.project (x + (x_new - x) may round differently)
            x_new = torch.minimum(torch.maximum(x_new, x_curr - eps_curr), x_curr + eps_curr)
            x_new = self.clamp_inplace(x_new, _take(lo, todo), _take(hi, todo))
            margin, loss = self.margin_and_loss(network, x_new, y_curr)
            improved = (loss < loss_min[todo]).float()
            loss_min[todo] = improved * loss + (1.0 - improved) * loss_min[todo]
            improved = torch.maximum(improved, (margin <= 0.0).float())
            margin_min[todo] = improved * margin + (1.0 - improved) * margin_min[todo]
            keep = improved.reshape(-1, *([1] * (x.ndim - 1)))
            x_best[todo] = keep * x_new + (1.0 - keep) * best_curr
            queries[todo] += 1.0
        return queries, x_best

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        with torch.no_grad():
            logits = APGD.logits_of(network(x))
            y = APGD.class_indices(y, x.shape[0], logits.shape[1], x.device)
            robust = logits.argmax(1) == y
            adv = x.clone()
            self.queries = torch.zeros(x.shape[0], device=x.device)
            for _ in range(self.n_restarts):
                todo = robust.nonzero().flatten()
                if todo.numel() == 0:
                    break
                queries, point = self.attack_single_run(network, x[todo], y[todo], _take(eps, todo),
                                                        _take(lo, todo), _take(hi, todo))
                self.queries[todo] += queries
                fooled = APGD.logits_of(network(point)).argmax(1) != y[todo]
                adv[todo[fooled]] = point[fooled]
                robust[todo[fooled]] = False
        return adv

