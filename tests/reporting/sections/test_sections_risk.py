"""Tests of the detection, system-risk and defence report sections (built from plain rows)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from matplotlib.figure import Figure

from medrobust.reporting import render_report
from medrobust.reporting.sections.risk import (
    defense_section,
    detection_figure,
    plausibility_section,
    risk_figure,
    risk_sections,
)

EPS = [(0.05, "0.05"), (0.15, "0.15")]


def _risk_rows(adaptive: bool = True) -> list[dict[str, Any]]:
    return [
        {
            "eps": e,
            "eps_display": d,
            "classifier_risk": 0.3 + k * 0.4,
            "system_risk": 0.1 + k * 0.2,
            "system_risk_adaptive": (0.2 + k * 0.5) if adaptive else None,
            "false_alarm_rate": 0.05,
            "clean_error": 0.1,
            "n": 40,
        }
        for k, (e, d) in enumerate(EPS)
    ]


def _detection_rows() -> list[dict[str, Any]]:
    rows = []
    for e, d in EPS:
        for attack in ("worst-case", "fgsm", "pgd-adaptive"):
            rows.append(
                {
                    "attack": attack,
                    "eps": e,
                    "eps_display": d,
                    "adaptive": attack == "pgd-adaptive",
                    "auroc": None if attack == "fgsm" else 0.8,
                    "tpr_at_fpr": 0.5,
                    "detection_rate": 0.6,
                    "false_alarm_rate": 0.05,
                    "n_clean": 40,
                    "n_adversarial": 12,
                }
            )
    return rows


def _metrics(base: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    out["detection"] = {
        "detector": {
            "name": "uad<b>",
            "threshold": 1.23456,
            "fpr": 0.1,
            "n_calibration": 30,
            "n_fit": 70,
        },
        "fpr": 0.05,
        "results": _detection_rows(),
    }
    out["risk"] = _risk_rows()
    return out


def test_risk_figure_draws_each_risk_and_the_false_alarm_line() -> None:
    fig = risk_figure(_risk_rows(), title="risk $1")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) == 4  # three risks + the false-alarm line
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.05", "0.15"]
    assert ax.get_title() == r"risk \$1"
    no_adaptive = risk_figure(_risk_rows(adaptive=False))
    assert len(no_adaptive.axes[0].lines) == 3
    with pytest.raises(ValueError, match="no risk rows"):
        risk_figure([])


def test_detection_figure_has_one_line_per_attack_and_chance() -> None:
    fig = detection_figure(_detection_rows(), fpr=0.1)
    auroc, tpr = fig.axes[0], fig.axes[1]
    assert len(auroc.lines) == 4 and len(tpr.lines) == 3  # 3 attacks (+ chance on AUROC)
    assert tpr.get_ylabel() == "TPR at 10% FPR"
    fgsm = auroc.lines[1].get_ydata()
    assert all(math.isnan(v) for v in fgsm)  # undefined AUROC drawn as a gap
    with pytest.raises(ValueError, match="no detection rows"):
        detection_figure([])


def test_risk_sections_render_from_the_metrics_dictionary(metrics: dict[str, Any]) -> None:
    full = _metrics(metrics)
    sections = risk_sections(full)
    assert [s.key for s in sections] == ["detection", "risk"]
    html = render_report(full, extra_sections=[*sections, defense_section([{"recipe": "x"}])])
    assert "System risk" in html and "Detection" in html and "pgd-adaptive (adaptive)" in html
    assert "uad&lt;b&gt;" in html and "uad<b>" not in html  # escaped
    assert "threshold 1.235 at a clean false-positive rate of 10%" in html
    assert "Other results" not in html
    with pytest.raises(ValueError, match="no 'detection' results"):
        risk_sections({"risk": _risk_rows()})
    with pytest.raises(ValueError, match="no 'risk' rows"):
        risk_sections({"detection": full["detection"], "risk": []})


def _plausibility_rows() -> list[dict[str, Any]]:
    base = {
        "half_eps_display": "0.025",
        "implied_ci95": [0.5, 0.7],
        "pair_accuracy_half": None,
        "reference": "pgd-at<i>",
        "adaptive": True,
    }
    return [
        {**base, "eps_display": "0.05", "implied_accuracy": 0.6, "reference_accuracy": 0.8,
         "reference_eps": 0.0, "implausible": False},
        {**base, "eps_display": "0.15", "implied_accuracy": 0.6, "reference_accuracy": 0.3,
         "reference_eps": 0.05, "implausible": True, "adaptive": False},
    ]  # fmt: skip


def test_plausibility_section_follows_the_rows(metrics: dict[str, Any]) -> None:
    full = {**_metrics(metrics), "plausibility": _plausibility_rows()}
    sections = risk_sections(full)
    assert [s.key for s in sections] == ["detection", "risk", "plausibility"]
    body = str(sections[2].body)
    assert "0.600 (0.5-0.7)" in body and "pgd-at&lt;i&gt; (at clean)" in body
    assert "pgd-at&lt;i&gt; (at 0.05)" in body and "no (MR202)" in body and "yes" in body
    assert "0.15 (non-adaptive only)" in body
    html = render_report(full, extra_sections=sections)
    assert "Other results" not in html and "Tramer" in html
    with pytest.raises(ValueError, match="no plausibility rows"):
        plausibility_section([])


def test_defense_section() -> None:
    section = defense_section([{"recipe": "standard", "wall_time_s": 1.5, "epochs": 3}])
    assert section.key == "defense" and section.title == "Defence"
    assert "standard" in str(section.body) and "training cost" in str(section.body)
    with pytest.raises(ValueError, match="no training records"):
        defense_section([])
