"""Tests of ``medrobust detect fit`` and ``medrobust detect score`` (tiny settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medrobust.cli import app, main


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    """A small CNN trained for one epoch on the 32x32 phantom, saved as best.pt."""
    from medrobust.data import create_dataset
    from medrobust.models import create_model
    from medrobust.training import TrainConfig, fit

    train = create_dataset("bus-phantom", split="train", n=16, size=32, cache=False)
    val = create_dataset("bus-phantom", split="val", n=8, size=32, cache=False)
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
def test_detect_fit_and_score_commands(classifier: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    ckpt = classifier
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
        "orthogonal-pgd",
        "feature-matching",
    }
    assert set(metrics["risk"][0]["system_risk_by_attack"]) == {
        "pgd-adaptive",
        "orthogonal-pgd",
        "feature-matching",
    }
    assert {"MR201", "MR202"} <= {c["code"] for c in metrics["checks"]}
    assert metrics["detection"]["false_alarms"]["nominal"] == 0.1
    (claim,) = metrics["plausibility"]
    assert claim["reference"] == "the guarded classifier" and claim["half_eps_display"] == "4/255"
    html = (tmp_path / "run" / "report.html").read_text()
    assert "System risk" in html and "Plausibility of the detector" in html
    assert "nominal" in res.output and "pair risk" in res.output
    assert "eps=8/255: implies robust accuracy" in res.output and "eps/2=4/255" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["detect", "fit", "x.pt", "--out", "d", "--param", "novalue"], "--param must look like"),
        (["detect", "fit", "x.pt", "--out", "d", "--threads", "0"], "--threads must be >= 1"),
        (["detect", "score", "x.pt", "d", "--eps", "two"], "fraction like '2/255'"),
    ],
)
def test_bad_input_exits_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main([a if a not in ("d", "x.pt") else str(tmp_path / a) for a in args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
