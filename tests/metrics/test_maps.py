"""Tests of medrobust.metrics.maps against scipy / numpy / MONAI references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from medrobust.explain import (
    center_of_mass,
    com_shift,
    lesion_hit_ratio,
    localization_iou,
    map_mse,
    map_ssim,
    normalize_map,
    pearson,
    spearman,
    topk_intersection,
)

SHAPES = [(3, 1, 9, 7), (3, 9, 7), (2, 1, 5, 6, 4), (2, 5, 6, 4)]


def _rand(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _per_sample(t: torch.Tensor) -> list[np.ndarray]:
    """Spatial arrays per sample, dropping a singleton channel (the metrics' convention)."""
    arr = t.numpy()
    if arr.ndim == 5 or (arr.ndim == 4 and arr.shape[1] == 1):
        arr = arr[:, 0]
    return list(arr)


def _pairs(a: torch.Tensor, b: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(zip(_per_sample(a), _per_sample(b), strict=True))


# --------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_spearman_matches_scipy_with_ties(shape: tuple[int, ...]) -> None:
    # integer-valued maps in 0..4 have many ties: exercises average ranks
    a = torch.floor(_rand(shape, 1) * 5)
    b = torch.floor(_rand(shape, 2) * 5) + 0.3 * a
    ours = spearman(a, b)
    assert ours.shape == (shape[0],)
    ref = [stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in _pairs(a, b)]
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)
    # continuous maps, float32
    c, d = _rand(shape, 3, torch.float32), _rand(shape, 4, torch.float32)
    ref = [stats.spearmanr(x.ravel(), y.ravel())[0] for x, y in _pairs(c, d)]
    np.testing.assert_allclose(spearman(c, d).numpy(), ref, atol=1e-6)
    assert spearman(c, d).dtype == torch.float32


def test_spearman_invariant_to_monotone_maps_and_nan_for_constant() -> None:
    a = _rand((2, 1, 6, 6), 5)
    torch.testing.assert_close(spearman(a, torch.exp(3 * a)), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(spearman(a, -a), -torch.ones(2, dtype=torch.float64))
    const = torch.cat([torch.zeros(1, 1, 6, 6, dtype=torch.float64), a[1:]])
    out = spearman(const, a)
    assert math.isnan(float(out[0])) and float(out[1]) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_pearson_matches_scipy(shape: tuple[int, ...]) -> None:
    a, b = _rand(shape, 6), _rand(shape, 7)
    b = b + 0.5 * a
    ref = [stats.pearsonr(x.ravel(), y.ravel())[0] for x, y in _pairs(a, b)]
    np.testing.assert_allclose(pearson(a, b).numpy(), ref, atol=1e-12)
    assert math.isnan(float(pearson(torch.ones(1, 4, 4), torch.rand(1, 4, 4))[0]))


def test_pearson_is_differentiable() -> None:
    a = _rand((2, 1, 5, 5), 8).requires_grad_(True)
    b = _rand((2, 1, 5, 5), 9)
    assert torch.autograd.gradcheck(lambda t: pearson(t, b), (a,))


# --------------------------------------------------------------------------------------------
# top-k
# --------------------------------------------------------------------------------------------


def _topk_reference(a: np.ndarray, b: np.ndarray, k: int) -> float:
    ta = set(np.argsort(-a.ravel(), kind="stable")[:k].tolist())
    tb = set(np.argsort(-b.ravel(), kind="stable")[:k].tolist())
    return len(ta & tb) / k


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 5, 0.25, 0.5])
def test_topk_intersection_matches_numpy(shape: tuple[int, ...], k: float) -> None:
    a = _rand(shape, 10)
    b = a + 0.3 * _rand(shape, 11)  # related, so intersections are neither 0 nor 1
    n = int(np.prod(_per_sample(a)[0].shape))
    kk = k if isinstance(k, int) else max(1, round(k * n))
    ref = [_topk_reference(x, y, kk) for x, y in _pairs(a, b)]
    ours = topk_intersection(a, b, k)
    assert ours.shape == (shape[0],)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-12)


def test_topk_intersection_hand_example() -> None:
    a = torch.tensor([[[9.0, 8.0], [1.0, 0.0]]])  # top-2 of a: (0,0), (0,1)
    b = torch.tensor([[[9.0, 0.0], [8.0, 1.0]]])  # top-2 of b: (0,0), (1,0)
    assert float(topk_intersection(a, b, 2)[0]) == pytest.approx(0.5)
    assert float(topk_intersection(a, b, 4)[0]) == pytest.approx(1.0)
    assert float(topk_intersection(a, b, 1)[0]) == pytest.approx(1.0)
    assert float(topk_intersection(a, -a, 2)[0]) == pytest.approx(0.0)


