"""Tests of the defence study's answer (options, the cheapest one reaching the target) and of
Tramer's check across the study's models, on hand-made study rows."""

from __future__ import annotations

from typing import Any

import pytest

from medrobust.pipelines.study_answer import (
    answer_sentences,
    study_options,
    study_plausibility,
)

U = 1 / 255
EPS = (2 * U, 4 * U)


def _model(recipe: str, f: float, wall: float, robust: dict[float, float]) -> dict[str, Any]:
    return {
        "model": f"{recipe}-{round(100 * f)}pct",
        "recipe": recipe,
        "labelled_fraction": f,
        "wall_time_s": wall,
        "clean_accuracy": 0.9,
        "robust_accuracy": {f"{round(e * 255)}/255": a for e, a in robust.items()},
    }


def _risk(model: str, det: str, eps: float, **kw: Any) -> dict[str, Any]:
    row = {
        "model": model,
        "detector": det,
        "eps": eps,
        "n": 100,
        "classifier_risk": 0.9,
        "system_risk": 0.1,
        "system_risk_adaptive": 0.2,
        "pair_risk": 0.15,
        "pair_risk_adaptive": 0.25,
        "false_alarm_rate": 0.05,
        "system_risk_by_attack": {"pgd-adaptive": 0.1, "orthogonal-pgd": 0.2},
    }
    row.update(kw)
    return row


def _study(**risk_kw: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [
        _model("standard", 1.0, 10.0, {2 * U: 0.2, 4 * U: 0.05}),
        _model("pgd-at", 1.0, 25.0, {2 * U: 0.7, 4 * U: 0.6}),
    ]
    risk = [_risk(r["model"], "uad", e, **risk_kw) for r in rows for e in EPS]
    return rows, risk


def _options(rows: Any, risk: Any, fit: float = 5.0) -> list[dict[str, Any]]:
    claims, _ = study_plausibility(rows, risk, EPS)
    fit_s = {r["model"]: {"uad": fit} for r in rows}
    return study_options(rows, risk, claims, fit_s, 4 * U)


def test_every_option_is_scored_by_its_pair_risk_and_cost() -> None:
    rows, risk = _study()
    opts = {o["option"]: o for o in _options(rows, risk)}
    assert sorted(opts) == ["pgd-at", "pgd-at + uad", "standard", "standard + uad"]
    assert opts["standard"]["kind"] == "none" and opts["pgd-at"]["kind"] == "retrain"
    assert opts["standard + uad"]["kind"] == "detect" and opts["pgd-at + uad"]["kind"] == "both"
    assert opts["pgd-at"]["risk"] == pytest.approx(0.4)  # 1 - robust accuracy at 4/255
    assert opts["standard + uad"]["risk"] == 0.25  # the adaptive pair risk, not 0.2 or 0.1
    assert opts["standard + uad"]["system_risk"] == 0.2
    assert opts["standard + uad"]["attack"] == "orthogonal-pgd"  # the strongest one
    assert opts["standard + uad"]["cost_s"] == 15.0  # training plus fitting the detector
    assert opts["pgd-at"]["cost_s"] == 25.0 and opts["pgd-at"]["false_alarm_rate"] == 0.0


def test_the_cheapest_option_under_the_target_is_named() -> None:
    rows, risk = _study()
    opts = _options(rows, risk)
    (line,) = answer_sentences(opts, [1.0], 0.3, 4 * U)
    # standard + uad (0.25, 15 s) is cheaper than pgd-at + uad (0.25, 30 s); pgd-at misses
    assert "the cheapest option with risk at most 0.3 is detect (standard + uad)" in line
    assert "With 100% of the labels at eps=4/255" in line and "15.0 s" in line
    # a detector so slow to fit that retraining is cheaper: the cost decides, not the risk
    (slow,) = answer_sentences(_options(rows, risk, fit=100.0), [1.0], 0.45, 4 * U)
    assert "is retrain (pgd-at) at risk 0.400" in slow


def test_false_alarms_count_against_a_detector() -> None:
    # the detector flags half the clean images: system risk 0 but pair risk 0.55
    rows, risk = _study(system_risk_adaptive=0.0, pair_risk_adaptive=0.55, false_alarm_rate=0.5)
    opts = _options(rows, risk)
    (line,) = answer_sentences(opts, [1.0], 0.45, 4 * U)
    assert "retrain (pgd-at)" in line and "uad" not in line


def test_no_option_reaching_the_target_is_said_plainly() -> None:
    rows, risk = _study()
    (line,) = answer_sentences(_options(rows, risk), [1.0], 0.1, 4 * U)
    assert "no option reaches risk 0.1: the lowest is detect (standard + uad) at risk 0.250" in (
        line
    )
    assert answer_sentences([], [1.0], 0.1, 4 * U) == []


def test_fractions_are_answered_separately() -> None:
    rows, risk = _study()
    low = _model("standard", 0.1, 2.0, {2 * U: 0.0, 4 * U: 0.0})
    rows.append(low)
    risk += [_risk(low["model"], "uad", e, pair_risk_adaptive=0.9) for e in EPS]
    lines = answer_sentences(_options(rows, risk), [0.1, 1.0], 0.3, 4 * U)
    assert len(lines) == 2 and lines[0].startswith("With 10% of the labels")
    assert "no option reaches" in lines[0] and "cheapest option" in lines[1]


def test_plausibility_uses_the_best_model_of_the_study() -> None:
    rows, risk = _study(pair_risk_adaptive=0.35)
    claims, checks = study_plausibility(rows, risk, EPS)
    at4 = [c for c in claims if c["eps"] == 4 * U]
    # 0.65 implied at 2/255: above standard's 0.2 there but not above pgd-at's 0.7
    assert {c["reference"] for c in at4} == {"pgd-at-100pct"}
    assert not any(c["implausible"] for c in at4)
    assert [c["code"] for c in checks] == ["MR202", "MR202"]
    assert checks[0]["message"].startswith("standard-100pct + uad")
    rows, risk = _study(pair_risk_adaptive=0.1)  # implies 0.9 at 2/255 > 0.7: implausible
    claims, checks = study_plausibility(rows, risk, EPS)
    assert all(c["implausible"] for c in claims if c["eps"] == 4 * U)
    assert checks[0]["status"] == "warn"
    opts = {o["option"]: o for o in _options(rows, risk)}
    assert opts["standard + uad"]["implausible"] is True and opts["standard"]["implausible"] is None
    (line,) = answer_sentences(list(opts.values()), [1.0], 0.2, 4 * U)
    assert "fails Tramer's plausibility check (MR202)" in line
