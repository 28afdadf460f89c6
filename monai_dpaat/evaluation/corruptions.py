"""Natural corruptions at five severities and the mean corruption error (mCE), ImageNet-C style.

Hendrycks & Dietterich (ICLR 2019, "Benchmarking neural network robustness to common corruptions and
perturbations") measure robustness to *natural* (not adversarial) shifts: every corruption ``c`` is applied at
severities ``s = 1..5`` and the error ``E_{s,c}`` of the model is normalised by that of a reference model:

- ``CE_c = sum_s E_{s,c}(model) / sum_s E_{s,c}(reference)`` and ``mCE = mean_c CE_c``;
- relative: ``rCE_c = sum_s (E_{s,c} - E_clean) / sum_s (E_{s,c}(ref) - E_clean(ref))``, ``relative mCE = mean_c
  rCE_c`` (how much a model *degrades*, not how bad it is);
- ``E`` is ``1 - accuracy`` (classification, :func:`monai_dpaat.conventions.per_sample_correct`) or ``1 - mean
  Dice`` (segmentation, :func:`monai_dpaat.conventions.per_sample_dice`), over all samples of all batches.

Without a reference model :func:`mean_corruption_error` reports the un-normalised mean error of every
corruption (the mean over severities) and leaves ``mce`` as None.

Corruptions (keys of the ordered :data:`CORRUPTIONS` registry), each built from a MONAI transform where MONAI
has one:

================  ==========================================================================================
gaussian_noise    additive Gaussian noise (``RandGaussianNoise``), std = level x range
rician_noise      Rician noise of magnitude MR images (``RandRicianNoise``) on ``image - min``, std = level x range
blur              Gaussian smoothing (``GaussianSmooth``), sigma = level pixels/voxels, replicate-padded borders
bias_field        smooth multiplicative field (``RandBiasField``, degree 3, coefficients in ``(-level, level)``,
                  scaled to a peak of 1) on ``image - min``: MRI coil inhomogeneity, uneven illumination
contrast          gamma (``AdjustContrast``) on the image rescaled to [0, 1], mapped back; gamma = level or
                  1 / level (a seeded coin per image: darker or brighter)
gibbs             Gibbs ringing (``GibbsNoise``): k-space truncated to a ball, alpha = level
kspace_spike      herringbone spike (``KSpaceSpikeNoise``): one k-space point at a seeded off-centre location set
                  to a magnitude giving a stripe pattern of amplitude level x range
motion_ghosting   periodic-motion ghosts: every 4th k-space plane along a seeded axis scaled by ``1 - level``,
                  the centre plane kept (TorchIO's ``Ghosting``; MONAI has no ghosting transform)
jpeg              JPEG compression (``torchvision.io.encode_jpeg`` / ``decode_jpeg``), quality = level
stain             H&E stain variation (Tellez et al. 2018): Ruifrok & Johnston HED colour deconvolution, every
                  stain concentration scaled by ``1 +- a`` and shifted by ``+- b`` (seeded signs), back to RGB
================  ==========================================================================================

Severity table (``range`` = the image's own ``max - min``, so [0, 1], [0, 255] and z-scored MRI alike):

================  ========================  ========  ========  ========  ========  ========
corruption        parameter                 s=1       s=2       s=3       s=4       s=5
================  ========================  ========  ========  ========  ========  ========
gaussian_noise    std / range               0.04      0.08      0.12      0.18      0.26
rician_noise      std / range               0.02      0.04      0.06      0.09      0.12
blur              sigma (pixels)            0.5       1.0       1.5       2.0       3.0
bias_field        coefficient bound         0.025     0.05      0.075     0.1       0.15
contrast          gamma (or 1 / gamma)      1.25      1.5       1.75      2.0       2.5
gibbs             alpha (k-space cut)       0.45      0.55      0.65      0.72      0.8
kspace_spike      stripe amplitude / range  0.03      0.06      0.09      0.12      0.16
motion_ghosting   plane attenuation         0.2       0.4       0.6       0.8       1.0
jpeg              quality                   30        20        15        10        7
stain             (scale a, OD shift b)     .05, .03  .10, .06  .15, .09  .20, .12  .30, .15
================  ========================  ========  ========  ========  ========  ========

Why these numbers: Gaussian noise is ImageNet-C's table (std 0.08 .. 0.38 of [0, 1]) at one half to two thirds, and
the tiny HAM10000 CNN of the tests loses accuracy from severity 4; Rician noise is milder because it is meant for MR
images, where a noise std of 12% of the range is already a poor SNR; ``jpeg`` is ImageNet-C's qualities (25 .. 7)
one step milder; ``stain``'s scale jitter ``a`` spans about the light (0.05) to strong (0.2) HED jitter of Tellez et
al. 2019 and a bit beyond, and its shift ``b`` is in natural-log optical density, ``OD = -ln(I / white)``
(scikit-image's ``rgb2hed`` divides that by ln(1e6) = 13.8, so ``b = 0.15`` is 0.011 there); the others were set so
that the mean absolute change per voxel grows from about 1-4% to 5-20% of the range on the sample data (HAM10000 at
64x64, a BraTS FLAIR 48x48x32 crop, an H&E tile). Spatial parameters (``blur``; ``gibbs``'s ball and
``kspace_spike``'s location) are in pixels/voxels or fractions of the size; every intensity parameter is relative to
the image's range; every output is clamped to the image's own ``[min, max]``.

Applicability (:func:`applicable_corruptions`): ``gaussian_noise``, ``blur``, ``contrast`` and ``bias_field`` fit
any image (a smooth multiplicative field is an MRI bias field but also the uneven illumination of a dermatoscope
or a slide scanner). ``rician_noise``, ``gibbs``, ``kspace_spike`` and ``motion_ghosting`` are MR acquisition
artefacts: only for 3D images or 1-channel images (a grey 2D image is taken as an MR slice). ``jpeg`` and
``stain`` are for 2D 3-channel photos whose values lie in [0, 1] or in [0, 255] (the whole batch's min >= 0 and
max <= 1, or max <= 255; the first gives the nominal white 1, else 255). A 2D RGB dermatoscopy photo thus gets
gaussian_noise, blur, bias_field, contrast, jpeg and stain; a z-scored MRI volume gets all but jpeg and stain.

Determinism: sample ``i`` of a :func:`corrupt` call draws from its own ``numpy.random.RandomState`` seeded by
``(seed, i)`` (MONAI's ``set_random_state``), so the same call gives the same output and the global torch /
numpy / python RNG states are untouched. The same seed gives the same noise pattern at every severity (only its
magnitude changes), so the distortion grows with severity. :func:`corruption_table` uses ``seed + b`` for batch
``b``.

>>> table = corruption_table(network, [(images, labels)], "classification")
>>> reference = corruption_table(baseline, [(images, labels)], "classification")
>>> mean_corruption_error(table, reference)["mce"]
"""

