"""The contract every registered detector keeps, checked by iterating over ``DETECTORS``.

A new detector is picked up here without touching this file: its default factory must build an
unfitted :class:`Detector`; fitting on clean images must set a threshold at the requested clean
false-positive rate, leave the model's parameters, mode and hooks as they were, give
``(B,)`` finite scores that are deterministic and differentiable in the input, and survive a
save/load round trip with the same scores and threshold.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.attacks.models import batch, tiny_cnn

from medrobust.detectors import DETECTORS, Detector, NotFittedError, create_detector, load_detector
from medrobust.models import ModelAdapter

NAMES = DETECTORS.list()
#: Settings that keep every test fast and make a supervised fit find adversarial examples; only
#: those a factory accepts are passed.
FAST = {"fit_eps": 0.1, "mc_samples": 8, "reference_size": 30, "k": 5, "max_reference": 200}


def _params(name: str, **extra: Any) -> dict[str, Any]:
    accepted = inspect.signature(DETECTORS.get(name).factory).parameters
    return {**{k: v for k, v in FAST.items() if k in accepted}, **extra}


@pytest.fixture(scope="module")
def model() -> ModelAdapter:
    return tiny_cnn()


@pytest.fixture(scope="module")
def fitted(model: ModelAdapter) -> dict[str, Detector]:
    return {
        name: create_detector(name, **_params(name, fpr=0.1)).fit(
            model, batch(n=120, size=8, seed=5), calibration=batch(n=60, size=8, seed=6)
        )
        for name in NAMES
    }


def test_registry_lists_the_package_detectors() -> None:
    assert {"uad", "kd-bu", "lid", "mahalanobis", "feature-squeezing"} <= set(NAMES)
    for entry in DETECTORS.entries():
        assert entry.summary, f"detector {entry.name!r} has no summary"


@pytest.mark.parametrize("name", NAMES)
def test_factory_builds_an_unfitted_detector(name: str) -> None:
    det = create_detector(name)
    assert isinstance(det, Detector) and det.name == name and not det.fitted
    assert create_detector(name, **det.params()).params() == det.params()  # params rebuild it
    with pytest.raises(NotFittedError, match=f"detector '{name}' is not fitted"):
        det.score(batch(n=2, size=8))
    with pytest.raises(TypeError, match="did you mean 'fpr'"):
        create_detector(name, fp=0.1)


@pytest.mark.parametrize("name", NAMES)
def test_fit_leaves_the_model_as_it_was(name: str, model: ModelAdapter) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        create_detector(name, **_params(name)).fit(model, batch(n=40, size=8, seed=1))
        assert model.training
    finally:
        model.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} changed {k}"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("name", NAMES)
def test_threshold_meets_the_clean_false_positive_rate(
    name: str, fitted: dict[str, Detector]
) -> None:
    det = fitted[name]
    cal = batch(n=60, size=8, seed=6)
    rate = float(det.predict(cal).float().mean())
    assert rate <= 0.1 + 1e-9
    assert det.describe()["calibration_fpr"] == pytest.approx(rate)
    info = json.loads(json.dumps(det.describe()))  # JSON-serialisable
    assert info["name"] == name and info["fitted"] and info["n_calibration"] == 60


@pytest.mark.parametrize("name", NAMES)
def test_scores_are_finite_deterministic_and_differentiable(
    name: str, fitted: dict[str, Detector]
) -> None:
    det = fitted[name]
    x = batch(n=5, size=8, seed=9)
    s = det.score(x)
    assert s.shape == (5,) and s.is_floating_point() and bool(torch.isfinite(s).all())
    assert torch.equal(det.score(x), s)
    xg = x.clone().requires_grad_(True)
    logits, score = det.logits_and_score(xg)
    assert logits.shape == (5, 2)
    (grad,) = torch.autograd.grad(score.sum(), xg)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_save_and_load_round_trip(
    name: str, fitted: dict[str, Detector], model: ModelAdapter, tmp_path: Path
) -> None:
    det = fitted[name]
    again = load_detector(det.save(tmp_path / name), model)
    assert type(again) is type(det) and again.params() == det.params()
    assert again.threshold == pytest.approx(det.threshold)
    x = batch(n=4, size=8, seed=3)
    assert torch.allclose(again.score(x), det.score(x), atol=1e-5)
