"""``medrobust compare``: the whole comparison on a tiny phantom, its reuse and its bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import medrobust
from medrobust.cli import app
from medrobust.evaluation.ranking import mcnemar
from medrobust.pipelines.compare import run_compare
from medrobust.pipelines.compare_config import CompareConfig

TINY: dict[str, Any] = {
    "data_params": {"size": 32},
    "split_sizes": {"train": 48, "val": 16, "test": 24},
    "models": ["small-cnn:width=4", "small-cnn:width=6"],
    "epochs": 1,
    "attacks": ["fgsm", "pgd"],
    "eps": ["2/255", "8/255"],
    "adv_samples": 16,
    "corruptions": ["gaussian", "blur", "rician"],
    "corrupt_samples": 12,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], list[str]]:
    out = tmp_path_factory.mktemp("compare")
    lines: list[str] = []
    result = run_compare(CompareConfig(**TINY), out, progress=lines.append)
    return out, result.metrics, lines


@pytest.mark.slow
def test_every_axis_is_measured_on_shared_samples(tiny_run: tuple) -> None:
    out, m, _ = tiny_run
    models = m["compare"]["models"]
    assert [d["key"] for d in models] == ["small-cnn-width-4-seed-0", "small-cnn-width-6-seed-0"]
    for d in models:
        assert d["clean"]["n"] == 24 and d["shifted"]["n"] == 24
        # two corruptions apply to ultrasound, five severities each; rician is skipped
        assert sorted(d["corruptions"]) == sorted(
            f"{c}@{s}" for c in ("gaussian", "blur") for s in range(1, 6)
        )
        rows = d["adversarial"]["results"]
        assert {(r["attack"], r["eps"]) for r in rows} == {
            (a, e) for a in ("fgsm", "pgd") for e in (2 / 255, 8 / 255)
        }
        for w in d["adversarial"]["worst_case"]:
            own = [r["robust_accuracy"] for r in rows if r["eps"] == w["eps"]]
            assert w["robust_accuracy"] <= min(own) + 1e-9
        assert d["facts"]["parameters"] > 0 and d["facts"]["source"] == "trained"
        assert (out / "models" / d["key"] / "train" / "best.pt").is_file()
    assert m["compare"]["corruptions_skipped"] == {
        "rician": "rician applies to mri, not ultrasound"
    }
    strengths = [p["strength"] for p in m["compare"]["corruptions"] if p["name"] == "gaussian"]
    assert strengths == sorted(strengths) and len(set(strengths)) == 5


@pytest.mark.slow
def test_the_paired_tests_are_recomputable_from_the_per_sample_outcomes(tiny_run: tuple) -> None:
    out, m, _ = tiny_run
    per = [
        json.loads((out / "models" / k / "result.json").read_text())["per_sample"]
        for k in ("small-cnn-width-4-seed-0", "small-cnn-width-6-seed-0")
    ]
    pair = m["comparison"]["pairs"][0]
    for e in (2 / 255, 8 / 255):
        key = f"robust@{e:.6g}"
        assert len(per[0][key]) == 16
        expected = mcnemar(per[0][key], per[1][key])
        shown = pair["robust_tests"]["2/255" if e < 0.01 else "8/255"]
        assert shown["p_value"] == pytest.approx(expected.p_value)
        assert (shown["only_a"], shown["only_b"]) == (expected.only_a, expected.only_b)
    assert m["comparison"]["finding"]
    html = (out / "report.html").read_text()
    assert "Finding" in html and "Paired tests" in html and "Natural corruptions" in html


@pytest.mark.slow
def test_a_rerun_reuses_finished_models_and_redoes_a_missing_one(tiny_run: tuple) -> None:
    out, m, _ = tiny_run
    first = out / "models" / "small-cnn-width-4-seed-0" / "result.json"
    second = out / "models" / "small-cnn-width-6-seed-0" / "result.json"
    stamp = first.stat().st_mtime_ns
    second.unlink()  # as if the run had been killed while measuring the second model
    lines: list[str] = []
    again = run_compare(CompareConfig(**TINY), out, progress=lines.append)
    assert first.stat().st_mtime_ns == stamp
    assert any("reusing" in s and "width-4" in s for s in lines)
    assert any("measuring" in s and "width-6" in s for s in lines)
    assert again.metrics["comparison"]["pairs"] == m["comparison"]["pairs"]


def _linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 2))


@pytest.mark.slow
def test_models_in_memory_and_checkpoints_through_the_api(tmp_path: Path) -> None:
    settings = {k: v for k, v in TINY.items() if k != "models"}
    settings.update(minimal=False, corruptions=["gaussian"], shift_params=None)
    result = medrobust.compare({"lin-a": _linear(0), "lin-b": _linear(1)}, tmp_path, **settings)
    keys = [d["key"] for d in result.metrics["compare"]["models"]]
    assert keys == ["model-lin-a", "model-lin-b"]
    assert result.metrics["compare"]["models"][0]["facts"]["source"] == "given"
    assert result.metrics["compare"]["models"][0]["shifted"] is None
    assert result.finding == result.metrics["comparison"]["finding"]


@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"models": ["small-cnn"]}, ValueError, "at least two models, got 1"),
        ({"models": ["small-cnn", "nope"]}, ValueError, "unknown architecture 'nope'"),
        ({"models": ["small-cnn", "unet"]}, ValueError, "'unet' is not a classifier"),
        ({"attacks": ["fgsm", "pgd-seg"]}, ValueError, "'pgd-seg' is not a classification"),
        ({"corruptions": ["fog"]}, ValueError, "unknown corruption 'fog'"),
        ({"models": ["small-cnn", "small-cnn"]}, ValueError, "listed twice"),
        ({"epochs": 0}, ValueError, "epochs must be an integer >= 1"),
        ({"eps": ["-1"]}, ValueError, "eps"),
    ],
)
def test_bad_settings_fail_before_any_compute(
    tmp_path: Path, settings: dict[str, Any], error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        run_compare(CompareConfig(**settings), tmp_path / "out")
    assert not (tmp_path / "out" / "models").exists()


def test_a_checkpoint_of_another_class_list_is_refused(tmp_path: Path) -> None:
    from medrobust.models import create_model, save_checkpoint
    from medrobust.models.card import ModelCard

    model = create_model("small-cnn", num_classes=3, width=4, seed=0)
    ckpt = save_checkpoint(tmp_path / "three.pt", model, ModelCard.from_model(model))
    cfg = CompareConfig(
        **{**TINY, "models": ["small-cnn:width=4"], "checkpoints": [str(ckpt)], "epochs": 1}
    )
    with pytest.raises(ValueError, match="the model has 3 classes, the data has 2"):
        run_compare(cfg, tmp_path / "out")


def test_cli_help_and_bad_input() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["compare", "--help"])
    assert res.exit_code == 0 and "--checkpoint" in res.output and "--shift-param" in res.output
    from medrobust.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["compare", "--model", "small-cnn", "--out", "/tmp/medrobust-never-written"])
    assert exc.value.code == 2
    assert not Path("/tmp/medrobust-never-written/models").exists()


@pytest.mark.slow
def test_segmenters_are_compared_by_dice_with_dag(tmp_path: Path) -> None:
    cfg = CompareConfig.for_segmentation(
        data="bus-phantom",
        data_params={"size": 32},
        split_sizes={"train": 32, "val": 8, "test": 12},
        shift_params={"scanner": "shifted"},
        models=["unet:channels=[4, 8],strides=[2]", "unet:channels=[4, 8, 16],strides=[2, 2]"],
        epochs=1,
        batch_size=8,
        eps=["2/255", "8/255"],
        targeted=[{"name": "dag", "steps": 3}],
        adv_samples=8,
        corruptions=["gaussian"],
        corrupt_samples=8,
    )
    m = run_compare(cfg, tmp_path).metrics
    cmp = m["comparison"]
    assert cmp["metric"] == "dice" and cmp["corruption_metric"] == "Dice"
    for d in m["compare"]["models"]:
        assert d["metric"] == "dice" and set(d["clean"]["per_class"]) == {"lesion"}
        assert 0.0 <= d["clean"]["score"] <= 1.0 and d["shifted"]["n"] == 12
        assert [t["attack"] for t in d["adversarial"]["targeted"]] == ["dag"]
        assert [r["eps"] for r in d["robust"]] == [2 / 255, 8 / 255]
        per = json.loads((tmp_path / "models" / d["key"] / "result.json").read_text())["per_sample"]
        worst = per[f"robust@{8 / 255:.6g}"]
        assert len(worst) == 8  # the attacked samples are the first 8 of the 12 test images
        assert all(w <= c + 1e-9 for w, c in zip(worst, per["clean"][:8], strict=True))
        assert d["robust"][1]["score"] == pytest.approx(sum(worst) / 8)
    test = cmp["pairs"][0]["robust_tests"]["8/255"]
    assert test["test"] == "bootstrap" and test["n"] == 8
    assert "minimal L2 (DeepFool)" not in cmp["rankings"]


def test_segmentation_settings_are_checked_before_compute(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'small-cnn' is not a segmenter"):
        run_compare(CompareConfig.for_segmentation(models=["unet", "small-cnn"]), tmp_path)
    with pytest.raises(ValueError, match="'fgsm' is not a segmentation attack"):
        run_compare(CompareConfig.for_segmentation(attacks=["fgsm"]), tmp_path)
    with pytest.raises(ValueError, match="has no segmentation labels"):
        run_compare(CompareConfig.for_segmentation(data="medmnist"), tmp_path)
    with pytest.raises(ValueError, match="task must be 'classification' or 'segmentation'"):
        CompareConfig(task="detection")
