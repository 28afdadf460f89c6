"""The loss-agnostic attack core that every attack in :mod:`monai_dpaat.attacks` stands on.

An attack is called as ``adv = attack(network, images, targets)``:

- ``images``: ``(N, C, *spatial)`` float tensor, 2D ``(N, C, H, W)`` or 3D ``(N, C, D, H, W)``.
- ``targets``: whatever ``loss_function(prediction, targets)`` takes: class indices ``(N,)``, one-hot
  ``(N, K)``, dense labels ``(N, 1, *spatial)`` / ``(N, *spatial)`` or one-hot ``(N, K, *spatial)``.
- returns a detached tensor shaped like ``images``, inside the epsilon ball (per sample when ``eps``
  is a ``(N,)`` tensor) and inside the value range.

The network is left exactly as found: the train/eval flag of every submodule is restored, buffers
(BatchNorm running statistics) are restored, and gradients are taken with ``torch.autograd.grad`` with
respect to the input only, so parameters' ``.grad`` are never touched. Attacks work when called under
``torch.no_grad()`` or ``torch.inference_mode()`` (MONAI evaluators call the network so).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from monai.losses import DeepSupervisionLoss

__all__ = ["Attack", "default_loss", "as_per_sample", "restore_model_state"]

ValueRange = tuple[float, float] | str | None


def default_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for multi-channel outputs, BCE-with-logits for single-channel outputs.

    Unlike torchattacks (which hard-codes ``CrossEntropyLoss`` and so gets a zero gradient on a
    one-channel sigmoid output), this picks the loss from the output's channel count:

    - ``prediction`` ``(N, K, *spatial)`` with ``K > 1``: CE; ``target`` may be indices ``(N, *spatial)``,
      indices with a channel dim ``(N, 1, *spatial)`` (MONAI's layout) or one-hot/probabilities
      ``(N, K, *spatial)``.
    - ``prediction`` with one channel: BCE with logits; ``target`` ``(N,)``, ``(N, 1, *spatial)`` or
      ``(N, *spatial)`` in {0, 1}.
    """
    if prediction.ndim < 2:
        raise ValueError(f"prediction must be (N, C, ...), got shape {tuple(prediction.shape)}")
    if prediction.shape[1] == 1:
        target = target.to(prediction.dtype)
        if target.shape != prediction.shape:
            target = target.reshape(prediction.shape)
        return F.binary_cross_entropy_with_logits(prediction, target)
    if target.shape == prediction.shape and target.is_floating_point():
        return F.cross_entropy(prediction, target)
    if target.ndim == prediction.ndim and target.shape[1] == 1:
        target = target[:, 0]
    return F.cross_entropy(prediction, target.long())


def as_per_sample(value: float | torch.Tensor, name: str, batch: torch.Tensor) -> torch.Tensor:
    """Return ``value`` as a ``(N, 1, ..., 1)`` tensor broadcastable against ``batch``.

    Accepts a python number, a 0-d tensor or a ``(N,)`` tensor; raises ``ValueError`` on negative values,
    NaN or a length that is not the batch size.
    """
    n, ndim = batch.shape[0], batch.ndim
    t = torch.as_tensor(value, dtype=batch.dtype, device=batch.device)
    if t.ndim == 0:
        t = t.expand(n)
    elif t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must be a number or a tensor of shape ({n},) (one per sample), got shape {tuple(t.shape)}")
    if torch.isnan(t).any() or (t < 0).any():
        raise ValueError(f"{name} must be >= 0 and not NaN, got {t.tolist()}")
    return t.reshape(n, *([1] * (ndim - 1)))


@contextlib.contextmanager
def restore_model_state(network: torch.nn.Module, mode: str | None = "eval"):
    """Run a block with ``network`` in ``mode`` ("eval", "train" or None = as is), then put back the
    train flag of every submodule and every buffer (BatchNorm running stats, counters) as they were."""
    flags = [(m, m.training) for m in network.modules()]
    buffers = [(b, b.detach().clone()) for b in network.buffers()]
    try:
        if mode == "eval":
            network.eval()
        elif mode == "train":
            network.train()
        yield network
    finally:
        for m, flag in flags:
            m.training = flag
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


