"""The catalogue of natural corruptions: what each one is, where it applies, and how to apply it.

Every corruption is a :class:`Corruption` in the :data:`CORRUPTIONS` registry, tagged with the
modalities it applies to (``"any"`` for modality-agnostic ones) and the library that implements
it. :func:`corrupt` applies one at a given strength; the strength is a single number in the
corruption's ``strength_range`` whose increase lowers the SSIM to the clean image (on average),
so that :func:`~medrobust.evaluation.corruptions.calibrate` can find the strength of each
severity by bisection.

=============  ==========================  =========  ========================================
name           modalities                  source     strength
=============  ==========================  =========  ========================================
gaussian       any                         medrobust  noise standard deviation, [0, 1]
blur           any                         monai      Gaussian sigma in voxels, [0, 8]
gamma          any                         monai      gamma - 1 (exponent 1 + s), [0, 9]
speckle        ultrasound, oct             medrobust  multiplicative noise sigma, [0, 4]
bias-field     mri, ultrasound             monai      bias coefficient bound, [0, 3]
rician         mri                         monai      Rician spread sigma, [0, 1]
gibbs          mri                         monai      k-space truncation alpha, [0, 1]
spike          mri                         monai      stripe amplitude, [0, 1]
motion         mri                         torchio    degrees and voxels of movement, [0, 10]
ghosting       mri                         torchio    ghost intensity, [0, 10]
=============  ==========================  =========  ========================================

``bias-field`` also applies to ultrasound, whose depth attenuation and time-gain compensation
leave the same smooth multiplicative intensity drift. ``speckle`` is defined on single-channel
(grayscale B-mode or OCT) images: independent speckle in three colour channels would be
coloured noise, which no scanner produces.

Two caveats for :func:`~medrobust.evaluation.corruptions.calibrate`: ``gibbs`` truncates
k-space on the voxel grid, so its SSIM falls in steps (on volumes of 16 voxels a side a step can
exceed the tolerance); and ``motion`` keeps the centre of k-space, so on smooth volumes the
strongest severities may be out of its reach. Both then raise a ``ValueError`` that says so.

References:
    Di Salvo et al., "MedMNIST-C: Comprehensive benchmark and improved classifier robustness by
    simulating realistic image corruptions", arXiv:2406.17536, 2024 (corruption families per
    modality, five severities); Hendrycks & Dietterich, "Benchmarking neural network robustness
    to common corruptions and perturbations", ICLR 2019.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from medrobust.evaluation.corruptions import ops
from medrobust.registry import Registry

__all__ = [
    "CORRUPTIONS",
    "MODALITIES",
    "Corruption",
    "check_applies",
    "check_images",
    "corrupt",
    "get_corruption",
    "list_corruptions",
    "modality_of",
]

#: Imaging modalities understood by :func:`list_corruptions` and :func:`check_applies`.
MODALITIES: tuple[str, ...] = (
    "ultrasound",
    "mri",
    "ct",
    "xray",
    "oct",
    "dermoscopy",
    "fundus",
    "pathology",
)
_ALIASES = {"us": "ultrasound", "mr": "mri", "x-ray": "xray", "histology": "pathology"}
_SOURCES = ("medrobust", "monai", "torchio")


@dataclass(frozen=True)
class Corruption:
    """A natural corruption with one scalar strength.

    Attributes:
        name: Registered name (lower case, dashes).
        modalities: Modalities it applies to; ``("any",)`` for every modality.
        source: Library implementing it: ``"monai"``, ``"torchio"`` or ``"medrobust"``.
        description: One line saying what it simulates.
        strength_range: ``(0, max)``: the strengths :func:`corrupt` accepts; strength 0 leaves
            the image (nearly) unchanged and the SSIM falls as the strength grows.
        strength_unit: What the strength measures (e.g. ``"noise standard deviation"``).
        apply: ``apply(x, strength, seed)`` on a batch ``(B, C, *spatial)``, returning the
            corrupted batch before clamping (see :mod:`.ops`).
        channels: Required number of channels, or None for any.
    """

    name: str
    modalities: tuple[str, ...]
    source: str
    description: str
    strength_range: tuple[float, float]
    strength_unit: str
    apply: Callable[[torch.Tensor, float, int], torch.Tensor]
    channels: int | None = None

    def __post_init__(self) -> None:
        if self.source not in _SOURCES:
            raise ValueError(f"source must be one of {_SOURCES}, got {self.source!r}")
        unknown = [m for m in self.modalities if m != "any" and m not in MODALITIES]
        if not self.modalities or unknown:
            raise ValueError(f"corruption {self.name!r}: unknown modalities {unknown or '()'}")
        low, high = self.strength_range
        if not (low == 0.0 and high > 0.0 and math.isfinite(high)):
            raise ValueError(f"strength_range must be (0, max > 0), got {self.strength_range}")


#: Registry of :class:`Corruption` entries; ``CORRUPTIONS.create(name)`` returns the entry.
CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def _register(corruption: Corruption) -> None:
    def factory() -> Corruption:
        return corruption

    factory.__doc__ = corruption.description
    CORRUPTIONS.register(
        corruption.name,
        summary=corruption.description,
        tags=(*corruption.modalities, corruption.source),
    )(factory)


for _c in (
    Corruption(
        "gaussian", ("any",), "medrobust", "Additive Gaussian noise (detector/electronic noise)",
        (0.0, 1.0), "noise standard deviation", ops.gaussian,
    ),
    Corruption(
        "blur", ("any",), "monai", "Gaussian blur (defocus, partial volume, low resolution)",
        (0.0, 8.0), "Gaussian sigma in voxels", ops.blur,
    ),
    Corruption(
        "gamma", ("any",), "monai", "Gamma correction of the intensity range (display/contrast)",
        (0.0, 9.0), "gamma - 1 (the exponent is 1 + strength)", ops.gamma,
    ),
    Corruption(
        "speckle", ("ultrasound", "oct"), "medrobust",
        "Multiplicative speckle noise (coherent imaging: B-mode ultrasound, OCT)",
        (0.0, 4.0), "multiplicative noise standard deviation", ops.speckle, channels=1,
    ),
    Corruption(
        "bias-field", ("mri", "ultrasound"), "monai",
        "Smooth multiplicative bias field (MR coil inhomogeneity, ultrasound gain drift)",
        (0.0, 3.0), "bound of the Legendre coefficients of the log field", ops.bias_field,
    ),
    Corruption(
        "rician", ("mri",), "monai", "Rician noise of MR magnitude images",
        (0.0, 1.0), "standard deviation of the complex Gaussian noise", ops.rician,
    ),
    Corruption(
        "gibbs", ("mri",), "monai", "Gibbs ringing from k-space truncation",
        (0.0, 1.0), "truncation alpha (share of the k-space radius removed)", ops.gibbs,
    ),
    Corruption(
        "spike", ("mri",), "monai", "k-space spike (herringbone stripes)",
        (0.0, 1.0), "stripe amplitude in intensity units", ops.spike,
    ),
    Corruption(
        "motion", ("mri",), "torchio", "Patient motion during the MR acquisition",
        (0.0, 10.0), "largest rotation (degrees) and translation (voxels)", ops.motion,
    ),
    Corruption(
        "ghosting", ("mri",), "torchio", "MR ghosting along the phase-encoding axis",
        (0.0, 10.0), "ghost intensity relative to the k-space maximum", ops.ghosting,
    ),
):  # fmt: skip
    _register(_c)


def get_corruption(name: str) -> Corruption:
    """The registered :class:`Corruption` called ``name``.

    Raises:
        UnknownNameError: If ``name`` is not registered (the message suggests close names).
    """
    return CORRUPTIONS.create(name)


def modality_of(modality: str) -> str:
    """The canonical modality name (``"MR"`` -> ``"mri"``); ``"any"`` stands for an unknown
    modality (only modality-agnostic corruptions apply).

    Raises:
        ValueError: For an unknown modality, naming the known ones (with a close match).
    """
    if not isinstance(modality, str):
        raise TypeError(f"modality must be a string, got {type(modality).__name__}")
    key = modality.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key == "any" or key in MODALITIES:
        return key
    close = difflib.get_close_matches(key, MODALITIES, n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown modality {modality!r}.{hint} Known modalities: {', '.join(MODALITIES)} "
        "(or 'any' for modality-agnostic corruptions only)"
    )


def list_corruptions(modality: str | None = None) -> list[str]:
    """Sorted names of the corruptions that apply to a modality.

    Args:
        modality: One of :data:`MODALITIES` (aliases ``"us"``, ``"mr"``, ``"x-ray"``), ``"any"``
            for the modality-agnostic corruptions only, or None for every corruption.

    Returns:
        The names; the modality-agnostic (``"any"``) corruptions are always included.

    Raises:
        ValueError: For an unknown modality, naming the known ones.
    """
    if modality is None:
        return CORRUPTIONS.list()
    key = modality_of(modality)
    names = set(CORRUPTIONS.list(tag="any"))
    if key != "any":
        names.update(CORRUPTIONS.list(tag=key))
    return sorted(names)


def check_applies(name: str, modality: str, *, channels: int | None = None) -> str | None:
    """Whether a corruption applies to images of a modality (and channel count).

    Args:
        name: A registered corruption.
        modality: The images' modality (see :func:`list_corruptions`).
        channels: The images' channel count, if known.

    Returns:
        None if it applies; otherwise the reason, to be recorded as a skip (e.g. ``"rician
        applies to mri, not ultrasound"``, or that torchio is not installed).

    Raises:
        UnknownNameError: For an unknown corruption.
        ValueError: For an unknown modality.
    """
    c = get_corruption(name)
    key = modality_of(modality)
    if "any" not in c.modalities and key not in c.modalities:
        return f"{c.name} applies to {', '.join(c.modalities)}, not {key}"
    if channels is not None and c.channels is not None and channels != c.channels:
        return f"{c.name} needs {c.channels}-channel images, these have {channels} channels"
    if c.source == "torchio" and not ops.torchio_available():
        return f"{c.name} {ops.TORCHIO_HINT}"
    return None


def check_images(x: object) -> torch.Tensor:
    """Validate a batch for corruption: a floating tensor ``(B, C, H, W)`` or
    ``(B, C, D, H, W)``, finite, with every value in ``[0, 1]``.

    Raises:
        TypeError: If ``x`` is not a floating-point tensor.
        ValueError: For another shape, an empty batch, NaN/inf, or values outside ``[0, 1]``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"images must be a floating-point tensor, got {got}")
    if x.ndim not in (4, 5):
        raise ValueError(
            f"images must have shape (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"images must not be empty, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("images contain NaN or infinite values")
    low, high = float(x.min()), float(x.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"images must lie in [0, 1] (window and rescale first), got values in "
            f"[{low:.4g}, {high:.4g}]"
        )
    return x


def _check_strength(c: Corruption, strength: object) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"strength must be a number, got {type(strength).__name__} {strength!r}")
    s = float(strength)
    low, high = c.strength_range
    if not (math.isfinite(s) and low <= s <= high):
        raise ValueError(
            f"strength of {c.name!r} ({c.strength_unit}) must be in [{low:g}, {high:g}], "
            f"got {strength!r}"
        )
    return s


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return seed


