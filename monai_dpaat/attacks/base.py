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
``torch.no_grad()`` or ``torch.inference_mode()`` (MONAI evaluators call the network so). A ``MetaTensor``
batch is attacked as a plain tensor (metadata tracking would slow every step) and returned as a
``MetaTensor`` with its metadata.

Budgets are checked against the data's value range (:func:`check_budget`): ``eps``/``alpha`` must be finite and
``>= 0`` (``eps = inf`` only with ``value_range=None`` and no random start, an explicitly unbounded attack); an
L-inf ``eps`` above the width of the value range is an error (at construction for a fixed ``(lo, hi)``, at the first call for ``"data"``,
before any gradient work), and one above :data:`LARGE_BUDGET_FRACTION` of it warns once per attack
(:class:`LargeBudgetWarning`). An L2 ``eps`` is a norm over the whole sample: its bound is the width times
``sqrt(elements per sample)``, the diameter of the value-range box, checked at the first call.

Budget units (:attr:`Attack.eps_units`, set with :func:`with_eps_units`): ``"absolute"`` (default) takes
``eps``/``alpha`` in the data's units; ``"range"`` takes them as fractions of each sample's intensity range,
``max - min`` of the clean input, measured per sample at every call (z-scored images have no fixed range, so
``8/255`` in absolute units is almost nothing there). The absolute values are logged once per attack on
``logging.getLogger("monai_dpaat.attacks")`` (INFO).

Subclasses implement :meth:`Attack.perturb`; they must not modify the clean ``x`` in place (it may share
memory with the caller's images). The step loops build each step with in-place ops on fresh tensors and
project with :meth:`Attack.project`, which keeps the per-step overhead below torchattacks'
(``benchmarks/attacks.py``).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import numbers
import re
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from monai.data import MetaTensor
from monai.utils import convert_to_dst_type

from monai_dpaat.conventions import plain_tensor

__all__ = [
    "Attack", "default_loss", "as_per_sample", "restore_model_state", "resize_target", "check_budget",
    "budget_bound", "LargeBudgetWarning", "LARGE_BUDGET_FRACTION", "EPS_UNITS", "with_eps_units", "intensity_range",
]

#: where an attack in ``eps_units="range"`` logs its absolute budget (INFO, once per attack)
logger = logging.getLogger("monai_dpaat.attacks")

#: the units of ``eps``/``alpha``: the data's own, or a fraction of each sample's intensity range (max - min)
EPS_UNITS = ("absolute", "range")

ValueRange = tuple[float, float] | str | None

#: an L-inf budget above this fraction of the value range's width is legal but rarely meant (the usual one is
#: 8/255); the L2 counterpart is the same fraction of the value-range box's diameter
LARGE_BUDGET_FRACTION = 64 / 255
#: an absolute L-inf ``eps`` below this fraction of the data's measured range is almost no perturbation: the
#: sign of standardized (z-scored) or Hounsfield inputs given a budget meant for [0, 1] (8/255 there is 3 %)
SMALL_BUDGET_FRACTION = 0.01


class LargeBudgetWarning(UserWarning):
    """A budget above :data:`LARGE_BUDGET_FRACTION` of its bound: allowed, but usually a unit mistake
    (e.g. 8 instead of 8/255)."""


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
    target = target.long()
    k = prediction.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= k):
        values = sorted({int(v) for v in target.unique()})
        raise ValueError(f"class labels must be in [0, {k - 1}] for a {k}-channel output, got {values[:10]}")
    return F.cross_entropy(prediction, target)


def _budget_error(name: str, value: Any, prefix: str = "") -> ValueError:
    if isinstance(value, torch.Tensor):  # float32 values shown as typed: [0.01, inf], not [0.00999999977, inf]
        shown = [f"{v:g}" for v in value.detach().flatten().tolist()]
        value = "[" + ", ".join(shown) + "]" if value.ndim else value.item()
    hint = " (inf only with value_range=None and no random start: an unbounded attack)" if name == "eps" else ""
    return ValueError(f"{prefix}{name} must be a finite number >= 0{hint}, got {value}")


