"""Property tests (hypothesis): the bounds hold for any attack, eps/alpha/steps, shape, channel count,
2D/3D, classification/segmentation and value range.

``derandomize=True`` keeps the (small) example sets the same on every run, so CI is reproducible.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn as nn

from monai_dpaat.attacks import ATTACKS
from monai_dpaat.attacks.base import as_per_sample
from monai_dpaat.attacks.transforms import gaussian_smooth, input_diversity

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402



NAMES = sorted(ATTACKS)
COMMON = ("eps", "alpha", "steps", "loss_function", "value_range", "generator", "model_mode")
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def make_attack(name: str, **kwargs):
    """``ATTACKS[name]`` with the keywords its constructor names (plus :data:`COMMON` if it takes ``**kwargs``)."""
    factory = ATTACKS[name]
    params = inspect.signature(factory).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return factory(**{k: v for k, v in kwargs.items() if k in params or (var_kw and k in COMMON)})


def tiny_net(dims: int, in_channels: int, out_channels: int, dense: bool) -> nn.Module:
    """conv-BN-ReLU, then a 1x1 conv (``(N, K, *spatial)``) or a pooled linear head (``(N, K)``)."""
    conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
    body = [conv(in_channels, 4, 3, padding=1), bn(4), nn.ReLU()]
    if dense:
        return nn.Sequential(*body, conv(4, out_channels, 1))
    pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
    return nn.Sequential(*body, pool, nn.Flatten(), nn.Linear(4, out_channels))


@st.composite
def problems(draw):
    name = draw(st.sampled_from(NAMES))
    task = draw(st.sampled_from(sorted(getattr(ATTACKS[name], "tasks", ("classification", "segmentation")))))
    dims = draw(st.sampled_from([2, 3]))
    n = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 4))
    spatial = tuple(draw(st.lists(st.integers(2, 9 if dims == 2 else 5), min_size=dims, max_size=dims)))
    budget = st.floats(0.0, 0.5, allow_nan=False, width=32)
    per_sample = draw(st.booleans())
    eps = torch.tensor(draw(st.lists(budget, min_size=n, max_size=n))) if per_sample else draw(budget)
    alpha = draw(st.floats(0.0, 0.25, width=32))
    steps = draw(st.integers(1, 3))
    value_range = draw(st.sampled_from([(0.0, 1.0), (-1.0, 2.0), "data", None]))
    seed = draw(st.integers(0, 2**16))
    return name, task, dims, n, channels, spatial, eps, alpha, steps, value_range, seed


@SETTINGS
@given(problems())
def test_bounds_hold_for_any_problem(problem):
    name, task, dims, n, channels, spatial, eps, alpha, steps, value_range, seed = problem
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dense = task == "segmentation"
    net = tiny_net(dims, channels, 3, dense).eval()
    if value_range is None:  # z-scored data, never clamped
        x = torch.randn(n, channels, *spatial, generator=g)
    else:
        x = torch.rand(n, channels, *spatial, generator=g)
    y = torch.randint(0, 3, (n, 1, *spatial) if dense else (n,), generator=g)
    attack = make_attack(name, eps=0.1, alpha=0.05, steps=steps, value_range=value_range, generator=g, std=0.2)
    adv = attack(net, x, y, eps=eps, alpha=alpha)

    assert adv.shape == x.shape and not adv.requires_grad and torch.isfinite(adv).all()
    eps_t = torch.as_tensor(eps, dtype=x.dtype).expand(n)
    bound = torch.as_tensor(attack.perturbation_bound(eps_t, alpha), dtype=x.dtype).expand(n)  # N-FGSM: 3 eps
    d = (adv - x).flatten(1)
    if getattr(attack, "norm", "Linf") == "L2":
        assert bool((d.norm(dim=1) <= bound * (1 + 1e-5) + 1e-6).all()), (d.norm(dim=1), bound)
    else:
        assert bool((d.abs().amax(1) <= bound + 1e-6).all()), (d.abs().amax(1), bound)
    zero = eps_t == 0
    assert torch.equal(adv[zero], x[zero]), "eps_i = 0 must return sample i unchanged"
    if value_range == "data":
        assert bool((adv.flatten(1).amin(1) >= x.flatten(1).amin(1)).all())
        assert bool((adv.flatten(1).amax(1) <= x.flatten(1).amax(1)).all())
    elif value_range is not None:
        assert adv.min() >= value_range[0] and adv.max() <= value_range[1]


@SETTINGS
@given(
    dims=st.sampled_from([1, 2, 3]),
    sizes=st.lists(st.integers(1, 12), min_size=3, max_size=3),
    rate=st.sampled_from([0.5, 0.75, 0.9, 1.0, 1.2, 1.5]),
    seed=st.integers(0, 2**16),
)
def test_input_diversity_shapes_and_labels(dims, sizes, rate, seed):
    """Shrinking keeps the size, enlarging gives floor(rate * S) per axis; the dense target gets the same
    size and only labels it had (nearest resizing, padding with background 0)."""
    spatial = tuple(sizes[:dims])
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 2, *spatial, generator=g)
    y = torch.randint(1, 4, (2, *spatial), generator=g)
    out, t = input_diversity(x, y, rate, 1.0, g)
    expected = spatial if rate <= 1 else tuple(max(int(s * rate), s) for s in spatial)
    assert tuple(out.shape[2:]) == expected and tuple(t.shape[1:]) == expected
    assert t.dtype == y.dtype and set(t.unique().tolist()) <= {0, 1, 2, 3}


@SETTINGS
@given(
    dims=st.sampled_from([1, 2, 3]),
    sizes=st.lists(st.integers(1, 10), min_size=3, max_size=3),
    length=st.integers(1, 9),
    channels=st.integers(1, 4),
)
def test_gaussian_smooth_keeps_shape_and_mass_of_a_constant(dims, sizes, length, channels):
    """Same shape; a normalised kernel maps a constant to itself wherever the window fits inside."""
    spatial = tuple(sizes[:dims])
    grad = torch.ones(1, channels, *spatial)
    out = gaussian_smooth(grad, length, 3.0)
    assert out.shape == grad.shape and bool((out <= 1 + 1e-5).all())
    inner = tuple(slice((length - 1) // 2, s - length // 2) for s in spatial)
    interior = out[(slice(None), slice(None), *inner)]
    if interior.numel():
        torch.testing.assert_close(interior, torch.ones_like(interior))


@SETTINGS
@given(values=st.lists(st.floats(0.0, 10.0, width=32), min_size=1, max_size=5), ndim=st.integers(3, 5))
def test_as_per_sample_shapes(values, ndim):
    batch = torch.zeros(len(values), *([2] * (ndim - 1)))
    t = as_per_sample(torch.tensor(values), "eps", batch)
    assert t.shape == (len(values),) + (1,) * (ndim - 1)
    assert torch.equal(t.flatten(), torch.tensor(values))
    assert as_per_sample(values[0], "eps", batch).shape == t.shape
