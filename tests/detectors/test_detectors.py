"""Tests of the detectors: interface, UAD, KD+BU, LID, persistence and hooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.detectors import (
    KDBU,
    LID,
    UAD,
    NotFittedError,
    capture_features,
    create_detector,
    list_detectors,
    load_detector,
)
from medrobust.detectors.kdbu import log_kernel_density, mc_dropout_uncertainty
from medrobust.detectors.lid import lid_mle
from medrobust.detectors.logistic import fit_logistic
from medrobust.detectors.uad import fit_gaussians, mahalanobis_min
from medrobust.models import ModelAdapter, create_model
from medrobust.registry import UnknownNameError


def _clean(n: int, seed: int) -> torch.Tensor:
    """Clean images: a smooth blob of random position on a dim background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 6 + 3
    blob = torch.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) / 8)
    noise = torch.rand(n, 12, 12, generator=g) * 0.05
    return (0.2 + 0.6 * blob + noise).clamp(0, 1)[:, None]


def _noisy(x: torch.Tensor, seed: int, amount: float = 0.4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + amount * (torch.rand(x.shape, generator=g) * 2 - 1)).clamp(0, 1)


@pytest.fixture(scope="module")
def model() -> ModelAdapter:
    torch.manual_seed(0)
    return create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0).eval()


@pytest.fixture(scope="module")
def uad(model: ModelAdapter) -> UAD:
    det = create_detector("uad", fpr=0.1)
    assert isinstance(det, UAD)
    return det.fit(model, _clean(96, 0), calibration=_clean(40, 1))


def _no_hooks(module: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in module.modules())


def test_registry_and_bad_parameters() -> None:
    assert list_detectors() == ["feature-squeezing", "kd-bu", "lid", "mahalanobis", "uad"]
    assert list_detectors(tag="unsupervised") == ["feature-squeezing", "mahalanobis", "uad"]
    with pytest.raises(UnknownNameError, match="Did you mean 'uad'"):
        create_detector("uda")
    with pytest.raises(TypeError, match="'fp' \\(did you mean 'fpr'\\?\\)"):
        create_detector("uad", fp=0.1)
    with pytest.raises(ValueError, match=r"fpr must be in \(0, 1\), got 1.0"):
        create_detector("uad", fpr=1.0)
    with pytest.raises(ValueError, match=r"shrinkage must be in \[0, 1\)"):
        create_detector("uad", shrinkage=1.0)
    with pytest.raises(ValueError, match="reference_size must be an integer > k=20"):
        create_detector("lid", reference_size=10)
    with pytest.raises(UnknownNameError, match="unknown attack 'fgms'"):
        create_detector("kd-bu", fit_attack="fgms")


def test_unfitted_detector_is_a_clear_error(tmp_path: Path) -> None:
    det = create_detector("uad")
    x = _clean(2, 0)
    for call in (
        lambda: det.score(x),
        lambda: det.predict(x),
        lambda: det.threshold,
        lambda: det.save(tmp_path / "d"),
        lambda: det.set_fpr(0.1),
    ):
        with pytest.raises(NotFittedError, match="detector 'uad' is not fitted"):
            call()
    assert isinstance(NotFittedError("x"), ValueError)


def test_fit_rejects_bad_models_and_data(model: ModelAdapter) -> None:
    det = create_detector("uad")
    with pytest.raises(TypeError, match="model must be a medrobust ModelAdapter"):
        det.fit(nn.Linear(4, 2), _clean(8, 0))  # type: ignore[arg-type]
    seg = create_model("unet", num_classes=2, channels=(4, 8), strides=(2,), num_res_units=0)
    with pytest.raises(ValueError, match="guards classifiers, but the model's task is"):
        det.fit(seg, _clean(8, 0))
    with pytest.raises(ValueError, match="the clean data is empty"):
        det.fit(model, torch.empty(0, 1, 12, 12))
    with pytest.raises(ValueError, match="have 3 channel"):
        det.fit(model, torch.rand(8, 3, 12, 12))
    with pytest.raises(ValueError, match="the model has no layer 'layer9'"):
        create_detector("uad", layers=["layer9"]).fit(model, _clean(8, 0))
    with pytest.raises(ValueError, match="at least 4 clean images"):
        det.fit(model, _clean(3, 0))
    assert not det.fitted


def test_uad_threshold_meets_the_clean_false_positive_rate(uad: UAD) -> None:
    cal = _clean(40, 1)
    flagged = uad.predict(cal)
    assert flagged.dtype == torch.bool and flagged.shape == (40,)
    assert float(flagged.float().mean()) <= 0.1
    assert float(flagged.float().mean()) >= 0.05  # the quantile, not a loose bound
    assert uad.layers_ == [
        "net.features.layer1",
        "net.features.layer2",
        "net.features.layer3",
        "net.features.layer4",
        "penultimate",
    ]
    info = uad.describe()
    assert info["n_fit"] == 96 and info["n_calibration"] == 40
    assert info["components"][0] == "mahalanobis:net.features.layer1"


