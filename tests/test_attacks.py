"""Invariants of every registered attack (``monai_dpaat.attacks.ATTACKS``), 2D and 3D, classification and
segmentation, plus the behaviour claims (loss goes up, more steps never hurt) on the real samples.

Invariants are pure properties of the attack, so they run on small synthetic tensors (they hold for any
input); the behaviour claims use real HAM10000, H&E nuclei and BraTS data from the ``data_dir`` fixture.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.losses import DiceCELoss, DiceLoss

from monai_dpaat.attacks import (APGD, ATTACKS, DIFGSM, FMN, PGD, TIFGSM, APGDSeg, DenseSquare, Square, build_attack,
                                 register_attack)
from monai_dpaat.attacks.transforms import gaussian_smooth, input_diversity



NAMES = sorted(ATTACKS)
COMMON = ("eps", "alpha", "steps", "loss_function", "value_range", "generator", "model_mode")


def make_attack(name: str, **kwargs):
    """Build ``ATTACKS[name]`` with those of ``kwargs`` its constructor names, plus the common keywords
    (:data:`COMMON`) when it takes ``**kwargs`` (GN and FGSM accept and ignore some). GN needs ``eps`` to be bounded."""
    factory = ATTACKS[name]
    if not getattr(factory, "accepts_loss_function", True):
        kwargs.pop("loss_function", None)  # the loss is part of the method (APGD, SegPGD, CosPGD)
    params = inspect.signature(factory).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return factory(**{k: v for k, v in kwargs.items() if k in params or (var_kw and k in COMMON)})


def supports(name: str, key: str) -> bool:
    task = "segmentation" if SCENARIOS[key][3] else "classification"
    return task in getattr(ATTACKS[name], "tasks", ("classification", "segmentation"))


def key_for(name: str, dims: int = 2) -> str:
    """A segmentation scenario for the attacks that take one (the richer case), else classification."""
    seg = "seg2d-ce" if dims == 2 else "seg3d-dice"
    return seg if supports(name, seg) else ("cls2d-ce" if dims == 2 else "cls3d-ce")


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyNet(nn.Module):
    """conv-BN-ReLU-dropout body, then a pooled linear head (classification, ``(N, K)``) or a 1x1 conv head
    (segmentation, ``(N, K, *spatial)``); ``deep_supervision`` adds a half-resolution head and returns both."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, dense: bool, deep_supervision: bool = False):
        super().__init__()
        conv, bn = (nn.Conv2d, nn.BatchNorm2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d)
        pool = nn.AdaptiveAvgPool2d if dims == 2 else nn.AdaptiveAvgPool3d
        self.body = nn.Sequential(conv(in_channels, 6, 3, padding=1), bn(6), nn.ReLU(), nn.Dropout(0.1))
        if dense:
            self.head = conv(6, out_channels, 1)
        else:
            self.head = nn.Sequential(pool(1), nn.Flatten(), nn.Linear(6, out_channels))
        self.aux = nn.Sequential((nn.AvgPool2d if dims == 2 else nn.AvgPool3d)(2), conv(6, out_channels, 1)) if deep_supervision else None

    def forward(self, x):
        f = self.body(x)
        return [self.head(f), self.aux(f)] if self.aux is not None else self.head(f)


# id: (dims, in_channels, out_channels, dense, target kind, loss, deep supervision)
SCENARIOS = {
    "cls2d-ce": (2, 1, 3, False, "index", None, False),
    "cls2d-bce-1ch": (2, 3, 1, False, "binary-index", None, False),
    "cls3d-ce": (3, 2, 3, False, "index", None, False),
    "seg2d-ce": (2, 2, 3, True, "label", None, False),
    "seg2d-bce-1ch": (2, 1, 1, True, "binary", None, False),
    "seg3d-dice": (3, 1, 2, True, "label", lambda: DiceLoss(to_onehot_y=True, softmax=True), False),
    "seg2d-dicece": (2, 4, 3, True, "label", lambda: DiceCELoss(to_onehot_y=True, softmax=True), False),
    "seg3d-deepsup": (3, 2, 3, True, "label", None, True),
}
SPATIAL = {2: (8, 12), 3: (6, 8, 10)}  # non-square on purpose


def scenario(key: str, n: int = 4, channels: int | None = None, seed: int = 0, zscored: bool = False):
    """``(network, images, targets, loss_function)`` for a scenario of :data:`SCENARIOS`."""
    dims, cin, cout, dense, kind, loss, ds = SCENARIOS[key]
    cin = channels or cin
    torch.manual_seed(seed)
    net = TinyNet(dims, cin, cout, dense, ds)
    g = seeded(seed)
    shape = (n, cin, *SPATIAL[dims])
    x = torch.randn(shape, generator=g) if zscored else torch.rand(shape, generator=g)
    if kind in ("index", "binary-index"):  # the clean predictions: every sample starts correctly classified
        with torch.no_grad():
            out = net.eval()(x)
        y = out.argmax(1) if kind == "index" else (out[:, 0] > 0).float()
    elif kind == "label":
        y = torch.randint(0, cout, (n, 1, *SPATIAL[dims]), generator=g)
    else:
        y = (torch.rand((n, 1, *SPATIAL[dims]), generator=g) > 0.5).float()
    return net, x, y, (loss() if loss else None)


