"""Tests of ``medrobust defend`` (the study itself: tests/pipelines/test_study.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.cli.defend import detector_params, fractions_list, study_config


@pytest.mark.slow
def test_defend_command_and_bad_input(tmp_path: Path) -> None:
    runner = CliRunner()
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
                "--detectors",
                "uad,feature-squeezing",
                "--adaptive-attacks",
                "pgd-adaptive,orthogonal-pgd",
                "--target-risk",
                "0.05",
                "--out",
                str(tmp_path / "ok"),
            ],
        )
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    assert "report:" in res.output
    doc = json.loads((tmp_path / "ok" / "study.json").read_text())
    assert [r["model"] for r in doc["defenses"]] == ["standard-100pct", "fast-at-100pct"]
    (sentence,) = doc["study"]["answer"]["sentences"]
    assert sentence.startswith("With 100% of the labels at eps=4/255")
    assert " ".join(sentence.split()) in " ".join(res.output.split())  # printed as is
    options = {o["option"] for o in doc["study"]["answer"]["options"]}
    assert {"standard + feature-squeezing", "fast-at + uad"} <= options and len(options) == 6
    assert doc["study"]["config"]["adaptive_attacks"] == ["pgd-adaptive", "orthogonal-pgd"]


def test_detector_params_name_their_detector() -> None:
    assert detector_params(["k=3"], ["lid"]) == {"lid": {"k": 3}}
    assert detector_params(["lid.k=3", "uad.fpr_hold=0.1"], ["lid", "uad"]) == {
        "lid": {"k": 3},
        "uad": {"fpr_hold": 0.1},
    }
    assert detector_params(None, ["uad"]) == {}
    with pytest.raises(ValueError, match="must name the detector with several detectors"):
        detector_params(["k=3"], ["lid", "uad"])


def test_fractions_list() -> None:
    assert fractions_list("0.1, 25%,1", "--fractions") == [0.1, 0.25, 1.0]
    with pytest.raises(ValueError, match="must be numbers"):
        fractions_list("0.1,half", "--fractions")
    with pytest.raises(ValueError, match="--fractions is empty"):
        fractions_list(" , ", "--fractions")


def test_study_config_from_options() -> None:
    opts = {
        "data": "bus-phantom",
        "data_param": ["size=48"],
        "n_train": 16,
        "n_val": 8,
        "n_test": 8,
        "model": "small-cnn",
        "model_param": None,
        "recipes": "standard,ssat",
        "fractions": "50%,1",
        "epochs": 1,
        "equal_steps": True,
        "batch_size": 8,
        "lr": 1e-3,
        "train_eps": "8/255",
        "pgd_steps": 3,
        "defense_param": ["ssat.lam=2", "ssat.eps_min=1/255"],
        "suite": "quick",
        "attacks": None,
        "eps": "4/255,2/255",
        "norm": "linf",
        "checks": False,
        "detectors": "uad,mahalanobis",
        "detector_param": ["mahalanobis.noise=0.001", "uad.fpr_hold=1/4"],
        "adaptive_attacks": "pgd-adaptive,feature-matching",
        "target_risk": 0.3,
        "target_eps": "2/255",
        "fpr": 0.1,
        "adaptive": False,
        "adaptive_steps": 2,
        "per_attack": False,
        "audits": False,
        "seed": 1,
    }
    cfg = study_config(opts)
    assert cfg.data_params == {"size": 48} and cfg.model_params == {"width": 8}
    assert cfg.split_sizes == {"train": 16, "val": 8, "test": 8}
    assert cfg.fractions == (0.5, 1.0) and cfg.train_eps == pytest.approx(8 / 255)
    assert cfg.recipe_params == {"ssat": {"lam": 2, "eps_min": pytest.approx(1 / 255)}}
    assert cfg.eps == (2 / 255, 4 / 255)
    assert cfg.detectors == ("uad", "mahalanobis")
    assert cfg.detector_params == {"mahalanobis": {"noise": 0.001}, "uad": {"fpr_hold": 0.25}}
    assert cfg.adaptive_attacks == ("pgd-adaptive", "feature-matching")
    assert cfg.target_risk == 0.3 and cfg.answer_eps == pytest.approx(2 / 255)
    with pytest.raises(ValueError, match=r"target_eps .* is not one of the budgets"):
        study_config({**opts, "target_eps": "8/255"})
    other = study_config({**opts, "data": "folder", "data_param": None, "defense_param": None})
    assert other.data_params == {} and other.split_sizes is None
