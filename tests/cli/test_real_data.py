"""Real formats from the command line (issue 14): a user's TorchScript archive, a plain
state_dict with --arch, a Python factory with --model-file, and --window on a 16-bit folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medrobust.models import create_model
from tests.cli.test_audit import run_cli

COMMON = ["--data-param", "n=8", "--data-param", "size=32", "--attacks", "fgsm", "--eps", "2/255"]


@pytest.fixture
def net(tmp_path: Path) -> torch.nn.Module:
    return create_model("small-cnn", num_classes=2, seed=0, width=4).net.eval()


@pytest.mark.slow
def test_evaluate_a_torchscript_archive(
    net: torch.nn.Module, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 1, 32, 32)), path)
    out = tmp_path / "ev"
    assert run_cli(["evaluate", str(path), *COMMON, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["card"]["architecture"] == "torchscript"
    assert "archives you trust" in caplog.text


@pytest.mark.slow
def test_evaluate_a_state_dict_and_a_factory(
    net: torch.nn.Module,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    plain = ["evaluate", str(tmp_path / "weights.pt"), *COMMON]
    assert run_cli([*plain, "--out", str(tmp_path / "a")]) == 2
    assert "--arch <zoo name>" in capsys.readouterr().err.replace("\n", " ")
    arch = ["--arch", "small-cnn", "--model-param", "width=4"]
    assert run_cli([*plain, *arch, "--out", str(tmp_path / "b")]) == 0
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["model"]["card"]["architecture"] == "small-cnn"
    (tmp_path / "m.py").write_text(
        "from torch import nn\n\ndef build(width):\n    return nn.Sequential(nn.Conv2d(1, width, "
        "3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2))\n"
    )
    factory = ["evaluate", "--model-file", f"{tmp_path / 'm.py'}:build", "--model-param", "width=2"]
    assert run_cli([*factory, *COMMON, "--out", str(tmp_path / "c")]) == 0
    assert "runs the Python code" in caplog.text
    assert run_cli(["evaluate", *COMMON]) == 2
    assert "--model-file" in capsys.readouterr().err


@pytest.mark.slow
def test_train_with_a_window_and_evaluate_with_the_card_window(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls, base in (("low", 300), ("high", 1500)):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(6):
            arr = (base + rng.integers(0, 600, (24, 24))).astype(np.uint16)
            Image.fromarray(arr).save(tmp_path / "d" / cls / f"{i}.png")
    data = ["--data", "image-folder", "--data-param", f"root={tmp_path / 'd'}"]
    run = tmp_path / "run"
    train = ["train", *data, "--window", "-100,2200", "--epochs", "1", "--model-param", "width=4"]
    assert run_cli([*train, "--data-param", "size=16", "--out", str(run)]) == 0
    card = json.loads((run / "train" / "model_card.json").read_text())
    assert card["data"]["intensity"]["window"]["spec"] == "-100,2200"
    out = tmp_path / "ev"
    ev = [
        "evaluate",
        str(run / "train" / "best.pt"),
        *data,
        "--split",
        "train",
        "--attacks",
        "fgsm",
    ]
    assert run_cli([*ev, "--eps", "2/255", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["intensity"]["window"]["spec"] == "-100,2200"
    assert metrics["data"]["image_shape"] == [1, 16, 16]
