"""Tests of the adaptive attack on a detector-guarded classifier (``pgd-adaptive``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medrobust.attacks import OBJECTIVES, create_attack, create_objective, list_attacks
from medrobust.attacks.adaptive import WeightSweepAttack
from medrobust.attacks.objectives.detector import DetectorEvasion, is_guard_detector
from medrobust.detectors import NotFittedError, create_detector
from medrobust.detectors.base import Detector
from tests.attacks.models import batch, tiny_cnn


@pytest.fixture(scope="module")
def guarded() -> tuple[torch.nn.Module, Detector, torch.Tensor, torch.Tensor]:
    model = tiny_cnn()
    det = create_detector("uad", fpr=0.1).fit(model, batch(n=200, size=8, seed=5))
    x = batch(n=40, size=8, seed=11)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, det, x, y


def test_registered_with_tags() -> None:
    assert "pgd-adaptive" in list_attacks(tag="adaptive")
    assert "pgd-adaptive" in list_attacks(tag="detection")
    assert "pgd-adaptive" not in list_attacks(tag="classification")
    assert "detector-evasion" in OBJECTIVES


def test_detectors_fit_the_structural_protocol(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, _, _ = guarded
    assert is_guard_detector(det)
    assert is_guard_detector(create_detector("uad"))  # unfitted: no property is evaluated
    assert not is_guard_detector(model)


def test_attacks_do_not_import_detectors() -> None:
    import ast
    from pathlib import Path

    import medrobust.attacks

    root = Path(medrobust.attacks.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                assert not name.startswith("medrobust.detectors"), f"{path.name} imports {name}"


def test_bad_construction(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, _, _ = guarded
    with pytest.raises(ValueError, match="needs the fitted detector"):
        create_attack("pgd-adaptive", eps=0.1)
    with pytest.raises(NotFittedError, match="detector 'uad' is not fitted"):
        create_attack("pgd-adaptive", detector=create_detector("uad"))
    with pytest.raises(TypeError, match="detector must be a medrobust detector"):
        create_attack("pgd-adaptive", detector=model)
    with pytest.raises(TypeError, match=r"'detektor' \(did you mean 'detector'\?\)"):
        create_attack("pgd-adaptive", detektor=det)
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        create_attack("pgd-adaptive", detector=det, weight=[1.0, -2.0])
    with pytest.raises(ValueError, match="weight must be a number or a non-empty list"):
        create_attack("pgd-adaptive", detector=det, weight=[])
    with pytest.raises(ValueError, match=r"loss must be one of \['margin', 'ce'\]"):
        create_objective("detector-evasion", detector=det, loss="dlr")
    with pytest.raises(ValueError, match="untargeted only"):
        DetectorEvasion(det, targeted=True)


def test_objective_is_classifier_loss_minus_penalty_above_threshold(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    obj = DetectorEvasion(det, weight=2.0, margin=0.5, loss="ce")
    out = obj(model, x, y)
    logits, score = det.logits_and_score(x)
    excess = (score - det.threshold) / det.score_scale + 0.5
    want = F.cross_entropy(logits, y, reduction="none") - 2.0 * excess.clamp_min(0)
    assert torch.allclose(out.loss, want, atol=1e-5)
    # capped margin: no pull beyond the confidence once the class is flipped
    capped = DetectorEvasion(det, weight=0.0, loss="margin", confidence=0.25)(model, x, y)
    other = logits.masked_fill(F.one_hot(y, 2).bool(), float("-inf")).amax(1)
    margin = other - logits.gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(capped.loss, margin.clamp(max=0.25), atol=1e-5)
    assert obj.describe()["detector"] == "uad"


def test_success_means_misclassified_and_undetected(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    res = create_attack("pgd-adaptive", detector=det, eps=0.15, steps=30)(model, x, y)
    assert bool(res.success.any())
    hit = res.success
    with torch.no_grad():
        assert bool((model(res.x_adv[hit]).argmax(1) != y[hit]).all())
    assert not bool(det.predict(res.x_adv[hit]).any())
    assert float((res.x_adv - x).abs().max()) <= 0.15 + 1e-6
    assert res.config["weights"] == [0.1, 1.0, 10.0]


def test_adaptive_attack_beats_the_detector_where_plain_pgd_does_not(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    plain = create_attack("pgd", eps=0.15, steps=30)(model, x, y)
    plain_system = plain.success & ~det.predict(plain.x_adv)
    adaptive = create_attack("pgd-adaptive", detector=det, eps=0.15, steps=30)(model, x, y)
    # plain PGD fools the classifier often but is mostly caught; the adaptive attack evades
    assert float(plain.success.float().mean()) > 0.5
    assert float(adaptive.success.float().mean()) > float(plain_system.float().mean()) + 0.2


def test_weight_sweep_leaves_the_attack_unchanged(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    sweep = create_attack("pgd-adaptive", detector=det, eps=0.15, steps=3, weight=[0.5, 4.0])
    before = repr(sweep)
    first = sweep(model, x, y)
    assert repr(sweep) == before and sweep.objective.weight == 0.5
    again = sweep(model, x, y)
    assert torch.equal(first.x_adv, again.x_adv)


def test_weight_sweep_is_at_least_as_strong_as_each_weight(guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    sweep = create_attack("pgd-adaptive", detector=det, eps=0.15, steps=20, weight=[0.1, 10.0])
    assert isinstance(sweep, WeightSweepAttack)
    both = sweep(model, x, y).success
    for w in (0.1, 10.0):
        single = create_attack("pgd-adaptive", detector=det, eps=0.15, steps=20, weight=w)
        assert bool((both | ~single(model, x, y).success).all())


def test_attack_must_target_the_guarded_model(guarded: tuple) -> None:  # type: ignore[type-arg]
    _, det, x, y = guarded
    other = tiny_cnn(seed=3)
    with pytest.raises(ValueError, match="must run on the model the detector guards"):
        create_attack("pgd-adaptive", detector=det, eps=0.1, steps=2)(other, x, y)
