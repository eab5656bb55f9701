"""End-to-end tests of ``medrobust demo``, ``train`` and ``evaluate`` on tiny configurations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrobust.cli import main


def run_cli(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "demo"
    assert run_cli(["demo", "--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_demo_quick_writes_a_complete_run_folder(quick_run: Path) -> None:
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert metrics["data"]["name"] == "bus-phantom"
    assert [w["eps_display"] for w in metrics["worst_case"]] == ["2/255", "8/255"]
    assert {c["code"] for c in metrics["checks"]} >= {"MR101", "MR104", "MR105"}
    html = (quick_run / "report.html").read_text()
    assert "bus-phantom" in html and "<script src=" not in html
    config = (quick_run / "config.yaml").read_text()
    assert "small-cnn" in config
    assert (quick_run / "train" / "best.pt").exists()
    # the explanation section: Grad-CAM attacks with the label kept and changed
    assert metrics["explanations"]["eps_display"] == ["2/255", "8/255"]
    assert (quick_run / "explanations" / "maps.npz").exists()
    assert "Explanation" in html
    assert not (quick_run / ".evaluation-state.pt").exists()


@pytest.mark.slow
def test_demo_refuses_to_overwrite_then_resumes(
    quick_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["demo", "--quick", "--out", str(quick_run)]) == 2
    assert "already holds" in capsys.readouterr().err.replace("\n", " ")
    assert run_cli(["demo", "--quick", "--out", str(quick_run), "--resume"]) == 0


@pytest.mark.slow
def test_evaluate_a_saved_checkpoint(quick_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    code = run_cli(
        [
            "evaluate",
            str(quick_run / "train" / "best.pt"),
            "--data-param",
            "n=16",
            "--attacks",
            "fgsm,pgd",
            "--eps",
            "1/255,4/255",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["clean"]["n"] == 16
    assert [a["name"] for a in metrics["attacks"]] == ["fgsm", "pgd"]
    assert metrics["threat_model"]["eps_display"] == ["1/255", "4/255"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "no-such-file.pt"], "no-such-file.pt"),
        (["demo", "--config", "missing.yaml"], "missing.yaml"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(args) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--eps", "0"], "eps must be a finite number > 0"),
        (["--eps", "two"], "fraction like '2/255'"),
        (["--attacks", "pgdd"], "Did you mean 'pgd'"),
        (["--norm", "l3"], "unknown norm"),
    ],
)
def test_evaluate_bad_options(
    quick_run: Path,
    tmp_path: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["evaluate", str(quick_run / "train" / "best.pt"), "--out", str(tmp_path / "x"), *extra]
    assert run_cli(args) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    assert run_cli(["evaluate", str(bad)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "corrupt" in err and "best.pt" in err


def test_bad_yaml_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text("evaluation:\n  epss: [1/255]\n")
    assert run_cli(["demo", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'eps'" in capsys.readouterr().err.replace("\n", " ")


@pytest.mark.slow
def test_demo_segmentation_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "seg"
    assert run_cli(["demo", "--task", "segmentation", "--quick", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "segmentation" in metrics
    assert (out / "report.html").exists()
    # `medrobust evaluate` audits a saved segmenter with the segmentation audit
    code = run_cli(
        [
            "evaluate",
            str(out / "train" / "best.pt"),
            "--data-param",
            "size=32",
            "--data-param",
            "n=8",
            "--attacks",
            "pgd-seg",
            "--eps",
            "8/255",
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert code == 0
    seg = json.loads((tmp_path / "e" / "metrics.json").read_text())["segmentation"]
    assert "pgd-seg" in json.dumps(seg)


@pytest.mark.slow
def test_train_with_a_defense(tmp_path: Path) -> None:
    from medrobust.models import load_checkpoint

    out = tmp_path / "fast"
    args = [
        "train",
        "--data-param",
        "size=32",
        "--data-param",
        "n=32",
        "--model-param",
        "width=4",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--defense",
        "fast-at",
        "--defense-param",
        "eps=4/255",
        "--out",
        str(out),
    ]
    assert run_cli(args) == 0
    _, card = load_checkpoint(out / "train" / "best.pt")
    assert card.training.recipe == "fast-at"
    assert card.training.recipe_params["eps"] == pytest.approx(4 / 255)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--labelled-fraction", "1.5"], "labelled_fraction"),
        (["train", "--defense", "pgd_att"], "did you mean"),
        (["demo", "--task", "detection"], "--task must be"),
    ],
)
def test_train_and_demo_bad_options(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli([*args, "--out", str(tmp_path / "o")]) == 2
    assert message.lower() in capsys.readouterr().err.replace("\n", " ").lower()


@pytest.mark.slow
def test_train_multitask_model_uses_the_joint_recipe(tmp_path: Path) -> None:
    from medrobust.models import load_checkpoint

    out = tmp_path / "mtl"
    args = [
        "train",
        "--model",
        "mtl-resnet18",
        "--data-param",
        "size=32",
        "--data-param",
        "n=16",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        str(out),
    ]
    assert run_cli(args) == 0
    model, card = load_checkpoint(out / "train" / "best.pt")
    assert card.training.recipe == "multitask"
    assert model.task.value == "multitask"
