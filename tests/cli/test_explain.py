"""Tests of the ``medrobust explain`` command (the job itself: tests/pipelines/test_explain.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medrobust.cli import app


@pytest.fixture
def checkpoint(explain_checkpoint: Path) -> Path:
    return explain_checkpoint


ARGS = [
    "--data-param",
    "n=12",
    "--data-param",
    "cache=false",
    "--steps",
    "2",
    "--eps",
    "2/255,8/255",
]


def test_explain_command_writes_a_run_folder(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["explain", str(checkpoint), *ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output
    assert {p.name for p in out.iterdir()} == {
        "config.yaml",
        "maps.npz",
        "metrics.json",
        "report.html",
    }
    metrics = json.loads((out / "metrics.json").read_text())
    ex = metrics["explanations"]
    assert metrics["schema_version"] == 1
    assert metrics["data"]["params"]["size"] == 32  # taken from the model card
    assert ex["n_samples"] == 12 and ex["eps_display"] == ["2/255", "8/255"]
    assert metrics["threat_model"]["eps"] == ex["eps"]
    with np.load(out / "maps.npz") as z:
        assert z["clean"].shape == (ex["n_attacked"], 1, 32, 32)
        assert "gradcam-kept__eps1" in z.files and "gradcam-flip__eps0" in z.files
    html = (out / "report.html").read_text()
    assert "Explanations under attack" in html and "gradcam-flip" in html
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["explain"]["layer"] == "features.layer4"
    assert config["checkpoint"] == str(checkpoint)
    assert oct((out / "maps.npz").stat().st_mode & 0o777) != oct(0o600)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--layer", "features.layer9"], "unknown layer 'features.layer9'.*features.layer4"),
        (["--layer", "classifier"], "has no spatial output"),
        (["--attacks", "pgd"], "not an explanation attack"),
        (["--eps", "two"], "eps must be a number or a fraction"),
        (["--data-param", "novalue"], "--data-param must look like key=value"),
        (["--attacks", " , "], "--attacks must name at least one attack"),
    ],
)
def test_bad_input_is_a_clear_error(
    checkpoint: Path, tmp_path: Path, extra: list[str], match: str
) -> None:
    result = CliRunner().invoke(
        app, ["explain", str(checkpoint), *ARGS, *extra, "--out", str(tmp_path / "r")]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, ValueError)
    assert re.search(match, str(result.exception)), str(result.exception)
    assert not (tmp_path / "r" / "metrics.json").exists()