def test_uad_separates_corrupted_inputs(uad: UAD) -> None:
    from medrobust.metrics import roc_auc

    clean, odd = uad.score(_clean(40, 7)), uad.score(_noisy(_clean(40, 7), 3))
    target = torch.cat([torch.zeros(40), torch.ones(40)]).long()
    assert roc_auc(torch.cat([clean, odd]), target) > 0.9
    assert float(uad.predict(_noisy(_clean(40, 7), 3)).float().mean()) > 0.5


def test_uad_ignores_labels(model: ModelAdapter) -> None:
    x = _clean(48, 2)
    with_labels = [
        {"image": x[i : i + 16], "label": torch.ones(16, dtype=torch.long)}
        for i in range(0, 48, 16)
    ]
    with_wrong = [(x[i : i + 16], torch.zeros(16, dtype=torch.long)) for i in range(0, 48, 16)]
    a = create_detector("uad", seed=3).fit(model, with_labels)
    b = create_detector("uad", seed=3).fit(model, with_wrong)
    c = create_detector("uad", seed=3).fit(model, x)
    probe = _clean(5, 9)
    assert torch.equal(a.score(probe), b.score(probe))
    assert torch.equal(a.score(probe), c.score(probe))
    assert a.threshold == c.threshold


def test_gaussians_and_mahalanobis_match_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(60, 5, generator=g, dtype=torch.float64)
    cls = torch.arange(60) % 3
    means, prec = fit_gaussians(f, cls, shrinkage=0.1)
    fn, cn = f.numpy(), cls.numpy()
    mu = np.stack([fn[cn == c].mean(0) for c in range(3)])
    centred = np.concatenate([fn[cn == c] - mu[c] for c in range(3)])
    cov = centred.T @ centred / 60
    cov = 0.9 * cov + 0.1 * np.trace(cov) / 5 * np.eye(5)
    np.testing.assert_allclose(means.numpy(), mu, atol=1e-10)
    np.testing.assert_allclose(prec.numpy(), np.linalg.inv(cov), atol=1e-8)
    q = torch.randn(4, 5, generator=g, dtype=torch.float64)
    d = mahalanobis_min(q, means, prec).numpy()
    pinv = np.linalg.inv(cov)
    want = [min((qq - m) @ pinv @ (qq - m) for m in mu) for qq in q.numpy()]
    np.testing.assert_allclose(d, want, rtol=1e-8)


def test_scores_are_differentiable_in_the_input(uad: UAD, model: ModelAdapter) -> None:
    x = _clean(3, 5).requires_grad_(True)
    logits, score = uad.logits_and_score(x)
    assert torch.allclose(logits, model(x))
    (g,) = torch.autograd.grad(score.sum(), x)
    assert bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0
    assert torch.allclose(score.detach(), uad.score(x.detach()), atol=1e-5)


def test_hooks_live_only_inside_the_context(uad: UAD, model: ModelAdapter) -> None:
    uad.score(_clean(2, 0))
    assert _no_hooks(model)
    with pytest.raises(RuntimeError, match="boom"), capture_features(model, ["penultimate"]):
        assert not _no_hooks(model)
        raise RuntimeError("boom")
    assert _no_hooks(model)


def test_set_fpr_and_set_threshold(model: ModelAdapter) -> None:
    det = create_detector("uad", fpr=0.2).fit(model, _clean(60, 0))
    loose = det.threshold
    assert det.set_fpr(0.05) >= loose
    det.set_threshold(float("inf"))
    assert not bool(det.predict(_noisy(_clean(4, 1), 2)).any())
    det.set_threshold(float("-inf"))
    assert bool(det.predict(_clean(4, 1)).all())
    with pytest.raises(ValueError, match="must not be NaN"):
        det.set_threshold(float("nan"))


