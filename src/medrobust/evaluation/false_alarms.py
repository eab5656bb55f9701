"""False alarms that hold: the clean false-alarm rate of a detector measured on new data, beside
the nominal rate its threshold was set for, and the sanity check MR201.

A detector's threshold is the ``(1 - fpr)`` quantile of its scores on clean calibration images
(``fpr`` is the *nominal* rate). On the clean test split the share of flagged images is the
*measured* rate; it differs from the nominal one by sampling noise (a few hundred calibration
images pin a 5% quantile only loosely) and, worse, by a shift between the calibration and the
test data (calibration on the images the statistics were fitted on, for instance). The measured
rate is reported with its Wilson 95% interval; check MR201 warns when the nominal rate lies
outside that interval, and every system risk is computed at the measured rate (the detector's
real threshold on the test data), never the nominal one.

References:
    Wilson, JASA 1927 (score interval); Li, Pan & Zhu, arXiv:2006.13555, 2020 (false-alarm
    rate as the clean-side cost of a detector).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from medrobust.evaluation.checks import check_row
from medrobust.evaluation.records import rate_with_ci

__all__ = ["false_alarm_check", "false_alarms"]

CODE = "MR201"


def false_alarms(flagged: torch.Tensor, nominal: float) -> dict[str, Any]:
    """The measured clean false-alarm rate beside the nominal one.

    Args:
        flagged: Whether the detector flagged each clean test image ``(N,)`` (bool).
        nominal: The false-positive rate the threshold was calibrated for, in ``(0, 1)``.

    Returns:
        ``{"nominal", "measured", "ci95", "n", "n_flagged", "consistent"}``: ``measured`` is
        None and ``consistent`` None when ``N == 0``; ``consistent`` says whether ``nominal``
        lies inside the Wilson 95% interval ``ci95`` of the measured rate.

    Raises:
        TypeError: If ``flagged`` is not a tensor.
        ValueError: If it is not 1-D or ``nominal`` is not in ``(0, 1)``.

    Shape:
        - flagged: ``(N,)``.
    """
    if not isinstance(flagged, torch.Tensor):
        raise TypeError(f"flagged must be a torch.Tensor, got {type(flagged).__name__}")
    if flagged.ndim != 1:
        raise ValueError(f"flagged must be a (N,) tensor, got shape {tuple(flagged.shape)}")
    if isinstance(nominal, bool) or not isinstance(nominal, (int, float)):
        raise ValueError(f"nominal must be a number in (0, 1), got {nominal!r}")
    if not (math.isfinite(nominal) and 0.0 < nominal < 1.0):
        raise ValueError(f"nominal must be in (0, 1), got {nominal!r}")
    n = int(flagged.numel())
    hits = int(flagged.bool().sum())
    measured, ci = rate_with_ci(hits, n)
    consistent = None if n == 0 else bool(ci[0] <= nominal <= ci[1])
    return {
        "nominal": float(nominal),
        "measured": measured,
        "ci95": ci,
        "n": n,
        "n_flagged": hits,
        "consistent": consistent,
    }


def false_alarm_check(report: dict[str, Any], who: str) -> dict[str, Any]:
    """Check MR201 on a :func:`false_alarms` report.

    Args:
        report: The output of :func:`false_alarms`.
        who: What is checked, for the message (e.g. ``"detector 'uad'"``).

    Returns:
        A check row: ``warn`` when the nominal rate lies outside the Wilson 95% interval of the
        measured one (or nothing was measured), else ``pass``.
    """
    nominal = 100 * report["nominal"]
    if report["measured"] is None:
        return check_row(CODE, "warn", f"{who}: no clean image to measure false alarms on")
    lo, hi = (100 * v for v in report["ci95"])
    measured = 100 * report["measured"]
    what = (
        f"{who}: clean false-alarm rate {measured:.1f}% on {report['n']} test images "
        f"(95% interval {lo:.1f}%-{hi:.1f}%), nominal {nominal:g}%"
    )
    if report["consistent"]:
        return check_row(CODE, "pass", what)
    side = "more" if measured > nominal else "fewer"
    return check_row(
        CODE,
        "warn",
        f"{what}: {side} false alarms than the threshold was set for; the calibration images "
        "do not represent the test data (or were the fit images); every risk here is at the "
        "measured rate",
    )
