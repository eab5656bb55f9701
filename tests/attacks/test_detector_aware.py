"""Orthogonal PGD and the HFC-style feature-matching attack on a detector-guarded classifier
(the registry contract of detection attacks is in test_detection_contract.py)."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import create_attack
from medrobust.attacks.detector_aware import classifier_term, orthogonal_to
from medrobust.detectors import create_detector
from tests.attacks.models import batch, tiny_cnn


@pytest.fixture(scope="module")
def guarded() -> tuple:  # type: ignore[type-arg]
    model = tiny_cnn()
    det = create_detector("uad", fpr=0.1).fit(model, batch(n=120, size=8, seed=5))
    x = batch(n=12, size=8, seed=11)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, det, x, y


def test_orthogonal_projection() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    o = orthogonal_to(a, b)
    assert torch.allclose((o * b).flatten(1).sum(1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(
        a - o, ((a * b).flatten(1).sum(1) / (b * b).flatten(1).sum(1)).view(4, 1, 1) * b, atol=1e-5
    )
    assert torch.equal(orthogonal_to(a, torch.zeros_like(b)), a)


def test_classifier_term() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(classifier_term(logits, y, "margin", 10.0), torch.tensor([-1.5, 3.0]))
    assert torch.allclose(classifier_term(logits, y, "margin", 1.0), torch.tensor([-1.5, 1.0]))
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(classifier_term(logits, y, "ce", 1.0), ce)


@pytest.mark.parametrize("name", ["orthogonal-pgd", "feature-matching"])
def test_threshold_extremes(name: str, guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    keep = det.threshold
    try:
        det.set_threshold(float("-inf"))  # flags everything: nothing gets through
        res = create_attack(name, detector=det, eps=0.3, steps=10)(model, x, y)
        assert not bool(res.success.any())
        det.set_threshold(float("inf"))  # flags nothing: a plain attack on the classifier
        res = create_attack(name, detector=det, eps=0.3, steps=10)(model, x, y)
        assert torch.equal(res.success, res.pred_adv != y) and bool(res.success.any())
    finally:
        det.set_threshold(keep)


def test_feature_matching_pulls_features_to_the_target_class(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    stats = det.feature_statistics()
    assert set(stats) == set(det.layers_)
    attack = create_attack(
        "feature-matching", detector=det, eps=0.1, steps=20, beta=50.0, weight=0.0
    )
    keep = det.threshold
    try:
        det.set_threshold(-1e9)  # never succeeds: every step runs toward the target features
        res = attack(model, x, y)
    finally:
        det.set_threshold(keep)
    other = 1 - y  # binary: the target class is the other one

    def distance(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = det.layer_features(images)
        return torch.stack(
            [((feats[n] - m[other]) / s).pow(2).mean(1) for n, (m, s) in stats.items()]
        ).mean(0)

    assert float(distance(res.x_adv).mean()) < float(distance(x).mean())


def test_feature_matching_on_a_detector_without_layers(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, _, x, y = guarded
    squeeze = create_detector("feature-squeezing", fpr=0.1).fit(model, batch(n=60, size=8))
    assert squeeze.feature_statistics() == {}
    res = create_attack("feature-matching", detector=squeeze, eps=0.1, steps=3)(model, x, y)
    assert res.x_adv.shape == x.shape


def test_bad_settings(guarded: tuple) -> None:  # type: ignore[type-arg]
    _, det, x, y = guarded
    with pytest.raises(ValueError, match="mode must be one of"):
        create_attack("orthogonal-pgd", detector=det, mode="both")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        create_attack("feature-matching", detector=det, beta=-1.0)
    with pytest.raises(ValueError, match="needs the fitted detector"):
        create_attack("orthogonal-pgd")
    with pytest.raises(ValueError, match="must run on the model the detector guards"):
        create_attack("orthogonal-pgd", detector=det, eps=0.1, steps=2)(tiny_cnn(seed=3), x, y)
