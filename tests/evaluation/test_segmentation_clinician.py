"""What the clinician sees of a segmentation audit (issue 10, items 4 and 5): the worst case's
per-class Dice, HD95 and surface Dice (in mm where the data gives a spacing), the worst-case
examples with their outlines in the report, and check MR304 (an unbounded attack must drive
the Dice to about 0)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medrobust._utils.examples import SegmentationExample
from medrobust.evaluation.segmentation import data_spacing
from medrobust.evaluation.tasks.segmentation_summary import worst_metric_rows
from medrobust.models import ModelAdapter
from medrobust.pipelines.results import evaluate_segmentation
from medrobust.reporting.sections.segmentation_worst import outline_figure, worst_metrics_table
from tests.evaluation.test_segmentation_eval import loader, tiny

QUIET: dict[str, Any] = {"targeted": [], "noise": []}


class Threshold(nn.Module):
    """Foreground where the intensity exceeds 0.5; ``masked`` rounds the input first, which
    keeps every decision and zeroes every input gradient (gradient masking)."""

    def __init__(self, masked: bool) -> None:
        super().__init__()
        self.masked = masked

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.round(x) if self.masked else x
        return torch.cat([0.5 - z, z - 0.5], dim=1) * 10


def squares(n: int = 4) -> list[dict[str, Any]]:
    x = torch.full((n, 1, 16, 16), 0.2)
    for i in range(n):
        x[i, :, 3 + i : 9 + i, 4:11] = 0.8
    return [{"image": x, "mask": (x[:, 0] > 0.5).long()}]


def _checks(masked: bool, **kw: Any) -> dict[str, dict[str, Any]]:
    model = ModelAdapter(Threshold(masked), num_classes=2, task="segmentation")
    res = evaluate_segmentation(
        model, squares(), attacks=[{"name": "pgd-seg", "steps": 2}], eps=[4 / 255],
        **{"probe_samples": 4, **QUIET, **kw},
    )  # fmt: skip
    return {c["code"]: c for c in res.metrics["checks"]}


def test_mr304_fires_on_masked_gradients_and_stays_silent_on_a_normal_model() -> None:
    normal = _checks(masked=False)["MR304"]
    assert normal["status"] == "pass", normal
    assert "PGD-seg-50: mean Dice 0.000 on 4 samples" in normal["message"]
    masked = _checks(masked=True)
    assert masked["MR304"]["status"] == "warn", masked["MR304"]
    assert "well above 0" in masked["MR304"]["message"]
    dice = float(re.findall(r"mean Dice ([0-9.]+)", masked["MR304"]["message"])[0])
    assert dice > 0.05
    assert _checks(masked=False, probe_samples=0)["MR304"]["message"].startswith("skipped")


def test_mr304_reads_an_unbounded_budget_of_the_list() -> None:
    from medrobust.evaluation.audit import AttackSpec
    from medrobust.evaluation.tasks.segmentation_checks import segmentation_checks
    from medrobust.types import Norm
    from tests.evaluation.test_segmentation_robustness import _records

    ctx = SimpleNamespace(
        specs=[AttackSpec("pgd-seg")], budgets=[0.1, 1.0], per_attack="carried",
        norm=Norm.LINF, adapter=SimpleNamespace(bounds=SimpleNamespace(width=1.0)),
        task=SimpleNamespace(probe_name="PGD-seg-50"),
    )  # fmt: skip
    rec = _records([[[0.5, 0.4], [0.3, 0.2]]], [0.9, 0.9])
    rec.worst_score = torch.tensor([[0.5, 0.4], [0.3, 0.2]], dtype=torch.float64)
    row = segmentation_checks(ctx, rec, None)[-1]  # type: ignore[arg-type]
    assert row["code"] == "MR304" and row["status"] == "warn"
    assert "the attack list at eps=255/255: mean Dice 0.250 on 2 samples" in row["message"]
    rec.worst_score[1] = torch.tensor([0.01, 0.0], dtype=torch.float64)
    probe = torch.tensor([0.02, 0.03], dtype=torch.float64)
    row = segmentation_checks(ctx, rec, probe)[-1]  # type: ignore[arg-type]
    assert row["status"] == "pass" and "PGD-seg-50: mean Dice 0.025" in row["message"]
    ctx.budgets = [0.1, 0.5]
    row = segmentation_checks(ctx, rec, torch.tensor([0.4, 0.0]))[-1]  # type: ignore[arg-type]
    assert row["status"] == "warn" and "eps=" not in row["message"]


@pytest.fixture(scope="module")
def audit() -> Any:
    model = tiny()
    attacks = [{"name": "pgd-seg", "steps": 2}, {"name": "apgd-seg", "steps": 3}]
    return evaluate_segmentation(
        model, loader(model, n=6), attacks=attacks, eps=[2 / 255, 8 / 255], spacing=(0.5, 0.5),
        n_examples=2, checks=False, **QUIET,
    )  # fmt: skip


def test_worst_case_metrics_come_from_each_samples_worst_attack(audit: Any) -> None:
    seg, rec = audit.metrics["segmentation"], audit.records
    assert seg["clean"]["distance_unit"] == "mm" and seg["clean"]["mean_surface_dice"] == 1.0
    for e_i, row in enumerate(seg["worst_case"]):
        rows = worst_metric_rows(rec, e_i)
        by = rec.worst_broken_by[e_i]
        for i in range(rec.n):
            a = int(by[i])
            cell = rec.cells[a][e_i] if a >= 0 else None
            src = cell.extra if cell is not None and bool(cell.attacked[i]) else rec.clean
            for key in ("dice", "hd95", "surface_dice"):
                torch.testing.assert_close(rows[key][i], src[key][i].double(), equal_nan=True)
        m = row["metrics"]
        assert set(m["surface_dice"]) == {"organ", "lesion"}
        assert m["mean_surface_dice"] is None or 0 <= m["mean_surface_dice"] <= 1
        for r in seg["untargeted"]:
            assert r["mean_surface_dice"] is None or 0 <= r["mean_surface_dice"] <= 1
    # the largest budget's worst case is no better than the clean segmentation
    assert seg["worst_case"][-1]["metrics"]["mean_dice"] <= seg["clean"]["mean_dice"]
    table = worst_metrics_table(seg)
    assert table[0][""] == "clean" and "HD95 (mm)" in table[0]
    assert any(k.startswith("surface Dice (τ=1 mm)") for k in table[0])
    assert {r[""] for r in table} == {"clean", "worst case ε=2/255", "worst case ε=8/255"}


def test_worst_case_examples_are_the_lowest_dice_samples(audit: Any) -> None:
    rec = audit.records
    worst = audit.examples["worst"]
    assert len(worst) == 2
    attacked = torch.zeros(rec.n, dtype=torch.bool)
    for row in rec.cells:
        for cell in row:
            attacked |= cell.attacked
    lowest = sorted(float(v) for v in rec.worst_score[-1][attacked])[:2]
    shown = [float(t.title.rsplit("→ ", 1)[1]) for t in worst]
    assert shown == pytest.approx(lowest, abs=0.005)
    assert shown == sorted(shown)
    for ex in worst:
        assert ex.image.shape == (1, 16, 16) and ex.adv_pred.shape == (16, 16)


def test_report_embeds_the_outlines_and_the_surface_dice(audit: Any, tmp_path: Path) -> None:
    out = audit.write(tmp_path / "run")
    html = (out / "report.html").read_text()
    for text in (
        "Worst case per class: Dice, HD95 and surface Dice",
        "Worst-case examples: the samples with the lowest Dice",
        "mean surface Dice",
        "HD95 (in mm)",
    ):
        assert text in html
    assert "http://" not in html.split("<body", 1)[1] or 'src="http' not in html
    assert html.count("data:image/png;base64") >= 3  # curve, overlays, outlines


def test_outline_figure_shows_the_slice_with_most_foreground() -> None:
    mask = np.zeros((12, 12, 8), dtype=np.int64)
    mask[3:9, 3:9, 5] = 1
    mask[5:7, 5:7, 2] = 1
    adv = mask.copy()
    adv[3:9, 3:6, 5] = 0
    img = np.random.default_rng(0).random((1, 12, 12, 8))
    ex = SegmentationExample(img, img, mask, mask, adv, title="<case>\npgd-seg: Dice 1 → 0.5")
    fig = outline_figure([ex, ex], num_classes=2)
    axes = fig.axes
    assert "slice 5 of 8" in axes[0].get_ylabel()
    # each panel outlines the truth and one prediction
    assert all(len(ax.collections) >= 2 for ax in axes[:4])
    with pytest.raises(ValueError, match="at least one example"):
        outline_figure([], 2)


def test_spacing_comes_from_the_data_set() -> None:
    from torch.utils.data import DataLoader, Dataset

    model = tiny()
    batch = loader(model, n=2)[0]

    class WithSpacing(Dataset[dict[str, Any]]):
        spacing = (0.8, 0.8)

        def __len__(self) -> int:
            return 1

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"image": batch["image"][i], "mask": batch["mask"][i]}  # type: ignore[index]

    dl = DataLoader(WithSpacing(), batch_size=1)
    assert data_spacing(dl) == (0.8, 0.8)
    assert data_spacing([batch]) is None
    assert data_spacing(SimpleNamespace(spacing=(1.0, -1.0))) is None  # type: ignore[arg-type]
    res = evaluate_segmentation(
        model, dl, attacks=[{"name": "pgd-seg", "steps": 1}], eps=[2 / 255], checks=False,
        **QUIET,
    )  # fmt: skip
    assert res.metrics["segmentation"]["clean"]["distance_unit"] == "mm"
    with pytest.raises(ValueError, match="surface_tolerance must be a number > 0"):
        evaluate_segmentation(model, dl, surface_tolerance=0, **QUIET)
