"""Tests of the segmentation pipelines: the demo and the audit of a saved segmenter."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrobust.pipelines.config import CheckpointAudit
from medrobust.pipelines.segmentation import (
    evaluate_segmentation_checkpoint,
    run_segmentation_demo,
)


def test_quick_demo(tmp_path: Path) -> None:
    result, report = run_segmentation_demo(tmp_path / "demo", quick=True)
    assert report.is_file() and (tmp_path / "demo" / "train" / "best.pt").is_file()
    seg = result.metrics["segmentation"]
    assert seg["class_names"] == ["background", "lesion"]
    assert len(seg["untargeted"]) == 2 and len(seg["targeted"]) == 4
    with pytest.raises(FileExistsError):
        run_segmentation_demo(tmp_path / "demo", quick=True)


def test_checkpoint_audit_settings() -> None:
    seg = CheckpointAudit(attacks=["dag"], eps=["2/255"]).run_config(segmentation=True)
    assert seg.evaluation.attacks == ["dag"]
    assert seg.evaluation.suite is None and seg.evaluation.eps == [2 / 255]
    with pytest.raises(ValueError, match="needs a 'suite' or a list of 'attacks'"):
        CheckpointAudit(attacks=[]).run_config(segmentation=True)
    cls = CheckpointAudit(data_params={"n": 4}, split="val").run_config()
    assert cls.evaluation.suite == "standard" and cls.evaluation.attacks == []
    assert cls.data.params == {"n": 4} and cls.data.eval_split == "val"
    with pytest.raises(ValueError, match=r"evaluation\.mode"):
        CheckpointAudit(mode="sequential").run_config()


def test_a_classifier_is_refused(tmp_path: Path) -> None:
    from medrobust.models import create_model, save_checkpoint
    from medrobust.models.card import ModelCard

    model = create_model("small-cnn", num_classes=2, width=4, seed=0)
    ckpt = save_checkpoint(tmp_path / "best.pt", model, ModelCard.from_model(model))
    with pytest.raises(ValueError, match="use `medrobust evaluate`"):
        evaluate_segmentation_checkpoint(ckpt, CheckpointAudit(), tmp_path / "out")


@pytest.mark.slow
def test_evaluate_keeps_a_segmentation_suite(tmp_path: Path) -> None:
    """``medrobust evaluate SEGMENTER.pt --suite seg-standard`` runs the suite (it was dropped)."""
    from medrobust.evaluation.suites import resolve_suite
    from medrobust.models import create_model, save_checkpoint
    from medrobust.models.card import ModelCard
    from medrobust.pipelines.audit import evaluate_checkpoint

    model = create_model(
        "unet", num_classes=2, in_channels=1, spatial_dims=2, channels=[4, 8], strides=[2], seed=0
    )
    ckpt = save_checkpoint(tmp_path / "best.pt", model, ModelCard.from_model(model))
    settings = CheckpointAudit(
        data_params={"size": 32, "n": 4},
        suite="seg-standard",
        eps=["8/255"],
        max_samples=2,
        batch_size=2,
    )
    outcome = evaluate_checkpoint(ckpt, settings, tmp_path / "out")
    seg = outcome.result.metrics["segmentation"]
    suite = [a["name"] for a in resolve_suite("seg-standard", "linf", 2).attacks]
    assert list(seg["iterations"]["per_attack"]) == suite
    assert outcome.result.config["mode"] == "cascade"
    assert {r["attack"] for r in seg["targeted"]} == {"asma", "dag"}