from __future__ import annotations

import difflib
import math
import operator
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg

from monai.transforms import (
    AdjustContrast,
    GaussianSmooth,
    GibbsNoise,
    KSpaceSpikeNoise,
    RandBiasField,
    RandGaussianNoise,
    RandRicianNoise,
)
from monai.transforms.utils import Fourier

from monai_dpaat.attacks.base import restore_model_state
from monai_dpaat.conventions import image_and_label, per_sample_correct, per_sample_dice, plain_tensor, primary_output

__all__ = [
    "Corruption",
    "CORRUPTIONS",
    "SEVERITIES",
    "TASKS",
    "applicable_corruptions",
    "corrupt",
    "corruption_table",
    "mean_corruption_error",
    "severity_table",
]

#: the severities of every corruption
SEVERITIES = (1, 2, 3, 4, 5)
TASKS = ("classification", "segmentation")
METRICS = {"classification": "accuracy", "segmentation": "dice"}

#: which images a corruption fits (see :func:`applicable_corruptions`)
ANY, MRI, PHOTO = "any image", "3D or 1-channel images (MR artefact)", "2D 3-channel images in [0, 1] or [0, 255]"

# Ruifrok & Johnston (2001) stain optical-density vectors (rows: haematoxylin, eosin, DAB/residual), as
# scikit-image's ``rgb_from_hed``, rows normalised to unit length
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=torch.float64)
_RGB_FROM_HED = _RGB_FROM_HED / _RGB_FROM_HED.norm(dim=1, keepdim=True)
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_NUM_GHOSTS = 4  # every 4th k-space plane: 4 ghosts, TorchIO's RandomGhosting default range starts there
_BIAS_DEGREE = 3  # RandBiasField's default polynomial degree