def as_per_sample(value: float | torch.Tensor, name: str, batch: torch.Tensor, allow_inf: bool = False) -> torch.Tensor:
    """Return ``value`` as a ``(N, 1, ..., 1)`` tensor broadcastable against ``batch``.

    Accepts a python number, a 0-d tensor or a ``(N,)`` tensor; raises ``ValueError`` on negative values,
    NaN, infinity (unless ``allow_inf``) or a length that is not the batch size.
    """
    n, ndim = batch.shape[0], batch.ndim
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not (value >= 0 and (allow_inf or math.isfinite(value))):  # `not >= 0` also catches NaN
            raise _budget_error(name, value)
        return torch.full((n,) + (1,) * (ndim - 1), float(value), dtype=batch.dtype, device=batch.device)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a number or a tensor of shape ({n},), got {type(value).__name__}")
    t = value.detach().to(dtype=batch.dtype, device=batch.device)
    if t.ndim == 0:
        t = t.expand(n)
    elif t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must be a number or a tensor of shape ({n},) (one per sample), got shape {tuple(t.shape)}")
    ok = t >= 0 if allow_inf else (t >= 0) & torch.isfinite(t)  # NaN fails the comparison too
    if not bool(ok.all()):  # one device sync
        raise _budget_error(name, t)
    return t.reshape(n, *([1] * (ndim - 1)))


def _shown(value: Any) -> str:
    """A budget for a log line: ``0.0313725`` or ``per-sample (N,)``."""
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        return f"per-sample {tuple(value.shape)}"
    return f"{float(value):.6g}"


