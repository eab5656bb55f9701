"""Tests of the defence study and of the ``defend`` / ``detect`` commands (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from medrobust.defenses.cli import register
from medrobust.defenses.study import StudyConfig, run_study

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


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command("noop")
    def noop() -> None:
        """A second command, so typer keeps sub-command names."""

    register(app)
    return app


def _checkpoint(tmp_path: Path) -> Path:
    from medrobust.data import create_dataset
    from medrobust.models import create_model
    from medrobust.training import TrainConfig, fit

    train = create_dataset("bus-phantom", split="train", n=16, **TINY_DATA)
    val = create_dataset("bus-phantom", split="val", n=8, **TINY_DATA)
    model = create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0)
    fit(
        model,
        train,
        val,
        TrainConfig(epochs=1, batch_size=8),
        tmp_path / "train",
        card_info={"data": {"name": "bus-phantom"}},
    )
    return tmp_path / "train" / "best.pt"


@pytest.mark.slow
def test_detect_fit_and_score_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    app = _app()
    ckpt = _checkpoint(tmp_path)
    data = ["--data-param", "n=24", "--data-param", "cache=false"]
    res = runner.invoke(
        app, ["detect", "fit", str(ckpt), "--out", str(tmp_path / "det"), *data, "--fpr", "0.1"]
    )
    assert res.exit_code == 0, res.output
    assert "threshold" in res.output and (tmp_path / "det" / "detector.json").is_file()
    again = runner.invoke(app, ["detect", "fit", str(ckpt), "--out", str(tmp_path / "det"), *data])
    assert isinstance(again.exception, FileExistsError)
    res = runner.invoke(
        app,
        [
            "detect",
            "score",
            str(ckpt),
            str(tmp_path / "det"),
            *data,
            "--attacks",
            "fgsm",
            "--eps",
            "8/255",
            "--adaptive-steps",
            "2",
            "--max-samples",
            "12",
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["clean"]["n"] == 12 and metrics["risk"][0]["eps_display"] == "8/255"
    assert {d["attack"] for d in metrics["detection"]["results"]} == {
        "worst-case",
        "fgsm",
        "pgd-adaptive",
    }
    assert "System risk" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.slow
def test_defend_command_and_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
    app = _app()
    common = [
        "--data-param",
        "size=32",
        "--data-param",
        "cache=false",
        "--n-train",
        "16",
        "--n-val",
        "8",
        "--n-test",
        "8",
        "--model-param",
        "width=4",
        "--epochs",
        "1",
        "--eps",
        "4/255",
        "--adaptive-steps",
        "2",
        "--no-checks",
        "--no-audits",
        "--threads",
        "1",
    ]
    bad = runner.invoke(
        app, ["defend", *common, "--fractions", "0.5,1.5", "--out", str(tmp_path / "bad")]
    )
    assert isinstance(bad.exception, ValueError)
    assert "labelled_fraction must be in (0, 1]" in str(bad.exception)
    bad = runner.invoke(
        app, ["defend", *common, "--defense-param", "lam=1", "--out", str(tmp_path / "bad")]
    )
    assert "must name the recipe" in str(bad.exception)
    threads = torch.get_num_threads()
    try:
        res = runner.invoke(
            app,
            [
                "defend",
                *common,
                "--recipes",
                "standard,fast-at",
                "--fractions",
                "1",
                "--out",
                str(tmp_path / "ok"),
            ],
        )
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    assert "report:" in res.output
    rows = json.loads((tmp_path / "ok" / "study.json").read_text())["defenses"]
    assert [r["model"] for r in rows] == ["standard-100pct", "fast-at-100pct"]