def test_save_and_load_round_trip(uad: UAD, model: ModelAdapter, tmp_path: Path) -> None:
    folder = uad.save(tmp_path / "uad")
    state = torch.load(folder / "state.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    meta = json.loads((folder / "detector.json").read_text())
    assert meta["name"] == "uad" and meta["params"]["fpr"] == 0.1
    loaded = load_detector(folder, model)
    probe = _noisy(_clean(6, 4), 1)
    assert torch.allclose(loaded.score(probe), uad.score(probe), atol=1e-6)
    assert loaded.threshold == pytest.approx(uad.threshold)
    other = create_model("small-cnn", num_classes=2, in_channels=1, width=8, seed=0)
    with pytest.raises(ValueError, match="has 8 features, but the detector was fitted on 4"):
        load_detector(folder, other)
    three = create_model("small-cnn", num_classes=3, in_channels=1, width=4, seed=0)
    with pytest.raises(ValueError, match="num_classes=2, but this model has num_classes=3"):
        load_detector(folder, three)
    with pytest.raises(FileNotFoundError, match=r"detector\.json does not exist"):
        load_detector(tmp_path / "nothing", model)
    (folder / "detector.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_detector(folder, model)


def test_hand_set_threshold_survives_saving(uad: UAD, model: ModelAdapter, tmp_path: Path) -> None:
    det = create_detector("uad").fit(model, _clean(40, 0))
    det.set_threshold(123.0)
    assert load_detector(det.save(tmp_path / "d"), model).threshold == 123.0


def test_kernel_density_matches_brute_force_and_skips_self() -> None:
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(10, 3, generator=g, dtype=torch.float64)
    ref_cls = torch.tensor([0, 1] * 5)
    q = torch.cat([torch.randn(2, 3, generator=g, dtype=torch.float64), ref[:1]])
    cls = torch.tensor([0, 1, 0])
    out = log_kernel_density(q, cls, ref, ref_cls, bandwidth=1.5)
    for i in range(3):
        same = [
            r
            for r, c in zip(ref, ref_cls, strict=True)
            if c == cls[i] and float((r - q[i]).pow(2).sum()) > 1e-10
        ]
        want = np.log(np.mean([np.exp(-float((q[i] - r).pow(2).sum()) / 1.5**2) for r in same]))
        assert float(out[i]) == pytest.approx(want, rel=1e-9)


def test_mc_dropout_uncertainty_matches_definition() -> None:
    g = torch.Generator().manual_seed(2)
    f = torch.randn(4, 6, generator=g)
    w, b = torch.randn(3, 6, generator=g), torch.randn(3, generator=g)
    masks = (torch.rand(5, 6, generator=g) > 0.5).float()
    out = mc_dropout_uncertainty(f, w, b, masks, 0.5)
    probs = torch.stack([torch.softmax((f * m / 0.5) @ w.T + b, dim=1) for m in masks])
    want = (probs**2).sum(-1).mean(0) - (probs.mean(0) ** 2).sum(-1)
    assert torch.allclose(out, want, atol=1e-6)
    assert torch.allclose(
        mc_dropout_uncertainty(f, w, b, torch.ones(5, 6), 0.5), torch.zeros(4), atol=1e-6
    )


def test_lid_estimates_the_intrinsic_dimension() -> None:
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))[0]

    def points(n: int, dim: int, interior: bool) -> torch.Tensor:
        u = torch.rand(n, dim, generator=g, dtype=torch.float64)
        if interior:  # queries away from the border of the cube
            u = 0.25 + 0.5 * u
        return u @ basis[:dim]  # a dim-dimensional cube embedded in 10-D

    lid2 = lid_mle(points(50, 2, True), points(2000, 2, False), k=20)
    lid6 = lid_mle(points(50, 6, True), points(2000, 6, False), k=20)
    assert 1.5 < float(lid2.median()) < 2.6
    assert 4.0 < float(lid6.median()) < 7.5
    with pytest.raises(ValueError, match="needs at least 21 reference points"):
        lid_mle(points(2, 2, True), points(5, 2, False), k=20)


def test_logistic_regression_matches_scikit_learn() -> None:
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=g)
    y = x @ torch.tensor([1.5, -2.0, 0.3]) + 0.4 + 0.8 * torch.randn(200, generator=g) > 0
    w, b = fit_logistic(x, y.long(), c=0.7)
    ref = sklearn.LogisticRegression(C=0.7, tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(w.numpy(), ref.coef_[0], atol=1e-3)
    assert float(b) == pytest.approx(float(ref.intercept_[0]), abs=1e-3)
    with pytest.raises(ValueError, match="needs both classes"):
        fit_logistic(x, torch.zeros(200))


def test_kd_bu_and_lid_fit_supervised_and_unsupervised(tmp_path: Path) -> None:
    from tests.attacks.models import tiny_cnn

    model = tiny_cnn()
    clean = _clean(80, 0)
    for name, extra in (("kd-bu", {"mc_samples": 8}), ("lid", {"k": 5, "reference_size": 20})):
        sup = create_detector(name, fit_attack="fgsm", fit_eps=0.1, **extra).fit(model, clean)
        assert sup.describe()["combine"] == "logistic" and sup.fit_info["n_adversarial"] >= 2
        uns = create_detector(name, fit_attack=None, **extra).fit(model, clean)
        assert uns.describe()["combine"] == "zsum"
        for det in (sup, uns):
            s = det.score(_clean(5, 3))
            assert s.shape == (5,) and bool(torch.isfinite(s).all())
            again = load_detector(det.save(tmp_path / f"{name}-{det.combine}"), model)
            assert torch.allclose(again.score(_clean(5, 3)), s, atol=1e-5)
    assert isinstance(create_detector("kd-bu"), KDBU) and isinstance(create_detector("lid"), LID)


def test_kd_bu_needs_a_linear_output_layer() -> None:
    class Squash(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(144, 8), nn.ReLU())
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.head(self.body(x))) * 3

    m: Any = ModelAdapter(Squash(), num_classes=2).eval()
    with pytest.raises(ValueError, match=r"needs a network whose output is its last nn\.Linear"):
        create_detector("kd-bu", fit_attack=None).fit(m, _clean(20, 0))


def test_default_layers_of_a_network_outside_the_zoo() -> None:
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 2),
    )
    m = ModelAdapter(net, num_classes=2).eval()
    det = create_detector("uad").fit(m, _clean(30, 0))
    assert det.layers_ == ["net.0", "net.1", "net.2", "penultimate"]
