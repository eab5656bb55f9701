"""Calibration of detectors: the held-out split, the standardisation of component scores and the
threshold at a clean false-positive rate.

The threshold is the ``(1 - fpr)`` quantile (``interpolation="higher"``) of the combined scores of
clean calibration images, so about ``fpr`` of clean inputs raise a (false) alarm.

References:
    Ma et al., ICLR 2018; Lee et al., NeurIPS 2018 (thresholds at a fixed clean FPR).
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["calibration_split", "check_fraction", "standardiser", "threshold_at_fpr"]


def check_fraction(name: str, value: Any) -> float:
    """Validate a fraction in the open interval ``(0, 1)``.

    Raises:
        TypeError: If ``value`` is not a number.
        ValueError: If it is not in ``(0, 1)``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return v


def calibration_split(
    n: int, fraction: float, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded split of ``n`` clean images into calibration and fit indices.

    At least 2 images go to each side; ``round(fraction * n)`` to calibration otherwise.

    Args:
        n: Number of clean images (>= 4).
        fraction: Share held out for calibration.
        seed: Seed of the permutation.
        device: Device of the returned indices.

    Returns:
        ``(calibration_indices, fit_indices)``.

    Raises:
        ValueError: If ``n < 4``.
    """
    if n < 4:
        raise ValueError(
            f"the detector needs at least 4 clean images to fit and calibrate, got {n}"
        )
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).to(device)
    n_cal = min(n - 2, max(2, round(fraction * n)))
    return perm[:n_cal], perm[n_cal:]


def standardiser(comp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of component scores ``(N, M)``, per component.

    A standard deviation that is not finite or below ``1e-8`` (one sample, a constant component)
    is replaced by 1.

    Returns:
        ``(mu (M,), sigma (M,))``.
    """
    mu = comp.mean(dim=0)
    sd = comp.std(dim=0) if comp.shape[0] > 1 else torch.ones_like(mu)
    return mu, torch.where(torch.isfinite(sd) & (sd > 1e-8), sd, torch.ones_like(sd))


def threshold_at_fpr(scores: torch.Tensor, fpr: float) -> tuple[float, float]:
    """The threshold flagging about ``fpr`` of the clean scores, and their spread.

    Args:
        scores: Combined scores of clean calibration images ``(N,)``, ``N >= 1``.
        fpr: Target clean false-positive rate in ``(0, 1)``.

    Returns:
        ``(threshold, scale)``: the ``(1 - fpr)`` quantile and the standard deviation of the
        scores (1 where it is undefined or below ``1e-8``).
    """
    q = torch.quantile(scores.double(), 1.0 - fpr, interpolation="higher")
    std = float(scores.double().std()) if scores.numel() > 1 else 1.0
    return float(q), (std if math.isfinite(std) and std > 1e-8 else 1.0)
