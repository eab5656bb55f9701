"""Surface Dice against MONAI's metric object and by hand, its spacing in mm, and its place in
the stateful shell."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from monai.metrics import SurfaceDiceMetric

from medrobust.metrics import SegmentationStats, surface_dice
from tests.metrics.test_segmentation import random_masks


def onehot(m: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(m, k).movedim(-1, 1).float()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_matches_monai_metric_where_the_truth_holds_the_class(spatial_dims: int) -> None:
    k = 3
    p, t = random_masks(spatial_dims, k, seed=20 + spatial_dims)
    spacing = [1.0, 2.0] if spatial_dims == 2 else [1.0, 2.0, 0.5]
    ours = surface_dice(p, t, k, tolerance=1.5, spacing=spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SurfaceDiceMetric([1.5, 1.5], include_background=False, reduction="none")(
            onehot(p, k), onehot(t, k), spacing=spacing
        )
    present = torch.stack([(t == c).flatten(1).any(1) for c in (1, 2)], dim=1)
    torch.testing.assert_close(ours[present], ref.double().nan_to_num(0.0)[present])
    assert torch.isnan(ours[~present]).all() and bool(torch.isnan(ours[3, 0]))
    assert (ours[2] == 0).all()  # sample 2 predicts only background: no boundary agrees
    assert ((ours[present] >= 0) & (ours[present] <= 1)).all()


def test_tolerance_and_spacing_in_mm() -> None:
    t = torch.zeros(1, 16, 16, dtype=torch.long)
    t[0, 4:10, 4:10] = 1
    p = torch.roll(t, 2, dims=2)  # shifted 2 voxels along the last axis
    assert float(surface_dice(t, t, 2)[0, 0]) == 1.0
    within = float(surface_dice(p, t, 2, tolerance=2.0)[0, 0])
    tight = float(surface_dice(p, t, 2, tolerance=1.0)[0, 0])
    assert within == 1.0 and 0 < tight < 1
    # 2 voxels of 1.5 mm are 3 mm: a 2 mm tolerance no longer covers the shift
    assert float(surface_dice(p, t, 2, tolerance=2.0, spacing=(1.0, 1.5))[0, 0]) < 1
    assert float(surface_dice(p, t, 2, tolerance=3.0, spacing=(1.0, 1.5))[0, 0]) == 1.0
    # by hand: of each square's 20 boundary voxels, 5 + 5 on the top and bottom rows and the
    # 2 side voxels next to the corners lie within 1 voxel of the other boundary: 24 / 40
    assert tight == pytest.approx(0.6)


def test_stats_report_surface_dice_with_the_unit() -> None:
    k = 3
    p, t = random_masks(2, k, seed=3)
    stats = SegmentationStats(k, class_names=["bg", "a", "b"], spacing=(0.5, 0.5))
    rows = stats.rows(p, t)
    torch.testing.assert_close(
        rows["surface_dice"], surface_dice(p, t, k, spacing=(0.5, 0.5)), equal_nan=True
    )
    stats.add_rows(rows)
    out = stats.compute()
    per_sample = rows["surface_dice"].nanmean(dim=1)
    assert out["mean_surface_dice"] == pytest.approx(float(per_sample.nanmean()))
    assert set(out["surface_dice"]) == {"a", "b"}
    assert out["distance_unit"] == "mm" and out["surface_tolerance"] == 1.0
    assert SegmentationStats(k).compute()["distance_unit"] == "voxel"
    old = {key: v for key, v in rows.items() if key != "surface_dice"}  # an older checkpoint
    again = SegmentationStats(k)
    again.add_rows(old)
    assert again.compute()["mean_surface_dice"] is None and again.n == 4
    assert "surface_dice" not in SegmentationStats(k, hd95=False).rows(p, t)


def test_errors() -> None:
    m = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="tolerance must be a number > 0"):
        surface_dice(m, m, 2, tolerance=0)
    with pytest.raises(ValueError, match="spacing needs 2 values"):
        surface_dice(m, m, 2, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing must hold finite values > 0"):
        surface_dice(m, m, 2, spacing=(1.0, -1.0))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        surface_dice(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="num_classes is 2"):
        surface_dice(m + 2, m, 2)
    assert math.isnan(float(surface_dice(m, m, 2)[0, 0]))
