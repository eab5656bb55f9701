"""Tests of the explanation job (:func:`medrobust.pipelines.explain.run_explain`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medrobust.pipelines.explain import ExplainSettings, run_explain


def test_existing_run_needs_overwrite(explain_checkpoint: Path, tmp_path: Path) -> None:
    checkpoint, out = explain_checkpoint, tmp_path / "run"
    run_explain(checkpoint, out, data_params={"n": 4, "cache": False}, steps=1, eps=[4 / 255])
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_explain(checkpoint, out, data_params={"n": 4, "cache": False}, steps=1, eps=[4 / 255])
    report = run_explain(
        checkpoint,
        out,
        data_params={"n": 4, "cache": False},
        steps=1,
        eps=[4 / 255],
        overwrite=True,
        save_maps=False,
    )
    assert report == out / "report.html"


def test_settings_object_and_overrides(explain_checkpoint: Path, tmp_path: Path) -> None:
    settings = ExplainSettings(data_params={"n": 4, "cache": False}, steps=1, eps=(4 / 255,))
    out = tmp_path / "run"
    run_explain(explain_checkpoint, out, settings, attacks=["gradcam-kept"], seed=3)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["explain"]["attacks"] == ["gradcam-kept"]
    assert config["explain"]["seed"] == 3 and config["explain"]["steps"] == 1
    assert config["data"]["params"] == {"n": 4, "cache": False, "size": 32}
    assert list(config["explain"]) == [
        "attacks",
        "eps",
        "norm",
        "steps",
        "layer",
        "method",
        "k",
        "max_samples",
        "batch_size",
        "seed",
        "n_examples",
    ]
    with pytest.raises(TypeError, match="stepz"):
        run_explain(explain_checkpoint, tmp_path / "other", settings, stepz=2)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        run_explain(tmp_path / "nope.pt", tmp_path / "out")


def test_out_must_be_a_folder(explain_checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        run_explain(explain_checkpoint, tmp_path / "file")
