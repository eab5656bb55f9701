"""Tests of evaluate_explanations and the explanation report section."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from medrobust.evaluation.explanation import (
    evaluate_explanations,
)
from medrobust.reporting import ReportSection, render_report, to_jsonable
from medrobust.reporting.sections.explanation import (
    explanation_section,
    metric_curves,
    overlay_figure,
)
from tests.evaluation.interrupt import Killed, dies_after, numbers
from tests.explain.conftest import Trained

EPS = [2 / 255, 8 / 255]


def _dict_batches(t: Trained, n: int, batch: int = 8) -> list[dict[str, object]]:
    out = []
    for i in range(0, n, batch):
        out.append(
            {
                "image": t.images[i : i + batch],
                "label": t.labels[i : i + batch],
                "mask": t.masks[i : i + batch],
                "id": [f"img{j}" for j in range(i, min(i + batch, n))],
            }
        )
    return out


@pytest.fixture(scope="module")
def result(trained_cnn: Trained):  # type: ignore[no-untyped-def]
    return evaluate_explanations(
        trained_cnn.model,
        _dict_batches(trained_cnn, 16),
        eps=EPS,
        steps=6,
        n_examples=3,
        class_names=["benign", "malignant"],
    )


def test_schema_and_counts(result) -> None:  # type: ignore[no-untyped-def]
    m = result.metrics
    assert m["layer"] == "features.layer4"
    assert m["eps"] == EPS and m["eps_display"] == ["2/255", "8/255"]
    assert m["n_samples"] == 16
    # the fixture's samples are all correctly classified
    assert m["n_correct"] == 16
    assert m["n_attacked"] + m["n_undefined_map"] == 16
    assert m["has_masks"] is True
    assert 0.0 <= m["lesion_hit_clean"] <= 1.0
    assert [a["name"] for a in m["attacks"]] == ["gradcam-kept", "gradcam-flip"]
    assert {a["name"]: a["label"] for a in m["attacks"]} == {
        "gradcam-kept": "kept",
        "gradcam-flip": "changed",
    }
    assert len(m["results"]) == 4 and len(m["noise"]) == 2
    for r in m["results"]:
        assert r["n"] == m["n_attacked"]
        for key in ("success_rate", "label_kept_rate", "map_moved_rate", "topk_intersection"):
            assert 0.0 <= r[key] <= 1.0, key
        assert r["linf"] <= r["eps"] + 1e-6
    kept = [r for r in m["results"] if r["attack"] == "gradcam-kept"]
    flip = [r for r in m["results"] if r["attack"] == "gradcam-flip"]
    assert all(r["label_kept_rate"] == 1.0 for r in kept)
    assert all(r["success_rate"] <= 1.0 - r["label_kept_rate"] + 1e-9 for r in flip)
    # a label-kept success is a moved map, so success never exceeds the moved rate
    assert all(r["success_rate"] <= r["map_moved_rate"] + 1e-9 for r in kept)
    # stronger budget, less overlap; attack beats noise of the same budget
    assert kept[1]["topk_intersection"] <= kept[0]["topk_intersection"] + 1e-9
    noise_big = m["noise"][1]
    assert kept[1]["topk_intersection"] < noise_big["topk_intersection"] - 0.2
    json.dumps(to_jsonable(m), allow_nan=False)


def test_maps_and_examples(result) -> None:  # type: ignore[no-untyped-def]
    n = result.metrics["n_attacked"]
    maps = result.maps
    assert maps["clean"].shape == (n, 1, 32, 32) and maps["clean"].dtype == np.float16
    assert maps["index"].tolist() == sorted(maps["index"].tolist())
    assert maps["id"][0].startswith("img")
    rec = result.records
    for a_i, name in enumerate(("gradcam-kept", "gradcam-flip")):
        # every eligible sample is attacked at the smallest budget; at the larger one only
        # those the attack did not already break there (the rest are carried over)
        assert maps[f"{name}__eps0"].shape == (n, 1, 32, 32)
        for j in range(2):
            index = maps[f"{name}__eps{j}__index"]
            m = int(index.shape[0])
            assert maps[f"{name}__eps{j}"].shape == (m, 1, 32, 32)
            assert maps[f"{name}__eps{j}__pred"].shape == (m,)
            fresh = rec.cells[a_i][j].attacked & rec.eligible
            if j:
                fresh &= ~rec.cells[a_i][j - 1].broken
            assert sorted(index.tolist()) == fresh.nonzero().flatten().tolist()
    # maps are sum-normalised
    np.testing.assert_allclose(maps["clean"].astype(np.float64).sum(axis=(1, 2, 3)), 1.0, atol=5e-3)
    assert len(result.examples) == 3
    ex = result.examples[0]
    assert ex.image.shape == (1, 32, 32) and ex.mask is not None and ex.mask.shape == (32, 32)
    assert len(ex.attacked) == 4  # each attack at each budget (carried when broken earlier)
    assert all(not rec.get("carried") or rec["success"] for rec in ex.attacked)
    blob = result.maps_npz()
    with np.load(io.BytesIO(blob)) as z:
        assert set(z.files) == set(maps)


def test_report_section_renders(result) -> None:  # type: ignore[no-untyped-def]
    section = explanation_section(result.metrics, result.examples, result.class_names)
    assert isinstance(section, ReportSection)
    assert section.key == "explanations" and len(section.figures) == 2
    html = render_report(
        {"schema_version": 1, "title": "t", "explanations": result.metrics},
        [],
        extra_sections=[section],
    )
    assert "Explanations under attack" in html
    assert "gradcam-kept" in html and "Random noise of the same budget" in html
    assert len(re.findall(r"data:image/png;base64,", html)) == 2
    # the raw dict is not repeated under "Other results"
    assert "Other results" not in html


def test_figures(result) -> None:  # type: ignore[no-untyped-def]
    fig = overlay_figure(result.examples, ["benign", "malignant"])
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3 * 4  # 3 examples x (image, clean, 2 attacks)
    assert "attack" in fig.axes[2].get_title()
    curves = metric_curves(result.metrics)
    assert len(curves.axes) == 3
    with pytest.raises(ValueError, match="no attacked maps at eps"):
        overlay_figure(result.examples, eps=0.5)
    with pytest.raises(ValueError, match="no examples"):
        overlay_figure([])
    with pytest.raises(ValueError, match="no explanation results"):
        explanation_section({"results": []})


def test_tuple_batches_without_masks_and_max_samples(trained_cnn: Trained) -> None:
    loader = [(trained_cnn.images[:6], trained_cnn.labels[:6])] * 2
    res = evaluate_explanations(
        trained_cnn.model,
        loader,
        eps=4 / 255,
        attacks=[{"name": "gradcam-kept", "loss": "com"}],
        steps=2,
        max_samples=8,
        n_examples=0,
        keep_maps=False,
    )
    m = res.metrics
    assert m["n_samples"] == 8
    assert m["has_masks"] is False and m["lesion_hit_clean"] is None
    assert res.maps == {} and res.examples == []
    assert m["results"][0]["lesion_hit_adv"] is None
    assert len(metric_curves(m).axes) == 2  # no lesion panel without masks
    assert (
        len(explanation_section(res.metrics, res.examples, res.class_names).figures) == 1
    )  # no overlay without examples


def test_misclassified_samples_are_not_attacked(trained_cnn: Trained) -> None:
    wrong = 1 - trained_cnn.labels[:4]
    loader = [(trained_cnn.images[:4], wrong), (trained_cnn.images[4:8], trained_cnn.labels[4:8])]
    res = evaluate_explanations(trained_cnn.model, loader, eps=[4 / 255], steps=2, n_examples=0)
    assert res.metrics["n_correct"] == 4
    assert res.maps["index"].min() >= 4


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"attacks": ["pgd"]}, ValueError, "not an explanation attack; choose from: gradcam-flip"),
        ({"attacks": [{"name": "gradcam-kept", "eps": 0.1}]}, ValueError, r"sets \['eps'\]"),
        ({"attacks": []}, ValueError, "attacks is empty"),
        ({"eps": [0.0]}, ValueError, "every eps must be a finite number > 0"),
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"layer": "features.nope"}, ValueError, "unknown layer 'features.nope'"),
    ],
)
def test_bad_arguments(trained_cnn: Trained, kwargs: dict, exc: type, match: str) -> None:  # type: ignore[type-arg]
    loader = [(trained_cnn.images[:2], trained_cnn.labels[:2])]
    with pytest.raises(exc, match=match):
        evaluate_explanations(trained_cnn.model, loader, **{"steps": 1, **kwargs})


def test_bad_batches(trained_cnn: Trained) -> None:
    x, y = trained_cnn.images[:2], trained_cnn.labels[:2]
    with pytest.raises(ValueError, match=r"masks must have shape \(2, 32, 32\)"):
        evaluate_explanations(trained_cnn.model, [(x, y, torch.zeros(2, 16, 16))], steps=1)
    # the one batch reader of every audit: the same ValueError for every task
    with pytest.raises(ValueError, match="each batch must be a dict with 'image' and 'label'"):
        evaluate_explanations(trained_cnn.model, [x], steps=1)
    with pytest.raises(ValueError, match="a batch dict needs 'image' and 'label' keys"):
        evaluate_explanations(trained_cnn.model, [{"image": x}], steps=1)
    with pytest.raises(ValueError, match="no samples"):
        evaluate_explanations(trained_cnn.model, [], steps=1)


SPINE = {"eps": [2 / 255, 8 / 255], "steps": 3, "n_examples": 1, "probe_samples": 2}


def test_explanation_audit_resumes_with_identical_metrics(
    trained_cnn: Trained,
    tmp_path: Path,
) -> None:
    data = _dict_batches(trained_cnn, 12, batch=4)
    whole = evaluate_explanations(trained_cnn.model, data, **SPINE)
    ckpt = tmp_path / "state.pt"
    with pytest.raises(Killed):
        evaluate_explanations(trained_cnn.model, dies_after(data, 2), checkpoint=ckpt, **SPINE)
    resumed = evaluate_explanations(trained_cnn.model, data, checkpoint=ckpt, **SPINE)
    assert resumed.records is not None and resumed.records.batches_done == 3
    assert numbers(resumed.document) == numbers(whole.document)
    # the maps and the overlay examples are resumed too
    assert resumed.maps.keys() == whole.maps.keys()
    for key, arr in whole.maps.items():
        assert (arr == resumed.maps[key]).all(), key
    assert [e.id for e in resumed.examples] == [e.id for e in whole.examples]
    assert [len(e.attacked) for e in resumed.examples] == [len(e.attacked) for e in whole.examples]


def test_explanation_worst_case_and_checks(trained_cnn: Trained) -> None:
    res = evaluate_explanations(trained_cnn.model, _dict_batches(trained_cnn, 8), **SPINE)
    rec, doc = res.records, res.document
    assert rec is not None
    for e_i, row in enumerate(res.metrics["worst_case"]):
        broken = torch.zeros(rec.n, dtype=torch.bool)
        for cells in rec.cells:
            broken |= cells[e_i].broken
        assert row["broken_rate"] == pytest.approx(float(broken[rec.eligible].float().mean()))
        # the worst score is the lowest top-k intersection any attack reached, label kept
        scores = torch.stack([cells[e_i].score for cells in rec.cells])
        attacked = torch.stack([cells[e_i].attacked for cells in rec.cells])
        expected = torch.where(attacked, scores, torch.inf).amin(dim=0).clamp(max=1.0)
        assert torch.equal(rec.worst_score[e_i][rec.eligible], expected[rec.eligible])
    assert bool((rec.worst_score[1] <= rec.worst_score[0] + 1e-12).all())
    assert doc["task"] == "explanation"
    assert {"schema_version", "medrobust_version", "model", "data", "threat_model"} <= set(doc)
    codes = {c["code"] for c in doc["checks"]}
    assert {"MR101", "MR104", "MR105", "MR106"} <= codes