def _check_budget(value: Any, name: str, allow_inf: bool = False, prefix: str = "") -> None:
    """Constructor-time check of ``eps``/``alpha``: a number or a tensor, all values finite (or +inf where
    ``allow_inf``) and >= 0."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise ValueError(f"{prefix}{name} must be a number or a (N,) tensor, got {value!r}")
    t = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    ok = t >= 0 if allow_inf else (t >= 0) & torch.isfinite(t)
    if t.numel() and not bool(ok.all()):
        raise _budget_error(name, value, prefix)


def budget_bound(value_range: Any, x: torch.Tensor | None = None, norm: str = "Linf") -> tuple[float, str] | None:
    """``(bound, description)`` of the largest sensible budget for ``value_range``, or None when there is none
    (``value_range=None``, or ``"data"`` whose every sample is constant) or it needs a batch ``x`` that was
    not given (``"data"``, or any L2 bound: it depends on the elements per sample).

    L-inf: the width ``hi - lo`` of the range; ``"data"``: the width of the widest sample of ``x`` (each sample
    is clamped to its own min/max, and a budget above even the widest one perturbs past every sample's range).
    L2: that width times ``sqrt(elements per sample)``, the diameter of the value-range box.
    """
    value_range = Attack._check_value_range(value_range)
    if value_range is None:
        return None
    if value_range == "data":
        if x is None or x.numel() == 0:
            return None
        lo, hi = torch.aminmax(x.detach().reshape(x.shape[0], -1).float(), dim=1)
        widest = int(torch.argmax(hi - lo))
        lo_w, hi_w = float(lo[widest]), float(hi[widest])  # one device sync
        width = hi_w - lo_w
        if not width > 0:
            return None
        text = (f"the width {width:g} of the data's value range (value_range='data': each sample's own min/max; "
                f"the widest sample spans [{lo_w:g}, {hi_w:g}])")
    else:
        width = value_range[1] - value_range[0]
        text = f"the width {width:g} of value_range {value_range}"
    if _is_l2(norm):
        if x is None:
            return None
        numel = x[0].numel()
        return width * math.sqrt(numel), f"{width * math.sqrt(numel):g} = {text} x sqrt({numel}) (L2 diameter)"
    return width, text


def _is_l2(norm: str) -> bool:
    return str(norm).lower().replace("-", "") == "l2"


def check_budget(value: Any, name: str, value_range: Any = None, x: torch.Tensor | None = None, norm: str = "Linf",
                 owner: str = "", note: str = "", warn: bool = True) -> float | None:
    """Check a budget against the data's value range (see :func:`budget_bound`) and return it as a fraction of
    the bound (None when there is no bound, or it is not known without ``x``).

    Args:
        value: a number or a tensor of per-sample values (its largest value is checked).
        name: the parameter named in the messages (``"eps"``, ``"eps_max"``, a bundle key such as ``"epsilon"``).
        value_range: ``(lo, hi)``, ``"data"`` (needs ``x``) or None (no upper bound).
        x: a batch ``(N, C, *spatial)`` for ``"data"`` and L2 bounds.
        norm: ``"Linf"`` or ``"L2"`` (what ``value`` bounds).
        owner, note: text before the message (``"PGD"``) and after the value (``" (default 2 * eps_init)"``).
        warn: emit :class:`LargeBudgetWarning` above :data:`LARGE_BUDGET_FRACTION` of the bound.

    Raises:
        ValueError: ``value`` is not a number/tensor, is negative, NaN or infinite, or exceeds the bound.
    """
    prefix = f"{owner}: " if owner else ""
    _check_budget(value, name, prefix=prefix)
    bound = budget_bound(value_range, x, norm)
    if bound is None:
        return None
    per_sample = isinstance(value, torch.Tensor) and value.ndim > 0
    if isinstance(value, torch.Tensor):
        largest = float(value.detach().float().max()) if value.numel() else 0.0
    else:
        largest = float(value)
    shown = f"{name}={largest:g}" + (" (largest per-sample value)" if per_sample else "") + note
    limit, text = bound
    if largest > limit:
        units = ("an L2 budget is the norm of the whole perturbation of a sample" if _is_l2(norm) else
                 f"the budget is in the data's units (the usual L-inf budget for images in [0, 1] is 8/255 = "
                 f"{8 / 255:.4f})")
        raise ValueError(f"{prefix}{shown} is larger than {text}: {units}")
    fraction = largest / limit
    if warn and fraction > LARGE_BUDGET_FRACTION:
        warnings.warn(f"{prefix}{shown} is {fraction:.0%} of {text}; budgets above {LARGE_BUDGET_FRACTION:.0%} of "
                      "it are unusual (8/255 on [0, 1] is 3%): check its units", LargeBudgetWarning, stacklevel=2)
    return fraction


def resize_target(target: Any, output: torch.Tensor) -> Any:
    """Resize a dense ``target`` to ``output``'s spatial size with nearest-neighbour sampling, keeping its dtype.

    ``target`` may be ``(N, C, *spatial)`` or ``(N, *spatial)``; anything else (class indices ``(N,)``,
    one-hot ``(N, K)``, non-tensors) and targets already at the right size are returned as they are. Used for
    deep-supervision outputs; unlike MONAI's ``DeepSupervisionLoss`` this also works on integer label maps
    (``F.interpolate`` has no nearest kernel for ``long`` on CPU, so labels are resized as floats, which is exact).
    """
    if not isinstance(target, torch.Tensor) or output.ndim < 3:
        return target
    spatial = tuple(output.shape[2:])
    if target.ndim == output.ndim:
        t = target
    elif target.ndim == output.ndim - 1 and target.shape[0] == output.shape[0]:
        t = target.unsqueeze(1)
    else:
        return target
    if tuple(t.shape[2:]) == spatial:
        return target
    resized = F.interpolate(t.float(), size=spatial, mode="nearest-exact").to(target.dtype)
    return resized if target.ndim == output.ndim else resized[:, 0]


def _channel_error(err: RuntimeError, images: torch.Tensor) -> ValueError | None:
    """A ``ValueError`` naming the channel counts when ``err`` is torch's convolution channel mismatch."""
    match = re.search(r"to have (\d+) channels, but got (\d+) channels", str(err))
    if match is None:
        return None
    return ValueError(
        f"images have {images.shape[1]} channel(s) but the network expects {match.group(1)} "
        f"(images shape {tuple(images.shape)})"
    )


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


def intensity_range(x: torch.Tensor) -> torch.Tensor:
    """``(N, 1, ..., 1)`` intensity range ``max - min`` of every sample of ``x`` ``(N, C, *spatial)``."""
    lo, hi = torch.aminmax(x.detach().reshape(x.shape[0], -1), dim=1)
    return (hi - lo).reshape(x.shape[0], *([1] * (x.ndim - 1)))


def with_eps_units(attack: "Attack", units: str = "range") -> "Attack":
    """A copy of ``attack`` whose ``eps``/``alpha`` (and any per-call ``eps``/``alpha``, e.g. a training method's
    per-sample budgets) are in ``units``: ``"absolute"`` (the data's units) or ``"range"`` (a fraction of each
    sample's intensity range ``max - min``, measured on the clean input at every call; the absolute values are
    logged once). The budget is checked in its units: a ``"range"`` L-inf ``eps`` must be at most 1.

    In a bundle config: ``{"_target_": "monai_dpaat.attacks.base.with_eps_units", "attack": {"_target_":
    "monai_dpaat.attacks.PGD", "eps": "$8/255", "steps": 7}, "units": "@adversarial_eps_units"}``.
    """
    if not isinstance(attack, Attack):
        raise ValueError(f"with_eps_units needs an Attack, got {attack!r}")
    if units not in EPS_UNITS:
        raise ValueError(f"eps_units must be one of {EPS_UNITS}, got {units!r}")
    new = copy.copy(attack)
    new.eps_units = units
    new._warned_large_budget = False
    new._warned_small_budget = False
    new._logged_units = False
    if attack.bounded:
        _check_budget(new.eps, "eps", prefix=f"{type(attack).__name__} (eps_units={units!r}): ")
    new._budget_checked = new.check_budget(new.eps, "eps") if new.bounded else True
    return new


class Attack:
    """Base class: validation, model-state guard, loss and input gradient, projection and clamping.

    Args:
        eps: budget, a float or a per-sample ``(N,)`` tensor (L-inf radius, or L2 radius for ``PGDL2``), in the
            data's units: finite, >= 0 and not above the value range (see :func:`check_budget`; ``inf`` is
            allowed with ``value_range=None`` and no random start only, an explicitly unbounded attack).
        alpha: step size, a float or a ``(N,)`` tensor; finite and >= 0.
        steps: number of iterations (>= 1).
        loss_function: callable ``(prediction, target) -> scalar``; ``None`` uses :func:`default_loss`.
            MONAI ``DiceLoss``/``DiceCELoss``, ``CrossEntropyLoss`` and ``BCEWithLogitsLoss`` all fit.
            When the network returns a list/tuple (deep supervision), the loss is the mean of the loss over
            all outputs, dense targets resized to each output (:func:`resize_target`).
        value_range: ``(lo, hi)`` clamps adversarial images; ``None`` never clamps (z-scored CT/MRI);
            ``"data"`` (default) clamps each sample to the min/max of its own clean values, so the
            attack never assumes [0, 1] and never leaves the range the data came in.
        random_start: start from a uniform random point in the ball.
        model_mode: mode the network runs in while attacked: "eval" (default), "train", or None (as found).
        generator: optional ``torch.Generator`` for the attack's randomness (default: torch's global RNG);
            it must live on the images' device.
    """

    #: whether the attack ascends a loss gradient (GaussianNoise does not)
    uses_gradient = True
    #: the norm ``eps`` bounds: "Linf" (``max |adv - x| <= eps`` per sample) or "L2" (``||adv - x||_2 <= eps``)
    norm = "Linf"
    #: the problems the attack handles: "classification" (outputs ``(N, K)``) and/or "segmentation"
    #: (outputs ``(N, K, *spatial)``); an attack raises ValueError on outputs of a task it does not list
    tasks: tuple[str, ...] = ("classification", "segmentation")
    #: whether ``loss_function`` is used (False for attacks whose loss is part of the method, e.g. APGD's DLR)
    accepts_loss_function = True
    #: units of ``eps``/``alpha``: ``"absolute"`` or ``"range"`` (a fraction of each sample's max - min); set it
    #: with :func:`with_eps_units`
    eps_units: str = "absolute"
    _logged_units = False
    #: the canonical name :func:`~monai_dpaat.attacks.register_attack` gave this very class (``"pgd"``,
    #: ``"i-fgsm"``, ``"gn"``); not inherited: an unregistered subclass is named by its class (see :meth:`config`)
    registered_name: str | None = None

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
        self.value_range = self._check_value_range(value_range)
        # eps = inf is an explicitly unbounded attack: only without clamping and without a random start in the ball
        _check_budget(eps, "eps", allow_inf=self.value_range is None and not random_start)
        _check_budget(alpha, "alpha")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Real) or steps != int(steps) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if model_mode not in ("eval", "train", None):
            raise ValueError(f"model_mode must be 'eval', 'train' or None, got {model_mode!r}")
        if loss_function is not None and not callable(loss_function):
            raise ValueError(f"loss_function must be callable(prediction, target) or None, got {loss_function!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.eps = eps
        self.alpha = alpha
        self.steps = int(steps)
        self.loss_function = loss_function if loss_function is not None else default_loss
        self.random_start = bool(random_start)
        self.model_mode = model_mode
        self.generator = generator
        self._warned_large_budget = False
        self._warned_small_budget = False
        # a fixed range bounds an L-inf eps now; "data" and L2 bounds need the batch: checked at the first call
        self._budget_checked = self.check_budget(eps, "eps")

    @property
    def bounded(self) -> bool:
        """Whether ``eps`` bounds the perturbation (False only for an attack without a budget, whose eps is inf)."""
        return True

    @property
    def budget_range(self) -> ValueRange:
        """The value range budgets are checked against: :attr:`value_range` for absolute budgets, ``(0, 1)``
        for ``eps_units="range"`` (a fraction of each sample's own range can not exceed the whole of it)."""
        return (0.0, 1.0) if self.eps_units == "range" else self.value_range

    def check_budget(self, value: Any, name: str, x: torch.Tensor | None = None, note: str = "") -> bool:
        """Check a budget of this attack's norm against its value range (:func:`check_budget`; the warning is
        given once per attack). Returns False when the bound needs a batch ``x`` that was not given."""
        budget_range = self.budget_range
        if budget_range is None:
            return True
        if self.eps_units == "range":
            note = f"{note} (eps_units='range': a fraction of each sample's intensity range)"
        fraction = check_budget(value, name, budget_range, x, self.norm, type(self).__name__, note,
                                warn=not self._warned_large_budget)
        if fraction is None:
            return x is not None  # with a batch, no bound means none exists (e.g. constant samples)
        self._warned_large_budget = self._warned_large_budget or fraction > LARGE_BUDGET_FRACTION
        if (name == "eps" and self.eps_units == "absolute" and self.value_range == "data" and x is not None
                and 0 < fraction < SMALL_BUDGET_FRACTION and not self._warned_small_budget):
            self._warned_small_budget = True
            logger.warning("%s: eps=%.6g is %.2f%% of the widest sample's intensity range in this batch (%.4g): "
                           "almost no perturbation, as when a budget meant for [0, 1] images meets standardized "
                           "inputs; give it as a fraction of each sample's range (eps_units='range', bundle key "
                           "adversarial_eps_units / robust_val_eps_units)", type(self).__name__, float(torch.as_tensor(value).max()),
                           100 * fraction, budget_bound(self.value_range, x, self.norm)[0])
        return True

    def perturbation_bound(self, eps: float | torch.Tensor, alpha: float | torch.Tensor | None = None) -> Any:
        """The largest perturbation (in :attr:`norm`) the attack makes at budget ``eps`` and step ``alpha``
        (default :attr:`alpha`): ``eps`` for every attack that projects onto the ``eps`` ball; a training
        adversary without that projection (N-FGSM) overrides it."""
        return eps

    def __repr__(self) -> str:
        keys = ("eps", "alpha", "steps", "random_start")
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys if hasattr(self, k))
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ description and budget changes
    def config(self) -> dict[str, Any]:
        """A JSON-able record of the attack: ``name`` (the registry's canonical name, e.g. ``"pgd"``, without a
        step count; the class name for an unregistered class) and the public constructor values the attack
        keeps (``eps``, ``alpha``, ``steps``, ``random_start``, ``decay``, ``std``, ``value_range``, ...).
        ``eps`` is None for an attack without a budget (GN's unbounded noise). Callables (``loss_function``)
        and generators are left out; a one-element tensor becomes a float, a ``(N,)`` tensor a list."""
        name = type(self).__dict__.get("registered_name") or type(self).__name__
        record: dict[str, Any] = {"name": name}
        for key in inspect.signature(type(self).__init__).parameters:
            if key in ("self", "loss_function", "generator") or key in record or not hasattr(self, key):
                continue
            value = self._config_value(getattr(self, key))
            if value is not NotImplemented:
                record[key] = value
        if "eps" in record and not self.bounded:
            record["eps"] = None
        if self.eps_units != "absolute":
            record["eps_units"] = self.eps_units
        return record

    @staticmethod
    def _config_value(value: Any) -> Any:
        """``value`` as JSON data (tuples as lists, tensors as floats/lists), NotImplemented if it is not data."""
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, torch.Tensor):
            return float(value) if value.numel() == 1 else value.detach().cpu().tolist()
        if isinstance(value, (list, tuple)):
            items = [Attack._config_value(v) for v in value]
            return NotImplemented if NotImplemented in items else items
        return NotImplemented

    def with_eps(self, eps: float | torch.Tensor) -> Attack:
        """A copy of this attack at budget ``eps``; this attack is left as it is.

        The step size keeps its ratio to the budget (``alpha * eps / old_eps``), so the steps still reach the
        ball's surface in the same number of iterations. An attack whose old budget is 0 or unbounded (GN's
        noise without ``eps``) keeps its ``alpha``; GN keeps its ``std``, its noise is then clipped to ``eps``.
        ``eps`` is checked as at construction (finite, >= 0, within the value range)."""
        _check_budget(eps, "eps", allow_inf=self.value_range is None and not self.random_start,
                      prefix=f"{type(self).__name__}.with_eps: ")
        new = copy.copy(self)
        old, alpha = self.eps, self.alpha
        if isinstance(old, torch.Tensor) and old.numel() == 1:
            old = float(old)
        ratio_known = isinstance(old, numbers.Real) and math.isfinite(old) and old > 0
        if ratio_known and isinstance(alpha, (numbers.Real, torch.Tensor)):
            new.alpha = alpha * (eps / old)
        new.eps = eps
        new._warned_large_budget = False
        new._warned_small_budget = False
        new._budget_checked = new.check_budget(eps, "eps")
        return new

    # ------------------------------------------------------------------ public call
    def __call__(
        self,
        network: torch.nn.Module,
        images: torch.Tensor,
        targets: Any,
        eps: float | torch.Tensor | None = None,
        alpha: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return adversarial ``images`` ``(N, C, *spatial)`` for ``network``, detached, same type as ``images``
        (a ``MetaTensor`` keeps its metadata). ``eps``/``alpha`` (float or ``(N,)``) override the constructor's
        values for this call (a training method passes per-sample tensors here)."""
        self._check_inputs(images, targets)
        with torch.inference_mode(False):
            x, y = plain_tensor(images).detach(), plain_tensor(targets)  # metadata tracking would slow every step
            # inference tensors (made under torch.inference_mode) cannot enter autograd: copy them once
            if x.is_inference():
                x = x.clone()
            if isinstance(y, torch.Tensor):
                y = y.detach().clone() if y.is_inference() else y.detach()
            unbounded = (self.value_range is None and not self.random_start) or (eps is None and not self.bounded)
            eps_t = as_per_sample(self.eps if eps is None else eps, "eps", x, allow_inf=unbounded)
            alpha_t = as_per_sample(self.alpha if alpha is None else alpha, "alpha", x)
            if not self._budget_checked and (eps is not None or self.bounded):  # before any gradient work
                self._budget_checked = self.check_budget(self.eps if eps is None else eps, "eps", x)
            elif eps is not None and isinstance(eps, numbers.Real) and isinstance(self.budget_range, tuple):
                self.check_budget(eps, "eps", x)  # a python number: no device sync
            if self.eps_units == "range":
                eps_t, alpha_t = self._absolute_budgets(x, eps_t, alpha_t)
            lo, hi = self._bounds(x)
            with restore_model_state(network, self.model_mode), torch.enable_grad():
                try:
                    adv = self.perturb(network, x, y, eps_t, alpha_t, lo, hi).detach()
                except RuntimeError as err:
                    raise (_channel_error(err, x) or err) from err
            if isinstance(images, MetaTensor):
                adv = convert_to_dst_type(adv, images)[0]
            return adv

    def _absolute_budgets(self, x: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``eps``/``alpha`` ``(N, 1, ..., 1)`` given as fractions of each sample's intensity range, in the data's
        units (a constant sample gets 0); logs the absolute budget of the first batch once."""
        width = intensity_range(x).to(eps.dtype)
        eps_abs = torch.where(width > 0, eps * width, torch.zeros_like(eps))
        alpha_abs = torch.where(width > 0, alpha * width, torch.zeros_like(alpha))
        if not self._logged_units:
            self._logged_units = True
            flat = eps_abs.reshape(-1).float()
            widths = width.reshape(-1).float()
            logger.info("%s: eps=%s x each sample's intensity range (eps_units='range'): absolute eps %.6g on "
                        "the first batch (per sample %.6g..%.6g; intensity ranges %.6g..%.6g)", type(self).__name__,
                        _shown(self.eps), float(flat.mean()), float(flat.min()), float(flat.max()),
                        float(widths.min()), float(widths.max()))
        return eps_abs, alpha_abs

    def perturb(self, network, x, y, eps, alpha, lo, hi) -> torch.Tensor:  # pragma: no cover - abstract
        """Compute the adversarial batch from the clean ``x`` ``(N, C, *spatial)`` (never modify it in place).
        ``eps``/``alpha`` are ``(N, 1, ..., 1)``; ``lo``/``hi`` are floats, ``(N, 1, ..., 1)`` tensors or None."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    def loss(self, network: torch.nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
        """Scalar loss of ``network(images)`` against ``targets`` (deep-supervision lists averaged)."""
        return self.loss_of(network(images), targets)

    def loss_of(self, outputs: Any, targets: Any) -> torch.Tensor:
        """Scalar loss of ``outputs`` (a tensor, or a deep-supervision list/tuple: the mean over its
        entries, with dense ``targets`` resized to each entry's spatial size)."""
        if isinstance(outputs, (list, tuple)):
            if len(outputs) == 0:
                raise ValueError("the network returned an empty list/tuple of outputs")
            losses = [self.loss_function(out, resize_target(targets, out)) for out in outputs]
            return losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        return self.loss_function(outputs, targets)

    def gradient(self, network: torch.nn.Module, images: torch.Tensor, targets: Any) -> torch.Tensor:
        """d loss / d images, without touching parameters' ``.grad`` and without keeping the graph."""
        images = images.detach().requires_grad_(True)
        loss = self.loss(network, images, targets)
        (grad,) = torch.autograd.grad(loss, images)
        return grad

    def project(self, adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, lo, hi) -> torch.Tensor:
        """L-inf projection of ``adv`` into the ``eps`` ball around ``x``, then into the value range.
        Returns a new detached tensor (``adv`` is not modified); one allocation, the rest in place."""
        delta = adv.detach() - x
        torch.minimum(delta, eps, out=delta)  # min/max with out=: ~6x faster than clamp with tensor bounds
        torch.maximum(delta, -eps, out=delta)
        return self.clamp_inplace(delta.add_(x), lo, hi)

    @staticmethod
    def clamp(images: torch.Tensor, lo, hi) -> torch.Tensor:
        """``images`` clamped to ``[lo, hi]`` as a new detached tensor (``images`` itself when ``lo`` is None)."""
        if lo is None:
            return images.detach()
        if isinstance(lo, torch.Tensor):
            out = torch.maximum(images.detach(), lo)
            return torch.minimum(out, hi, out=out)
        return torch.clamp(images.detach(), min=lo, max=hi)

    @staticmethod
    def clamp_inplace(images: torch.Tensor, lo, hi) -> torch.Tensor:
        """Clamp a tensor the caller owns (no autograd history) to ``[lo, hi]`` in place and return it.
        ``lo``/``hi``: floats, ``(N, 1, ..., 1)`` tensors, or None (no clamping)."""
        if lo is None:
            return images
        if isinstance(lo, torch.Tensor):
            torch.maximum(images, lo, out=images)
            return torch.minimum(images, hi, out=images)
        return images.clamp_(min=lo, max=hi)

    def uniform_start(self, x: torch.Tensor, eps: torch.Tensor, lo, hi) -> torch.Tensor:
        """``x + U(-eps, eps)`` clamped to the value range (PGD's random start)."""
        noise = self.noise_like(x, "uniform").mul_(eps)
        return self.clamp_inplace(noise.add_(x), lo, hi)

    def noise_like(self, x: torch.Tensor, distribution: str = "uniform", low: float = -1.0, high: float = 1.0) -> torch.Tensor:
        """``U(low, high)`` ("uniform") or ``N(0, 1)`` ("normal") noise shaped like ``x``, drawn from
        :attr:`generator` on the generator's own device (so a CPU generator also serves CUDA inputs) or
        from torch's global RNG on ``x``'s device."""
        device = x.device if self.generator is None else self.generator.device
        noise = torch.empty(x.shape, dtype=x.dtype, device=device)
        if distribution == "uniform":
            noise.uniform_(low, high, generator=self.generator)
        elif distribution == "normal":
            noise.normal_(generator=self.generator)
        else:
            raise ValueError(f"distribution must be 'uniform' or 'normal', got {distribution!r}")
        return noise.to(x.device)

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_value_range(value_range: Any) -> ValueRange:
        if value_range is None or (isinstance(value_range, str) and value_range == "data"):
            return value_range
        ok = isinstance(value_range, (list, tuple)) and len(value_range) == 2
        ok = ok and all(isinstance(v, numbers.Real) and math.isfinite(v) for v in value_range)
        if not ok or not float(value_range[0]) < float(value_range[1]):
            raise ValueError(f"value_range must be (lo, hi) with finite lo < hi, None or 'data', got {value_range!r}")
        return float(value_range[0]), float(value_range[1])

    def _bounds(self, x: torch.Tensor):
        """``(lo, hi)`` for :meth:`clamp`: floats for a fixed range, per-sample ``(N, 1, ..., 1)`` min/max
        for "data", ``(None, None)`` for no clamping."""
        if self.value_range is None:
            return None, None
        if self.value_range == "data":
            shape = (x.shape[0],) + (1,) * (x.ndim - 1)
            lo, hi = torch.aminmax(x.reshape(x.shape[0], -1), dim=1)
            return lo.reshape(shape), hi.reshape(shape)
        return self.value_range

    @staticmethod
    def _check_inputs(images: torch.Tensor, targets: Any) -> None:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.ndim < 3:
            raise ValueError(f"images must be (N, C, *spatial) with at least one spatial dim, got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be a floating point tensor, got dtype {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError(f"images must hold at least one sample, got shape {tuple(images.shape)}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"images (shape {tuple(images.shape)}) contain NaN or Inf values")
        if isinstance(targets, torch.Tensor) and (targets.ndim == 0 or targets.shape[0] != images.shape[0]):
            got = "a 0-d tensor" if targets.ndim == 0 else f"batch size {targets.shape[0]} (shape {tuple(targets.shape)})"
            raise ValueError(f"targets must have the images' batch size {images.shape[0]}, got {got}")


def mean_abs_normalize(grad: torch.Tensor) -> torch.Tensor:
    """``grad / mean(|grad|)`` per sample (MI-FGSM's normalisation, as in Dong et al. and torchattacks)."""
    dims = tuple(range(1, grad.ndim))
    return grad / torch.mean(torch.abs(grad), dim=dims, keepdim=True).clamp_min(1e-12)


def l2_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-sample L2 norm of ``t`` ``(N, ...)``, shaped ``(N, 1, ..., 1)`` to broadcast against ``t``."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1).reshape(-1, *([1] * (t.ndim - 1)))
