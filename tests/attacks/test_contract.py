"""Contract tests over every registered classification attack (task tag ``classification``,
DESIGN.md): shapes, budgets, bounds, success semantics, determinism, model untouched and mode
restored, no per-call state, 2-D and 3-D, binary, single-logit and multi-class, region masks."""

from __future__ import annotations

import copy

import pytest
import torch

from medrobust.attacks import AttackResult, create_attack, list_attacks
from medrobust.models import ModelAdapter
from tests.attacks.models import SigmoidHead, batch, frozen, tiny_cnn

EPS = 0.05
FAST = {
    "apgd-ce": {"steps": 10},
    "apgd-dlr": {"steps": 10},
    "cw": {"steps": 20, "binary_search_steps": 2},
    "square": {"n_queries": 60},
    "deepfool": {"steps": 20},
    "pgd": {"steps": 5},
    "bim": {"steps": 5},
}
TASK = "classification"
# every attack of the task, none left out (tests/attacks/test_families.py checks it)
NAMES = list_attacks(tag=TASK)
ALL = NAMES


def make(name: str, norm: str = "linf", eps: float = EPS, **kw: object):
    params = {**FAST.get(name, {}), **kw}
    if name == "square" and norm != "linf":
        pytest.skip("the square attack is Linf-only by design (tested in test_errors)")
    return create_attack(name, eps=eps, norm=norm, **params)


def classes_for(name: str) -> int:
    return 3 if name == "apgd-dlr" else 2


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_contract(name: str, spatial_dims: int, norm: str) -> None:
    k = classes_for(name)
    model = tiny_cnn(spatial_dims, num_classes=k)
    x = batch(spatial_dims, size=6 if spatial_dims == 3 else 8)
    y = model(x).argmax(1)
    eps = EPS if norm == "linf" else EPS * 4
    attack = make(name, norm=norm, eps=eps)
    before = copy.deepcopy(model.state_dict())
    model.train()
    with frozen(attack):  # no per-call state on the attack or its objective
        res = attack(model, x, y)
    assert isinstance(res, AttackResult)
    # model untouched, mode restored, no parameter gradients
    assert model.training
    for key, v in model.state_dict().items():
        assert torch.equal(v, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    # shape, dtype, device
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert res.x_adv.device == x.device
    for t in (res.success, res.loss, res.linf, res.l2, res.steps):
        assert t.shape == (x.shape[0],)
    # inside the bounds and the budget
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    d = (res.x_adv - x).flatten(1)
    if norm == "linf":
        assert float(d.abs().max()) <= eps + 1e-6
    else:
        assert float(d.norm(dim=1).max()) <= eps + 1e-5
    torch.testing.assert_close(res.linf, d.abs().amax(1))
    assert res.l0.dtype == torch.int64 and torch.equal(res.l0, (d != 0).sum(1))
    # success means the adversarial prediction differs from the label, and it is recomputable
    model.eval()
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.pred_adv, pred)
    assert torch.equal(res.success, pred != y)
    assert res.config["name"] == name


@pytest.mark.parametrize("name", ALL)
def test_robust_accuracy_never_above_clean(name: str) -> None:
    k = classes_for(name)
    model = tiny_cnn(2, num_classes=k)
    x = batch(2, n=8)
    y = model(x).argmax(1)
    y[:3] = (y[:3] + 1) % k  # three samples misclassified on clean data
    res = make(name)(model, x, y)
    clean_acc = float((model(x).argmax(1) == y).float().mean())
    robust_acc = float((~res.success).float().mean())
    assert robust_acc <= clean_acc
    assert bool(res.success[:3].all())


@pytest.mark.parametrize("name", ALL)
def test_seeded_determinism(name: str) -> None:
    k = classes_for(name)
    model = tiny_cnn(2, num_classes=k)
    x = batch(2)
    y = model(x).argmax(1)
    a = make(name, seed=3)(model, x, y)
    b = make(name, seed=3)(model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.success, b.success)


@pytest.mark.parametrize("name", [n for n in ALL if n != "apgd-dlr"])
def test_single_sigmoid_logit_binary_model(name: str) -> None:
    model = ModelAdapter(SigmoidHead(), num_classes=2)
    x = batch(2, n=6)
    y = model(x).argmax(1)
    res = make(name, eps=0.2)(model, x, y)
    assert res.success.any(), "a strong budget must flip some single-logit predictions"
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1) != y, res.success)


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("cw", "deepfool")])
def test_stronger_budget_breaks_more(name: str) -> None:
    k = classes_for(name)
    model = tiny_cnn(2, num_classes=k)
    x = batch(2, n=12)
    y = model(x).argmax(1)
    weak = make(name, eps=0.002)(model, x, y)
    strong = make(name, eps=0.3)(model, x, y)
    assert int(strong.success.sum()) > int(weak.success.sum())


@pytest.mark.parametrize("name", [n for n in ALL if n != "apgd-dlr"])
def test_region_mask_confines_perturbation(name: str) -> None:
    model = tiny_cnn(2)
    x = batch(2)
    y = model(x).argmax(1)
    region = torch.zeros(1, 1, 8, 8)
    region[..., 2:6, 2:6] = 1
    res = make(name, eps=0.2)(model, x, y, region=region)
    outside = (res.x_adv - x) * (1 - region)
    assert float(outside.abs().max()) == 0.0
