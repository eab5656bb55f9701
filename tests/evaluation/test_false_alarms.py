"""False alarms that hold: the measured clean false-alarm rate beside the nominal one, and
check MR201."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.evaluation.checks import CHECKS
from medrobust.evaluation.false_alarms import false_alarm_check, false_alarms
from medrobust.evaluation.records import wilson_interval


def _flags(hits: int, n: int) -> torch.Tensor:
    out = torch.zeros(n, dtype=torch.bool)
    out[:hits] = True
    return out


def test_measured_rate_with_its_wilson_interval() -> None:
    report = false_alarms(_flags(15, 100), 0.05)
    assert report["measured"] == 0.15 and report["n"] == 100 and report["n_flagged"] == 15
    assert report["ci95"] == list(wilson_interval(15, 100))
    assert report["nominal"] == 0.05 and report["consistent"] is False  # 5% lies below 9.3%
    assert false_alarms(_flags(6, 100), 0.05)["consistent"] is True


def test_check_passes_inside_and_warns_outside_the_interval() -> None:
    assert "MR201" in CHECKS
    ok = false_alarm_check(false_alarms(_flags(6, 100), 0.05), "detector 'uad'")
    assert ok["code"] == "MR201" and ok["status"] == "pass"
    assert "6.0% on 100 test images" in ok["message"] and "nominal 5%" in ok["message"]
    many = false_alarm_check(false_alarms(_flags(15, 100), 0.05), "detector 'uad'")
    assert many["status"] == "warn" and "more false alarms than" in many["message"]
    few = false_alarm_check(false_alarms(_flags(0, 200), 0.05), "detector 'uad'")
    assert few["status"] == "warn" and "fewer false alarms" in few["message"]
    # the interval narrows with n: 7% passes on 100 images and fails on 2,000
    assert false_alarms(_flags(7, 100), 0.05)["consistent"] is True
    assert false_alarms(_flags(140, 2000), 0.05)["consistent"] is False


def test_nothing_measured_is_a_warning_not_a_pass() -> None:
    report = false_alarms(torch.zeros(0, dtype=torch.bool), 0.05)
    assert report["measured"] is None and report["consistent"] is None
    assert all(math.isnan(v) for v in report["ci95"])
    assert false_alarm_check(report, "detector 'uad'")["status"] == "warn"


def test_bad_input() -> None:
    with pytest.raises(TypeError, match=r"flagged must be a torch\.Tensor, got list"):
        false_alarms([True, False], 0.05)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"flagged must be a \(N,\) tensor, got shape \(2, 2\)"):
        false_alarms(torch.zeros(2, 2, dtype=torch.bool), 0.05)
    with pytest.raises(ValueError, match=r"nominal must be in \(0, 1\), got 1.5"):
        false_alarms(_flags(1, 4), 1.5)
    with pytest.raises(ValueError, match="nominal must be a number"):
        false_alarms(_flags(1, 4), "5%")  # type: ignore[arg-type]
