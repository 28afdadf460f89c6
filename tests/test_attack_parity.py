"""Parity with torchattacks 3.5.1 where its behaviour is the reference: 2D multi-class CE on images in
[0, 1] (``value_range=(0, 1)``), same hyper-parameters, same fixed CNN -> the same adversarial images.

torchattacks is only a test reference here (``pytest.importorskip``), never imported by the package.
DI's random transform draws its random numbers in torchattacks' order (size, top pad, left pad, then the
``diversity_prob`` coin) from torch's global RNG when no generator is given, so on square input DI-FGSM and
TI-FGSM match torchattacks with DI switched on too, under the same seed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_dpaat.attacks import DIFGSM, FGSM, IFGSM, MIFGSM, NIFGSM, PGD, PGDL2, SINIFGSM, TIFGSM, GaussianNoise
from monai_dpaat.attacks.transforms import gaussian_smooth, input_diversity

torchattacks = pytest.importorskip("torchattacks")



EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 5
TOL = 1e-5


@pytest.fixture(scope="module")
def problem():
    """A fixed small CNN (conv-BN-ReLU x2, 10 classes) in train mode (both libraries attack it in eval mode)
    and 8 RGB 16x16 images in [0, 1] labelled with its clean predictions' runner-up, so the loss is not tiny."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval and train mode differ
        for _ in range(3):
            model(torch.rand(16, 3, 16, 16) * 0.8)
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model.eval()(images).topk(2, dim=1).indices[:, 1]
    return model.train(), images, labels


def max_diff(ours, theirs) -> float:
    return (ours - theirs).abs().max().item()


def run_both(problem, ours, theirs_cls, seed=None, **theirs_kwargs):
    model, x, y = problem
    if seed is not None:
        torch.manual_seed(seed)
    a = ours(model, x, y)
    theirs = theirs_cls(model, **theirs_kwargs)
    if seed is not None:
        torch.manual_seed(seed)
    b = theirs(x, y)
    assert model.training, "both libraries must give the model back in train mode"
    assert not torch.equal(a, x), "the attack did nothing: parity would be trivial"
    return a, b


def test_fgsm_matches_torchattacks_fgsm(problem):
    a, b = run_both(problem, FGSM(eps=EPS, value_range=(0, 1)), torchattacks.FGSM, eps=EPS)
    assert max_diff(a, b) < TOL, f"FGSM differs from torchattacks.FGSM by {max_diff(a, b)}"


def test_ifgsm_matches_torchattacks_bim(problem):
    ours = IFGSM(eps=EPS, alpha=ALPHA, steps=STEPS, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.BIM, eps=EPS, alpha=ALPHA, steps=STEPS)
    assert max_diff(a, b) < TOL, f"I-FGSM differs from torchattacks.BIM by {max_diff(a, b)}"


def test_pgd_without_random_start_matches_torchattacks_pgd(problem):
    ours = PGD(eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.PGD, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False)
    assert max_diff(a, b) < TOL, f"PGD differs from torchattacks.PGD by {max_diff(a, b)}"