def test_topk_k_validation() -> None:
    a = torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match=r"k must be in \[1, 16\].*got 17"):
        topk_intersection(a, a, 17)
    with pytest.raises(ValueError, match=r"k must be in \[1, 16\].*got 0"):
        topk_intersection(a, a, 0)
    with pytest.raises(ValueError, match=r"fractional k must lie in \(0, 1\).*got 1\.5"):
        topk_intersection(a, a, 1.5)
    with pytest.raises(TypeError, match="k must be an int or a float"):
        topk_intersection(a, a, True)
    with pytest.raises(TypeError, match="k must be an int or a float"):
        topk_intersection(a, a, "5")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# centre of mass
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_center_of_mass_matches_scipy(shape: tuple[int, ...]) -> None:
    m = _rand(shape, 12) ** 3
    ours = center_of_mass(m)
    ref = np.stack([np.array(ndimage.center_of_mass(x)) for x in _per_sample(m)])
    assert ours.shape == (shape[0], len(ref[0]))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_com_shift_matches_numpy(shape: tuple[int, ...]) -> None:
    a, b = _rand(shape, 13) ** 2, _rand(shape, 14) ** 4
    ref = [
        np.linalg.norm(np.array(ndimage.center_of_mass(x)) - np.array(ndimage.center_of_mass(y)))
        for x, y in _pairs(a, b)
    ]
    np.testing.assert_allclose(com_shift(a, b).numpy(), ref, atol=1e-10)


def test_center_of_mass_hand_example_and_zero_map() -> None:
    m = torch.zeros(2, 1, 5, 7)
    m[0, 0, 1, 2] = 1.0
    m[0, 0, 3, 6] = 3.0
    com = center_of_mass(m)
    torch.testing.assert_close(com[0], torch.tensor([2.5, 5.0]))
    assert torch.isnan(com[1]).all()
    # a point mass moved by (3, 4) pixels shifts by 5
    p, q = torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)
    p[0, 1, 1], q[0, 4, 5] = 1.0, 1.0
    assert float(com_shift(p, q)[0]) == pytest.approx(5.0)


def test_com_shift_is_differentiable() -> None:
    a = (_rand((1, 1, 5, 6), 15) + 0.1).requires_grad_(True)
    b = _rand((1, 1, 5, 6), 16)
    assert torch.autograd.gradcheck(lambda t: com_shift(t, b), (a,))


