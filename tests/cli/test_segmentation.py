"""Tests of ``medrobust evaluate-segmentation``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.cli.segmentation import roi
from medrobust.pipelines.segmentation import run_segmentation_demo


def test_evaluate_segmentation_command(tmp_path: Path) -> None:
    run_segmentation_demo(tmp_path / "demo", quick=True)
    out = tmp_path / "eval"
    args = [
        "evaluate-segmentation",
        str(tmp_path / "demo" / "train" / "best.pt"),
        "--data-param",
        "size=32",
        "--data-param",
        "n=4",
        "--attacks",
        "pgd-seg,dag",
        "--eps",
        "4/255",
        "--noise",
        "",
        "--targets",
        "background",
        "--roi-size",
        "16",
        "--batch-size",
        "4",
        "--out",
        str(out),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    # not a terminal: one plain progress line per attack and budget, and per targeted attack
    assert "evaluating batch 1/1: pgd-seg at eps=4/255" in res.output
    assert "evaluating batch 1: dag → background (targeted)" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    seg = metrics["segmentation"]
    assert [r["attack"] for r in seg["untargeted"]] == ["pgd-seg"]
    assert [(r["attack"], r["target"]) for r in seg["targeted"]] == [("dag", "background")]
    assert seg["noise"] == []
    assert "16" in (out / "config.yaml").read_text()  # the sliding-window size is recorded
    bad = CliRunner().invoke(app, [*args[:2], "--attacks", "pgd", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "not a segmentation attack" in str(bad.exception)


def test_roi_size_parsing() -> None:
    assert roi(None) is None and roi("") is None
    assert roi("64") == 64 and roi("64, 64,32") == [64, 64, 32]
    with pytest.raises(ValueError, match="--roi-size must be integers"):
        roi("64,x")
