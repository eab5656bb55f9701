"""Tests of the defence study (tiny settings); the ``defend`` and ``detect`` commands are tested in
tests/cli."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medrobust.pipelines.study import StudyConfig, run_study

TINY_DATA = {"size": 32, "cache": False}
TINY_SPLITS = {"train": 24, "val": 16, "test": 16}


def _tiny(**kw: Any) -> StudyConfig:
    base: dict[str, Any] = {
        "data_params": dict(TINY_DATA),
        "split_sizes": dict(TINY_SPLITS),
        "model_params": {"width": 4},
        "recipes": ("standard", "ssat"),
        "fractions": (0.5, 1.0),
        "epochs": 1,
        "batch_size": 8,
        "eps": (4 / 255,),
        "checks": False,
        "adaptive_params": {"steps": 2, "weight": [1.0]},
    }
    base.update(kw)
    return StudyConfig(**base)


def test_study_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match=r"labelled_fraction must be in \(0, 1\]"):
        _tiny(fractions=(0.1, 1.5))
    with pytest.raises(ValueError, match="Did you mean 'pgd-at'"):
        _tiny(recipes=("standard", "pgd-ta"))
    with pytest.raises(ValueError, match="unknown detector 'uda'"):
        _tiny(detectors=("uad", "uda"))
    with pytest.raises(ValueError, match="detectors must be distinct"):
        _tiny(detectors=("uad", "uad"))
    with pytest.raises(ValueError, match="at least one of detectors"):
        _tiny(detectors=())
    with pytest.raises(ValueError, match=r"recipe_params names \['trades'\]"):
        _tiny(recipe_params={"trades": {"beta": 1.0}})
    with pytest.raises(ValueError, match=r"detector_params names \['lid'\]"):
        _tiny(detector_params={"lid": {"k": 3}})
    with pytest.raises(ValueError, match=r"target_risk must be a number in \[0, 1\]"):
        _tiny(target_risk=1.5)
    with pytest.raises(ValueError, match=r"target_eps 0\.5 is not one of the budgets"):
        _tiny(target_eps=0.5)
    assert _tiny(eps=(1 / 255, 4 / 255)).answer_eps == 4 / 255
    assert _tiny(eps=(1 / 255, 4 / 255), target_eps=1 / 255).answer_eps == 1 / 255
    assert _tiny(detectors="mahalanobis").detectors == ("mahalanobis",)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        _tiny(epochs=0)
    cfg = _tiny(recipes=("standard", "pgd-at", "ssat"), recipe_params={"ssat": {"lam": 1.0}})
    assert cfg.params_for("pgd-at") == {"eps": 4 / 255, "norm": "linf", "steps": 7}
    assert cfg.params_for("ssat")["lam"] == 1.0 and cfg.params_for("ssat")["eps_min"] is None
    assert cfg.params_for("standard") == {}


@pytest.mark.slow
def test_study_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "study"
    messages: list[str] = []
    cfg = _tiny(
        detectors=("uad", "feature-squeezing"),
        adaptive_attacks=("pgd-adaptive", "orthogonal-pgd"),
        target_risk=0.9,
        eps=(2 / 255, 4 / 255),
    )
    result = run_study(cfg, out, progress=messages.append)
    m = result.metrics
    assert (out / "report.html").is_file() and (out / "config.yaml").is_file()
    assert json.loads((out / "study.json").read_text())["title"] == m["title"]
    rows = {r["model"]: r for r in m["defenses"]}
    assert sorted(rows) == ["ssat-100pct", "ssat-50pct", "standard-100pct", "standard-50pct"]
    half = rows["ssat-50pct"]
    assert half["n_labelled"] + half["n_unlabelled"] == 24 and 11 <= half["n_labelled"] <= 13
    assert rows["standard-50pct"]["n_labelled"] == half["n_labelled"]
    assert rows["standard-50pct"]["n_unlabelled"] == 0
    assert rows["ssat-100pct"]["n_unlabelled"] == 24  # the training images, without labels
    assert rows["standard-50pct"]["epochs"] == 2  # equal steps: twice the epochs at 50%
    assert rows["standard-100pct"]["cost_ratio"] == 1.0
    for key in rows:
        folder = out / "models" / key
        for name in ("uad", "feature-squeezing"):
            assert (folder / "detectors" / name / "detector.json").is_file()
        audit = json.loads((folder / "audit" / "metrics.json").read_text())
        assert audit["clean"]["accuracy"] == rows[key]["clean_accuracy"]
        assert audit["defense"][0]["recipe"] == rows[key]["recipe"]
        assert sorted(audit["detectors"]) == ["feature-squeezing", "uad"]
        assert [c["code"] for c in audit["checks"]].count("MR202") == 2
        audit_html = (folder / "audit" / "report.html").read_text()
        assert "System risk: feature-squeezing" in audit_html
    assert {(r["model"], r["detector"]) for r in m["risk"]} == {
        (k, d) for k in rows for d in ("uad", "feature-squeezing")
    }
    for r in m["risk"]:
        assert r["system_risk"] <= r["classifier_risk"] + 1e-9
        assert r["system_risk_adaptive"] >= r["system_risk"]
        assert sorted(r["system_risk_by_attack"]) == ["orthogonal-pgd", "pgd-adaptive"]
        assert r["pair_risk_adaptive"] >= max(r["system_risk_adaptive"], r["pair_risk"])
    adaptive_rows = {(d["detector"], d["attack"]) for d in m["detection"] if d["adaptive"]}
    assert len(adaptive_rows) == 4  # each detector against each adaptive attack
    # Tramer's check against the best model of the study, one per model and detector
    best = {
        "2/255": max(r["clean_accuracy"] for r in m["defenses"]),  # eps/2 = 1/255: not measured
        "4/255": max(r["robust_accuracy"]["2/255"] for r in m["defenses"]),
    }
    assert len(m["plausibility"]) == 16
    assert all(p["reference_accuracy"] == best[p["eps_display"]] for p in m["plausibility"])
    assert all(p["pair_accuracy_half"] is not None for p in m["plausibility"] if p["eps"] > 3 / 255)
    assert [c["code"] for c in m["checks"]].count("MR202") == 8
    answer = m["study"]["answer"]
    assert answer["eps_display"] == "4/255" and answer["target_risk"] == 0.9
    assert len(answer["options"]) == 12  # 4 models, alone and with each of 2 detectors
    assert m["study"]["summary"] == answer["sentences"] and len(answer["sentences"]) == 2
    assert answer["sentences"][0].startswith("With 50% of the labels at eps=4/255")
    html = (out / "report.html").read_text()
    for title in ("Answer", "Defences", "Detection", "System risk", "Plausibility",
                  "Study settings"):  # fmt: skip
        assert title in html
    assert any("training ssat" in msg for msg in messages)
    with pytest.raises(FileExistsError, match="already holds a completed study"):
        run_study(cfg, out)