def corrupt(name: str, x: torch.Tensor, strength: float, seed: int) -> torch.Tensor:
    """Apply a natural corruption at a strength.

    Args:
        name: A registered corruption (see :func:`list_corruptions`).
        x: Clean images in ``[0, 1]``.
        strength: In the corruption's ``strength_range``; 0 leaves the images (nearly)
            unchanged, larger values lower the SSIM to the clean images.
        seed: Seed of every random draw, in ``[0, 2**32)``; the same seed gives the same
            output, and only the magnitude of the corruption depends on ``strength``.

    Returns:
        The corrupted images, clamped to ``[0, 1]``, with the shape, dtype and device of ``x``.

    Raises:
        UnknownNameError: For an unknown corruption.
        TypeError: If ``x`` is not a floating tensor, or ``strength``/``seed`` have wrong types.
        ValueError: For a bad shape, values outside ``[0, 1]``, a strength outside the range,
            a bad seed, or a channel count the corruption does not accept.
        ImportError: If the corruption needs torchio and it is not installed.

    Shape:
        - x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``; output the same.

    References:
        Di Salvo et al., MedMNIST-C, arXiv:2406.17536, 2024.
    """
    c = get_corruption(name)
    s = _check_strength(c, strength)
    sd = _check_seed(seed)
    check_images(x)
    if c.channels is not None and x.shape[1] != c.channels:
        raise ValueError(
            f"{c.name} needs {c.channels}-channel images (C = {c.channels}), got {x.shape[1]} "
            f"channels in shape {tuple(x.shape)}; convert to grayscale first"
        )
    out = c.apply(x.detach(), s, sd)
    if out.shape != x.shape:  # a library changed the shape: never hand that on silently
        raise RuntimeError(
            f"corruption {c.name!r} returned shape {tuple(out.shape)} for {tuple(x.shape)}"
        )
    return out.to(device=x.device, dtype=x.dtype).clamp(0.0, 1.0)