# --------------------------------------------------------------------------------------------
# SSIM and MSE
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "dims"), [((2, 1, 20, 17), 2), ((2, 1, 13, 12, 14), 3)])
def test_map_ssim_matches_monai(shape: tuple[int, ...], dims: int) -> None:
    from monai.metrics.regression import compute_ssim_and_cs

    a = _rand(shape, 17, torch.float32)
    b = (a + 0.5 * _rand(shape, 18, torch.float32)) * 3.0 - 1.0  # rescaled: min-max undoes it
    ours = map_ssim(a, b)
    an, bn = normalize_map(a), normalize_map(b)
    ssim_map, _ = compute_ssim_and_cs(
        an, bn, spatial_dims=dims, kernel_size=[11] * dims, kernel_sigma=[1.5] * dims
    )
    ref = ssim_map.flatten(1).mean(1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert 0.0 < float(ours.min()) < 0.99  # not a vacuous comparison


def test_map_ssim_properties_and_small_maps() -> None:
    a = _rand((2, 1, 7, 7), 19)  # smaller than the 11-pixel window
    torch.testing.assert_close(map_ssim(a, a), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(map_ssim(a, 5 * a + 2), torch.ones(2, dtype=torch.float64))
    assert float(map_ssim(a, 1 - a).max()) < 0.0  # inverted map: anti-correlated structure
    low = map_ssim(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 2, 2))  # tiny maps still work
    assert low.shape == (1,) and torch.isfinite(low).all()
    x = a.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(map_ssim(x, _rand((2, 1, 7, 7), 20)).sum(), x)
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    with pytest.raises(ValueError, match="win_size must be a positive odd integer, got 4"):
        map_ssim(a, a, win_size=4)
    with pytest.raises(ValueError, match="sigma must be a positive finite number"):
        map_ssim(a, a, sigma=0.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_map_mse_matches_numpy(shape: tuple[int, ...]) -> None:
    a, b = _rand(shape, 21), _rand(shape, 22)
    ref = [np.mean((x / x.sum() - y / y.sum()) ** 2) for x, y in _pairs(a, b)]
    np.testing.assert_allclose(map_mse(a, b).numpy(), ref, rtol=1e-12)
    torch.testing.assert_close(map_mse(a, 7 * a), torch.zeros(shape[0], dtype=torch.float64))


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------


def test_normalize_map_minmax_and_sum() -> None:
    m = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mm = normalize_map(m, "minmax")
    torch.testing.assert_close(mm[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    torch.testing.assert_close(mm[1:], torch.zeros(2, 2, 2))  # constant maps -> zeros
    sm = normalize_map(m, "sum")
    torch.testing.assert_close(sm[0], m[0] / 18.0)
    torch.testing.assert_close(sm[1], torch.full((2, 2), 0.25))
    torch.testing.assert_close(sm[2], torch.zeros(2, 2))  # no division by zero
    x = m.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(
        normalize_map(x, "minmax")[0, 0, 1] + normalize_map(x, "sum").sum(), x
    )
    assert torch.isfinite(g).all()
    with pytest.raises(ValueError, match="normalize mode must be 'minmax' or 'sum', got 'l1'"):
        normalize_map(m, "l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"non-empty batch.*got shape \(4,\)"):
        normalize_map(torch.rand(4))


# --------------------------------------------------------------------------------------------
# lesion metrics (hand-checked)
# --------------------------------------------------------------------------------------------


def test_lesion_hit_ratio_hand_example() -> None:
    m = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[0, 1], [0, 1]], [[1, 1], [0, 0]]])
    out = lesion_hit_ratio(m, mask)  # map (B,1,H,W), mask (B,H,W)
    assert float(out[0]) == pytest.approx(6.0 / 10.0)
    assert math.isnan(float(out[1]))  # all-zero map: undefined
    out3 = lesion_hit_ratio(torch.ones(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2, dtype=torch.bool))
    assert float(out3[0]) == pytest.approx(1.0)


def test_lesion_hit_ratio_errors() -> None:
    m = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"same shape, got \(1, 1, 4, 4\) and \(1, 4, 5\)"):
        lesion_hit_ratio(m, torch.ones(1, 4, 5))
    with pytest.raises(ValueError, match=r"mask must be binary.*\[2"):
        lesion_hit_ratio(m, torch.full((1, 4, 4), 2))
    with pytest.raises(ValueError, match="map must be non-negative"):
        lesion_hit_ratio(m - 0.5, torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=r"same shape, got \(1, 1, 4, 4\) and \(4, 4\)"):
        lesion_hit_ratio(m, torch.ones(4, 4))


def test_localization_iou_hand_example() -> None:
    m = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])  # min-max: [[0, .25], [.5, 1]]
    mask = torch.tensor([[[0, 0], [0, 1]]])
    assert float(localization_iou(m, mask)[0]) == pytest.approx(0.5)  # {(1,0),(1,1)} vs {(1,1)}
    assert float(localization_iou(m, mask, threshold=0.75)[0]) == pytest.approx(1.0)
    assert float(localization_iou(m, mask, threshold=0.2)[0]) == pytest.approx(1 / 3)
    assert float(localization_iou(m, 1 - mask, threshold=0.75)[0]) == pytest.approx(0.0)
    empty = localization_iou(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))
    assert math.isnan(float(empty[0]))
    vol = torch.zeros(1, 1, 3, 3, 3)
    vol[0, 0, 1, 1, 1] = 1.0
    assert float(localization_iou(vol, (vol > 0).long())[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 1.5"):
        localization_iou(m, mask, threshold=1.5)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\], got 0"):
        localization_iou(m, mask, threshold=0)


# --------------------------------------------------------------------------------------------
# shape validation shared by all metrics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [spearman, pearson, com_shift, map_ssim, map_mse, lambda a, b: topk_intersection(a, b, 2)],
)
def test_pairwise_metrics_validate_shapes(fn: object) -> None:
    with pytest.raises(ValueError, match=r"same shape, got \(2, 1, 6, 6\) and \(2, 1, 6, 5\)"):
        fn(torch.rand(2, 1, 6, 6), torch.rand(2, 1, 6, 5))  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"2-D or 3-D maps.*got shape \(2, 36\)"):
        fn(torch.rand(2, 36), torch.rand(2, 36))  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"\(B, 1, H, W, D\).*got shape \(2, 3, 4, 4, 4\)"):
        fn(torch.rand(2, 3, 4, 4, 4), torch.rand(2, 3, 4, 4, 4))  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"b must be a torch\.Tensor, got ndarray"):
        fn(torch.rand(2, 4, 4), np.zeros((2, 4, 4)))  # type: ignore[operator]
    with pytest.raises(ValueError, match="empty"):
        fn(torch.rand(0, 4, 4), torch.rand(0, 4, 4))  # type: ignore[operator]


def test_channel_first_and_plain_layouts_agree() -> None:
    a, b = _rand((2, 1, 6, 7), 23), _rand((2, 1, 6, 7), 24)
    for fn in (spearman, pearson, com_shift, map_ssim, map_mse):
        torch.testing.assert_close(fn(a, b), fn(a[:, 0], b[:, 0]))
        torch.testing.assert_close(fn(a, b), fn(a, b[:, 0]))
    # a rank-4 tensor with dimension 1 > 1 is read as a 3-D volume (B, H, W, D)
    v = _rand((2, 3, 4, 5), 25)
    assert center_of_mass(v).shape == (2, 3)
    torch.testing.assert_close(center_of_mass(v), center_of_mass(v.unsqueeze(1)))
