"""One table of bad inputs, each through the command line and through the Python API: every one
is refused before compute with the same kind of message (what was expected, what came); the
command line exits 2 with one ``error:`` line and no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import medrobust
from medrobust.cli import main
from medrobust.models import create_model, save_checkpoint
from medrobust.models.card import DataInfo, ModelCard
from tests.attacks.models import batch, tiny_cnn


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = create_model("small-cnn", num_classes=2, width=4, seed=0)
    card = ModelCard.from_model(model, data=DataInfo(name="bus-phantom", image_size=[32, 32]))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", model, card)


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    model = tiny_cnn(2)
    x = batch(2, n=4, seed=7)
    with torch.no_grad():
        return [(x, model(x).argmax(1))]


def _api(**kw: Any) -> Callable[[], Any]:
    return lambda: medrobust.evaluate(tiny_cnn(2), kw.pop("data", _data()), **kw)


#: (case, CLI arguments after ``evaluate CKPT``, the API call, the message both must carry)
CASES: list[tuple[str, list[str], Callable[[], Any], str]] = [
    ("negative eps", ["--eps", "-1"], _api(eps=[-1]), "finite number > 0"),
    ("eps given twice", ["--eps", "1/255,1/255"], _api(eps=[1 / 255, 1 / 255]), "duplicates"),
    ("eps not a number", ["--eps", "abc"], _api(eps=["abc"]), "fraction like '2/255'"),
    ("eps above the input range", ["--eps", "2"], _api(eps=[2.0]), "larger than the input range"),
    ("unknown attack", ["--attacks", "pgdd"], _api(attacks=["pgdd"]), "unknown attack 'pgdd'"),
    ("attack of another task", ["--attacks", "pgd-seg"], _api(attacks=["pgd-seg"]),
     "is a segmentation attack"),
    ("unknown norm", ["--norm", "l3"], _api(norm="l3"), "l3"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "args", "api", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_through_the_cli_and_the_api(
    case: str,
    args: list[str],
    api: Callable[[], Any],
    message: str,
    saved: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    small = ["--data-param", "n=4", "--data-param", "cache=false"]
    code, err = _cli(
        ["evaluate", str(saved), "--out", str(tmp_path / "run"), *small, *args], capsys
    )
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message.lower() in " ".join(err.split()).lower(), err
    with pytest.raises((ValueError, KeyError)) as info:
        api()
    assert message.lower() in str(info.value).lower()
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("case", "data", "message"),
    [
        ("float labels", [(batch(2, n=4, seed=7), torch.zeros(4) + 0.5)], "integer class indices"),
        ("labels out of range", [(batch(2, n=4, seed=7), torch.full((4,), 5))],
         "must be in [0, 1]"),
        ("wrong channel count", [(torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))],
         "3 channel(s) but the model expects 1"),
        ("NaN pixels", [(torch.full((4, 1, 8, 8), float("nan")), torch.zeros(4, dtype=torch.long))],
         "nan"),
        ("empty data set", [], "no samples"),
        ("not a batch", ["a string"], "each batch must be"),
    ],
)  # fmt: skip
def test_bad_data_through_the_api(case: str, data: list[Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        medrobust.evaluate(tiny_cnn(2), data, attacks=["fgsm"], eps=[1 / 255])
    assert message.lower() in str(info.value).lower(), str(info.value)