def test_pgd_with_random_start_matches_torchattacks_pgd_under_the_same_seed(problem):
    """Both draw U(-eps, eps) from torch's global RNG (ours when no generator is given)."""
    ours = PGD(eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.PGD, seed=3, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    assert max_diff(a, b) < TOL, f"PGD (random start) differs from torchattacks.PGD by {max_diff(a, b)}"


def test_mifgsm_matches_torchattacks_mifgsm(problem):
    ours = MIFGSM(eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.MIFGSM, eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0)
    assert max_diff(a, b) < TOL, f"MI-FGSM differs from torchattacks.MIFGSM by {max_diff(a, b)}"


def test_nifgsm_matches_torchattacks_nifgsm(problem):
    ours = NIFGSM(eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.NIFGSM, eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0)
    assert max_diff(a, b) < TOL, f"NI-FGSM differs from torchattacks.NIFGSM by {max_diff(a, b)}"


def test_pgdl2_without_random_start_matches_torchattacks_pgdl2(problem):
    ours = PGDL2(eps=0.5, alpha=0.1, steps=STEPS, random_start=False, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.PGDL2, eps=0.5, alpha=0.1, steps=STEPS, random_start=False)
    assert max_diff(a, b) < TOL, f"PGD-L2 differs from torchattacks.PGDL2 by {max_diff(a, b)}"


def test_pgdl2_with_random_start_matches_torchattacks_pgdl2_under_the_same_seed(problem):
    """Both start from a normal direction scaled to U(0, 1) * eps, drawn from torch's global RNG."""
    ours = PGDL2(eps=0.5, alpha=0.1, steps=STEPS, random_start=True, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.PGDL2, seed=4, eps=0.5, alpha=0.1, steps=STEPS, random_start=True)
    assert max_diff(a, b) < TOL, f"PGD-L2 (random start) differs from torchattacks.PGDL2 by {max_diff(a, b)}"


def test_tifgsm_without_input_diversity_matches_torchattacks_tifgsm(problem):
    """TI-FGSM with DI switched off, the deterministic part alone: the smoothed-gradient steps are the same."""
    ours = TIFGSM(eps=EPS, alpha=ALPHA, steps=STEPS, diversity_prob=0.0, kernel_length=7, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.TIFGSM, eps=EPS, alpha=ALPHA, steps=STEPS, diversity_prob=0.0,
                    len_kernel=7, nsig=3, decay=0.0, random_start=False)
    assert max_diff(a, b) < TOL, f"TI-FGSM differs from torchattacks.TIFGSM by {max_diff(a, b)}"


def test_difgsm_without_input_diversity_matches_torchattacks_difgsm(problem):
    ours = DIFGSM(eps=EPS, alpha=ALPHA, steps=STEPS, diversity_prob=0.0, decay=0.5, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.DIFGSM, eps=EPS, alpha=ALPHA, steps=STEPS, diversity_prob=0.0,
                    decay=0.5)
    assert max_diff(a, b) < TOL, f"DI-FGSM differs from torchattacks.DIFGSM by {max_diff(a, b)}"


@pytest.mark.parametrize("diversity_prob", [0.5, 1.0])
def test_difgsm_with_input_diversity_matches_torchattacks_difgsm_under_the_same_seed(problem, diversity_prob):
    """One random size for both sides, then random top/left pads and the coin, from the same global RNG state:
    the same transformed inputs every step, so the same images (the per-axis draws used before did not match)."""
    ours = DIFGSM(eps=EPS, alpha=ALPHA, steps=10, diversity_prob=diversity_prob, decay=0.5, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.DIFGSM, seed=3, eps=EPS, alpha=ALPHA, steps=10,
                    diversity_prob=diversity_prob, decay=0.5)
    assert max_diff(a, b) < TOL, f"DI-FGSM differs from torchattacks.DIFGSM by {max_diff(a, b)}"


def test_tifgsm_with_input_diversity_matches_torchattacks_tifgsm_under_the_same_seed(problem):
    ours = TIFGSM(eps=EPS, alpha=ALPHA, steps=STEPS, diversity_prob=0.5, kernel_length=7, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.TIFGSM, seed=6, eps=EPS, alpha=ALPHA, steps=STEPS, diversity_prob=0.5,
                    len_kernel=7, nsig=3, decay=0.0, random_start=False)
    assert max_diff(a, b) < TOL, f"TI-FGSM (with DI) differs from torchattacks.TIFGSM by {max_diff(a, b)}"


@pytest.mark.parametrize("resize_rate", [0.9, 0.7, 1.25])
def test_input_diversity_equals_torchattacks_transform_call_by_call(resize_rate):
    """The transform alone, 200 calls from the same global RNG state: exactly torchattacks' output each time,
    shrinking (pad back to the size) and enlarging (pad to floor(rate * size))."""
    reference = torchattacks.DIFGSM(nn.Identity(), resize_rate=resize_rate, diversity_prob=0.5)
    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)) + 0.1  # > 0: content visible
    with torch.random.fork_rng():
        torch.manual_seed(11)
        ours = [input_diversity(x, None, resize_rate, 0.5)[0] for _ in range(200)]
        torch.manual_seed(11)
        theirs = [reference.input_diversity(x) for _ in range(200)]
    assert all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(ours, theirs))
    assert 60 < sum(not torch.equal(a, x) for a in ours) < 140, "about half the calls must transform"


def _content_extent(out: torch.Tensor) -> tuple[int, ...]:
    """Per spatial axis, how many positions hold resized content (the zero padding excluded; input > 0)."""
    inside = out[0, 0] != 0
    return tuple(int(inside.any(dim=tuple(d for d in range(inside.ndim) if d != a)).sum()) for a in range(inside.ndim))


@pytest.mark.parametrize("spatial,resize_rate", [((32, 32), 0.9), ((32, 32), 1.2), ((12, 12, 12), 0.8), ((40,), 0.9)])
def test_input_diversity_keeps_square_inputs_square_every_call(spatial, resize_rate):
    """Xie et al. / torchattacks: one random size for every spatial axis (drawing each axis on its own, as
    before, kept 2-D 32x32 inputs square in only ~25 % of the transformed calls)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, *spatial, generator=g) + 0.1
    extents = [_content_extent(input_diversity(x, None, resize_rate, 1.0, g)[0]) for _ in range(300)]
    non_square = [e for e in extents if len(set(e)) > 1]
    assert not non_square, f"non-square transforms: {non_square[:5]}"
    sizes = {e[0] for e in extents}
    s, r = spatial[0], int(spatial[0] * resize_rate)
    assert sizes == set(range(min(s, r), max(s, r))), f"sizes drawn {sorted(sizes)}"


def test_input_diversity_scales_non_square_inputs_by_one_factor():
    """Non-square input: the longest axis draws the size as on a square input, every axis is scaled by the same
    factor (to the nearest pixel), so the aspect ratio is kept."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 20, 40, generator=g) + 0.1
    for _ in range(100):
        out, _ = input_diversity(x, None, 0.8, 1.0, g)
        h, w = _content_extent(out)
        assert out.shape == x.shape and 32 <= w < 40 and h == round(20 * w / 40)


