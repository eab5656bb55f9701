"""Tests of the defence study's figures and report sections (built from a study document)."""

from __future__ import annotations

from typing import Any

import pytest

from medrobust.reporting import render_report
from medrobust.reporting.sections.study import (
    answer_section,
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
        "detectors": ["uad", "mahalanobis"],
        "fpr": 0.05,
        "attacks": [],
        "suite": "quick",
        "norm": "linf",
        "train_eps": 4 / 255,
    }


DETECTORS = ("uad", "mahalanobis")


def _answer() -> dict[str, Any]:
    option = {
        "labelled_fraction": 0.5,
        "kind": "detect",
        "option": "standard + uad",
        "risk": 0.15,
        "system_risk": 0.1,
        "false_alarm_rate": 0.05,
        "attack": "orthogonal-pgd",
        "cost_s": 3.25,
        "implausible": True,
    }
    retrain = {**option, "kind": "retrain", "option": "ssat", "risk": 0.5, "implausible": None}
    return {
        "target_risk": 0.2,
        "eps": EPS[-1],
        "eps_display": KEYS[-1],
        "sentences": ["With 50% of the labels <i>: detect."],
        "options": [option, retrain],
    }


def _document(metrics: dict[str, Any], adaptive: bool = True) -> dict[str, Any]:
    rows, risk, detection, plausibility = [], [], [], []
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
            for (e, k), det in ((ek, d) for ek in zip(EPS, KEYS, strict=True) for d in DETECTORS):
                risk.append(
                    {
                        "model": key,
                        "detector": det,
                        "eps": e,
                        "eps_display": k,
                        "classifier_risk": 0.5,
                        "system_risk": 0.2,
                        "system_risk_adaptive": 0.4 if adaptive else None,
                        "pair_risk": 0.3,
                        "pair_risk_adaptive": 0.45 if adaptive else None,
                        "false_alarm_rate": 0.05,
                    }
                )
                plausibility.append(
                    {
                        "model": key,
                        "detector": det,
                        "eps_display": k,
                        "half_eps_display": "x",
                        "implied_accuracy": 0.55,
                        "implied_ci95": [0.4, 0.7],
                        "pair_accuracy_half": None,
                        "reference": "ssat-100pct",
                        "reference_eps": 0.0,
                        "reference_accuracy": 0.9,
                        "adaptive": adaptive,
                        "implausible": False,
                    }
                )
                for attack, auroc in (("worst-case", 0.7), ("pgd-adaptive", 0.6),
                                      ("orthogonal-pgd", 0.3), ("fgsm", 0.8)):  # fmt: skip
                    detection.append(
                        {
                            "model": key,
                            "detector": det,
                            "attack": attack,
                            "adaptive": attack in ("pgd-adaptive", "orthogonal-pgd"),
                            "eps": e,
                            "eps_display": k,
                            "auroc": auroc,
                            "tpr_at_fpr": None,
                            "detection_rate": 0.4,
                            "n_adversarial": 3,
                        }
                    )
    doc = dict(metrics)
    doc.update(
        {
            "study": {
                "config": _config(adaptive),
                "summary": ["With 50% of the labels <i>: detect."],
                "answer": _answer(),
            },
            "defenses": rows,
            "detection": detection,
            "risk": risk,
            "plausibility": plausibility,
        }
    )
    return doc


def test_figures_have_one_panel_per_fraction_and_detector(metrics: dict[str, Any]) -> None:
    doc = _document(metrics)
    config = doc["study"]["config"]
    fig = robustness_figure(config, doc["defenses"])
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    assert list(fig.axes[0].lines[0].get_xdata()) == [0.0, *EPS]  # clean accuracy at eps = 0
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", *KEYS]
    risk = risk_comparison_figure(config, doc["risk"], doc["defenses"])
    assert len(risk.axes) == 4  # 2 detectors x 2 fractions
    assert all(len(ax.lines) == 4 for ax in risk.axes)  # solid and dashed per recipe
    assert risk.axes[2].get_title() == "50% labelled, mahalanobis"
    assert list(risk.axes[0].lines[1].get_ydata()) == [0.4, 0.4]  # the adaptive system risk
    plain = _document(metrics, adaptive=False)
    risk = risk_comparison_figure(plain["study"]["config"], plain["risk"], plain["defenses"])
    assert list(risk.axes[0].lines[1].get_ydata()) == [0.2, 0.2]
    det = detection_comparison_figure(config, doc["detection"], doc["defenses"])
    assert len(det.axes) == 4
    assert all(len(ax.lines) == 5 for ax in det.axes)  # suite + adaptive per recipe, chance
    # the dashed line is the strongest adaptive attack: the lowest AUROC of them (0.3)
    assert list(det.axes[0].lines[1].get_ydata()) == [0.3, 0.3]
    assert list(det.axes[0].lines[0].get_ydata()) == [0.7, 0.7]


def test_study_sections_render(metrics: dict[str, Any]) -> None:
    doc = _document(metrics)
    sections = study_sections(doc)
    assert [s.key for s in sections] == [None, "defenses", "detection", "risk", "plausibility",
                                         "study"]  # fmt: skip
    assert sections[0].title == "Answer: retrain, detect or both?"
    html = render_report(doc, extra_sections=sections)
    for title in ("Answer", "Defences", "Detection", "System risk", "Plausibility",
                  "Study settings"):  # fmt: skip
        assert title in html
    assert html.index("Answer: retrain") < html.index("Defences")
    assert "With 50% of the labels &lt;i&gt;: detect." in html  # the answer is escaped
    assert "robust acc. 4/255" in html
    assert "fgsm" not in str(sections[2].body)  # only worst-case and adaptive rows
    assert "orthogonal-pgd (adaptive)" in str(sections[2].body)
    assert "mahalanobis" in str(sections[3].body) and "pair risk" in str(sections[3].body)
    assert "Other results" not in html
    with pytest.raises(KeyError):
        study_sections({"defenses": []})


def test_answer_section_lists_every_option(metrics: dict[str, Any]) -> None:
    body = str(answer_section(_document(metrics)).body)
    assert body.index("<strong>") < body.index("<table")  # the sentence before the table
    assert "standard + uad" in body and "orthogonal-pgd" in body and "Target risk: 0.2." in body
    assert "<td>yes</td>" in body and "<td>no</td>" in body  # reaches the target / not
    assert "<td>-</td>" in body  # no detector, no plausibility check
