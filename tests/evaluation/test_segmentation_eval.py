"""The segmentation audit: metrics layout, attacks, noise at matched SSIM, run folder, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medrobust.models import ModelAdapter, create_model
from medrobust.models.segmentation import sliding_window
from medrobust.pipelines.results import evaluate_segmentation
from medrobust.reporting.sections.segmentation import overlay_figure
from tests.evaluation.interrupt import Killed, dies_after, numbers


def tiny(spatial_dims: int = 2) -> ModelAdapter:
    return create_model(
        "unet",
        num_classes=3,
        spatial_dims=spatial_dims,
        channels=(4, 8),
        strides=(2,),
        num_res_units=0,
        seed=0,
        class_names=["background", "organ", "lesion"],
    ).eval()


def loader(model: ModelAdapter, spatial_dims: int = 2, n: int = 4) -> list[dict[str, object]]:
    size = (16, 16) if spatial_dims == 2 else (8, 8, 8)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, 1, *size), generator=g) * 0.8 + 0.1
    with torch.no_grad():
        y = model(x).argmax(1)
    half = n // 2
    return [
        {"image": x[:half], "mask": y[:half], "id": [f"a{i}" for i in range(half)]},
        {"image": x[half:], "mask": y[half:], "id": [f"b{i}" for i in range(n - half)]},
    ]


SETTINGS = {
    "attacks": [{"name": "pgd-seg", "steps": 2}],
    "eps": [2 / 255, 8 / 255],
    "targeted": [{"name": "asma", "steps": 3}, {"name": "dag", "steps": 3}],
    "targets": ["background", "other"],
    "noise": ["gaussian", "rician", "speckle"],
}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_metrics_layout(spatial_dims: int) -> None:
    model = tiny(spatial_dims)
    data = loader(model, spatial_dims)
    res = evaluate_segmentation(model, data, n_examples=2, **SETTINGS)  # type: ignore[arg-type]
    m = res.metrics
    assert {"title", "model", "data", "threat_model", "segmentation", "timing"} <= set(m)
    seg = m["segmentation"]
    # masks are the clean predictions: clean Dice is 1 wherever a class is present
    assert seg["clean"]["mean_dice"] == pytest.approx(1.0)
    assert seg["clean"]["n"] == 4 and set(seg["clean"]["dice"]) == {"organ", "lesion"}
    assert [(r["attack"], r["eps_display"]) for r in seg["untargeted"]] == [
        ("pgd-seg", "2/255"),
        ("pgd-seg", "8/255"),
    ]
    for r in seg["untargeted"]:
        assert r["mean_linf"] <= r["eps"] + 1e-6
        assert r["mean_dice"] <= 1.0
    assert seg["untargeted"][1]["mean_dice"] <= seg["untargeted"][0]["mean_dice"] + 0.05
    assert {(r["attack"], r["target"]) for r in seg["targeted"]} == {
        ("asma", "background"),
        ("asma", "other"),
        ("dag", "background"),
        ("dag", "other"),
    }
    for r in seg["targeted"]:
        assert 0 <= r["mean_target_iou"] <= 1 and r["n"] == 4
    assert len(seg["noise"]) == 2
    for r in seg["noise"]:
        for kind in ("gaussian", "rician", "speckle"):
            # noise matched to the adversarial SSIM within the bisection tolerance
            gap = abs(r[f"ssim_{kind}"] - r["mean_ssim_adversarial"])
            assert gap <= 0.02 * (1 - r["mean_ssim_adversarial"]) + 1e-6
    assert len(res.examples["untargeted"]) == 2 and len(res.examples["targeted"]) == 2
    json.dumps(m)  # JSON-serialisable
    assert "pgd-seg at eps=8/255" in res.summary()
    assert res.mean_dice() == seg["clean"]["mean_dice"]
    assert res.mean_dice("pgd-seg") == seg["untargeted"][1]["mean_dice"]
    with pytest.raises(KeyError, match="no result"):
        res.mean_dice("apgd-seg")


def test_write_run_folder(tmp_path: Path) -> None:
    model = tiny()
    res = evaluate_segmentation(model, loader(model), **SETTINGS)  # type: ignore[arg-type]
    out = res.write(tmp_path / "run")
    names = {p.name for p in out.iterdir()}
    assert {"report.html", "metrics.json", "config.yaml", "adversarial"} <= names
    html = (out / "report.html").read_text()
    for text in (
        "Segmentation under attack",
        "Targeted segmentation attacks",
        "Noise versus adversarial perturbations at matched SSIM",
        "data:image/png;base64",
    ):
        assert text in html
    assert "Other results" not in html  # the segmentation key has its own section
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["segmentation"]["clean"]["n"] == 4
    npz = sorted(p.name for p in (out / "adversarial").iterdir())
    assert npz == ["asma_target_background.npz", "pgd-seg_eps_8_255.npz"]
    with pytest.raises(FileExistsError, match="overwrite"):
        res.write(out)
    res.write(out, overwrite=True)
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]


def test_sliding_window_model_is_evaluated_through_windows() -> None:
    model = tiny()
    sw = sliding_window(model, roi_size=16, overlap=0.25)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 24, 24, generator=g)
    with torch.no_grad():
        y = sw(x).argmax(1)
    res = evaluate_segmentation(
        sw,
        [(x, y)],
        attacks=[{"name": "pgd-seg", "steps": 1}],
        eps=[4 / 255],
        targeted=[],
        noise=[],
    )
    assert res.metrics["segmentation"]["clean"]["mean_dice"] == pytest.approx(1.0)
    assert res.metrics["segmentation"]["targeted"] == []


def test_overlay_figure_3d_uses_representative_slice() -> None:
    from medrobust._utils.examples import SegmentationExample

    mask = torch.zeros(8, 8, 8, dtype=torch.long)
    mask[2:5, 2:5, 6] = 1
    img = torch.rand(1, 8, 8, 8).numpy()
    ex = SegmentationExample(img, img + 0.01, mask.numpy(), mask.numpy(), mask.numpy(), "v")
    fig = overlay_figure([ex], 2)
    assert "slice 6 of 8" in fig.axes[0].get_ylabel()
    assert len(fig.axes) == 5
    with pytest.raises(ValueError, match="at least one example"):
        overlay_figure([], 2)


def test_bad_inputs() -> None:
    model = tiny()
    data = loader(model)
    with pytest.raises(ValueError, match="needs a segmentation model"):
        from tests.attacks.models import tiny_cnn

        evaluate_segmentation(tiny_cnn(2), data)
    bad = [{"image": data[0]["image"], "mask": torch.zeros(2, 8, 8, dtype=torch.long)}]
    with pytest.raises(ValueError, match=r"needs masks of shape \(2, 16, 16\)"):
        evaluate_segmentation(model, bad, targeted=[], noise=[])
    bad = [{"image": data[0]["image"], "mask": torch.full((2, 16, 16), 5, dtype=torch.long)}]
    with pytest.raises(ValueError, match=r"class\(es\) \[5\] unknown to the model"):
        evaluate_segmentation(model, bad, targeted=[], noise=[])
    with pytest.raises(ValueError, match="'image' and 'mask'"):
        evaluate_segmentation(model, [{"image": data[0]["image"], "label": 0}])
    with pytest.raises(ValueError, match="not a segmentation attack"):
        evaluate_segmentation(model, data, attacks=["pgd"])
    with pytest.raises(ValueError, match="is targeted"):
        evaluate_segmentation(model, data, attacks=["asma"])
    with pytest.raises(ValueError, match="unknown noise kind"):
        evaluate_segmentation(model, data, noise=["salt"])
    with pytest.raises(ValueError, match="duplicates"):  # the same budget rule as every audit
        evaluate_segmentation(model, data, eps=[0.1, 0.05, 0.1])
    with pytest.raises(ValueError, match="finite number > 0"):
        evaluate_segmentation(model, data, eps=[0.1, -1])
    with pytest.raises(KeyError, match="Did you mean"):
        evaluate_segmentation(model, data, targets=["backgrund"])
    big = [
        {
            "image": torch.rand(2, 1, 16, 16, 16),
            "mask": torch.zeros(2, 16, 16, 16, dtype=torch.long),
        }
    ]
    with pytest.raises(ValueError, match="sliding_window"):
        evaluate_segmentation(tiny(3), big, max_voxels=4096)


SPINE = {
    "attacks": [{"name": "pgd-seg", "steps": 3}, {"name": "apgd-seg", "steps": 3}],
    "eps": [2 / 255, 16 / 255],
    "targeted": [{"name": "asma", "steps": 2}],
    "targets": ["background"],
    "noise": ["gaussian"],
    "probe_samples": 2,
}


def test_segmentation_audit_resumes_with_identical_metrics(tmp_path: Path) -> None:
    model = tiny()
    data = loader(model, n=6)
    data = [*data, {"image": data[0]["image"], "mask": data[0]["mask"]}]
    whole = evaluate_segmentation(model, data, **SPINE)  # type: ignore[arg-type]
    ckpt = tmp_path / "state.pt"
    with pytest.raises(Killed):
        evaluate_segmentation(model, dies_after(data, 2), checkpoint=ckpt, **SPINE)  # type: ignore[arg-type]
    assert ckpt.exists()
    resumed = evaluate_segmentation(model, data, checkpoint=ckpt, **SPINE)  # type: ignore[arg-type]
    assert resumed.records is not None and whole.records is not None
    assert resumed.records.batches_done == len(data)
    assert numbers(resumed.metrics) == numbers(whole.metrics)
    # the overlays and saved adversarial arrays are resumed too
    assert resumed.adversarial.keys() == whole.adversarial.keys()
    for name, arrays in whole.adversarial.items():
        for key, arr in arrays.items():
            assert (arr == resumed.adversarial[name][key]).all(), (name, key)
    for kind in ("untargeted", "targeted"):
        assert [e.title for e in resumed.examples[kind]] == [e.title for e in whole.examples[kind]]
    # a checkpoint of another configuration is refused, not silently mixed
    with pytest.raises(ValueError, match="different configuration"):
        evaluate_segmentation(model, data, checkpoint=ckpt, **{**SPINE, "eps": [4 / 255]})  # type: ignore[arg-type]


def test_segmentation_worst_case_is_the_lowest_dice_per_sample() -> None:
    model = tiny()
    res = evaluate_segmentation(model, loader(model, n=6), **SPINE)  # type: ignore[arg-type]
    rec = res.records
    assert rec is not None
    for e_i in range(2):
        scores = torch.stack([row[e_i].score for row in rec.cells])  # (A, N)
        attacked = torch.stack([row[e_i].attacked for row in rec.cells])
        lowest = torch.where(attacked, scores, torch.inf).amin(dim=0)
        expected = torch.minimum(lowest, rec.clean_score)
        assert torch.equal(rec.worst_score[e_i], expected)
        row = res.metrics["segmentation"]["worst_case"][e_i]
        assert row["mean_worst_dice"] == pytest.approx(float(expected.mean()))
        for r in res.metrics["segmentation"]["untargeted"]:
            if r["eps"] == row["eps"]:  # the worst case is never better than one attack
                assert row["mean_worst_dice"] <= r["mean_dice"] + 1e-9 or r["mean_dice"] is None
    # budgets grow: a sample's worst Dice never improves with a larger budget
    assert bool((rec.worst_score[1] <= rec.worst_score[0] + 1e-12).all())
    # samples broken at the small budget are carried, not attacked again
    small, large = rec.cells[0][0], rec.cells[0][1]
    assert bool(large.broken[small.broken].all())


def test_segmentation_audit_shares_the_header_and_checks() -> None:
    model = tiny()
    seg = evaluate_segmentation(model, loader(model), **SPINE).metrics  # type: ignore[arg-type]
    header = {"schema_version", "medrobust_version", "created", "title", "model", "data"}
    assert header | {"threat_model", "attacks", "checks", "timing", "task"} <= set(seg)
    assert seg["task"] == "segmentation"
    codes = {c["code"] for c in seg["checks"]}
    assert {"MR101", "MR104", "MR105", "MR106"} <= codes
    assert "MR107" not in codes  # a classification check
    assert all(c["status"] in ("pass", "warn", "fail") for c in seg["checks"])


def test_medrobust_evaluate_dispatches_on_the_task(tmp_path: Path) -> None:
    import medrobust

    model = tiny()
    res = medrobust.evaluate(model, loader(model), eps=[2 / 255], targeted=[], noise=[])
    assert res.metrics["task"] == "segmentation"
    assert res.metrics["attacks"] == [{"name": "pgd-seg", "params": {}}]  # the segmenter default
    out = res.write(tmp_path / "run")
    assert (out / "metrics.json").exists() and (out / "report.html").exists()
    with pytest.raises(ValueError, match="not a segmentation attack"):
        medrobust.evaluate(model, loader(model), attacks=["fgsm"])
