"""Tests of the defence study's figures and report sections (built from a study document)."""

from __future__ import annotations

from typing import Any

import pytest

from medrobust.reporting import render_report
from medrobust.reporting.sections.study import (
    detection_comparison_figure,
    risk_comparison_figure,
    robustness_figure,
    study_sections,
)

EPS = (1 / 255, 4 / 255)
KEYS = ("1/255", "4/255")


def _config(adaptive: bool = True) -> dict[str, Any]:
    return {
        "model": "small-cnn",
        "recipes": ["standard", "ssat"],
        "fractions": [0.5, 1.0],
        "eps": list(EPS),
        "adaptive": adaptive,
        "detector": "uad",
        "fpr": 0.05,
        "attacks": [],
        "suite": "quick",
        "norm": "linf",
        "train_eps": 4 / 255,
    }


def _document(metrics: dict[str, Any], adaptive: bool = True) -> dict[str, Any]:
    rows, risk, detection = [], [], []
    for f in (0.5, 1.0):
        for recipe in ("standard", "ssat"):
            key = f"{recipe}-{round(100 * f)}pct"
            rows.append(
                {
                    "model": key,
                    "recipe": recipe,
                    "labelled_fraction": f,
                    "n_labelled": int(24 * f),
                    "n_unlabelled": 0,
                    "epochs": 2,
                    "wall_time_s": 1.25,
                    "cost_ratio": None if recipe == "ssat" else 1.0,
                    "clean_accuracy": 0.9,
                    "robust_accuracy": {k: 0.5 for k in KEYS},
                    "checks_flagged": [],
                }
            )
            for e, k in zip(EPS, KEYS, strict=True):
                risk.append(
                    {
                        "model": key,
                        "eps": e,
                        "eps_display": k,
                        "classifier_risk": 0.5,
                        "system_risk": 0.2,
                        "system_risk_adaptive": 0.4 if adaptive else None,
                        "false_alarm_rate": 0.05,
                    }
                )
                for attack in ("worst-case", "pgd-adaptive", "fgsm"):
                    detection.append(
                        {
                            "model": key,
                            "attack": attack,
                            "eps": e,
                            "eps_display": k,
                            "auroc": 0.7,
                            "tpr_at_fpr": None,
                            "detection_rate": 0.4,
                            "n_adversarial": 3,
                        }
                    )
    doc = dict(metrics)
    doc.update(
        {
            "study": {"config": _config(adaptive), "summary": ["50% labels: <b>ok</b>."]},
            "defenses": rows,
            "detection": detection,
            "risk": risk,
        }
    )
    return doc


def test_figures_have_one_panel_per_fraction_and_one_line_per_recipe(
    metrics: dict[str, Any],
) -> None:
    doc = _document(metrics)
    config = doc["study"]["config"]
    fig = robustness_figure(config, doc["defenses"])
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    assert list(fig.axes[0].lines[0].get_xdata()) == [0.0, *EPS]  # clean accuracy at eps = 0
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", *KEYS]
    risk = risk_comparison_figure(config, doc["risk"], doc["defenses"])
    assert all(len(ax.lines) == 4 for ax in risk.axes)  # solid and dashed per recipe
    assert list(risk.axes[0].lines[1].get_ydata()) == [0.4, 0.4]  # the adaptive system risk
    plain = _document(metrics, adaptive=False)
    risk = risk_comparison_figure(plain["study"]["config"], plain["risk"], plain["defenses"])
    assert list(risk.axes[0].lines[1].get_ydata()) == [0.2, 0.2]
    det = detection_comparison_figure(config, doc["detection"], doc["defenses"])
    assert all(len(ax.lines) == 5 for ax in det.axes)  # suite + adaptive per recipe, chance


def test_study_sections_render(metrics: dict[str, Any]) -> None:
    doc = _document(metrics)
    sections = study_sections(doc)
    assert [s.key for s in sections] == ["defenses", "detection", "risk", "study"]
    html = render_report(doc, extra_sections=sections)
    for title in ("Defences", "Detection", "System risk", "Study settings"):
        assert title in html
    assert "&lt;b&gt;ok&lt;/b&gt;" in html  # the summary is escaped
    assert "robust acc. 4/255" in html
    assert "fgsm" not in str(sections[1].body)  # only worst-case and adaptive rows
    assert "pgd-adaptive" in str(sections[1].body)
    assert "Other results" not in html
    with pytest.raises(KeyError):
        study_sections({"defenses": []})
