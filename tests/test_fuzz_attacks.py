"""Fuzzing every registered attack: names x arguments (eps/alpha/steps as numbers or per-sample tensors, at
construction or at call time; value_range variants; random starts; generators) x inputs (2D/3D, 1-3 channels,
batch 1-3, float32/float64/int, 1- or 3-channel outputs).

Nothing may raise except the documented ``ValueError``s (integer images, the DLR loss with fewer than 3 classes,
I-FGSM with a random start, an ``eps`` tensor whose length is not the batch size), and every result must keep the
input's shape and dtype, be finite, stay inside the epsilon ball (L-inf or L2, per sample) and inside the value range,
and leave the network's flags and gradients as found.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monai_dpaat.attacks import ATTACKS, build_attack

NAMES = sorted(ATTACKS)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


class _Classifier(torch.nn.Module):
    def __init__(self, dims: int, channels: int, classes: int) -> None:
        super().__init__()
        conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
        pool = torch.nn.AdaptiveAvgPool2d if dims == 2 else torch.nn.AdaptiveAvgPool3d
        self.body = torch.nn.Sequential(conv(channels, 4, 3, padding=1), torch.nn.Tanh(), pool(1), torch.nn.Flatten(1),
                                        torch.nn.Linear(4, classes))

    def forward(self, x):
        return self.body(x)


class _Segmenter(torch.nn.Module):
    def __init__(self, dims: int, channels: int, classes: int) -> None:
        super().__init__()
        conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
        self.body = torch.nn.Sequential(conv(channels, 4, 3, padding=1), torch.nn.Tanh(), conv(4, classes, 1))

    def forward(self, x):
        return self.body(x)


def _budget(draw, n: int, low: float, high: float):
    """A number, a 0-d tensor or an (n,) tensor in [low, high]."""
    kind = draw(st.sampled_from(["float", "scalar-tensor", "per-sample"]))
    if kind == "float":
        return draw(st.floats(low, high))
    if kind == "scalar-tensor":
        return torch.tensor(draw(st.floats(low, high)))
    return torch.tensor(draw(st.lists(st.floats(low, high), min_size=n, max_size=n)))


@st.composite
def scenarios(draw):
    name = draw(st.sampled_from(NAMES))
    dims = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 3))
    classes = draw(st.sampled_from([1, 3]))
    size = draw(st.integers(3, 7) if dims == 2 else st.integers(3, 5))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64]))
    value_range = draw(st.sampled_from(["data", None, (0.0, 1.0), (-2.0, 3.0), "default"]))
    scale = draw(st.sampled_from([1.0, 0.1, 50.0])) if value_range in ("data", None) else 1.0
    kwargs = {"eps": _budget(draw, n, 0.0, 0.3), "alpha": _budget(draw, n, 0.0, 0.1),
              "steps": draw(st.integers(1, 3))}
    if value_range != "default":
        kwargs["value_range"] = value_range
    start = draw(st.sampled_from([None, True, False]))
    if start is not None:
        kwargs["random_start"] = start
    if draw(st.booleans()):
        kwargs["generator"] = torch.Generator().manual_seed(draw(st.integers(0, 100)))
    if name.startswith("apgd"):
        kwargs["norm"] = draw(st.sampled_from(["Linf", "L2"]))
    if name == "fgsm":
        kwargs.pop("steps")
    call_eps = None
    if draw(st.booleans()):  # eps given at call time (what a training method does)
        call_eps = _budget(draw, n, 0.0, 0.3)
    bad_length = draw(st.integers(0, 9)) == 0  # now and then an eps tensor of the wrong length
    if bad_length:
        call_eps = torch.full((n + 1,), 0.05)
    return dict(name=name, dims=dims, n=n, channels=channels, classes=classes, size=size, dtype=dtype,
                value_range=value_range, scale=scale, kwargs=kwargs, call_eps=call_eps, bad_length=bad_length,
                seed=draw(st.integers(0, 2**16)))


def _eps_above_range(s, x: torch.Tensor | None) -> bool:
    """Whether the scenario's largest eps exceeds the value range's width (the widest sample's for "data"; times
    sqrt(elements per sample) for L2), which the attacks refuse: at construction for a fixed range, at the call
    for "data" and L2 (those need the batch; ``x`` None = construction time)."""
    vr = s["value_range"]
    vr = "data" if vr == "default" else vr  # the attacks' default
    if vr is None:
        return False
    l2 = s["kwargs"].get("norm") == "L2" or s["name"] in ("pgd-l2", "pgdl2")
    if x is None:  # construction: only a fixed L-inf range is known
        eps = s["kwargs"]["eps"]
        return isinstance(vr, tuple) and not l2 and float(torch.as_tensor(eps).max()) > vr[1] - vr[0]
    eps = s["call_eps"] if s["call_eps"] is not None else s["kwargs"]["eps"]
    flat = x.double().reshape(x.shape[0], -1)
    width = (vr[1] - vr[0]) if isinstance(vr, tuple) else float((flat.amax(1) - flat.amin(1)).max())
    if not width > 0:
        return False
    bound = width * math.sqrt(flat.shape[1]) if l2 else width
    return float(torch.as_tensor(eps).max()) > bound


def _expected_error(s, x: torch.Tensor | None = None) -> str | None:
    """The documented ValueError this scenario must raise (a regex), or None."""
    if s["name"] == "i-fgsm" and s["kwargs"].get("random_start") is True:
        return "I-FGSM has no random start"
    if s["name"] in ("fgsm-rs", "n-fgsm") and s["kwargs"].get("random_start") is False:
        return "always starts from a random point"
    if not s["dtype"].is_floating_point:
        return "images must be a floating point tensor"
    if s["bad_length"]:
        return r"eps must be a number or a tensor of shape"
    if s["name"] == "apgd-dlr" and s["classes"] < 3:
        return r"DLR loss needs.*>= 3 classes|>= 3 classes"
    if _eps_above_range(s, x):
        return r"eps=.* is larger than"
    return None


@SETTINGS
@given(scenarios())
def test_attacks_never_crash_and_respect_their_bounds(s):
    torch.manual_seed(s["seed"])
    dtype = s["dtype"] if s["dtype"].is_floating_point else torch.float32
    n, c, k, dims, size = s["n"], s["channels"], s["classes"], s["dims"], s["size"]
    shape = (n, c) + (size,) * dims
    vr = s["value_range"]
    if isinstance(vr, tuple):
        x = vr[0] + (vr[1] - vr[0]) * torch.rand(shape, dtype=torch.float64)
    else:
        x = (torch.rand(shape, dtype=torch.float64) - 0.3) * s["scale"]
    x = x.to(dtype) if s["dtype"].is_floating_point else (x * 10).to(s["dtype"])

    try:
        attack = build_attack(s["name"], **s["kwargs"])
    except ValueError as err:
        expected = _expected_error(s)
        assert expected is not None and re.search(expected, str(err)), f"{s}: {err}"
        return
    dense = "classification" not in attack.tasks
    net = (_Segmenter if dense else _Classifier)(dims, c, k).to(dtype).eval()
    if dense:
        y = torch.randint(0, max(k, 2), (n, 1) + (size,) * dims)
    else:
        y = torch.randint(0, max(k, 2), (n,))

    expected = _expected_error(s, x if s["dtype"].is_floating_point else None)
    if expected is not None:
        with pytest.raises(ValueError, match=expected):
            attack(net, x, y, eps=s["call_eps"])
        return
    adv = attack(net, x, y, eps=s["call_eps"])

    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert torch.isfinite(adv).all()
    assert not net.training and all(p.grad is None for p in net.parameters())
    delta = (adv - x).reshape(n, -1).double()
    eps = s["call_eps"] if s["call_eps"] is not None else s["kwargs"]["eps"]
    eps = torch.as_tensor(eps, dtype=torch.float64).expand(n) if torch.as_tensor(eps).ndim == 0 else \
        torch.as_tensor(eps, dtype=torch.float64)
    tol = 8 * torch.finfo(dtype).eps * max(1.0, float(x.abs().max()))
    norm = getattr(attack, "norm", "Linf")
    size_of = delta.norm(dim=1) if norm == "L2" else delta.abs().amax(dim=1)
    slack = tol * (math.sqrt(delta.shape[1]) if norm == "L2" else 1.0)
    alpha = torch.as_tensor(s["kwargs"]["alpha"], dtype=torch.float64)
    bound = torch.as_tensor(attack.perturbation_bound(eps, alpha), dtype=torch.float64)  # eps; N-FGSM 2 eps + alpha
    assert (size_of <= bound + slack).all(), f"{norm} perturbation {size_of.tolist()} exceeds {bound.tolist()} ({s})"
    if vr is None:
        return
    if vr == "data" or vr == "default":
        flat_x = x.reshape(n, -1)
        lo, hi = flat_x.amin(1, keepdim=True), flat_x.amax(1, keepdim=True)
    else:
        lo, hi = torch.tensor(vr[0], dtype=dtype), torch.tensor(vr[1], dtype=dtype)
    flat = adv.reshape(n, -1)
    assert (flat >= lo - tol).all() and (flat <= hi + tol).all(), f"left the value range {vr} ({s})"


@pytest.mark.parametrize("name", NAMES)
def test_every_attack_takes_per_sample_budgets_in_3d(name):
    """A deterministic companion to the fuzzing: each attack on a 3D batch with per-sample eps, one of them 0."""
    torch.manual_seed(0)
    attack = build_attack(name, eps=0.1, steps=2) if name != "fgsm" else build_attack(name, eps=0.1)
    dense = "classification" not in attack.tasks
    net = (_Segmenter if dense else _Classifier)(3, 2, 3).eval()
    x = torch.rand(3, 2, 4, 4, 4)
    y = torch.randint(0, 3, (3, 1, 4, 4, 4)) if dense else torch.tensor([0, 1, 2])
    eps = torch.tensor([0.0, 0.05, 0.2])
    adv = attack(net, x, y, eps=eps)
    delta = (adv - x).reshape(3, -1)
    size_of = delta.norm(dim=1) if getattr(attack, "norm", "Linf") == "L2" else delta.abs().amax(1)
    assert (size_of <= attack.perturbation_bound(eps) + 1e-6).all()  # eps; N-FGSM's unprojected 2 eps + alpha
    assert torch.equal(adv[0], x[0])  # eps 0 leaves the sample as it is
