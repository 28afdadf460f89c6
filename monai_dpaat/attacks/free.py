"""Free adversarial training's adversary (Shafahi et al. 2019, "Adversarial training for free!").

Free AT makes no attack pass of its own: each mini-batch is replayed ``replays`` times, and every replay's training
backward also gives the gradient of the loss with respect to the input, which moves a perturbation ``delta`` that is
carried over to the next replay and the next mini-batch. Per optimizer step it costs one training pass (AT) or a
training method's own passes (two for SAT, AMAT and DPAAT), with no attack pass; to match standard training's cost
a run takes ``1 / replays`` of the epochs.

The training methods run the replays: :class:`monai_dpaat.training.base.AdversarialIteration` sees
:attr:`FreeAT.replays`, makes the batch it gets from the adversary a leaf with ``requires_grad`` and hands its
``.grad`` to :meth:`FreeAT.update` after each optimizer step.
"""

from __future__ import annotations

import torch

from .base import Attack
from .fgsm import _reject_unknown

__all__ = ["FreeAT"]


class FreeAT(Attack):
    """The carried perturbation of Free adversarial training (Shafahi et al. 2019, Alg. 1).

    A call returns ``clamp(x + clip(delta, -eps, eps))`` (clamped to the value range): no forward or backward
    pass, ``delta`` is what the previous training backward left (zeros at the start, as in the paper). After the
    trainer's backward, :meth:`update` takes the gradient ``g`` of that batch's loss with respect to ``delta`` and
    sets ``delta <- clip(delta + alpha * sign(g), -eps, eps)`` per sample (the reference code's update). ``delta``
    has the shape of the largest batch seen; a smaller batch uses its first samples (the reference code's
    ``global_noise_data[0:n]``), a batch of another image shape starts from zeros.

    With per-sample budgets (AMAT, DPAAT) ``delta`` is projected onto each sample's own ``eps_i`` at every call,
    and the step is ``alpha_i``, so the perturbation follows the adapted budget.

    Args:
        eps: L-inf budget (float or ``(N,)``).
        alpha: step of ``delta`` per replay; default ``eps`` (the paper's: FGSM steps of the full budget).
        replays: ``m``, how many times each mini-batch is trained on (the paper: 4 to 10; 8 on CIFAR-10). Train
            ``1 / m`` of the epochs to keep standard training's cost.
        value_range, generator: as :class:`~monai_dpaat.attacks.base.Attack`. ``steps``, ``decay`` and
            ``random_start=False`` are accepted and ignored (the start is the carried ``delta``).

    Outside a training method (e.g. an evaluation) a call is only ``x`` plus the last carried ``delta``: it is not
    an attack of that batch, and the evaluation suites do not list it.
    """

    #: the training method must make the batch a leaf with ``requires_grad`` and call :meth:`update`
    uses_training_gradient = True

    def __init__(self, eps=8 / 255, alpha=None, replays: int = 4, value_range="data", generator=None,
                 random_start=False, **unused):
        _reject_unknown(type(self).__name__, unused, allowed=("steps", "decay", "loss_function", "model_mode"))
        if random_start:
            raise ValueError("FreeAT starts from the perturbation carried over from the previous replay "
                             "(zeros at first), not from a random start")
        if isinstance(replays, bool) or not isinstance(replays, int) or replays < 1:
            raise ValueError(f"replays must be an integer >= 1, got {replays!r}")
        super().__init__(eps=eps, alpha=eps if alpha is None else alpha, steps=1, value_range=value_range,
                         random_start=False, model_mode=None, generator=generator)
        self.replays = replays
        self.delta: torch.Tensor | None = None
        self._pending: tuple | None = None  # (x, delta, eps, alpha, lo, hi) of the batch handed out last

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:
        delta = self._carried(x)
        torch.minimum(delta, eps, out=delta)  # onto this call's (per-sample) eps; min/max with out= are the fast path
        torch.maximum(delta, -eps, out=delta)
        self._pending = (x, delta, eps, alpha, lo, hi)
        return self.clamp_inplace(x + delta, lo, hi)

    def _carries(self, x: torch.Tensor) -> bool:
        """Whether the carried perturbation covers a batch like ``x`` (its image shape, device, at least its size)."""
        d = self.delta
        return d is not None and d.shape[1:] == x.shape[1:] and d.shape[0] >= x.shape[0] and d.device == x.device

    def _carried(self, x: torch.Tensor) -> torch.Tensor:
        """A copy of the carried perturbation for a batch like ``x`` (zeros when there is none of its shape)."""
        if not self._carries(x):
            return torch.zeros_like(x)
        return self.delta[: x.shape[0]].to(dtype=x.dtype, copy=True)

    def update(self, x_adv: torch.Tensor) -> None:
        """Move ``delta`` by the input gradient the training backward left in ``x_adv.grad`` (``x_adv``: the batch
        the last call returned), as the reference code does: the gradient with respect to ``delta`` (zero where
        ``x + delta`` was clamped to the value range), ``delta <- clip(delta + alpha * sign(g), -eps, eps)``, kept
        unclamped. A NaN gradient entry (an AMP step the GradScaler skips) moves nothing."""
        if self._pending is None:
            raise RuntimeError("FreeAT.update before any call: the method must call the adversary first")
        grad = x_adv.grad
        if grad is None:
            raise RuntimeError("FreeAT.update: the training batch has no input gradient; the method must make it a "
                               "leaf with requires_grad=True and run the backward before the update")
        x, delta, eps, alpha, lo, hi = self._pending
        self._pending = None
        step = torch.as_tensor(grad).detach().to(x.dtype).sign()
        if lo is not None:  # d clamp(v) / dv is 0 where v = x + delta was clamped
            step.mul_(torch.eq(x + delta, torch.as_tensor(x_adv).detach()))
        step.nan_to_num_(nan=0.0)
        new = delta.addcmul_(step, alpha)  # delta is this call's own copy
        torch.minimum(new, eps, out=new)
        torch.maximum(new, -eps, out=new)
        if self._carries(new):
            self.delta[: new.shape[0]] = new.to(self.delta.dtype)
        else:
            self.delta = new
