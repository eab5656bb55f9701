"""Severities calibrated by SSIM: the strength of each corruption that brings the mean SSIM
to the clean images down to a target.

A corruption's strength means different things for different corruptions (a noise sigma, a
blur width in voxels, degrees of motion), so "severity 3" is defined by its effect instead:
the strength at which the mean SSIM between clean and corrupted images equals
``SEVERITY_SSIM[2]``. This makes the severities comparable across corruptions and across data
sets (MedMNIST-C fixes per-corruption parameters by eye for 28x28 images; an SSIM target carries
over to other sizes and modalities).

References:
    Di Salvo et al., "MedMNIST-C", arXiv:2406.17536, 2024 (five severities per corruption);
    Wang et al., "Image quality assessment: from error visibility to structural similarity",
    IEEE TIP 13(4), 2004 (SSIM); Paschali et al., MICCAI 2018 (noise matched by SSIM).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch

from medrobust.evaluation.corruptions.catalogue import (
    check_images,
    corrupt,
    get_corruption,
)
from medrobust.metrics import ssim_or_nan

__all__ = ["SEVERITY_SSIM", "calibrate", "corrupt_at_severity", "mean_ssim"]

#: Target mean SSIM of severities 1..5 (mildest first). Severity 1 (0.95) lies just below
#: Paschali et al.'s imperceptible-noise range (SSIM 0.97-0.99); each step removes 0.05 more of
#: the structural similarity, down to 0.75 at severity 5, where every corruption is plainly
#: visible yet the anatomy is still recognisable (the spirit of MedMNIST-C's severity 5).
SEVERITY_SSIM: tuple[float, ...] = (0.95, 0.90, 0.85, 0.80, 0.75)

_MAX_STEPS = 60


def mean_ssim(name: str, x: torch.Tensor, strength: float, seed: int = 0) -> float:
    """Mean SSIM (data range 1) between ``x`` and ``corrupt(name, x, strength, seed)``.

    Raises:
        ValueError: If the SSIM is undefined for these images (e.g. an axis shorter than 3
            voxels), besides the errors of :func:`corrupt`.

    Shape:
        - x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.
    """
    y = corrupt(name, x, strength, seed)
    values = ssim_or_nan(x.float(), y.float(), data_range=1.0, spatial_dims=x.ndim - 2)
    value = float(values.double().mean())
    if not math.isfinite(value):
        raise ValueError(
            f"SSIM is undefined for images of shape {tuple(x.shape)}: every spatial axis needs "
            "at least 3 voxels"
        )
    return value


def _check_targets(targets: Sequence[float], tol: float) -> list[float]:
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence) or not targets:
        raise TypeError(f"targets must be a non-empty sequence of numbers, got {targets!r}")
    out = []
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
            raise ValueError(f"every SSIM target must be a number in (0, 1), got {t!r}")
        out.append(float(t))
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0.0 < float(tol) < 0.5:
        raise ValueError(f"tol must be a number in (0, 0.5), got {tol!r}")
    return out


class _Curve:
    """Mean SSIM as a function of strength, evaluated lazily and cached."""

    def __init__(self, name: str, x: torch.Tensor, seed: int) -> None:
        self.name, self.x, self.seed = name, x, seed
        self.s: list[float] = []
        self.v: list[float] = []

    def __call__(self, strength: float) -> float:
        i = bisect.bisect_left(self.s, strength)
        if i < len(self.s) and self.s[i] == strength:
            return self.v[i]
        value = mean_ssim(self.name, self.x, strength, self.seed)
        self.s.insert(i, strength)
        self.v.insert(i, value)
        return value

    def bracket(self, target: float) -> tuple[float, float]:
        """The first evaluated interval where the SSIM crosses ``target`` from above."""
        for j in range(1, len(self.s)):
            if self.v[j] <= target < self.v[j - 1]:
                return self.s[j - 1], self.s[j]
        raise RuntimeError(f"no evaluated interval crosses SSIM {target:g}")  # unreachable

    def closest(self, target: float) -> tuple[float, float]:
        """The evaluated (strength, SSIM) whose SSIM is closest to ``target``; the smallest
        strength on ties."""
        j = min(range(len(self.s)), key=lambda k: (abs(self.v[k] - target), self.s[k]))
        return self.s[j], self.v[j]


def calibrate(
    name: str,
    x: torch.Tensor,
    targets: Sequence[float] = SEVERITY_SSIM,
    seed: int = 0,
    tol: float = 0.005,
) -> list[float]:
    """Strengths at which a corruption brings the mean SSIM down to each target.

    For each target, bisection on the strength between the closest evaluated strengths whose
    mean SSIM lies above and below it (every evaluation is cached and shared across targets),
    until the mean SSIM over the batch is within ``tol`` of the target. The random draws are
    fixed by ``seed``, so the SSIM is a continuous function of the strength and falls with it
    (on average over the batch); where it is locally not monotone the first crossing is used.

    Args:
        name: A registered corruption.
        x: Clean calibration images in ``[0, 1]`` (a few representative images suffice).
        targets: Target mean SSIMs in ``(0, 1)``; default :data:`SEVERITY_SSIM`.
        seed: Seed of the corruption's random draws (use the same one when corrupting).
        tol: Absolute tolerance on the mean SSIM.

    Returns:
        One strength per target, in the order of ``targets``.

    Raises:
        ValueError: If a target cannot be reached within the corruption's strength range
            (naming the corruption, the target and the SSIM range reached), for bad targets or
            tolerance, and for every bad input of :func:`corrupt`.

    Shape:
        - x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``.

    References:
        Di Salvo et al., MedMNIST-C, 2024; Wang et al., IEEE TIP 2004.
    """
    corruption = get_corruption(name)
    goals = _check_targets(targets, tol)
    check_images(x)
    curve = _Curve(corruption.name, x, seed)
    low, high = corruption.strength_range
    v_low, v_high = curve(low), curve(high)
    strengths = []
    for target in goals:
        if not v_high - tol <= target <= v_low + tol:
            raise ValueError(
                f"corruption {corruption.name!r} cannot reach mean SSIM {target:g}: over its "
                f"strength range [{low:g}, {high:g}] ({corruption.strength_unit}) the mean SSIM "
                f"goes from {v_low:.4f} to {v_high:.4f} on these {x.shape[0]} images"
            )
        strengths.append(_solve(curve, target, tol))
    return strengths


def _solve(curve: _Curve, target: float, tol: float) -> float:
    s, v = curve.closest(target)
    if abs(v - target) <= tol:
        return s
    lo, hi = curve.bracket(target)
    for _ in range(_MAX_STEPS):
        mid = 0.5 * (lo + hi)
        v = curve(mid)
        if abs(v - target) <= tol:
            return mid
        lo, hi = (mid, hi) if v > target else (lo, mid)
    s, v = curve.closest(target)
    raise ValueError(
        f"corruption {curve.name!r} cannot reach mean SSIM {target:g} within {tol:g}: the SSIM "
        f"jumps across it near strength {s:.6g} (closest {v:.4f})"
    )


def corrupt_at_severity(
    name: str,
    x: torch.Tensor,
    severity: int,
    *,
    strengths: Sequence[float] | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Corrupt images at a severity 1..5 of :data:`SEVERITY_SSIM`.

    Args:
        name: A registered corruption.
        x: Clean images in ``[0, 1]``.
        severity: 1 (mildest) to ``len(SEVERITY_SSIM)``.
        strengths: Strengths per severity from :func:`calibrate` (calibrate once on a
            calibration set and reuse them); None calibrates on ``x`` itself.
        seed: Seed of the random draws.

    Returns:
        The corrupted images (shape, dtype and device of ``x``).

    Raises:
        ValueError: For a severity out of range, ``strengths`` of the wrong length, and the
            errors of :func:`calibrate` and :func:`corrupt`.

    Shape:
        - x: ``(B, C, H, W)`` or ``(B, C, D, H, W)``; output the same.
    """
    n = len(SEVERITY_SSIM)
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= n:
        raise ValueError(f"severity must be an int in [1, {n}], got {severity!r}")
    table = list(strengths) if strengths is not None else calibrate(name, x, seed=seed)
    if len(table) != n:
        raise ValueError(f"strengths must have {n} entries (one per severity), got {len(table)}")
    return corrupt(name, x, table[severity - 1], seed)