class Attack:
    """Base class: validation, model-state guard, loss and input gradient, projection and clamping.

    Args:
        eps: budget, a float or a per-sample ``(N,)`` tensor (L-inf radius, or L2 radius for ``PGDL2``).
        alpha: step size, a float or a ``(N,)`` tensor.
        steps: number of iterations (>= 1).
        loss_function: callable ``(prediction, target) -> scalar``; ``None`` uses :func:`default_loss`.
            MONAI ``DiceLoss``/``DiceCELoss``, ``CrossEntropyLoss`` and ``BCEWithLogitsLoss`` all fit.
            When the network returns a list/tuple (deep supervision), the loss is MONAI's
            ``DeepSupervisionLoss`` over all outputs (targets resized to each output).
        value_range: ``(lo, hi)`` clamps adversarial images; ``None`` never clamps (z-scored CT/MRI);
            ``"data"`` (default) clamps each sample to the min/max of its own clean values, so the
            attack never assumes [0, 1] and never leaves the range the data came in.
        random_start: start from a uniform random point in the ball.
        model_mode: mode the network runs in while attacked: "eval" (default), "train", or None (as found).
        generator: optional ``torch.Generator`` for the attack's randomness (default: torch's global RNG).
    """

    #: whether the attack ascends a loss gradient (GaussianNoise does not)
    uses_gradient = True

    def __init__(
        self,
        eps: float | torch.Tensor = 8 / 255,
        alpha: float | torch.Tensor = 2 / 255,
        steps: int = 10,
        loss_function: Callable[[Any, Any], torch.Tensor] | None = None,
        value_range: ValueRange = "data",
        random_start: bool = False,
        model_mode: str | None = "eval",
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(eps, (int, float)) and (eps < 0 or eps != eps):
            raise ValueError(f"eps must be >= 0, got {eps}")
        if isinstance(alpha, (int, float)) and (alpha < 0 or alpha != alpha):
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps}")
        if model_mode not in ("eval", "train", None):
            raise ValueError(f"model_mode must be 'eval', 'train' or None, got {model_mode!r}")
        if value_range is not None and not isinstance(value_range, str):
            if len(value_range) != 2 or not float(value_range[0]) < float(value_range[1]):
                raise ValueError(f"value_range must be (lo, hi) with lo < hi, None or 'data', got {value_range!r}")
            value_range = (float(value_range[0]), float(value_range[1]))
        elif isinstance(value_range, str) and value_range != "data":
            raise ValueError(f"value_range must be (lo, hi), None or 'data', got {value_range!r}")
        self.eps = eps
        self.alpha = alpha
        self.steps = int(steps)
        self.loss_function = loss_function if loss_function is not None else default_loss
        self.value_range = value_range
        self.random_start = bool(random_start)
        self.model_mode = model_mode
        self.generator = generator

    def __repr__(self) -> str:
        keys = ("eps", "alpha", "steps", "random_start")
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys if hasattr(self, k))
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ public call
    def __call__(
        self,
        network: torch.nn.Module,
        images: torch.Tensor,
        targets: Any,
        eps: float | torch.Tensor | None = None,
        alpha: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return adversarial ``images`` for ``network``. ``eps``/``alpha`` override the constructor's
        values for this call (a training method passes per-sample tensors here)."""
        self._check_inputs(images, targets)
        with torch.inference_mode(False):
            x = images.detach().clone()
            y = targets.detach().clone() if isinstance(targets, torch.Tensor) else targets
            eps_t = as_per_sample(self.eps if eps is None else eps, "eps", x)
            alpha_t = as_per_sample(self.alpha if alpha is None else alpha, "alpha", x)
            lo, hi = self._bounds(x)
            with restore_model_state(network, self.model_mode), torch.enable_grad():
                adv = self.perturb(network, x, y, eps_t, alpha_t, lo, hi)
            return adv.detach()

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:  # pragma: no cover - abstract
        """Compute the adversarial batch. ``eps``/``alpha`` are ``(N, 1, ...)``; ``lo``/``hi`` are
        broadcastable bounds or None."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def loss(self, network: torch.nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
        """Scalar loss of ``network(images)`` against ``targets`` (deep-supervision lists averaged)."""
        return self.loss_of(network(images), targets)

    def loss_of(self, outputs: Any, targets: Any) -> torch.Tensor:
        if isinstance(outputs, (list, tuple)):
            if len(outputs) == 1:
                return self.loss_function(outputs[0], targets)
            return DeepSupervisionLoss(self.loss_function, weight_mode="same")(list(outputs), targets)
        return self.loss_function(outputs, targets)

    def gradient(self, network: torch.nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
        """d loss / d images, without touching parameters' ``.grad`` and without keeping the graph."""
        images = images.detach().requires_grad_(True)
        loss = self.loss(network, images, targets)
        (grad,) = torch.autograd.grad(loss, images)
        return grad

    def project(self, adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, lo, hi) -> torch.Tensor:
        """L-inf projection into the ``eps`` ball around ``x``, then into the value range."""
        delta = torch.clamp(adv - x, min=-eps, max=eps)
        return self.clamp(x + delta, lo, hi)

    @staticmethod
    def clamp(images: torch.Tensor, lo, hi) -> torch.Tensor:
        if lo is None:
            return images.detach()
        return torch.clamp(images, min=lo, max=hi).detach()

    def uniform_start(self, x: torch.Tensor, eps: torch.Tensor, lo, hi) -> torch.Tensor:
        noise = torch.empty_like(x).uniform_(-1.0, 1.0, generator=self.generator) * eps
        return self.clamp(x + noise, lo, hi)

    # ------------------------------------------------------------------ validation
    def _bounds(self, x: torch.Tensor):
        if self.value_range is None:
            return None, None
        if self.value_range == "data":
            flat = x.reshape(x.shape[0], -1)
            shape = (x.shape[0],) + (1,) * (x.ndim - 1)
            return flat.amin(1).reshape(shape), flat.amax(1).reshape(shape)
        lo, hi = self.value_range
        return torch.tensor(lo, dtype=x.dtype, device=x.device), torch.tensor(hi, dtype=x.dtype, device=x.device)

    @staticmethod
    def _check_inputs(images: torch.Tensor, targets: Any) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim < 3:
            raise ValueError(f"images must be (N, C, *spatial) with at least one spatial dim, got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be a floating point tensor, got dtype {images.dtype}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or Inf values")
        if isinstance(targets, torch.Tensor) and targets.ndim > 0 and targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"targets batch size {targets.shape[0]} does not match images batch size {images.shape[0]}"
            )


def mean_abs_normalize(grad: torch.Tensor) -> torch.Tensor:
    """``grad / mean(|grad|)`` per sample (MI-FGSM's normalisation, as in Dong et al. and torchattacks)."""
    dims = tuple(range(1, grad.ndim))
    return grad / torch.mean(torch.abs(grad), dim=dims, keepdim=True).clamp_min(1e-12)


def sequence_of(value: Any) -> Sequence:
    return value if isinstance(value, (list, tuple)) else [value]
