"""Tests of medrobust.metrics (classification, image, perturbation) against references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from sklearn import metrics as skm

from medrobust.metrics import (
    ClassificationStats,
    MeanStat,
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    perturbation_norms,
    psnr,
    roc_auc,
    sensitivity_specificity,
    ssim,
)


def _random_labels(seed: int, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, (n,), generator=g), torch.randint(0, k, (n,), generator=g)


# ------------------------------------------------------------------ classification
@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 5)])
def test_confusion_accuracy_balanced_match_sklearn(seed: int, k: int) -> None:
    pred, target = _random_labels(seed, 57, k)
    cm = confusion_matrix(pred, target, k)
    ref = skm.confusion_matrix(target.numpy(), pred.numpy(), labels=list(range(k)))
    np.testing.assert_array_equal(cm.numpy(), ref)
    assert cm.dtype == torch.int64
    assert accuracy(pred, target) == pytest.approx(skm.accuracy_score(target, pred))
    assert balanced_accuracy(pred, target) == pytest.approx(
        skm.balanced_accuracy_score(target, pred)
    )


def test_logits_are_reduced_with_argmax() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.1, 3.0], [0.0, 5.0, 1.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 2, 0, 0])
    assert accuracy(logits, target) == pytest.approx(0.75)
    cm = confusion_matrix(logits, target, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 0, 0], [0, 0, 1]]


def test_balanced_accuracy_skips_absent_classes_like_sklearn() -> None:
    # class 2 is predicted but never true: sklearn leaves it out of the mean
    target = torch.tensor([0, 0, 1, 1, 1])
    pred = torch.tensor([0, 2, 1, 1, 0])
    with pytest.warns(UserWarning):
        ref = skm.balanced_accuracy_score(target, pred)
    assert balanced_accuracy(pred, target) == pytest.approx(ref)
    assert balanced_accuracy(pred, target) == pytest.approx((0.5 + 2 / 3) / 2)


def test_sensitivity_specificity_binary_and_one_vs_rest() -> None:
    target = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1])
    pred = torch.tensor([1, 0, 1, 0, 1, 0, 0, 1])
    sens, spec = sensitivity_specificity(pred, target)
    assert sens == pytest.approx(skm.recall_score(target, pred, pos_label=1))
    assert spec == pytest.approx(skm.recall_score(target, pred, pos_label=0))
    assert (sens, spec) == pytest.approx((0.75, 0.75))
    # positive=0 swaps the roles
    assert sensitivity_specificity(pred, target, positive=0) == pytest.approx((spec, sens))
    # multi-class: class 2 against the rest
    t3 = torch.tensor([2, 2, 0, 1, 1, 2])
    p3 = torch.tensor([2, 1, 2, 1, 0, 2])
    assert sensitivity_specificity(p3, t3, positive=2) == pytest.approx((2 / 3, 2 / 3))


def test_sensitivity_specificity_nan_when_undefined() -> None:
    only_neg = torch.tensor([0, 0, 0])
    sens, spec = sensitivity_specificity(torch.tensor([0, 1, 0]), only_neg)
    assert math.isnan(sens) and spec == pytest.approx(2 / 3)
    sens, spec = sensitivity_specificity(torch.tensor([0, 1, 1]), torch.tensor([1, 1, 1]))
    assert sens == pytest.approx(2 / 3) and math.isnan(spec)
    assert math.isnan(accuracy(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_sklearn_with_ties(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 2, (80,), generator=g)
    # rounded scores create many ties between positives and negatives
    scores = (torch.rand(80, generator=g) + 0.4 * target).mul(4).round().div(4)
    ref = skm.roc_auc_score(target.numpy(), scores.numpy())
    assert roc_auc(scores, target) == pytest.approx(ref, abs=1e-12)


def test_roc_auc_golden_values() -> None:
    t = torch.tensor([0, 0, 1, 1])
    assert roc_auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), t) == 1.0
    assert roc_auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), t) == 0.0
    assert roc_auc(torch.tensor([0.5, 0.5, 0.5, 0.5]), t) == 0.5
    assert roc_auc(torch.tensor([0.1, 0.3, 0.2, 0.4]), t.bool()) == 0.75
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))


def test_classification_errors() -> None:
    with pytest.raises(ValueError, match="batch size: 3 vs 2"):
        accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        accuracy(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="K >= 2"):
        accuracy(torch.zeros(2, 1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\], got values in \[0, 3\]"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="logits have 3 classes but num_classes is 2"):
        confusion_matrix(torch.zeros(2, 3), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="binary 0/1"):
        roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        roc_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="positive must be"):
        sensitivity_specificity(torch.tensor([0]), torch.tensor([0]), positive=-1)


# ------------------------------------------------------------------ stateful shells
def test_classification_stats_matches_functions_over_batches() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(150, 2, generator=g)
    target = torch.randint(0, 2, (150,), generator=g)
    stats = ClassificationStats(num_classes=2)
    for chunk in range(0, 150, 40):  # uneven last batch, several buffer growths
        stats.update(logits[chunk : chunk + 40], target[chunk : chunk + 40])
    out = stats.compute()
    prob = torch.softmax(logits, dim=1)[:, 1]
    assert out["n"] == 150
    assert out["accuracy"] == pytest.approx(accuracy(logits, target))
    assert out["sensitivity"] == pytest.approx(sensitivity_specificity(logits, target)[0])
    assert out["specificity"] == pytest.approx(sensitivity_specificity(logits, target)[1])
    assert out["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(target, logits.argmax(1))
    )
    assert out["auc"] == pytest.approx(skm.roc_auc_score(target.numpy(), prob.numpy()), abs=1e-9)
    assert stats._scores.numel() < 4 * 150  # compact: bounded by doubling

    other = ClassificationStats(num_classes=2)
    half = ClassificationStats(num_classes=2)
    other.update(logits[:70], target[:70])
    half.update(logits[70:], target[70:])
    other.merge(half)
    assert other.compute() == pytest.approx(out, nan_ok=True)
    other.reset()
    assert other.n == 0 and math.isnan(float(other.compute()["accuracy"]))  # type: ignore[arg-type]


def test_classification_stats_multiclass_and_missing_scores() -> None:
    stats = ClassificationStats(num_classes=3)
    stats.update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
    out = stats.compute()
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert out["sensitivity"] is None and out["auc"] is None

    binary = ClassificationStats(num_classes=2)
    binary.update(torch.tensor([1, 0]), torch.tensor([1, 1]))  # labels only: no scores
    res = binary.compute()
    assert res["auc"] is None and res["sensitivity"] == pytest.approx(0.5)
    assert math.isnan(float(res["specificity"]))  # type: ignore[arg-type]

    explicit = ClassificationStats(num_classes=2)
    explicit.update(
        torch.tensor([1, 0, 0]), torch.tensor([1, 0, 1]), scores=torch.tensor([0.9, 0.2, 0.4])
    )
    assert explicit.compute()["auc"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        explicit.update(torch.tensor([1, 0, 0]), torch.tensor([1, 0, 1]), scores=torch.ones(2))
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        ClassificationStats(num_classes=1)
    with pytest.raises(ValueError, match="cannot merge"):
        explicit.merge(stats)


def test_mean_stat() -> None:
    m = MeanStat()
    assert math.isnan(m.compute())
    m.update(torch.tensor([1.0, 2.0, 3.0]))
    m.update(6)
    assert m.compute() == pytest.approx(3.0)
    m.update(float("nan"))
    assert math.isnan(m.compute())
    skipping = MeanStat(ignore_nan=True)
    skipping.update(torch.tensor([[1.0, float("nan")], [3.0, 5.0]]))
    assert skipping.compute() == pytest.approx(3.0) and skipping.count == 3
    other = MeanStat()
    other.update(torch.tensor([7.0]))
    skipping.merge(other)
    assert skipping.compute() == pytest.approx(4.0)
    with pytest.raises(TypeError, match=r"number or a torch\.Tensor"):
        m.update("1")  # type: ignore[arg-type]


# ------------------------------------------------------------------ perturbation and similarity
def test_perturbation_norms_per_sample_over_all_dims() -> None:
    x = torch.zeros(2, 3, 4, 4, 2)
    adv = x.clone()
    adv[0, 0, 0, 0, 0] = 0.5
    adv[0, 2, 3, 1, 1] = -0.25
    adv[1] += 0.1
    norms = perturbation_norms(x, adv)
    assert set(norms) == {"linf", "l2", "l0"}
    assert norms["linf"].tolist() == pytest.approx([0.5, 0.1])
    assert norms["l2"].tolist() == pytest.approx([math.hypot(0.5, 0.25), 0.1 * math.sqrt(96)])
    assert norms["l0"].tolist() == [2, 96]
    assert perturbation_norms(x, adv, l0_tol=0.3)["l0"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="same shape"):
        perturbation_norms(x, adv[:1])


def test_psnr_values_inf_and_cap() -> None:
    x = torch.zeros(3, 1, 4, 4)
    y = x.clone()
    y[0] += 0.1  # mse 0.01 -> 20 dB for range 1
    y[1, 0, 0, 0] = 2.0  # mse 4/16 = 0.25 with range 2 -> 10 log10(16)
    out = psnr(x, y, data_range=1.0)
    assert out[0].item() == pytest.approx(20.0, rel=1e-5)
    assert out[1].item() == pytest.approx(10 * math.log10(1 / 0.25), rel=1e-5)
    assert math.isinf(out[2].item()) and out[2].item() > 0
    assert psnr(x, y, data_range=2.0)[1].item() == pytest.approx(10 * math.log10(16), rel=1e-5)
    capped = psnr(x, y, data_range=1.0, cap=100.0)
    assert capped[2].item() == 100.0 and capped[0].item() == pytest.approx(20.0, rel=1e-5)
    with pytest.raises(ValueError, match="data_range must be a finite positive"):
        psnr(x, y, data_range=0.0)


def _gauss_1d(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2
    w = np.exp(-(r**2) / (2 * sigma**2))
    return w / w.sum()


def _reference_ssim(
    x: np.ndarray, y: np.ndarray, dr: float, sizes: list[int], sigmas: list[float]
) -> float:
    """Independent SSIM: explicit windows, weighted population statistics, mean over all."""
    window = _gauss_1d(sizes[0], sigmas[0])
    for s, sg in zip(sizes[1:], sigmas[1:], strict=True):
        window = np.multiply.outer(window, _gauss_1d(s, sg))
    c1, c2 = (0.01 * dr) ** 2, (0.03 * dr) ** 2
    vals = []
    for ch in range(x.shape[0]):
        wx = sliding_window_view(x[ch], tuple(sizes))
        wy = sliding_window_view(y[ch], tuple(sizes))
        axes = tuple(range(-len(sizes), 0))
        mx = (wx * window).sum(axis=axes)
        my = (wy * window).sum(axis=axes)
        vx = (wx**2 * window).sum(axis=axes) - mx**2
        vy = (wy**2 * window).sum(axis=axes) - my**2
        cxy = (wx * wy * window).sum(axis=axes) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s)
    return float(np.mean(vals))


def test_ssim_2d_matches_independent_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 2, 16, 13))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    out = ssim(torch.tensor(x), torch.tensor(y), data_range=1.0)
    assert out.shape == (2,)
    for b in range(2):
        ref = _reference_ssim(x[b], y[b], 1.0, [11, 11], [1.5, 1.5])
        assert out[b].item() == pytest.approx(ref, abs=2e-5)
    assert 0.0 < out.min().item() < 0.95  # noisy images are not similar


def test_ssim_3d_with_reduced_window_matches_reference() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((1, 1, 12, 12, 6))
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape), 0, 1)
    out = ssim(
        torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), data_range=1.0
    )
    # the last axis (6 voxels) gets a 5-tap window with sigma 1.5 * 5 / 11
    ref = _reference_ssim(x[0], y[0], 1.0, [11, 11, 5], [1.5, 1.5, 1.5 * 5 / 11])
    assert out.item() == pytest.approx(ref, abs=2e-5)
    with pytest.raises(ValueError, match="fewer than the SSIM window"):
        ssim(torch.tensor(x), torch.tensor(y), data_range=1.0, reduce_window=False)
    with pytest.raises(ValueError, match="at least 3 voxels"):
        ssim(torch.rand(1, 1, 8, 8, 2), torch.rand(1, 1, 8, 8, 2), data_range=1.0)


def test_ssim_identity_and_constant_images() -> None:
    x = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x, data_range=1.0).tolist() == pytest.approx([1.0] * 3, abs=1e-5)
    vol = torch.rand(1, 2, 12, 12, 12, generator=torch.Generator().manual_seed(1))
    assert ssim(vol, vol, data_range=1.0, spatial_dims=3).item() == pytest.approx(1.0, abs=1e-5)
    # constant images: SSIM reduces to the luminance term (2ab + c1) / (a^2 + b^2 + c1)
    a, b = torch.full((1, 1, 15, 15), 0.2), torch.full((1, 1, 15, 15), 0.6)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1)
    # (MONAI computes in float32: the variances of a constant image are ~1e-9, not exactly 0)
    assert ssim(a, b, data_range=1.0).item() == pytest.approx(expected, abs=2e-4)
    # the data range enters through the constants
    assert ssim(a, b, data_range=255.0).item() > ssim(a, b, data_range=1.0).item()


def test_ssim_errors() -> None:
    x = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="expected 5-D inputs"):
        ssim(x, x, data_range=1.0, spatial_dims=3)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        ssim(x[:, 0], x[:, 0], data_range=1.0)
    with pytest.raises(ValueError, match="win_size must be an odd int"):
        ssim(x, x, data_range=1.0, win_size=8)
    with pytest.raises(TypeError, match="floating tensors"):
        ssim(x.long(), x.long(), data_range=1.0)
