"""Dice, IoU and HD95 against MONAI's own metrics, and the stateful shell's reductions."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU

from medrobust.metrics.segmentation import (
    SegmentationStats,
    dice_score,
    hausdorff_distance,
    iou_score,
)


def onehot(m: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(m, k).movedim(-1, 1).float()


def random_masks(spatial_dims: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = (20, 20) if spatial_dims == 2 else (10, 10, 10)
    t = torch.zeros((4, *size), dtype=torch.long)
    p = torch.zeros_like(t)
    for i in range(4):
        for c in range(1, k):
            lo = torch.randint(0, size[0] // 2, (spatial_dims,), generator=g)
            ext = torch.randint(2, size[0] // 2, (spatial_dims,), generator=g)
            sl = tuple(slice(int(a), int(a + e)) for a, e in zip(lo, ext, strict=True))
            if i != 3 or c != 1:  # sample 3 lacks class 1 in the truth
                t[i][sl] = c
            shift = tuple(slice(int(a) + 1, int(a + e) + 1) for a, e in zip(lo, ext, strict=True))
            if i != 2:  # sample 2 predicts only background
                p[i][shift] = c
    return p, t


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("ignore_empty", [True, False])
def test_dice_and_iou_match_monai(
    spatial_dims: int, include_background: bool, ignore_empty: bool
) -> None:
    k = 3
    p, t = random_masks(spatial_dims, k, seed=spatial_dims)
    ours = dice_score(p, t, k, include_background=include_background, ignore_empty=ignore_empty)
    ref = DiceMetric(
        include_background=include_background, reduction="none", ignore_empty=ignore_empty
    )(onehot(p, k), onehot(t, k))
    torch.testing.assert_close(ours, ref.double(), equal_nan=True)
    ours_iou = iou_score(p, t, k, include_background=include_background, ignore_empty=ignore_empty)
    ref_iou = MeanIoU(
        include_background=include_background, reduction="none", ignore_empty=ignore_empty
    )(onehot(p, k), onehot(t, k))
    torch.testing.assert_close(ours_iou, ref_iou.double(), equal_nan=True)
    assert bool(torch.isnan(ours).any()) == ignore_empty  # sample 3 lacks class 1


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_hd95_matches_monai(spatial_dims: int) -> None:
    k = 3
    p, t = random_masks(spatial_dims, k, seed=10 + spatial_dims)
    ours = hausdorff_distance(p, t, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            onehot(p, k), onehot(t, k)
        )
    torch.testing.assert_close(ours, ref.double(), equal_nan=True, atol=1e-4, rtol=1e-4)
    assert torch.isnan(ours[2]).all() and torch.isnan(ours[3, 0])  # empty prediction / truth
    # classical Hausdorff (percentile 100) and anisotropic spacing too
    spacing = [1.0, 2.0] if spatial_dims == 2 else [1.0, 2.0, 0.5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_sp = HausdorffDistanceMetric(include_background=False, reduction="none")(
            onehot(p, k), onehot(t, k), spacing=spacing
        )
    ours_sp = hausdorff_distance(p, t, k, percentile=100, spacing=spacing)
    # MONAI's classical distance to an empty mask is inf; ours is undefined (NaN) as with HD95
    ref_sp = torch.where(torch.isinf(ref_sp), torch.full_like(ref_sp, math.nan), ref_sp)
    torch.testing.assert_close(ours_sp, ref_sp.double(), equal_nan=True, atol=1e-4, rtol=1e-4)


def test_hd95_simple_shift() -> None:
    t = torch.zeros(1, 12, 12, dtype=torch.long)
    t[0, 2:6, 2:6] = 1
    p = torch.roll(t, 3, dims=2)
    assert float(hausdorff_distance(p, t, 2, percentile=100)[0, 0]) == pytest.approx(3.0)
    assert float(hausdorff_distance(t, t, 2)[0, 0]) == 0.0


def test_stats_reductions_match_monai_over_batches() -> None:
    k = 3
    dice_ref = DiceMetric(include_background=False, reduction="mean")
    dice_batch = DiceMetric(include_background=False, reduction="mean_batch")
    iou_ref = MeanIoU(include_background=False, reduction="mean")
    hd_ref = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="mean")
    stats = SegmentationStats(k, class_names=["bg", "a", "b"])
    for seed in range(3):
        p, t = random_masks(2, k, seed)
        stats.update(p, t)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for m in (dice_ref, dice_batch, iou_ref, hd_ref):
                m(onehot(p, k), onehot(t, k))
    out = stats.compute()
    assert out["n"] == 12
    assert out["mean_dice"] == pytest.approx(float(dice_ref.aggregate()))
    per_class = dice_batch.aggregate()
    assert out["dice"]["a"] == pytest.approx(float(per_class[0]))
    assert out["dice"]["b"] == pytest.approx(float(per_class[1]))
    assert out["mean_iou"] == pytest.approx(float(iou_ref.aggregate()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert out["mean_hd95"] == pytest.approx(float(hd_ref.aggregate()), rel=1e-4)
    assert set(out["dice"]) == {"a", "b"}
    assert out["hd95_undefined"] > 0  # sample 2 of each batch predicts nothing
    assert 0 < out["pixel_accuracy"] < 1


def test_stats_empty_and_errors() -> None:
    stats = SegmentationStats(2)
    out = stats.compute()
    assert out["mean_dice"] is None and out["pixel_accuracy"] is None
    bg = torch.zeros(1, 4, 4, dtype=torch.long)
    stats.update(bg, bg)  # nothing defined: background is excluded and the truth is empty
    assert stats.compute()["mean_dice"] is None
    with pytest.raises(ValueError, match="num_classes is 2"):
        dice_score(bg + 2, bg, 2)
    with pytest.raises(ValueError, match="same shape"):
        iou_score(bg, bg[:, :2], 2)
    with pytest.raises(ValueError, match="integer class indices"):
        dice_score(bg.float(), bg, 2)
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(bg, bg, 2, percentile=120)
    with pytest.raises(ValueError, match="class_names"):
        SegmentationStats(3, class_names=["a"])
    assert math.isnan(float(dice_score(bg, bg, 2)[0, 0]))