def test_sinifgsm_matches_torchattacks_sinifgsm(problem):
    """Nesterov look-ahead plus the mean gradient over the m = 5 scale copies x / 2^i."""
    ours = SINIFGSM(eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0, m=5, value_range=(0, 1))
    a, b = run_both(problem, ours, torchattacks.SINIFGSM, eps=EPS, alpha=ALPHA, steps=STEPS, decay=1.0, m=5)
    assert max_diff(a, b) < TOL, f"SI-NI-FGSM differs from torchattacks.SINIFGSM by {max_diff(a, b)}"


def test_gaussian_noise_matches_torchattacks_gn_under_the_same_seed(problem):
    a, b = run_both(problem, GaussianNoise(std=0.1, value_range=(0, 1)), torchattacks.GN, seed=5, std=0.1)
    assert max_diff(a, b) < TOL, f"GN differs from torchattacks.GN by {max_diff(a, b)}"


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("length", [5, 6, 15])
def test_ti_smoothing_equals_torchattacks_conv2d_kernel(length):
    """Our separable smoothing == torchattacks' depthwise conv2d with its stacked 2D Gaussian kernel
    (``padding="same"``), including even kernel lengths and non-square input."""
    attack = torchattacks.TIFGSM(nn.Identity(), len_kernel=length, nsig=3)
    kernel = attack.stacked_kernel  # (3, 1, length, length)
    grad = torch.randn(4, 3, 20, 28, generator=torch.Generator().manual_seed(0))
    theirs = F.conv2d(grad, kernel, stride=1, padding="same", groups=3)
    ours = gaussian_smooth(grad, length, 3.0)
    assert max_diff(ours, theirs) < 1e-6, f"TI smoothing differs from torchattacks' kernel by {max_diff(ours, theirs)}"


def test_fgsm_rs_matches_torchattacks_ffgsm_under_the_same_seed(problem):
    """FGSM with a random start (Wong et al. 2020) is torchattacks' FFGSM: U(-eps, eps) start, one step, projection."""
    from monai_dpaat.attacks import FGSMRS

    model, x, y = problem
    alpha = 10 / 255  # torchattacks' FFGSM default; ours defaults to 1.25 eps
    torch.manual_seed(5)
    torch.randn_like(x)  # FFGSM draws its start as torch.randn_like(x).uniform_(...): the normals come first
    a = FGSMRS(eps=EPS, alpha=alpha, value_range=(0, 1))(model, x, y)
    torch.manual_seed(5)
    b = torchattacks.FFGSM(model, eps=EPS, alpha=alpha)(x, y)
    assert model.training and not torch.equal(a, x)
    assert max_diff(a, b) < TOL, f"FGSM-RS differs from torchattacks.FFGSM by {max_diff(a, b)}"
    assert FGSMRS(eps=EPS).alpha == pytest.approx(1.25 * EPS)


def _nfgsm_reference(model, x, y, eps, alpha, k, clip):
    """N-FGSM as written in de Jorge et al.'s training loop (github.com/pdejorge/N-FGSM, train.py), images in
    [0, 1]: ``delta ~ U(-k eps, k eps)`` clamped so that ``x + delta`` is an image, one signed step, optional
    ``clip``, no projection onto the eps ball."""
    delta = torch.zeros_like(x).uniform_(-k * eps, k * eps)
    delta = torch.clamp(delta, 0 - x, 1 - x).requires_grad_(True)
    model.eval()
    loss = F.cross_entropy(model(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    model.train()
    delta = delta.detach() + alpha * torch.sign(grad)
    if clip is not None:
        delta = torch.clamp(delta, -clip, clip)
    delta = torch.clamp(delta, 0 - x, 1 - x)
    return x + delta


@pytest.mark.parametrize("clip", [None, 1.5])
def test_nfgsm_matches_the_papers_training_loop_under_the_same_seed(problem, clip):
    from monai_dpaat.attacks import NFGSM

    model, x, y = problem
    torch.manual_seed(7)
    ours = NFGSM(eps=EPS, value_range=(0, 1), clip=clip)(model, x, y)
    torch.manual_seed(7)
    theirs = _nfgsm_reference(model, x, y, EPS, EPS, 2.0, None if clip is None else clip * EPS)
    assert max_diff(ours, theirs) < TOL, f"N-FGSM differs from the reference by {max_diff(ours, theirs)}"
    size = (ours - x).abs().flatten(1).amax(1)
    bound = 3 * EPS if clip is None else clip * EPS
    assert bool((size > EPS * 1.01).any()) and bool((size <= bound + 1e-6).all())  # beyond eps, within its bound
