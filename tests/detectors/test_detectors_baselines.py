"""Tests of the Mahalanobis (Lee et al.) and feature-squeezing (Xu et al.) detectors and of the
additive Gaussian statistics behind sharded fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.detectors import (
    FeatureSqueezing,
    GaussianStats,
    Mahalanobis,
    create_detector,
    layer_statistics,
)
from medrobust.detectors.squeeze import median_smooth, reduce_bit_depth
from medrobust.detectors.uad import fit_gaussians, mahalanobis_min
from medrobust.metrics import roc_auc
from medrobust.models import ModelAdapter, create_model
from medrobust.types import Bounds


def _clean(n: int, seed: int) -> torch.Tensor:
    """Smooth blobs of random position on a dim background (12x12)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 6 + 3
    blob = torch.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) / 8)
    noise = torch.rand(n, 12, 12, generator=g) * 0.05
    return (0.2 + 0.6 * blob + noise).clamp(0, 1)[:, None]


def _noisy(x: torch.Tensor, seed: int, amount: float = 0.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + amount * (torch.rand(x.shape, generator=g) * 2 - 1)).clamp(0, 1)


def _auroc(clean: torch.Tensor, odd: torch.Tensor) -> float:
    target = torch.cat([torch.zeros(clean.numel()), torch.ones(odd.numel())]).long()
    return float(roc_auc(torch.cat([clean, odd]), target))


@pytest.fixture(scope="module")
def model() -> ModelAdapter:
    return create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0).eval()


# ------------------------------------------------------------------------ Gaussian statistics
def test_statistics_of_shards_add_up_to_one_pass() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(90, 5, generator=g, dtype=torch.float64)
    classes = torch.randint(0, 3, (90,), generator=g)
    whole = GaussianStats.of(feats, classes, 3)
    parts = [GaussianStats.of(feats[i : i + 30], classes[i : i + 30], 3) for i in (0, 30, 60)]
    summed = parts[0] + parts[1] + parts[2]
    assert summed.n == whole.n == 90
    for a, b in ((summed.counts, whole.counts), (summed.sums, whole.sums)):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    assert torch.allclose(summed.outer, whole.outer, rtol=1e-12, atol=1e-12)
    means, precision = summed.gaussians(shrinkage=0.05)
    ref_means, ref_precision = fit_gaussians(feats, classes, 0.05)  # the centred two-pass fit
    assert torch.allclose(means, ref_means, atol=1e-10)
    assert torch.allclose(precision, ref_precision, atol=1e-8)


def test_statistics_leave_out_small_classes_like_the_two_pass_fit() -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(40, 3, generator=g, dtype=torch.float64)
    classes = torch.zeros(40, dtype=torch.long)
    classes[0] = 2  # a class with one vector
    means, precision = GaussianStats.of(feats, classes, 3).gaussians(0.0)
    ref_means, ref_precision = fit_gaussians(feats, classes, 0.0)
    assert means.shape == (1, 3) and torch.allclose(means, ref_means, atol=1e-10)
    assert torch.allclose(precision, ref_precision, atol=1e-8)


def test_statistics_bad_input() -> None:
    with pytest.raises(ValueError, match=r"feats must be \(N, D\) and classes \(N,\)"):
        GaussianStats.of(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match=r"classes must be in \[0, 2\)"):
        GaussianStats.of(torch.zeros(2, 2), torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="cannot add statistics"):
        GaussianStats.of(torch.zeros(2, 2), torch.tensor([0, 1]), 2) + GaussianStats.of(
            torch.zeros(2, 3), torch.tensor([0, 1]), 2
        )
    with pytest.raises(ValueError, match="at least 2 feature vectors, got 1"):
        GaussianStats.of(torch.zeros(1, 2), torch.tensor([0]), 2).gaussians(0.0)


def test_a_detector_fitted_from_sharded_statistics_equals_one_fit(model: ModelAdapter) -> None:
    clean, cal = _clean(80, 0), _clean(30, 1)
    det = create_detector("mahalanobis", noise=0.0).fit(model, clean, calibration=cal)
    assert isinstance(det, Mahalanobis)
    shards = [layer_statistics(model, clean[i : i + 20], det.layers_, 7) for i in range(0, 80, 20)]
    merged = {n: sum((s[n] for s in shards[1:]), shards[0][n]) for n in det.layers_}
    for n in det.layers_:
        assert torch.allclose(merged[n].sums, det.statistics_[n].sums, atol=1e-9)
        assert torch.allclose(merged[n].outer, det.statistics_[n].outer, atol=1e-8)
    before = {n: det._precisions[n].clone() for n in det.layers_}
    det.set_statistics(merged, torch.float32)
    for n in det.layers_:
        assert torch.allclose(det._precisions[n], before[n], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="the clean data is empty"):
        layer_statistics(model, torch.empty(0, 1, 12, 12), det.layers_)


# ------------------------------------------------------------------------ Mahalanobis
def test_mahalanobis_bad_parameters() -> None:
    with pytest.raises(ValueError, match=r"noise must be in \[0, inf\)"):
        create_detector("mahalanobis", noise=-0.1)
    with pytest.raises(ValueError, match=r"shrinkage must be in \[0, 1.0\)"):
        create_detector("mahalanobis", shrinkage=1.0)
    with pytest.raises(TypeError, match="noise must be a number"):
        create_detector("mahalanobis", noise="small")
    with pytest.raises(ValueError, match="combine must be one of"):
        create_detector("mahalanobis", combine="mean")
    assert create_detector("mahalanobis", combine="logistic").params()["fit_attack"] == "fgsm"


