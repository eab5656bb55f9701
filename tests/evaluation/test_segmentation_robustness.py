"""Numbers a segmentation audit must get right (issue 10): every sample with something to break
is attacked (however low its clean Dice), broken means below a fraction of the sample's own
clean Dice, a sample not attacked is never reported as attacked, and the frozen suites run with
SEA-style scheduling and state their iteration budget."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from medrobust.attacks.objectives.segmentation import sample_dice
from medrobust.evaluation.suites import SEGMENTATION_SUITES, resolve_suite
from medrobust.models import ModelAdapter
from medrobust.pipelines.results import evaluate_segmentation
from medrobust.types import Norm
from tests.evaluation.test_segmentation_eval import tiny

QUIET: dict[str, Any] = {"targeted": [], "noise": [], "checks": False, "n_examples": 0}


def poor_data(model: ModelAdapter) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Five images: sample 0 segmented poorly (clean Dice ~0.3), sample 4 at clean Dice 0, the
    rest perfectly. Returns the batches and the clean Dice per sample."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((5, 1, 16, 16), generator=g) * 0.8 + 0.1
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[0] = torch.roll(pred[0], 3, dims=0)
    y[4] = torch.where(pred[4] == 0, 1, 0)  # no foreground pixel in common: Dice 0
    clean = sample_dice(pred, y, 3)
    assert 0.1 < float(clean[0]) < 0.45 and float(clean[4]) == 0.0
    assert bool((clean[1:4] == 1).all())
    return [{"image": x[:3], "mask": y[:3]}, {"image": x[3:], "mask": y[3:]}], clean


def test_a_poorly_segmented_sample_is_attacked_and_its_dice_falls() -> None:
    model = tiny()
    data, clean = poor_data(model)
    attack = [{"name": "pgd-seg", "steps": 5}]
    res = evaluate_segmentation(model, data, attacks=attack, eps=[0.05, 0.2], **QUIET)
    rec = res.records
    assert rec is not None
    assert rec.eligible.tolist() == [True, True, True, True, False]
    for e_i in range(2):
        cell = rec.cells[0][e_i]
        # the sample at clean Dice 0 is not attacked and not reported as attacked
        assert not bool(cell.attacked[4]) and not bool(cell.broken[4])
        assert bool(cell.attacked[:4].all())
        row = res.metrics["segmentation"]["untargeted"][e_i]
        assert row["n_attacked"] == 4 and row["n"] == 5
    score = rec.cells[0][1].score
    assert float(score[0]) < float(clean[0]), "the Dice of the poorly segmented sample fell"
    # broken: below half of the sample's own clean Dice, recomputed from the records
    want = (score < 0.5 * clean) & rec.eligible
    assert torch.equal(rec.cells[0][1].broken, want)
    worst = res.metrics["segmentation"]["worst_case"][1]
    assert worst["n_attacked"] == 4 and worst["n_broken"] == int(want.sum())
    assert worst["broken_rate"] == pytest.approx(int(want.sum()) / 4)
    assert res.metrics["segmentation"]["broken_fraction"] == 0.5
    # lesions by size: same truth counts clean and under attack, never more found under attack
    seg = res.metrics["segmentation"]
    clean_les, worst_les = seg["clean_lesions"], seg["worst_case"][1]["lesions"]
    assert clean_les["bins"] == worst_les["bins"] and clean_les["lesions"] == worst_les["lesions"]
    assert sum(clean_les["lesions"]) > 0
    for c, w in zip(clean_les["recall"], worst_les["recall"], strict=True):
        assert (c is None) == (w is None) and (c is None or w <= c + 1e-12)
    found = rec.cells[0][1].extra["lesions_found"]
    assert torch.isnan(found[4]).all()  # the sample not attacked has no attacked counts


def test_the_broken_fraction_is_a_setting() -> None:
    model = tiny()
    data, clean = poor_data(model)
    attack = [{"name": "pgd-seg", "steps": 5}]
    strict = evaluate_segmentation(
        model, data, attacks=attack, eps=[0.1], broken_fraction=0.95, **QUIET
    )
    lax = evaluate_segmentation(
        model, data, attacks=attack, eps=[0.1], broken_fraction=0.05, **QUIET
    )
    for res, frac in ((strict, 0.95), (lax, 0.05)):
        rec = res.records
        assert rec is not None
        score = rec.cells[0][0].score
        assert torch.equal(rec.cells[0][0].broken, (score < frac * clean) & rec.eligible)
        assert res.metrics["segmentation"]["broken_fraction"] == frac
        assert res.config["task"]["broken_fraction"] == frac
    n_strict = strict.metrics["segmentation"]["worst_case"][0]["n_broken"]
    n_lax = lax.metrics["segmentation"]["worst_case"][0]["n_broken"]
    assert n_strict > n_lax
    for bad in (0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"broken_fraction must be"):
            evaluate_segmentation(model, data, eps=[0.1], broken_fraction=bad, **QUIET)
    with pytest.raises(ValueError, match=r"\['broken_fraction'\] are set by the evaluation"):
        bad_spec = [{"name": "pgd-seg", "broken_fraction": 0.2}]
        evaluate_segmentation(model, data, attacks=bad_spec, eps=[0.1], **QUIET)


def test_segmentation_suites_are_frozen_and_resolve_per_norm() -> None:
    assert set(SEGMENTATION_SUITES) == {"seg-standard", "seg-thorough"}
    for name in SEGMENTATION_SUITES:
        linf = [a["name"] for a in resolve_suite(name, "linf", 2).attacks]
        l2 = [a["name"] for a in resolve_suite(name, "l2", 2).attacks]
        assert linf[0] == "pgd-seg" and linf[-1] == "square-seg"  # cheap first, black box last
        assert {"segpgd", "cospgd", "apgd-sea-js", "apgd-sea-mce", "apgd-sea-mbce"} <= set(linf)
        assert "apgd-sea-msph" in linf
        assert l2 == linf[:-1]  # the black-box leg is Linf-only


def test_the_suite_runs_with_sea_scheduling_and_states_its_budget(tmp_path: Path) -> None:
    model = tiny()
    data, _ = poor_data(model)
    res = evaluate_segmentation(model, data, attacks="seg-standard", eps=[0.02, 0.3], **QUIET)
    seg = res.metrics["segmentation"]
    specs = resolve_suite("seg-standard", "linf", 3).attacks
    assert [a["name"] for a in res.metrics["attacks"]] == [a["name"] for a in specs]
    assert seg["scheduling"] == "cascade" and res.config["mode"] == "cascade"
    per = seg["iterations"]["per_attack"]
    assert per == {a["name"]: a.get("steps", a.get("n_queries")) for a in specs}
    assert seg["iterations"]["per_sample_and_budget"] == sum(per.values())
    rec = res.records
    assert rec is not None
    for e_i in range(2):
        broken_before = torch.zeros(rec.n, dtype=torch.bool)
        for a_i in range(len(specs)):
            cell = rec.cells[a_i][e_i]
            # each attack ran only on the samples the earlier ones left unbroken (or carried)
            fresh = cell.attacked & ~rec.cells[a_i][e_i - 1].broken if e_i else cell.attacked
            assert not bool((fresh & broken_before).any())
            broken_before |= cell.broken
    first, later = rec.cells[0][1], rec.cells[-1][1]
    assert bool(first.broken.any()), "the large budget must break some samples"
    assert int(later.attacked.sum()) < int(first.attacked.sum())  # scheduling saved work
    worst = seg["worst_case"][-1]
    assert worst["mean_worst_dice"] <= seg["untargeted"][len(specs) - 1]["mean_dice"] + 1e-9
    res.write(tmp_path / "run")
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Iteration budget per sample and budget" in html and "SEA-style scheduling" in html
    assert "Lesions found, by size" in html and "broken" in html
    with pytest.raises(ValueError, match="unknown attack 'standard'"):
        evaluate_segmentation(model, data, attacks="standard", **QUIET)  # a classifier suite


def test_the_pipeline_passes_suite_and_broken_fraction() -> None:
    from medrobust.pipelines.reporter import Reporter
    from medrobust.pipelines.segmentation import _attack_lists, evaluate_segmenter

    model = tiny()
    data, _ = poor_data(model)
    settings = {"suite": "seg-standard", "broken_fraction": 0.3, "eps": [0.05], "noise": []}
    res = evaluate_segmenter(model, data, {**settings, "targeted": [], "n_examples": 0})
    seg = res.metrics["segmentation"]
    assert seg["broken_fraction"] == 0.3 and seg["scheduling"] == "cascade"
    assert [a["name"] for a in res.metrics["attacks"]][-1] == "square-seg"

    ev = SimpleNamespace(attacks=["pgd-seg", "asma"], suite="standard")
    with pytest.raises(ValueError, match="names the untargeted attacks; list only targeted"):
        _attack_lists(ev, "seg-standard", Reporter())
    assert _attack_lists(ev, None, Reporter()) == (["pgd-seg"], ["asma"])


def _records(scores: list[list[list[float]]], clean: list[float]) -> Any:
    """Records of ``scores[a][e][n]`` (NaN: not attacked)."""
    from medrobust.evaluation.records import CellRecord, Records

    n_a, n_e = len(scores), len(scores[0])
    rec = Records(n_a, n_e)
    rec.clean_score = torch.tensor(clean, dtype=torch.float64)
    rec.eligible = torch.ones(len(clean), dtype=torch.bool)
    for a in range(n_a):
        for e in range(n_e):
            s = torch.tensor(scores[a][e], dtype=torch.float64)
            n = len(clean)
            cell = CellRecord.blank(n, broken=torch.zeros(n, dtype=torch.bool), attacked=~s.isnan())
            cell.score = s
            rec.cells[a][e] = cell
    return rec


def test_segmentation_checks_warn_when_they_should() -> None:
    from medrobust.evaluation.audit import AttackSpec
    from medrobust.evaluation.tasks.segmentation_checks import segmentation_checks

    nan = float("nan")
    ctx = SimpleNamespace(
        specs=[AttackSpec("pgd-seg"), AttackSpec("square-seg")],
        budgets=[0.01, 0.02],
        per_attack="own",
        norm=Norm.LINF,
        adapter=SimpleNamespace(bounds=SimpleNamespace(width=1.0)),
    )
    # pgd-seg's Dice rises with the budget; square-seg finds a lower Dice on sample 1
    rec = _records([[[0.5, 0.6], [0.7, 0.8]], [[nan, 0.3], [nan, 0.8]]], [0.9, 0.9])
    rec.extra["check/mr301/short"] = torch.tensor([0.4, nan], dtype=torch.float64)
    rec.extra["check/mr301/long"] = torch.tensor([0.6, nan], dtype=torch.float64)
    rows = {r["code"]: r for r in segmentation_checks(ctx, rec)}  # type: ignore[arg-type]
    assert {c: r["status"] for c, r in rows.items()} == {
        "MR301": "warn",
        "MR302": "warn",
        "MR303": "warn",
        "MR304": "pass",  # skipped: no unbounded probe or budget
    }
    assert "pgd-seg: 0.550 at 0.01, 0.750 at 0.02" in rows["MR302"]["message"]
    assert "square-seg: 1 at eps=0.01" in rows["MR303"]["message"]
    good = _records([[[0.5, 0.6], [0.4, 0.5]], [[nan, 0.6], [nan, 0.5]]], [0.9, 0.9])
    good.extra["check/mr301/short"] = torch.tensor([0.4, 0.5], dtype=torch.float64)
    good.extra["check/mr301/long"] = torch.tensor([0.3, 0.5], dtype=torch.float64)
    rows = {r["code"]: r for r in segmentation_checks(ctx, good)}  # type: ignore[arg-type]
    assert all(r["status"] == "pass" for r in rows.values()), rows


def test_an_audit_runs_the_segmentation_checks() -> None:
    model = tiny()
    data, _ = poor_data(model)
    attacks = [{"name": "pgd-seg", "steps": 3}, {"name": "square-seg", "n_queries": 20}]
    res = evaluate_segmentation(
        model, data, attacks=attacks, eps=[0.02, 0.1], targeted=[], noise=[], probe_samples=3
    )
    rows = {c["code"]: c for c in res.metrics["checks"]}
    assert {"MR301", "MR302", "MR303"} <= set(rows)
    assert "on 3 samples" in rows["MR301"]["message"]  # samples 0-2 are attacked and probed
    assert rows["MR302"]["message"].endswith("(by construction, carried rows)")