class _Range(NamedTuple):
    """The intensity range of one image: its ``lo = min``, ``hi = max`` and the nominal white (1 or 255) of a
    photo batch (None for other images)."""

    lo: float
    hi: float
    white: float | None

    @property
    def span(self) -> float:
        return self.hi - self.lo


@dataclass(frozen=True)
class Corruption:
    """One corruption: ``apply(image (C, *spatial), level, rng, vrange) -> (C, *spatial)`` with ``level`` =
    ``levels[severity - 1]``; ``fits`` is :data:`ANY`, :data:`MRI` or :data:`PHOTO`."""

    name: str
    apply: Callable[[torch.Tensor, Any, np.random.RandomState, _Range], torch.Tensor]
    parameter: str
    levels: tuple
    fits: str
    description: str


# ---------------------------------------------------------------------------------------------- corruptions
def _gaussian_noise(img: torch.Tensor, level: float, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """``img + N(0, (level * range)^2)`` per voxel (MONAI ``RandGaussianNoise``, fixed std)."""
    noise = RandGaussianNoise(prob=1.0, mean=0.0, std=level * vr.span, sample_std=False)
    noise.set_random_state(state=rng)
    return noise(img)


def _rician_noise(img: torch.Tensor, level: float, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """Rician noise ``sqrt((m + n1)^2 + n2^2)`` of the magnitude ``m = img - min`` (MONAI ``RandRicianNoise``):
    magnitude MR images have their background at the minimum, and a z-scored image has negative values that
    the magnitude would flip."""
    noise = RandRicianNoise(prob=1.0, std=level * vr.span, sample_std=False)
    noise.set_random_state(state=rng)
    return noise(img - vr.lo) + vr.lo


def _blur(img: torch.Tensor, level: float, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """Gaussian smoothing with ``sigma = level`` pixels (MONAI ``GaussianSmooth``). MONAI pads with zeros,
    which would darken the borders (or brighten them on z-scored data): pad by the kernel's reach with
    replicated edges first and crop back."""
    pad = int(4.0 * level + 0.5) + 1  # GaussianFilter's kernel is truncated at 4 sigma
    spatial = img.ndim - 1
    padded = F.pad(img[None], [pad] * (2 * spatial), mode="replicate")[0]
    out = GaussianSmooth(sigma=level)(padded)
    return out[(slice(None),) + (slice(pad, -pad),) * spatial]


def _bias_field(img: torch.Tensor, level: float, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """``(img - min) * field + min`` with ``field = exp(P) / max exp(P)``, ``P`` a degree-3 Legendre polynomial
    of coefficients in ``(-level, level)`` (MONAI ``RandBiasField``). The background (the minimum) stays
    background, and the peak of 1 makes the field shade without saturating the bright parts (which clamping to
    the image's maximum would flatten)."""
    bias = RandBiasField(degree=_BIAS_DEGREE, coeff_range=(-level, level), prob=1.0)
    bias.set_random_state(state=rng)
    field = plain_tensor(bias(torch.ones_like(img[:1]))).to(img.device)  # draws the coefficients
    shaded = plain_tensor(bias(img - vr.lo, randomize=False)).to(img.device)
    return shaded / field.max() + vr.lo


def _contrast(img: torch.Tensor, level: float, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """Gamma ``level`` or ``1 / level`` (a seeded coin: darker or brighter) on the image rescaled to [0, 1]
    (MONAI ``AdjustContrast``), mapped back to its own range."""
    gamma = level if rng.uniform() < 0.5 else 1.0 / level
    if vr.span <= 0:
        return img
    unit = (img - vr.lo) / vr.span
    return AdjustContrast(gamma=gamma)(unit) * vr.span + vr.lo


def _gibbs(img: torch.Tensor, level: float, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """Gibbs ringing: k-space outside a ball of radius ``(1 - alpha)`` of the half-diagonal set to zero
    (MONAI ``GibbsNoise``; linear, so the intensity offset of z-scored data does not matter)."""
    return GibbsNoise(alpha=level)(img)


def _spike_location(spatial: Sequence[int], rng: np.random.RandomState) -> tuple[int, ...]:
    """A k-space location (centred spectrum) within a quarter of the size of the centre and off the centre
    (DC) along one seeded axis, so the spike makes a visible stripe pattern, not a brightness shift."""
    axis = int(rng.randint(len(spatial)))
    loc = []
    for i, d in enumerate(spatial):
        reach = max(1, d // 4)
        offset = int(rng.randint(-reach, reach + 1))
        if i == axis and offset == 0:
            offset = reach if rng.uniform() < 0.5 else -reach
        loc.append(int(np.clip(d // 2 + offset, 0, d - 1)))
    return tuple(loc)


def _kspace_spike(img: torch.Tensor, level: float, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """One k-space spike (MONAI ``KSpaceSpikeNoise``) whose magnitude ``level * range * n_voxels`` gives a
    stripe pattern of amplitude about ``level * range`` (``ifftn`` divides by the number of voxels)."""
    loc = _spike_location(img.shape[1:], rng)
    magnitude = max(level * vr.span, 1e-12) * math.prod(img.shape[1:])
    return KSpaceSpikeNoise(loc=loc, k_intensity=math.log(magnitude))(img)


def _motion_ghosting(img: torch.Tensor, level: float, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """Ghosts of periodic motion. MONAI has no ghosting transform, so this follows TorchIO's ``Ghosting``
    (``RandomGhosting``) in k-space with torch.fft: every 4th plane along a seeded phase-encoding axis is
    scaled by ``1 - level``; the centre plane (with the DC term) is kept, so the mean intensity stays."""
    spatial = img.ndim - 1
    axis = int(rng.randint(spatial))
    k = Fourier.shift_fourier(img, spatial)
    size = img.shape[1 + axis]
    scale = torch.ones(size, dtype=torch.float32, device=img.device)
    scale[::_NUM_GHOSTS] = 1.0 - level
    scale[size // 2] = 1.0  # the centre plane after fftshift
    shape = [1] * img.ndim
    shape[1 + axis] = size
    return Fourier.inv_shift_fourier(k * scale.reshape(shape), spatial)


def _jpeg(img: torch.Tensor, level: int, rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """JPEG round trip at quality ``level`` (torchvision) of the image as 8-bit RGB."""
    white = vr.white or 1.0
    as_bytes = (img.detach().cpu() / white * 255.0).round().clamp(0, 255).to(torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for TorchCodec; they still work
        warnings.filterwarnings("ignore", message=".*image decoding and encoding.*", category=DeprecationWarning)
        decoded = decode_jpeg(encode_jpeg(as_bytes, quality=int(level)))
    return decoded.to(img.device, torch.float32) * (white / 255.0)


def _stain(img: torch.Tensor, level: tuple[float, float], rng: np.random.RandomState, vr: _Range) -> torch.Tensor:
    """H&E stain variation (Tellez et al. 2018): optical density ``OD = -ln(I / white)``, stain concentrations
    ``C = OD M^-1`` (Ruifrok & Johnston's HED matrix ``M``), ``C' = C * (1 +- a) +- b`` per stain (seeded signs),
    back to ``I = white * exp(-C' M)``."""
    scale, shift = level
    signs = torch.as_tensor(rng.choice([-1.0, 1.0], size=(2, 3)), dtype=torch.float64, device=img.device)
    alpha, beta = (1.0 + scale * signs[0])[:, None, None], (shift * signs[1])[:, None, None]
    white = vr.white or 1.0
    od = -torch.log((img.detach().to(torch.float64) / white).clamp(1e-6, 1.0))  # (3, H, W), 0 for white
    conc = torch.einsum("khw,ks->shw", od, _HED_FROM_RGB.to(img.device))  # (3, H, W): H, E, DAB/residual
    od = torch.einsum("shw,sk->khw", conc * alpha + beta, _RGB_FROM_HED.to(img.device))
    return (torch.exp(-od).clamp(0.0, 1.0) * white).to(torch.float32)


def _registry() -> dict[str, Corruption]:
    rows = [
        ("gaussian_noise", _gaussian_noise, "std / range", (0.04, 0.08, 0.12, 0.18, 0.26), ANY,
         "additive Gaussian noise (MONAI RandGaussianNoise)"),
        ("rician_noise", _rician_noise, "std / range", (0.02, 0.04, 0.06, 0.09, 0.12), MRI,
         "Rician noise of the magnitude image - min (MONAI RandRicianNoise)"),
        ("blur", _blur, "sigma (pixels)", (0.5, 1.0, 1.5, 2.0, 3.0), ANY,
         "Gaussian smoothing with replicated borders (MONAI GaussianSmooth)"),
        ("bias_field", _bias_field, "coefficient bound", (0.025, 0.05, 0.075, 0.1, 0.15), ANY,
         "multiplicative degree-3 Legendre field on image - min (MONAI RandBiasField)"),
        ("contrast", _contrast, "gamma (or 1 / gamma)", (1.25, 1.5, 1.75, 2.0, 2.5), ANY,
         "gamma on the image rescaled to [0, 1] (MONAI AdjustContrast)"),
        ("gibbs", _gibbs, "alpha (k-space cut)", (0.45, 0.55, 0.65, 0.72, 0.8), MRI,
         "Gibbs ringing from truncated k-space (MONAI GibbsNoise)"),
        ("kspace_spike", _kspace_spike, "stripe amplitude / range", (0.03, 0.06, 0.09, 0.12, 0.16), MRI,
         "one k-space spike: herringbone stripes (MONAI KSpaceSpikeNoise)"),
        ("motion_ghosting", _motion_ghosting, "plane attenuation", (0.2, 0.4, 0.6, 0.8, 1.0), MRI,
         "every 4th k-space plane attenuated: motion ghosts (torch.fft, as TorchIO's RandomGhosting)"),
        ("jpeg", _jpeg, "quality", (30, 20, 15, 10, 7), PHOTO, "JPEG compression (torchvision.io)"),
        ("stain", _stain, "(stain scale a, OD shift b)",
         ((0.05, 0.03), (0.1, 0.06), (0.15, 0.09), (0.2, 0.12), (0.3, 0.15)), PHOTO,
         "H&E stain variation in HED space (Ruifrok & Johnston deconvolution, Tellez et al. 2018)"),
    ]
    return {row[0]: Corruption(*row) for row in rows}


#: the corruptions, in the order of the tables
CORRUPTIONS: dict[str, Corruption] = _registry()


def severity_table() -> dict[str, dict[str, Any]]:
    """JSON-able ``{corruption: {"parameter": ..., "levels": [s1..s5], "fits": ..., "description": ...}}``."""
    return {
        name: {"parameter": c.parameter, "levels": [list(v) if isinstance(v, tuple) else v for v in c.levels],
               "fits": c.fits, "description": c.description}
        for name, c in CORRUPTIONS.items()
    }


# ---------------------------------------------------------------------------------------------- checks
def _check_images(images: Any) -> torch.Tensor:
    """A plain float32 ``(N, C, *spatial)`` tensor (2D or 3D spatial) of finite values, else ``ValueError``."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor (N, C, H, W[, D]), got {type(images).__name__}")
    x = plain_tensor(images).detach()
    if x.ndim not in (4, 5) or x.shape[0] == 0 or 0 in x.shape:
        raise ValueError(f"images must be a non-empty batch (N, C, H, W) or (N, C, H, W, D), got {tuple(x.shape)}")
    x = x.to(torch.float32)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"images have {bad} non-finite value(s) (NaN or inf); corruptions need finite images")
    return x


def _photo_white(x: torch.Tensor) -> float | None:
    """The nominal white of a 2D 3-channel photo batch: 1 when all values are in [0, 1], 255 when in [0, 255],
    else None (not a photo: jpeg and stain do not apply)."""
    if x.ndim != 4 or x.shape[1] != 3:
        return None
    lo, hi = float(x.min()), float(x.max())
    if lo < 0:
        return None
    return 1.0 if hi <= 1.0 else 255.0 if hi <= 255.0 else None


def _fits(x: torch.Tensor, fits: str) -> bool:
    if fits == ANY:
        return True
    if fits == MRI:
        return x.ndim == 5 or x.shape[1] == 1
    return _photo_white(x) is not None


def applicable_corruptions(images: torch.Tensor) -> list[str]:
    """The corruptions (registry order) that fit ``images`` ``(N, C, *spatial)``: see the module docstring."""
    x = _check_images(images)
    return [name for name, c in CORRUPTIONS.items() if _fits(x, c.fits)]


def _check_name(name: Any) -> Corruption:
    if not isinstance(name, str) or name not in CORRUPTIONS:
        close = difflib.get_close_matches(str(name), list(CORRUPTIONS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown corruption {name!r}{hint} Known corruptions: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name]


def _check_severity(severity: Any) -> int:
    try:
        s = operator.index(severity)
    except TypeError:
        s = None
    if s is None or isinstance(severity, bool) or s not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return s


def _check_seed(seed: Any) -> int:
    try:
        s = operator.index(seed)
    except TypeError:
        s = -1
    if s < 0 or isinstance(seed, bool):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return s


def _sample_rng(seed: int, index: int) -> np.random.RandomState:
    """The private random stream of sample ``index`` of a call with ``seed``."""
    return np.random.RandomState(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))


# ---------------------------------------------------------------------------------------------- corrupt
def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Corruption ``name`` at ``severity`` (1..5) of every image of a batch.

    Args:
        images: ``(N, C, H, W)`` or ``(N, C, H, W, D)`` tensor or MetaTensor, any value range.
        name: a key of :data:`CORRUPTIONS`; it must fit the images (:func:`applicable_corruptions`).
        severity: 1 (mild) .. 5 (severe); the parameters are in the module docstring's table.
        seed: sample ``i`` uses a random stream seeded by ``(seed, i)``; the global RNG state is untouched.

    Returns:
        a plain float32 tensor of the input's shape and device, every image inside its own ``[min, max]``.

    Raises:
        ValueError: unknown name (with the closest known one), severity outside 1..5, a corruption that does
            not fit the images, non-finite images or a batch that is not ``(N, C, *spatial)``.
    """
    spec = _check_name(name)
    level = spec.levels[_check_severity(severity) - 1]
    seed = _check_seed(seed)
    x = _check_images(images)
    if not _fits(x, spec.fits):
        raise ValueError(
            f"corruption {name!r} is for {spec.fits}; images have shape {tuple(x.shape)} and values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]. "
            f"Corruptions that fit them: {', '.join(applicable_corruptions(x))}"
        )
    white = _photo_white(x) if spec.fits == PHOTO else None
    lo, hi = torch.aminmax(x.reshape(x.shape[0], -1), dim=1)
    out = torch.empty_like(x)
    with torch.random.fork_rng(devices=[]):  # no transform here draws from torch's RNG; this guards that it stays so
        for i in range(x.shape[0]):
            vr = _Range(float(lo[i]), float(hi[i]), white)
            y = spec.apply(x[i].clone(), level, _sample_rng(seed, i), vr)
            out[i] = plain_tensor(y).to(x.device, torch.float32).clamp(vr.lo, vr.hi)
    return out


# ---------------------------------------------------------------------------------------------- tables
def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    return task


def _check_severities(severities: Sequence[int]) -> tuple[int, ...]:
    out = tuple(_check_severity(s) for s in severities)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"severities must be distinct integers in 1..5, got {severities!r}")
    return out


def _predictor(predict: Any) -> tuple[Callable[[torch.Tensor], Any], torch.device | None]:
    if isinstance(predict, torch.nn.Module):
        param = next(iter(predict.parameters()), None)
        return predict, None if param is None else param.device
    if callable(predict):
        return predict, None
    raise ValueError(f"predict_fn_or_network must be a torch.nn.Module or a callable, got {type(predict).__name__}")


def _scores(output: Any, labels: torch.Tensor, task: str) -> torch.Tensor:
    """``(N,)`` float scores: 1/0 correct (classification) or mean foreground Dice (segmentation)."""
    out = primary_output(output)
    if task == "classification":
        if out.ndim != 2:
            raise ValueError(f"classification outputs must be (N, K) logits, got shape {tuple(out.shape)}")
        return per_sample_correct(out, labels).float().cpu()
    if out.ndim < 3:
        raise ValueError(f"segmentation outputs must be (N, K, *spatial) logits, got shape {tuple(out.shape)}")
    return per_sample_dice(out, labels).float().cpu()


def corruption_table(
    predict_fn_or_network: Any,
    batches: Sequence[Any],
    task: str,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Errors of a model on clean and corrupted batches.

    Args:
        predict_fn_or_network: a ``torch.nn.Module`` (run in eval mode under ``torch.no_grad``, its train flags
            and buffers put back afterwards; inputs moved to its device) or a callable ``images -> logits``.
        batches: ``(images, labels)`` pairs (or MONAI-style dicts with ``"image"``/``"label"``); classification:
            logits ``(N, K)`` and class indices ``(N,)``; segmentation: logits ``(N, K, *spatial)`` and label maps
            ``(N, 1, *spatial)``.
        task: ``"classification"`` (error = 1 - accuracy) or ``"segmentation"`` (error = 1 - mean Dice).
        corruptions: names to run (default: those that fit every batch, :func:`applicable_corruptions`).
        severities: the severities to run.
        seed: batch ``b`` is corrupted with ``seed + b``.
        progress: called with one line per corruption (e.g. ``print``).

    Returns:
        JSON-able ``{"metric": "accuracy"|"dice", "task", "clean_error", "errors": {name: [E_s ...]},
        "severities", "seed", "num_samples"}``; errors are over all samples of all batches.
    """
    task = _check_task(task)
    severities = _check_severities(severities)
    seed = _check_seed(seed)
    pairs = [image_and_label(b) for b in batches]
    if not pairs:
        raise ValueError("batches is empty: corruption_table needs at least one (images, labels) batch")
    if corruptions is None:
        fit = [set(applicable_corruptions(images)) for images, _ in pairs]
        names = [name for name in CORRUPTIONS if all(name in f for f in fit)]
    else:
        names = [_check_name(name).name for name in corruptions]
    predict, device = _predictor(predict_fn_or_network)

    def error(images_of: Callable[[int, torch.Tensor], torch.Tensor]) -> float:
        scores = []
        for b, (images, labels) in enumerate(pairs):
            x = images_of(b, images)
            x = x if device is None else x.to(device)
            scores.append(_scores(predict(x), labels, task))
        return 1.0 - float(torch.cat(scores).double().mean())

    def run() -> dict[str, Any]:
        clean = error(lambda b, images: plain_tensor(images).float())
        errors: dict[str, list[float]] = {}
        for name in names:
            errors[name] = [error(lambda b, images, c=name, s=s: corrupt(images, c, s, seed + b)) for s in severities]
            if progress is not None:
                progress(f"{name}: error " + " ".join(f"{e:.3f}" for e in errors[name]) + f" (clean {clean:.3f})")
        return {"metric": METRICS[task], "task": task, "clean_error": clean, "errors": errors,
                "severities": list(severities), "seed": seed, "num_samples": sum(len(x) for x, _ in pairs)}

    with torch.no_grad():
        if isinstance(predict_fn_or_network, torch.nn.Module):
            with restore_model_state(predict_fn_or_network, "eval"):
                return run()
        return run()


def _errors_of(table: Mapping[str, Any], what: str) -> tuple[float, dict[str, list[float]]]:
    if not isinstance(table, Mapping) or "errors" not in table or "clean_error" not in table:
        raise ValueError(f"{what} must be a corruption_table() dict with 'clean_error' and 'errors'")
    errors = {name: [float(e) for e in values] for name, values in table["errors"].items()}
    for name, values in errors.items():
        if not values:
            raise ValueError(f"{what} has no errors for corruption {name!r}")
    return float(table["clean_error"]), errors


def mean_corruption_error(table: Mapping[str, Any], reference_table: Mapping[str, Any] | None = None) -> dict:
    """The mCE of ``table`` normalised by ``reference_table`` (both from :func:`corruption_table`).

    Returns:
        JSON-able ``{"metric", "clean_error", "mean_error": {c: mean_s E_{s,c}}, "average_error": mean over
        corruptions of mean_error, "ce": {c: CE_c} | None, "mce": float | None, "relative_ce": {c: rCE_c} | None,
        "relative_mce": float | None, "relative_undefined": [c ...]}``; without a reference only the
        un-normalised errors are filled in. ``rCE_c`` is None (and ``relative_mce`` None) for a corruption that
        does not change the reference's error at all (``sum_s (E_ref - E_ref_clean) = 0``), listed in
        ``relative_undefined``.

    Raises:
        ValueError: the reference lacks a corruption of ``table``, has other severities or another metric, or a
            reference error sum is 0 (CE cannot be normalised).
    """
    clean, errors = _errors_of(table, "table")
    mean_error = {name: sum(v) / len(v) for name, v in errors.items()}
    result: dict[str, Any] = {
        "metric": table.get("metric"), "clean_error": clean, "mean_error": mean_error,
        "average_error": sum(mean_error.values()) / len(mean_error) if mean_error else None,
        "ce": None, "mce": None, "relative_ce": None, "relative_mce": None, "relative_undefined": [],
    }
    if reference_table is None:
        return result
    ref_clean, ref_errors = _errors_of(reference_table, "reference_table")
    if table.get("metric") != reference_table.get("metric"):
        raise ValueError(f"table's metric {table.get('metric')!r} differs from the reference's "
                         f"{reference_table.get('metric')!r}")
    if list(table.get("severities", [])) != list(reference_table.get("severities", [])):
        raise ValueError(f"table's severities {table.get('severities')} differ from the reference's "
                         f"{reference_table.get('severities')}")
    ce, relative = {}, {}
    for name, values in errors.items():
        if name not in ref_errors:
            raise ValueError(f"the reference table has no errors for corruption {name!r} (it has "
                             f"{', '.join(ref_errors) or 'none'})")
        ref = ref_errors[name]
        if len(ref) != len(values):
            raise ValueError(f"corruption {name!r}: {len(values)} severities in the table, {len(ref)} in the reference")
        if sum(ref) == 0:
            raise ValueError(f"corruption {name!r}: the reference's errors sum to 0, so its CE cannot be normalised")
        ce[name] = sum(values) / sum(ref)
        ref_rise = sum(e - ref_clean for e in ref)
        relative[name] = None if ref_rise == 0 else sum(e - clean for e in values) / ref_rise
    undefined = [name for name, v in relative.items() if v is None]
    result.update(
        ce=ce, mce=sum(ce.values()) / len(ce) if ce else None, relative_ce=relative,
        relative_mce=None if undefined or not relative else sum(relative.values()) / len(relative),
        relative_undefined=undefined,
    )
    return result
