"""Contract tests over every registered detection attack (task tag ``detection``: attacks on a
detector-guarded classifier), Linf and L2: result type and shapes, bounds and budgets, success
means misclassified and not flagged, determinism, model untouched and mode restored, region
masks, no per-call state. (The detectors guard 2-D classifiers here; 3-D inputs go through the
same engine and are covered by the other families.)"""

from __future__ import annotations

import copy

import pytest
import torch

from medrobust.attacks import AttackResult, create_attack, list_attacks
from medrobust.detectors import create_detector
from tests.attacks.models import batch, frozen, tiny_cnn

TASK = "detection"
NAMES = list_attacks(tag=TASK)


@pytest.fixture(scope="module")
def guarded() -> tuple:  # type: ignore[type-arg]
    model = tiny_cnn()
    det = create_detector("uad", fpr=0.1).fit(model, batch(n=120, size=8, seed=5))
    x = batch(n=8, size=8, seed=11)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, det, x, y


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_contract(name: str, norm: str, guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    eps = 0.15 if norm == "linf" else 0.6
    attack = create_attack(name, detector=det, eps=eps, norm=norm, steps=5)
    before = copy.deepcopy(model.state_dict())
    model.train()
    try:
        with frozen(attack):  # no per-call state on the attack or its objective
            res = attack(model, x, y)
        assert model.training
    finally:
        model.eval()
    assert isinstance(res, AttackResult)
    for key, v in model.state_dict().items():
        assert torch.equal(v, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    for t in (res.success, res.loss, res.linf, res.l2, res.steps, res.pred_adv):
        assert t.shape == (x.shape[0],)
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    d = (res.x_adv - x).flatten(1)
    assert res.l0.dtype == torch.int64 and torch.equal(res.l0, (d != 0).sum(1))
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-5
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.pred_adv, pred)
    assert torch.equal(res.success, (pred != y) & ~det.predict(res.x_adv))
    assert res.config["name"] == name


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_region(name: str, guarded: tuple) -> None:  # type: ignore[type-arg]
    model, det, x, y = guarded
    attack = create_attack(name, detector=det, eps=0.15, steps=3, seed=2)
    assert torch.equal(attack(model, x, y).x_adv, attack(model, x, y).x_adv)
    region = torch.zeros(1, 1, 8, 8)
    region[..., 2:6, 2:6] = 1
    res = attack(model, x, y, region=region)
    assert float(((res.x_adv - x) * (1 - region)).abs().max()) == 0.0