def skip_if_unsupported(name: str, key: str) -> None:
    if not supports(name, key):
        pytest.skip(f"{name} does not attack {'segmentation' if SCENARIOS[key][3] else 'classification'} outputs")


def model_state(net: nn.Module):
    return (
        [m.training for m in net.modules()],
        [b.clone() for b in net.buffers()],
        [p.detach().clone() for p in net.parameters()],
        [None if p.grad is None else p.grad.clone() for p in net.parameters()],
    )


def assert_same_state(before, after) -> None:
    flags0, bufs0, params0, grads0 = before
    flags1, bufs1, params1, grads1 = after
    assert flags0 == flags1, "train/eval flags of the submodules changed"
    assert all(torch.equal(a, b) for a, b in zip(bufs0, bufs1)), "buffers (BatchNorm running stats) changed"
    assert all(torch.equal(a, b) for a, b in zip(params0, params1)), "parameters changed"
    for a, b in zip(grads0, grads1):
        assert (a is None) == (b is None), "a parameter's .grad appeared or vanished"
        assert a is None or torch.equal(a, b), "a parameter's pre-existing .grad changed"


def mixed_state(net: nn.Module) -> None:
    """Train mode with one submodule in eval, and pre-existing .grad on every other parameter."""
    net.train()
    net.body[1].eval()
    for i, p in enumerate(net.parameters()):
        p.grad = torch.full_like(p, 0.5) if i % 2 == 0 else None


def perturbation_size(attack, adv, x) -> torch.Tensor:
    """Per-sample ``(N,)`` size of ``adv - x`` in the attack's norm."""
    d = (adv - x).flatten(1)
    return d.norm(dim=1) if getattr(attack, "norm", "Linf") == "L2" else d.abs().amax(dim=1)


def assert_in_ball(attack, adv, x, eps, alpha=None) -> None:
    """Each sample's perturbation within the attack's bound at ``eps`` (``eps`` itself, but N-FGSM's
    unprojected ``k eps + alpha``; ``alpha``: the step the call used, default the attack's)."""
    eps = torch.as_tensor(eps, dtype=x.dtype).expand(x.shape[0])
    alpha = None if alpha is None else torch.as_tensor(alpha, dtype=x.dtype).expand(x.shape[0])
    size, eps = perturbation_size(attack, adv, x), torch.as_tensor(attack.perturbation_bound(eps, alpha))
    # float rounding of (x + delta) - x: a few ulp of the data's magnitude
    tol = 1e-6 * (1 + x.abs().max()) * (x[0].numel() ** 0.5 if getattr(attack, "norm", "Linf") == "L2" else 1)
    assert bool((size <= eps + tol).all()), f"{attack!r}: perturbation {size.tolist()} exceeds eps {eps.tolist()}"


