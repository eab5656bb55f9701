"""Tests of the system risk of classifier + detector and of the detection metrics."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from medrobust.detectors import NotFittedError, create_detector
from medrobust.evaluation import evaluate
from medrobust.evaluation.risk import (
    RiskAssessment,
    assess_detector,
    detection_metrics,
    tpr_at_fpr,
)
from tests.attacks.models import batch, tiny_cnn

EPS = [0.05, 0.15]


def _loader() -> list[dict[str, torch.Tensor]]:
    x = batch(n=40, size=8, seed=11)
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 2, (40,), generator=g)
    return [{"image": x[i : i + 20], "label": y[i : i + 20]} for i in (0, 20)]


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    model = tiny_cnn()
    det = create_detector("uad", fpr=0.1).fit(model, batch(n=200, size=8, seed=5))
    loader = _loader()
    ev = evaluate(
        model,
        loader,
        attacks=["fgsm", {"name": "pgd", "steps": 10}],
        eps=EPS,
        checks=False,
        keep_adversarial=40,
    )
    risk = assess_detector(model, det, loader, ev, adaptive_params={"steps": 15})
    return {"model": model, "det": det, "loader": loader, "ev": ev, "risk": risk}


def test_tpr_at_fpr_matches_scikit_learn_roc() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(300, generator=g, dtype=torch.float64)
    adv = torch.randn(120, generator=g, dtype=torch.float64) + 1.3
    for fpr in (0.0, 0.01, 0.05, 0.2):
        f, t, _ = metrics.roc_curve(
            np.r_[np.zeros(300), np.ones(120)], np.r_[clean.numpy(), adv.numpy()]
        )
        assert tpr_at_fpr(clean, adv, fpr) == pytest.approx(float(t[f <= fpr + 1e-12].max()))
    assert math.isnan(tpr_at_fpr(clean, torch.empty(0, dtype=torch.float64)))
    with pytest.raises(ValueError, match=r"fpr must be in \[0, 1\)"):
        tpr_at_fpr(clean, adv, 1.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        tpr_at_fpr(torch.tensor([0.0, math.nan]), adv)


def test_detection_metrics() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    clean = torch.tensor([0.1, 0.2, 0.3, 0.9])
    adv = torch.tensor([0.25, 0.8, 1.0])
    out = detection_metrics(clean, adv, threshold=0.5)
    assert out["false_alarm_rate"] == 0.25 and out["detection_rate"] == pytest.approx(2 / 3)
    assert out["auroc"] == pytest.approx(
        metrics.roc_auc_score([0, 0, 0, 0, 1, 1, 1], torch.cat([clean, adv]).numpy())
    )
    assert out["n_clean"] == 4 and out["n_adversarial"] == 3
    empty = detection_metrics(clean, torch.empty(0), threshold=0.5)
    assert empty["auroc"] is None and empty["detection_rate"] is None


def test_risk_rows_agree_with_the_audit_and_are_ordered(setup: dict[str, Any]) -> None:
    risk: RiskAssessment = setup["risk"]
    ev = setup["ev"]
    det = setup["det"]
    x = torch.cat([b["image"] for b in setup["loader"]])
    far = float(det.predict(x).float().mean())
    prev_sys = prev_ad = -1.0
    for row, e in zip(risk.risk, EPS, strict=True):
        assert row["classifier_risk"] == pytest.approx(1 - ev.robust_accuracy(None, e))
        assert row["false_alarm_rate"] == pytest.approx(far)
        assert row["system_risk"] <= row["classifier_risk"] + 1e-9
        assert row["system_risk_adaptive"] >= row["system_risk"]
        assert row["system_risk"] >= prev_sys and row["system_risk_adaptive"] >= prev_ad
        prev_sys, prev_ad = row["system_risk"], row["system_risk_adaptive"]
    names = {(d["attack"], d["eps"]) for d in risk.detection}
    for e in EPS:
        for a in ("worst-case", "fgsm", "pgd", "pgd-adaptive"):
            assert (a, e) in names
    assert risk.risk[-1]["system_risk_adaptive"] > risk.risk[-1]["system_risk"]


def test_false_alarms_are_measured_on_the_test_inputs(setup: dict[str, Any]) -> None:
    model, det, loader, ev = setup["model"], setup["det"], setup["loader"], setup["ev"]
    risk: RiskAssessment = setup["risk"]
    x = torch.cat([b["image"] for b in loader])
    measured = float(det.predict(x).double().mean())
    alarms = risk.false_alarms
    assert alarms["measured"] == pytest.approx(measured) and alarms["nominal"] == 0.1
    assert alarms["n"] == 40
    for row in risk.risk:
        assert row["false_alarm_ci95"] == alarms["ci95"]
        assert row["nominal_false_alarm_rate"] == 0.1
    assert [c["code"] for c in risk.checks] == ["MR201", "MR202"]
    metrics: dict[str, Any] = {"checks": [{"code": "MR106"}]}
    risk.merge_into(metrics)
    assert [c["code"] for c in metrics["checks"]] == ["MR106", "MR201", "MR202"]
    assert metrics["plausibility"] == risk.plausibility
    assert metrics["detection"]["false_alarms"] == alarms
    keep = det.threshold
    try:  # a threshold that flags half the clean test images: the check says so
        det.set_threshold(float(det.score(x).median()))
        moved = assess_detector(model, det, loader, ev, attacks=[], adaptive=False)
        assert moved.false_alarms["measured"] >= 0.4
        assert (
            moved.checks[0]["status"] == "warn"
            and "more false alarms" in (moved.checks[0]["message"])
        )
        assert moved.risk[0]["false_alarm_rate"] == moved.false_alarms["measured"]
    finally:
        det.set_threshold(keep)


def test_every_adaptive_attack_and_the_worst_case_over_them(setup: dict[str, Any]) -> None:
    model, det, loader, ev = setup["model"], setup["det"], setup["loader"], setup["ev"]
    names = ["pgd-adaptive", "orthogonal-pgd", "feature-matching"]
    risk = assess_detector(
        model, det, loader, ev, attacks=[], adaptive_attacks=names, adaptive_params={"steps": 5}
    )
    for row in risk.risk:
        by = row["system_risk_by_attack"]
        assert sorted(by) == sorted(names)
        assert row["system_risk_adaptive"] >= max(by.values()) - 1e-12
        assert min(by.values()) >= row["system_risk"] - 1e-12
    rows = {(d["attack"], d["eps"]) for d in risk.detection if d["adaptive"]}
    assert rows == {(n, e) for n in names for e in EPS}
    with pytest.raises(ValueError, match="must know the detector"):
        assess_detector(model, det, loader, ev, adaptive_attacks=["pgd"])
    with pytest.raises(ValueError, match=r"takes \['mode'\]"):
        assess_detector(
            model, det, loader, ev, adaptive_attacks=["pgd-adaptive"], adaptive_params={"mode": 1}
        )


def test_threshold_extremes_give_exact_risks(setup: dict[str, Any]) -> None:
    model, det, loader, ev = setup["model"], setup["det"], setup["loader"], setup["ev"]
    keep = det.threshold
    try:
        det.set_threshold(float("inf"))  # never flags: the system is the classifier
        never = assess_detector(model, det, loader, ev, adaptive=False)
        for row in never.risk:
            assert row["system_risk"] == pytest.approx(row["classifier_risk"])
            assert row["pair_risk"] == pytest.approx(row["classifier_risk"])
            assert row["false_alarm_rate"] == 0.0 and row["system_risk_adaptive"] is None
            assert row["pair_risk_adaptive"] is None
        det.set_threshold(float("-inf"))  # flags everything: nothing gets through
        always = assess_detector(model, det, loader, ev, adaptive_params={"steps": 3})
        for row in always.risk:
            assert row["system_risk"] == 0.0 and row["system_risk_adaptive"] == 0.0
            assert row["false_alarm_rate"] == 1.0
            # every clean input is a false alarm: the pair classifies nothing
            assert row["pair_risk"] == 1.0 and row["pair_risk_adaptive"] == 1.0
        assert not any(p["implausible"] for p in always.plausibility)
    finally:
        det.set_threshold(keep)


def test_bad_inputs(setup: dict[str, Any]) -> None:
    model, det, loader, ev = setup["model"], setup["det"], setup["loader"], setup["ev"]
    with pytest.raises(NotFittedError, match="not fitted"):
        assess_detector(model, create_detector("uad"), loader, ev)
    with pytest.raises(ValueError, match="fitted for another model object"):
        assess_detector(tiny_cnn(seed=2), det, loader, ev)
    with pytest.raises(
        ValueError, match="the loader gives 20 samples but the evaluation recorded 40"
    ):
        assess_detector(model, det, loader[:1], ev)
    shuffled = [{"image": b["image"].flip(0), "label": b["label"].flip(0)} for b in loader]
    if not all(torch.equal(a["label"], b["label"]) for a, b in zip(loader, shuffled, strict=True)):
        with pytest.raises(ValueError, match="labels differ"):
            assess_detector(model, det, shuffled, ev)
    few = evaluate(model, loader, attacks=["fgsm"], eps=EPS, checks=False, keep_adversarial=1)
    with pytest.raises(ValueError, match="keep_adversarial=40"):
        assess_detector(model, det, loader, few, adaptive=False)


def test_the_assessment_renders_as_report_sections(setup: dict[str, Any]) -> None:
    from medrobust.reporting import render_report
    from medrobust.reporting.sections.risk import risk_sections

    risk: RiskAssessment = setup["risk"]
    metrics = dict(setup["ev"].metrics)
    metrics.update(risk.to_metrics())
    sections = risk_sections(metrics)
    assert [s.key for s in sections] == ["detection", "risk", "plausibility"]
    assert len(sections[1].figures[0].axes[0].lines) == 4  # three risks + false-alarm line
    assert len(sections[0].figures[0].axes[0].lines) == 5  # 4 attacks + chance
    html = render_report(metrics, extra_sections=sections)
    assert "System risk" in html and "Detection" in html and "pgd-adaptive" in html
    assert "Plausibility of the detector" in html and "implied robust acc. at eps/2" in html
    assert "Other results" not in html


def test_pair_risk_counts_every_clean_failure_and_feeds_mr202(setup: dict[str, Any]) -> None:
    from medrobust.evaluation.plausibility import ReferenceClassifier

    model, det, loader, ev = setup["model"], setup["det"], setup["loader"], setup["ev"]
    risk: RiskAssessment = setup["risk"]
    x = torch.cat([b["image"] for b in loader])
    y = torch.cat([b["label"] for b in loader])
    with torch.no_grad():
        clean_failed = (model(x).argmax(1) != y) | det.predict(x).bool()
    for row in risk.risk:
        assert row["pair_risk"] >= float(clean_failed.double().mean()) - 1e-12
        assert row["pair_risk"] >= row["system_risk"] and row["pair_risk_adaptive"] >= max(
            row["pair_risk"], row["system_risk_adaptive"]
        )
    rows = risk.plausibility
    assert [r["eps"] for r in rows] == EPS
    for r, row in zip(rows, risk.risk, strict=True):
        assert r["implied_accuracy"] == pytest.approx(1 - row["pair_risk_adaptive"])
        assert r["reference"] == "the guarded classifier" and r["adaptive"] is True
    # a reference classifier as robust as the clean accuracy everywhere: nothing implausible
    best = ReferenceClassifier("perfect", 1.0, {e: 1.0 for e in EPS})
    again = assess_detector(
        model, det, loader, ev, attacks=[], adaptive_params={"steps": 3}, references=[best]
    )
    assert all(r["reference"] == "perfect" and not r["implausible"] for r in again.plausibility)
    assert again.checks[1]["code"] == "MR202" and again.checks[1]["status"] == "pass"
