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
        _tiny(detector="uda")
    with pytest.raises(ValueError, match="not in the study's recipes"):
        _tiny(recipe_params={"trades": {"beta": 1.0}})
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
    result = run_study(_tiny(), out, progress=messages.append)
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
        assert (folder / "detector" / "detector.json").is_file()
        audit = json.loads((folder / "audit" / "metrics.json").read_text())
        assert audit["clean"]["accuracy"] == rows[key]["clean_accuracy"]
        assert audit["defense"][0]["recipe"] == rows[key]["recipe"]
        assert {"risk", "detection"} <= set(audit)
    for r in m["risk"]:
        assert r["system_risk"] <= r["classifier_risk"] + 1e-9
        assert r["system_risk_adaptive"] >= r["system_risk"]
    assert len(m["study"]["summary"]) == 2 and "50% labels" in m["study"]["summary"][0]
    html = (out / "report.html").read_text()
    for title in ("Defences", "Detection", "System risk", "Study settings"):
        assert title in html
    assert any("training ssat" in msg for msg in messages)
    with pytest.raises(FileExistsError, match="already holds a completed study"):
        run_study(_tiny(), out)