def run_and_searched(attack, net, x, y, **call_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(returned batch, searched batch)``. For most attacks both are its output. APGD (and Square, the same way)
    returns a sample moved only where it fooled the network and the clean input otherwise (as the reference
    implementation, auto-attack / torchattacks), and FMN only where the smallest adversarial point it found is
    within eps, so the claims about their search (it moves samples, reaches the clamp, raises the loss) are checked
    on what their first run reached per sample (APGD: the highest-loss point; Square: the best point; FMN: the last
    iterate), and the returned batch is checked to follow the rule: fooled by the run, or exactly clean. APGDSeg
    returns its lowest-Dice point (``tests/test_seg_protocol.py``): its search is its highest-loss point; DenseSquare
    returns its best point: both of its batches are its output."""
    if isinstance(attack, DenseSquare) or not isinstance(attack, (APGD, Square, FMN)):
        adv = attack(net, x, y, **call_kwargs)
        return adv, adv
    method = "min_norm_run" if isinstance(attack, FMN) else "attack_single_run"
    runs, run = [], getattr(attack, method)  # record what each run returns (the attack itself is unchanged)
    setattr(attack, method, lambda *args, **kw: runs.append((args[1], run(*args, **kw))) or runs[-1][1])
    try:
        adv = attack(net, x, y, **call_kwargs)
    finally:
        delattr(attack, method)
    searched = adv.clone()
    if not runs:  # FMN: every sample was misclassified already
        return adv, searched
    run_x, result = runs[0]
    rows = [next(i for i in range(len(x)) if torch.equal(x[i], r)) for r in run_x]  # which samples it ran on
    if isinstance(attack, APGDSeg):
        searched[rows] = result[0]
        return adv, searched
    if isinstance(attack, APGD):
        x_best, fooled = result[0], result[1]
    elif isinstance(attack, FMN):  # fooled within budget: the smallest norm found is within eps
        x_best = result[2]
        eps = torch.as_tensor(call_kwargs.get("eps", attack.eps), dtype=torch.float32).expand(len(x))
        fooled = result[0] <= eps[rows] * (1 + 1e-6)
    else:  # Square: (queries, best point); fooled where the best point is misclassified
        x_best = result[1]
        with torch.no_grad():
            fooled = APGD.logits_of(net(x_best)).argmax(1) != torch.as_tensor(y)[rows]
    searched[rows] = x_best
    kept = [i for i, f in zip(rows, fooled.tolist()) if not f]
    assert torch.equal(adv[kept], x[kept]), f"{type(attack).__name__} must return never-fooled samples unchanged"
    return adv, searched


# ---------------------------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("key", sorted(SCENARIOS))
@pytest.mark.parametrize("name", NAMES)
def test_invariants_per_sample_eps(name, key):
    """Per-sample eps: each sample inside its own ball (eps_i = 0 leaves it untouched) and its own value
    range; the input, the model's flags/buffers/params/grads are unchanged; no graph is kept; gradient
    attacks really move every sample with eps_i > 0 (a zero gradient, e.g. torchattacks' CE on a one-channel
    sigmoid output, would not)."""
    skip_if_unsupported(name, key)
    if (name, key) in KNOWN_LIMITS:
        pytest.skip(KNOWN_LIMITS[name, key])
    net, x, y, loss = scenario(key)
    mixed_state(net)
    before, x0, y0 = model_state(net), x.clone(), y.clone()
    eps = torch.tensor([0.0, 0.02, 0.05, 0.1])
    attack = make_attack(name, eps=0.03, alpha=0.01, steps=3, loss_function=loss, generator=seeded(), std=0.05)
    adv, searched = run_and_searched(attack, net, x, y, eps=eps, alpha=eps / 4)

    assert adv.shape == x.shape and adv.dtype == x.dtype and type(adv) is torch.Tensor
    assert not adv.requires_grad and adv.grad_fn is None, "the adversarial batch must be detached"
    assert torch.isfinite(adv).all()
    assert torch.equal(x, x0) and torch.equal(y, y0), "the attack modified its input images/targets in place"
    assert_same_state(before, model_state(net))
    assert_in_ball(attack, adv, x, eps, alpha=eps / 4)
    assert torch.equal(adv[0], x[0]), "eps_i = 0 must leave sample i unchanged"
    lo, hi = x.flatten(1).amin(1), x.flatten(1).amax(1)  # value_range="data" is the default
    assert bool((adv.flatten(1).amin(1) >= lo).all() and (adv.flatten(1).amax(1) <= hi).all())
    if attack.uses_gradient:  # classification targets are the clean predictions, so APGD searches them too
        # APGD: on its search points (it returns never-fooled samples clean, as the reference implementation)
        if not getattr(attack, "minimum_norm", False):  # FMN searches beyond eps for the smallest adversarial norm
            assert_in_ball(attack, searched, x, eps, alpha=eps / 4)
        moved = perturbation_size(attack, searched, x)[1:]
        assert bool((moved > 0).all()), f"{name} left samples with eps > 0 unperturbed: sizes {moved.tolist()}"


#: (attack, scenario) pairs an attack cannot do although it supports the task, and says so
KNOWN_LIMITS = {("apgd-dlr", "cls2d-bce-1ch"): "the DLR loss needs >= 3 classes"}


@pytest.mark.parametrize(
    "name,key", [(n, k) for n in NAMES for k in sorted(SCENARIOS) if not supports(n, k) or (n, k) in KNOWN_LIMITS]
)
def test_unsupported_problem_raises_value_error(name, key):
    """An attack that does not list a task in ``tasks`` (or cannot do a case, :data:`KNOWN_LIMITS`) says so
    with a ValueError instead of returning a wrong result."""
    net, x, y, _ = scenario(key)
    with pytest.raises(ValueError):
        make_attack(name, eps=0.05, alpha=0.02, steps=2)(net, x, y)


@pytest.mark.parametrize("channels", [1, 2, 4])
@pytest.mark.parametrize("name", NAMES)
def test_any_channel_count_non_square(name, channels):
    """1, 2 and 4 channels on 8x12 (2D) and 6x8x10 (3D) inputs (torchattacks' TI assumes 3 channels and
    its DI square images)."""
    for key in (key_for(name, 2), key_for(name, 3)):
        net, x, y, loss = scenario(key, n=2, channels=channels)
        attack = make_attack(name, eps=0.05, alpha=0.02, steps=2, loss_function=loss, generator=seeded())
        adv = attack(net, x, y)
        assert adv.shape == x.shape
        assert_in_ball(attack, adv, x, 0.05)


@pytest.mark.parametrize("model_mode", ["eval", "train", None])
@pytest.mark.parametrize("name", NAMES)
def test_model_state_restored(name, model_mode):
    """Whatever mode the network is attacked in (train mode updates BatchNorm statistics on every forward),
    every flag, buffer, parameter and pre-existing/absent ``.grad`` is as before."""
    net, x, y, loss = scenario(key_for(name))
    mixed_state(net)
    before = model_state(net)
    attack = make_attack(name, eps=0.05, alpha=0.02, steps=2, loss_function=loss, generator=seeded(), model_mode=model_mode)
    attack(net, x, y)
    assert_same_state(before, model_state(net))


def test_attack_runs_in_requested_mode():
    """model_mode="eval" attacks the eval-mode network (as torchattacks): seen from inside the forward."""
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            seen.append(self.training)
            return self.conv(x)

    net, x = Spy().train(), torch.rand(2, 1, 8, 8)
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    PGD(eps=0.1, steps=2)(net, x, y)
    PGD(eps=0.1, steps=2, model_mode="train")(net.eval(), x, y)
    assert seen == [False, False, True, True] and not net.training


@pytest.mark.parametrize("value_range", [(0.0, 1.0), "data", None], ids=["tuple", "data", "none"])
@pytest.mark.parametrize("name", NAMES)
def test_eps_zero_returns_input(name, value_range):
    """eps = 0, given to the constructor or at call time, returns x exactly (data inside the value range)."""
    net, x, y, loss = scenario(key_for(name), zscored=value_range is None)
    attack = make_attack(name, eps=0.0, alpha=0.01, steps=2, value_range=value_range, generator=seeded())
    assert torch.equal(attack(net, x, y), x)
    attack = make_attack(name, eps=0.1, alpha=0.01, steps=2, value_range=value_range, generator=seeded())
    assert torch.equal(attack(net, x, y, eps=0.0), x)
    assert torch.equal(attack(net, x, y, eps=torch.zeros(x.shape[0])), x)


@pytest.mark.parametrize("name", NAMES)
def test_value_range_tuple(name):
    """An explicit (lo, hi) clamps; with a large eps the clamp is active (some values reach lo or hi)."""
    net, x, y, _ = scenario(key_for(name))
    attack = make_attack(name, eps=0.5, alpha=0.2, steps=2, value_range=(0.0, 1.0), generator=seeded(), std=0.5)
    adv, searched = run_and_searched(attack, net, x, y)  # APGD: the clamp is looked for on its search points
    for points in (adv, searched):
        assert points.min() >= 0.0 and points.max() <= 1.0
        assert_in_ball(attack, points, x, 0.5)
    assert bool(((searched == 0) | (searched == 1)).any()), "clamp never reached: a missing clamp would pass"


@pytest.mark.parametrize("name", NAMES)
def test_value_range_data_is_per_sample(name):
    """value_range="data" keeps each sample inside its own clean min/max (samples on different scales)."""
    net, x, y, _ = scenario(key_for(name))
    x = x * torch.arange(1.0, 5.0).reshape(4, 1, 1, 1) - torch.arange(4.0).reshape(4, 1, 1, 1)  # sample i in [-i, 1]
    attack = make_attack(name, eps=1.0, alpha=0.5, steps=2, value_range="data", generator=seeded(), std=1.0)
    adv = attack(net, x, y)
    assert bool((adv.flatten(1).amin(1) >= x.flatten(1).amin(1)).all())
    assert bool((adv.flatten(1).amax(1) <= x.flatten(1).amax(1)).all())


@pytest.mark.parametrize("name", NAMES)
def test_value_range_none_on_zscored_data(name):
    """value_range=None never clamps (z-scored MRI): the attack leaves the clean range, yet stays in the ball."""
    net, x, y, loss = scenario(key_for(name, 3), zscored=True)
    # a budget of the data's own scale: any pixel in the top/bottom range that steps outwards leaves the range
    attack = make_attack(name, eps=4.0, alpha=2.0, steps=2, value_range=None, loss_function=loss, generator=seeded(), std=2.0)
    adv, searched = run_and_searched(attack, net, x, y)  # APGD: leaving the range is looked for on its search points
    assert_in_ball(attack, adv, x, 4.0)
    assert_in_ball(attack, searched, x, 4.0)
    outside = (searched.flatten(1).amax(1) > x.flatten(1).amax(1)) | (searched.flatten(1).amin(1) < x.flatten(1).amin(1))
    assert bool(outside.any()), "with value_range=None some sample should leave its clean min/max"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_generator_and_seed(name):
    """Same generator seed -> same result, whatever the global RNG does in between; a generator keeps the
    global RNG untouched; without one, torch.manual_seed makes it reproducible."""
    net, x, y, loss = scenario(key_for(name))
    attack = make_attack(name, eps=0.05, alpha=0.02, steps=2, generator=seeded(1))
    torch.manual_seed(123)
    a = attack(net, x, y)
    attack.generator = seeded(1)
    torch.manual_seed(456)
    state = torch.get_rng_state()
    b = attack(net, x, y)
    assert torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state), "an attack with a generator must not draw from the global RNG"
    attack = make_attack(name, eps=0.05, alpha=0.02, steps=2)
    torch.manual_seed(7)
    c = attack(net, x, y)
    torch.manual_seed(7)
    assert torch.equal(c, attack(net, x, y))


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("name", NAMES)
def test_works_under_no_grad_and_inference_mode(name, context):
    """MONAI evaluators run under no_grad/inference_mode: same result as outside, for inference tensors too."""
    net, x, y, loss = scenario("seg2d-dicece" if supports(name, "seg2d-dicece") else "cls3d-ce")
    mixed_state(net)
    before = model_state(net)
    make = lambda: make_attack(name, eps=0.05, alpha=0.02, steps=2, loss_function=loss, generator=seeded(3))
    expected = make()(net, x, y)
    guard = torch.no_grad if context == "no_grad" else torch.inference_mode
    eps = torch.tensor([0.05, 0.0, 0.02, 0.05])
    expected_per_sample = make()(net, x, y, eps=eps, alpha=eps / 2)
    with guard():
        xi, yi, ei = x.clone(), y.clone(), eps.clone()  # inference tensors under inference_mode
        adv = make()(net, xi, yi)
        adv_per_sample = make()(net, xi, yi, eps=ei, alpha=ei / 2)
    assert torch.equal(adv, expected) and torch.equal(adv_per_sample, expected_per_sample)
    assert not adv.requires_grad and adv.grad_fn is None
    assert_same_state(before, model_state(net))


@pytest.mark.parametrize("name", NAMES)
def test_metatensor_keeps_type_and_meta(name):
    """A MetaTensor batch (what MONAI loaders give) comes back as a MetaTensor with its metadata."""
    net, x, y, _ = scenario(key_for(name))
    mx = MetaTensor(x, meta={"filename_or_obj": "case0"})
    adv = make_attack(name, eps=0.05, alpha=0.02, steps=2, generator=seeded())(net, mx, MetaTensor(y))
    assert isinstance(adv, MetaTensor) and adv.meta["filename_or_obj"] == "case0"
    assert_in_ball(make_attack(name, eps=0.05), adv.as_tensor(), x, 0.05)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_value_error(name):
    net, x, y, _ = scenario(key_for(name))
    with pytest.raises(ValueError, match="eps"):
        make_attack(name, eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        make_attack(name, eps=float("nan"))
    attack = make_attack(name, eps=0.05, alpha=0.02, steps=2)
    with pytest.raises(ValueError, match="eps"):
        attack(net, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="eps"):
        attack(net, x, y, eps=torch.tensor([0.1, -0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match=r"eps.*\(4,\)"):
        attack(net, x, y, eps=torch.full((3,), 0.1))
    with pytest.raises(ValueError, match="alpha"):
        attack(net, x, y, alpha=torch.full((5,), 0.1))
    with pytest.raises(ValueError, match="batch size 4"):
        attack(net, x, y[:3])
    for bad in (float("nan"), float("inf")):
        x_bad = x.clone()
        x_bad[1, 0, 2, 3] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            attack(net, x_bad, y)
    with pytest.raises(ValueError, match="floating point"):
        attack(net, (x * 255).to(torch.uint8), y)
    with pytest.raises(ValueError, match="value_range"):
        make_attack(name, value_range=(1.0, 0.0))
    with pytest.raises(ValueError, match="value_range"):
        make_attack(name, value_range="minmax")


@pytest.mark.parametrize("name", [n for n in NAMES if "steps" in inspect.signature(ATTACKS[n]).parameters])
@pytest.mark.parametrize("steps", [0, -1, 2.5, None])
def test_bad_steps_raise_value_error(name, steps):
    with pytest.raises(ValueError, match="steps"):
        make_attack(name, steps=steps)


def test_unknown_attack_name():
    with pytest.raises(ValueError, match=r"unknown attack 'cw-l2'.*pgd"):
        build_attack("cw-l2")
    with pytest.raises(ValueError, match="unknown attack '10-nope'"):
        build_attack("10-nope")


@pytest.mark.parametrize("name", NAMES)
def test_build_attack_rejects_misspelt_keyword(name):
    """A config typo is a ValueError naming the attack and the keyword, for every registered attack."""
    with pytest.raises(ValueError, match=rf"(?s){name}.*stpes"):
        build_attack(name, stpes=3)


def test_build_attack_names_and_steps():
    """Step counts are a keyword, not part of the name (the CLI parses "10-IFGSM"); a name with a step count
    gets a ValueError saying how to write it."""
    attack = build_attack("IFGSM", eps=0.1, steps=10)
    assert type(attack).__name__ == "IFGSM" and attack.steps == 10 and attack.eps == 0.1
    with pytest.raises(ValueError, match=r"build_attack\('i-fgsm', steps=10\)"):
        build_attack("10-IFGSM", eps=0.1)
    with pytest.raises(ValueError, match=r"build_attack\('pgd', steps=20\)"):
        build_attack("20-pgd")
    assert type(build_attack("PGD_L2")).__name__ == "PGDL2"
    assert type(build_attack("bim")).__name__ == "IFGSM"
    register_attack("test-pgd-alias", PGD)
    try:
        assert isinstance(build_attack("test-pgd-alias", steps=50), PGD)
        assert build_attack("test-pgd-alias").config()["name"] == "pgd"  # a class keeps its first name
    finally:
        ATTACKS.pop("test-pgd-alias")


@pytest.mark.parametrize("name", NAMES)
def test_config_names_the_attack_and_rebuilds_it(name):
    """``config()`` is JSON data whose name is the registry's and whose values rebuild an equal attack."""
    attack = make_attack(name)
    record = attack.config()
    assert json.loads(json.dumps(record)) == record and record["name"] == name
    kwargs = {k: tuple(v) if k == "value_range" and isinstance(v, list) else v for k, v in record.items() if k != "name"}
    assert build_attack(name, **kwargs).config() == record


# ---------------------------------------------------------------------------------------------- transforms
def blocks(shape, block: int, seed: int) -> torch.Tensor:
    """Piecewise-constant 0.1/0.9 image of ``block``-sized cubes, ``(N, 1, *shape)``."""
    coarse = (torch.rand(shape[0], 1, *[s // block for s in shape[1:]], generator=seeded(seed)) > 0.5).float()
    return F.interpolate(coarse, scale_factor=block, mode="nearest") * 0.8 + 0.1


@pytest.mark.parametrize("spatial,resize_rate", [((24, 32), 0.8), ((24, 32), 1.25), ((16, 20, 12), 0.8)])
@pytest.mark.parametrize("target_layout", ["channel", "no-channel", "one-hot"])
def test_di_transforms_dense_target_with_image(spatial, resize_rate, target_layout):
    """DI-FGSM on a dense target: the loss sees the transformed image and the same transform of the target
    (target = thresholded image stays = thresholded transformed image), non-square and 3D included."""
    x = blocks((3, *spatial), 4, seed=0)
    labels = (x > 0.5).long()
    y = {"channel": labels, "no-channel": labels[:, 0], "one-hot": torch.cat([1 - labels, labels], 1).float()}[target_layout]
    seen = []

    def recording_loss(pred, target):
        seen.append((pred.detach(), target))
        return F.mse_loss(pred, pred.detach() + 1)  # any differentiable loss

    attack = DIFGSM(eps=0.01, steps=8, diversity_prob=1.0, resize_rate=resize_rate, loss_function=recording_loss, generator=seeded())
    attack(nn.Identity(), x, y)
    assert len(seen) == 8
    agreement = []
    for pred, target in seen:
        tgt = target if target_layout == "channel" else target.unsqueeze(1) if target_layout == "no-channel" else target[:, 1:]
        assert tgt.shape[2:] == pred.shape[2:] and tgt.dtype == y.dtype
        if resize_rate < 1:
            assert pred.shape == x.shape
        assert not torch.equal(pred, x), "diversity_prob=1 must transform the input"
        agreement.append(((pred > 0.5).long() == tgt.long()).float().mean().item())
    # thresholded bilinear and nearest resizing differ only at some block corners (>= 0.96 when aligned);
    # torch's legacy "nearest" (half a pixel off from bilinear) gives 0.91-0.96 on average, so it fails here
    assert min(agreement) >= 0.95 and np.mean(agreement) >= 0.975, f"target misaligned: agreement {agreement}"
    if resize_rate < 1:  # an untransformed target does not fit the transformed image either
        assert np.mean([((p > 0.5).long() == labels).float().mean().item() for p, _ in seen]) < 0.95


def test_di_classification_target_untouched_and_shapes():
    x = torch.rand(2, 3, 10, 14)
    y = torch.tensor([0, 2])
    out, t = input_diversity(x, y, 0.8, 1.0, seeded())
    assert out.shape == x.shape and t is y
    out, _ = input_diversity(x, y, 1.3, 1.0, seeded())
    assert out.shape[2:] == (13, 18)
    out, _ = input_diversity(torch.rand(1, 1, 1, 5), None, 0.5, 1.0, seeded())  # an axis of 1 is left alone
    assert out.shape == (1, 1, 1, 5)
    with pytest.raises(ValueError, match="resize_rate"):
        input_diversity(x, y, 0.0, 1.0)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("channels", [1, 2, 4])
@pytest.mark.parametrize("length", [5, 6, 15])
def test_ti_smoothing_3d_equals_full_gaussian_conv(channels, length):
    """The separable N-D smoothing equals one depthwise conv3d with the full outer-product Gaussian
    (zero padding, torch's "same" for even lengths) for any channel count."""
    x = np.linspace(-3, 3, length)
    k1 = np.exp(-0.5 * x**2)
    k3 = np.einsum("i,j,k->ijk", k1, k1, k1)
    k3 = torch.tensor(k3 / k3.sum(), dtype=torch.float32)
    grad = torch.randn(2, channels, 9, 11, 7, generator=seeded())
    weight = k3.expand(channels, 1, length, length, length)
    expected = F.conv3d(grad, weight, padding="same", groups=channels)
    torch.testing.assert_close(gaussian_smooth(grad, length, 3.0), expected, atol=1e-6, rtol=1e-5)


def test_ti_smoothing_changes_the_step():
    """TI's smoothing is applied: with it the perturbation is spatially smoother than without."""
    net, x, y, _ = scenario("seg2d-ce", n=2)
    smooth = TIFGSM(eps=0.1, steps=1, diversity_prob=0.0, kernel_length=5, value_range=None)(net, x, y)
    rough = TIFGSM(eps=0.1, steps=1, diversity_prob=0.0, kernel_length=0, value_range=None)(net, x, y)
    tv = lambda d: (d[..., 1:] - d[..., :-1]).abs().mean()
    assert tv(smooth - x) < tv(rough - x)


# ---------------------------------------------------------------------------------------------- real samples
@pytest.fixture(scope="module")
def ham_batch(data_dir):
    """8 real HAM10000 images (4 nv, 4 mel) at 12x16 in [0, 1], labels indices into HAM10000's 7 classes
    (akiec, bcc, bkl, df, mel, nv, vasc): mel 4, nv 5."""
    import csv

    from PIL import Image

    folder = data_dir / "ham10000"
    with open(folder / "HAM10000_metadata.csv", newline="") as f:
        meta = list(csv.DictReader(f))
    images, labels = [], []
    for label, dx in ((5, "nv"), (4, "mel")):
        paths = [folder / "HAM10000_images_part_1" / f"{r['image_id']}.jpg" for r in meta if r["dx"] == dx]
        for p in [p for p in paths if p.is_file()][:4]:
            img = Image.open(p).convert("RGB").resize((16, 12), Image.BILINEAR)
            images.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1))
            labels.append(label)
    assert len(images) == 8, f"expected 4 nv + 4 mel images under {folder}"
    return torch.stack(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def nuclei_batch(data_dir):
    """6 real H&E 16x16 patches (32x32 crops, 2x down) with binary nucleus masks ``(N, 1, 16, 16)``."""
    from PIL import Image

    folder = data_dir / "nuclei_he" / "tcga_miccai2015"
    name = "tcga_miccai2015_01.png"
    img = np.asarray(Image.open(folder / "tissue images" / name).convert("RGB"), dtype=np.float32) / 255.0
    mask = np.asarray(Image.open(folder / "mask binary" / name).convert("L")) > 127
    img_t = torch.from_numpy(img).permute(2, 0, 1)[None]
    mask_t = torch.from_numpy(mask).float()[None, None]
    xs, ys = [], []
    for i in range(6):
        r, c = 40 + 48 * i, 60 + 40 * i
        xs.append(F.avg_pool2d(img_t[..., r : r + 32, c : c + 32], 2))
        ys.append(mask_t[..., r : r + 32 : 2, c : c + 32 : 2])
    y = torch.cat(ys)
    assert 0 < y.mean() < 1, "patches should hold both nuclei and background"
    return torch.cat(xs), y


@pytest.fixture(scope="module")
def brats_batch(data_dir):
    """4 real z-scored BraTS FLAIR crops ``(4, 1, 10, 12, 8)`` (20x24x16 mm, 2x down) around the tumour,
    whole-tumour labels ``(4, 1, 10, 12, 8)``."""
    import nibabel as nib

    case = data_dir / "brats2013" / "brats_2013_pat0003_1"
    flair = np.asarray(nib.load(case / "Flair_subtrMeanDivStd.nii.gz").dataobj, dtype=np.float32)
    label = np.asarray(nib.load(case / "OTMultiClass.nii.gz").dataobj) > 0
    centre = np.argwhere(label).mean(0).astype(int)
    xs, ys = [], []
    for k, shift in enumerate(((0, 0, 0), (-8, 6, 0), (6, -8, 4), (-4, -4, -6))):
        lo = centre + np.array(shift) - np.array((10, 12, 8))
        sl = tuple(slice(a, a + n) for a, n in zip(lo, (20, 24, 16)))
        xs.append(F.avg_pool3d(torch.from_numpy(flair[sl].copy())[None, None], 2))
        ys.append(torch.from_numpy(label[sl][::2, ::2, ::2].copy()).long()[None, None])
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(scope="module")
def real_problems(ham_batch, nuclei_batch, brats_batch):
    """kind -> ``(network, images, targets, loss_function, value_range)`` on the real samples. The HAM10000
    classifier is fitted to its 8 images first (0.5 s), so the samples start correctly classified and
    APGD-style attacks, which leave misclassified samples alone, have something to attack; the
    segmentation networks are random (the loss of every pixel can still go up)."""
    torch.manual_seed(0)
    x, y = ham_batch
    ham_net = TinyNet(2, 3, 7, dense=False)  # HAM10000's 7 classes
    opt = torch.optim.Adam(ham_net.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(ham_net(x), y).backward()
        opt.step()
    ham_net.eval().zero_grad(set_to_none=True)
    with torch.no_grad():
        assert bool((ham_net(x).argmax(1) == y).all()), "the HAM10000 classifier should fit its 8 images"
    return {
        "ham-cls2d-ce": (ham_net, x, y, None, (0.0, 1.0)),
        "nuclei-seg2d-bce": (TinyNet(2, 3, 1, dense=True).eval(), *nuclei_batch, None, "data"),
        "brats-seg3d-dicece": (TinyNet(3, 1, 2, dense=True).eval(), *brats_batch, DiceCELoss(to_onehot_y=True, softmax=True), None),
    }


REAL = ["ham-cls2d-ce", "nuclei-seg2d-bce", "brats-seg3d-dicece"]


@pytest.mark.parametrize("kind", REAL)
@pytest.mark.parametrize("name", [n for n in NAMES if getattr(ATTACKS[n], "uses_gradient", True)])
def test_attack_raises_the_loss_on_real_samples(name, kind, real_problems):
    """On real images the loss at the adversarial batch is above the clean loss, for every gradient attack."""
    task = "classification" if kind.startswith("ham") else "segmentation"
    if task not in getattr(ATTACKS[name], "tasks", (task,)):
        pytest.skip(f"{name} does not attack {task} outputs")
    net, x, y, loss, value_range = real_problems[kind]
    eps = 4 / 255 if value_range is not None else 0.05  # z-scored MRI: eps in units of the data's std
    attack = make_attack(name, eps=eps, alpha=eps / 4, steps=5, loss_function=loss, value_range=value_range, generator=seeded())
    # APGD: the loss at its search points (it returns the clean input where it fooled nothing, as the reference)
    adv = run_and_searched(attack, net, x, y)[1]
    with torch.no_grad():
        clean_loss, adv_loss = attack.loss_of(net(x), y).item(), attack.loss_of(net(adv), y).item()
    assert adv_loss > clean_loss, f"{name} on {kind}: adversarial loss {adv_loss:.5f} <= clean loss {clean_loss:.5f}"


@pytest.mark.parametrize("kind", REAL)
def test_more_pgd_steps_never_weaken_the_attack(kind, real_problems):
    """Mean loss over the batch: PGD-20 >= PGD-5 > clean (same eps and step size eps/8, so 5 steps cannot
    reach the ball's edge yet, no random start). Measured: HAM 0.0003 / 0.010 / 0.090, nuclei 0.6612 /
    0.6623 / 0.6629, BraTS 1.0334 / 1.0363 / 1.0381 (clean / PGD-5 / PGD-20)."""
    net, x, y, loss, value_range = real_problems[kind]
    eps = 8 / 255 if value_range is not None else 0.1
    losses = []
    for steps in (5, 20):
        attack = PGD(eps=eps, alpha=eps / 8, steps=steps, random_start=False, loss_function=loss, value_range=value_range)
        with torch.no_grad():
            losses.append(attack.loss_of(net(attack(net, x, y)), y).item())
    with torch.no_grad():
        clean = attack.loss_of(net(x), y).item()
    assert clean < losses[0] <= losses[1] + 1e-7, f"clean {clean:.5f}, PGD-5 {losses[0]:.5f}, PGD-20 {losses[1]:.5f}"


# ---------------------------------------------------------------------------------------------- budget vs value range
def _l2_norm(name: str) -> bool:
    return name == "pgd-l2"


@pytest.mark.parametrize("name", NAMES)
def test_budget_above_the_value_range_is_an_error(name):
    """An L-inf eps wider than a fixed value range fails at construction; with value_range="data" it fails at
    the first call, before the network runs; an L2 eps is compared with the range's diameter at the first call."""
    from monai_dpaat.attacks import LargeBudgetWarning

    net, x, y, loss = scenario(key_for(name), n=2)
    forwards = []
    net.register_forward_hook(lambda *_: forwards.append(1))
    norm_is_l2 = _l2_norm(name)
    with pytest.warns(LargeBudgetWarning) if not norm_is_l2 else contextlib.nullcontext():
        fixed = make_attack(name, eps=0.9, alpha=0.1, steps=1, value_range=(0.0, 1.0), loss_function=loss, std=0.1)
    if norm_is_l2:
        fixed(net, x, y)  # an L2 radius of 0.9 is far inside the diameter of [0, 1]^numel
        with pytest.raises(ValueError, match=r"eps=1000 is larger than .* x sqrt\(\d+\) \(L2 diameter\)"):
            make_attack(name, eps=1e3, steps=1, value_range=(0.0, 1.0))(net, x, y)
        return
    with pytest.raises(ValueError, match=rf"{type(fixed).__name__}: eps=1\.5 is larger than the width 1 of "
                                         r"value_range \(0\.0, 1\.0\)"):
        make_attack(name, eps=1.5, value_range=(0.0, 1.0), std=0.1)
    with pytest.raises(ValueError, match=r"eps=2 is larger than the width 1 of value_range"):
        fixed(net, x, y, eps=2.0)  # a number given at call time
    data = make_attack(name, eps=1.5, alpha=0.1, steps=1, loss_function=loss, std=0.1)  # value_range="data"
    with pytest.raises(ValueError, match=r"eps=1\.5 is larger than the width 0\.\d+ of the data's value range"):
        data(net, x, y)
    assert not forwards, "the budget check must come before any gradient work"
    make_attack(name, eps=1.5, steps=1, value_range=None, loss_function=loss, std=0.1)(net, x, y)  # no range: no bound


def test_large_budget_warns_once_and_usual_budgets_do_not():
    from monai_dpaat.attacks import LargeBudgetWarning

    net, x, y, _ = scenario("cls2d-ce", n=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PGD(eps=8 / 255, steps=1)(net, x, y)
        PGD(eps=8 / 255, steps=1, value_range=(0.0, 1.0))(net, x, y)
    with pytest.warns(LargeBudgetWarning, match=r"PGD: eps=0\.5 is 50% of the width 1 of value_range"):
        attack = PGD(eps=0.5, steps=1, value_range=(0.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attack(net, x, y)
        attack(net, x, y, eps=0.6)  # once per attack
    attack = PGD(eps=0.5, steps=1)  # value_range="data": known at the first call
    with pytest.warns(LargeBudgetWarning, match="of the data's value range"):
        attack(net, x, y)


def test_budgets_must_be_finite_and_inf_means_unbounded_only_without_a_range():
    net, x, y, _ = scenario("cls2d-ce", n=2)
    for bad in (float("inf"), float("nan"), -0.1, torch.tensor([0.1, float("inf")])):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
            PGD(eps=bad, value_range=(0.0, 1.0))
        with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
            PGD(alpha=bad)
    with pytest.raises(ValueError, match=r"eps must be a finite number >= 0 \(inf only with value_range=None"):
        PGD(steps=1)(net, x, y, eps=float("inf"))
    # the gradient-masking check's unbounded attack: eps = inf without clamping
    adv = PGD(eps=float("inf"), alpha=0.01, steps=1, value_range=None, random_start=False)(net, x, y)
    assert torch.isfinite(adv).all()
    # constant images have no range to compare with: no error; GN without eps stays unbounded
    flat = torch.full_like(x, 0.5)
    assert torch.equal(PGD(eps=0.1, steps=1)(net, flat, y), flat)
    build_attack("gn", std=0.1)(net, x, y)
