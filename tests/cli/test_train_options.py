"""``medrobust train --class-weights`` and ``--batchnorm-check``."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrobust.cli import main
from medrobust.models import load_checkpoint


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


_TINY = ["--data-param", "size=32", "--data-param", "n=24", "--model-param", "width=4"]


def test_class_weights_and_the_batchnorm_check_reach_the_card(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        *_TINY,
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--class-weights",
        "balanced",
        "--batchnorm-check",
        "warn",
        "--out",
        str(out),
    ]
    assert run_cli(args) == 0
    _, card = load_checkpoint(out / "train" / "best.pt")
    weights = card.training.class_weights
    assert weights is not None and weights["spec"] == "balanced"
    counts = weights["counts"]
    assert sum(counts) == 24 and len(weights["weights"]) == 2
    assert weights["weights"] == pytest.approx([24 / (2 * c) for c in counts])
    record = card.training.batchnorm
    assert record is not None and record["metric"] == "accuracy" and not record["recomputed"]


def test_explicit_class_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", *_TINY, "--epochs", "1", "--batch-size", "8"]
    args += ["--class-weights", "1,3", "--batchnorm-check", "off", "--out", str(out)]
    assert run_cli(args) == 0
    _, card = load_checkpoint(out / "train" / "best.pt")
    assert card.training.class_weights == {"spec": "explicit", "weights": [1.0, 3.0]}
    assert card.training.batchnorm is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--class-weights", "1,x"], "--class-weights must be 'balanced' or numbers"),
        (["--class-weights", "1,2,3"], "class_weights has 3 entries but the model has 2 classes"),
        (["--batchnorm-check", "fix"], "batchnorm_check must be one of"),
    ],
)
def test_bad_values_exit_2(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", *_TINY, "--epochs", "1", *extra, "--out", str(tmp_path / "o")]
    assert run_cli(args) == 2
    assert message.lower() in capsys.readouterr().err.replace("\n", " ").lower()
