"""Tests of Tramer's plausibility check (MR202): what is compared with what, at which budget."""

from __future__ import annotations

from typing import Any

import pytest

from medrobust.evaluation.plausibility import (
    ReferenceClassifier,
    plausibility,
    plausibility_check,
)

U = 1 / 255


def _row(eps: float, pair: float, adaptive: float | None, n: int = 400) -> dict[str, Any]:
    return {"eps": eps, "n": n, "pair_risk": pair, "pair_risk_adaptive": adaptive}


def test_the_claim_at_eps_is_compared_with_the_reference_at_half_eps() -> None:
    # robust at 2: 0.7, at 4: 0.1; a claim of 0.5 at eps=4 implies 0.5 at eps/2 = 2, below 0.7
    ref = ReferenceClassifier("pgd-at", 0.9, {2.0: 0.7, 4.0: 0.1})
    (row,) = plausibility([_row(4.0, 0.5, 0.5)], [ref])
    assert row["half_eps"] == 2.0 and row["reference_eps"] == 2.0
    assert row["reference_accuracy"] == 0.7 and row["implied_accuracy"] == 0.5
    assert row["implausible"] is False  # a check reading the reference at eps would flag it
    (row,) = plausibility([_row(4.0, 0.2, 0.2)], [ref])
    assert row["implausible"] is True and row["reference"] == "pgd-at"


def test_the_claim_is_under_the_strongest_attack_and_counts_false_alarms() -> None:
    ref = ReferenceClassifier("std", 0.9, {1.0: 0.5})
    # non-adaptive pair risk 0.1 would imply 0.9 > 0.5; the adaptive one (0.6) implies 0.4
    (row,) = plausibility([_row(2.0, 0.1, 0.6)], [ref])
    assert row["adaptive"] is True and row["implied_accuracy"] == pytest.approx(0.4)
    assert row["implausible"] is False
    (row,) = plausibility([_row(2.0, 0.1, None)], [ref])  # only the suite ran: said so
    assert row["adaptive"] is False and row["implausible"] is True
    with pytest.raises(KeyError):
        plausibility([{"eps": 2.0, "n": 10, "system_risk_adaptive": 0.1}], [ref])


def test_the_best_reference_counts_and_missing_budgets_never_lower_it() -> None:
    weak = ReferenceClassifier("standard", 0.9, {1.0: 0.05, 3.0: 0.0})
    strong = ReferenceClassifier("pgd-at", 0.8, {1.0: 0.6, 3.0: 0.3})
    (row,) = plausibility([_row(4.0, 0.5, 0.5)], [weak, strong])
    # eps/2 = 2 is not measured: the budget below (1, accuracy 0.6) bounds it, not 3 (0.3)
    assert row["reference"] == "pgd-at" and row["reference_eps"] == 1.0
    assert row["reference_accuracy"] == 0.6 and row["implausible"] is False
    (alone,) = plausibility([_row(4.0, 0.5, 0.5)], [weak])
    assert alone["implausible"] is True  # the undefended classifier alone: 0.5 > 0.05
    # eps/2 below every measured budget: the clean accuracy is the bound
    (low,) = plausibility([_row(1.0, 0.05, 0.05)], [strong])
    assert low["reference_eps"] == 0.0 and low["reference_accuracy"] == 0.8
    assert low["implausible"] is True  # implies 0.95 at 0.5 > even the clean accuracy
    assert ReferenceClassifier("x", 0.9, {2 / 255: 0.4}).bound_at(4 / 255 / 2) == (0.4, 2 / 255)


def test_sampling_noise_does_not_raise_the_flag() -> None:
    ref = ReferenceClassifier("pgd-at", 0.9, {1.0: 0.5})
    (small,) = plausibility([_row(2.0, 0.4, 0.4, n=20)], [ref])  # 0.6 of 20: interval 0.39-0.78
    assert small["implied_ci95"][0] < 0.5 and small["implausible"] is False
    (large,) = plausibility([_row(2.0, 0.4, 0.4, n=2000)], [ref])
    assert large["implied_ci95"][0] > 0.5 and large["implausible"] is True


def test_the_pair_at_half_eps_is_reported_when_measured() -> None:
    ref = ReferenceClassifier("std", 0.9, {U: 0.5, 2 * U: 0.3})
    rows = plausibility([_row(U, 0.3, 0.35), _row(2 * U, 0.5, 0.6)], [ref])
    assert rows[0]["pair_accuracy_half"] is None
    assert rows[1]["pair_accuracy_half"] == pytest.approx(0.65)  # 1 - adaptive pair risk at 1
    assert rows[1]["half_eps_display"] == "1/255"


def test_the_check_names_every_implausible_budget() -> None:
    ref = ReferenceClassifier("pgd-at-100pct", 0.9, {U: 0.3, 2 * U: 0.1})
    rows = plausibility([_row(2 * U, 0.2, 0.2), _row(4 * U, 0.2, None)], [ref])
    check = plausibility_check(rows, "detector 'uad'")
    assert check["code"] == "MR202" and check["status"] == "warn"
    assert "eps=2/255" in check["message"] and "eps=4/255" in check["message"]
    assert "pgd-at-100pct" in check["message"] and "non-adaptive attacks only" in check["message"]
    fine = plausibility_check(plausibility([_row(2 * U, 0.9, 0.9)], [ref]), "detector 'uad'")
    assert fine["status"] == "pass" and "closest: eps=2/255" in fine["message"]
    assert plausibility_check([], "d")["status"] == "pass"


def test_bad_input() -> None:
    ref = ReferenceClassifier("std", 0.9, {1.0: 0.5})
    with pytest.raises(ValueError, match="at least one reference"):
        plausibility([_row(1.0, 0.1, 0.1)], [])
    with pytest.raises(ValueError, match=r"pair_risk_adaptive must be in \[0, 1\]"):
        plausibility([_row(1.0, 0.1, 1.5)], [ref])
    with pytest.raises(ValueError, match="n=0: no samples"):
        plausibility([_row(1.0, 0.1, 0.1, n=0)], [ref])
    with pytest.raises(ValueError, match=r"clean_accuracy must be in \[0, 1\]"):
        ReferenceClassifier("bad", 1.2, {})
    with pytest.raises(ValueError, match="budgets must be positive"):
        ReferenceClassifier("bad", 0.5, {0.0: 0.5})
    with pytest.raises(TypeError, match="must be a number"):
        ReferenceClassifier("bad", 0.5, {1.0: "high"})  # type: ignore[dict-item]