def test_preprocessing_is_the_signed_gradient_step_of_each_layer(model: ModelAdapter) -> None:
    det = create_detector("mahalanobis", noise=0.01).fit(
        model, _clean(80, 0), calibration=_clean(30, 1)
    )
    x = _clean(6, 4)
    _, comp = det._image_components(model, x)
    from medrobust.detectors import capture_features

    for i, n in enumerate(det.layers_):  # an independent computation of Lee et al.'s step
        xg = x.clone().requires_grad_(True)
        with capture_features(model, [n]) as cap:
            model(xg)
            d = mahalanobis_min(cap.features[n], det._means[n], det._precisions[n])
        (grad,) = torch.autograd.grad(d.sum(), xg)
        x_hat = (x - 0.01 * grad.sign()).clamp(0, 1)
        with torch.no_grad(), capture_features(model, [n]) as cap:
            model(x_hat)
            want = mahalanobis_min(cap.features[n], det._means[n], det._precisions[n])
        assert torch.allclose(comp[:, i], want, rtol=1e-4, atol=1e-5), n
    plain = create_detector("mahalanobis", noise=0.0).fit(
        model, _clean(80, 0), calibration=_clean(30, 1)
    )
    with torch.no_grad():
        _, comp0 = plain._image_components(model, x)
    assert (
        float((comp0 - comp.detach()).mean()) > 0
    )  # the step moves clean inputs toward their class


def test_mahalanobis_separates_corrupted_inputs(model: ModelAdapter) -> None:
    det = create_detector("mahalanobis", fpr=0.1).fit(
        model, _clean(96, 0), calibration=_clean(40, 1)
    )
    clean, odd = det.score(_clean(40, 7)), det.score(_noisy(_clean(40, 7), 3))
    assert _auroc(clean, odd) > 0.9
    assert det.describe()["calibration_source"] == "separate"


def test_mahalanobis_logistic_combination() -> None:
    from tests.attacks.models import batch, tiny_cnn

    det = create_detector(
        "mahalanobis", combine="logistic", fit_eps=0.1, calibration_fraction=0.3
    ).fit(tiny_cnn(), batch(n=100, size=8, seed=5))
    info = det.describe()
    assert info["combine"] == "logistic" and info["n_adversarial"] >= 2
    assert det._w is not None and det._w.shape == (len(det.layers_),)
    assert info["calibration_source"] == "held-out" and info["n_calibration"] == 30


# ------------------------------------------------------------------------ feature squeezing
def test_median_smooth_matches_scipy() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(0)
    for shape, size in (((2, 3, 9, 7), 2), ((2, 3, 9, 7), 3), ((1, 2, 5, 6, 4), 2)):
        x = torch.rand(shape, generator=g, dtype=torch.float64)
        want = ndimage.median_filter(
            x.numpy(), size=(1, 1, *([size] * (x.ndim - 2))), mode="nearest"
        )
        np.testing.assert_allclose(median_smooth(x, size).numpy(), want, atol=1e-12)


def test_bit_depth_levels_and_straight_through_gradient() -> None:
    x = torch.tensor([0.0, 0.1, 0.49, 0.51, 1.0], requires_grad=True)
    q = reduce_bit_depth(x, 1, Bounds(0.0, 1.0))
    assert q.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    (grad,) = torch.autograd.grad(q.sum(), x)
    assert torch.equal(grad, torch.ones(5))
    wide = reduce_bit_depth(torch.tensor([-1.0, -0.2, 0.9]), 2, Bounds(-1.0, 2.0))
    assert torch.allclose(wide, torch.tensor([-1.0, 0.0, 1.0]))


def test_feature_squeezing_scores_are_the_largest_l1_distance(model: ModelAdapter) -> None:
    det = create_detector("feature-squeezing", bit_depth=3, median_size=2, fpr=0.1).fit(
        model, _clean(60, 0)
    )
    assert isinstance(det, FeatureSqueezing) and det.layers_ == []
    x = _clean(5, 3)
    with torch.no_grad():
        p = torch.softmax(model(x), 1)
        pb = torch.softmax(model(reduce_bit_depth(x, 3, model.bounds)), 1)
        pm = torch.softmax(model(median_smooth(x, 2)), 1)
    want = torch.maximum((pb - p).abs().sum(1), (pm - p).abs().sum(1))
    assert torch.allclose(det.score(x), want, atol=1e-6)
    assert det.component_names() == ["l1:bit-depth-3", "l1:median-2"]
    zsum = create_detector("feature-squeezing", joint="zsum", median_size=None).fit(
        model, _clean(60, 0)
    )
    assert zsum.component_names() == ["l1:bit-depth-5"]


def test_feature_squeezing_bad_parameters() -> None:
    with pytest.raises(ValueError, match=r"bit_depth must be an integer in \[1, 8\], got 0"):
        create_detector("feature-squeezing", bit_depth=0)
    with pytest.raises(ValueError, match=r"median_size must be an integer in \[2, 5\], got 1"):
        create_detector("feature-squeezing", median_size=1)
    with pytest.raises(ValueError, match="needs at least one squeezer"):
        create_detector("feature-squeezing", bit_depth=None, median_size=None)
    with pytest.raises(ValueError, match="joint must be one of"):
        create_detector("feature-squeezing", joint="min")
