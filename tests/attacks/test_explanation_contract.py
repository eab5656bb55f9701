"""Contract tests over every registered explanation attack (task tag ``explanation``), 2-D and
3-D, Linf and L2: result type and shapes, bounds and budgets, success semantics recomputable from
the map metrics, determinism, model untouched and mode restored, region masks, no per-call
state."""

from __future__ import annotations

import copy

import pytest
import torch

from medrobust.attacks import AttackResult, create_attack, list_attacks
from tests.attacks.models import frozen, small_cnn

TASK = "explanation"
NAMES = list_attacks(tag=TASK)
LAYER = "features.layer4"
LAYER_3D = "features.layer2"  # in 8^3 volumes the deeper stages pool down to one voxel


def inputs(spatial_dims: int, n: int = 3) -> torch.Tensor:
    size = 16 if spatial_dims == 2 else 8
    g = torch.Generator().manual_seed(1)
    return torch.rand((n, 1) + (size,) * spatial_dims, generator=g) * 0.8 + 0.1


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_contract(name: str, spatial_dims: int, norm: str) -> None:
    model = small_cnn(spatial_dims)
    x = inputs(spatial_dims)
    y = torch.tensor([0, 1, 0])
    eps = 0.03 if norm == "linf" else 0.3
    layer = LAYER if spatial_dims == 2 else LAYER_3D
    attack = create_attack(name, eps=eps, norm=norm, steps=2, layer=layer)
    before = copy.deepcopy(model.state_dict())
    model.train()
    with frozen(attack):  # no per-call state on the attack or its objective
        res = attack(model, x, y)
    assert isinstance(res, AttackResult)
    assert model.training
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
    ex = res.extra
    assert ex["map_adv"].shape == (x.shape[0], 1, *x.shape[2:])
    model.eval()
    with torch.no_grad():
        clean, adv = model(x).argmax(1), model(res.x_adv).argmax(1)
    assert torch.equal(res.pred_adv, adv)
    assert torch.equal(ex["label_kept"], adv == clean)
    rule = ex["label_kept"] if attack.objective.label == "kept" else ~ex["label_kept"]
    assert torch.equal(res.success, ex["moved"] & rule)
    assert res.config["name"] == name


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_region(name: str) -> None:
    model = small_cnn(2)
    x, y = inputs(2), torch.tensor([0, 1, 0])
    attack = create_attack(name, eps=0.05, steps=2, random_start=True, seed=3, layer=LAYER)
    assert torch.equal(attack(model, x, y).x_adv, attack(model, x, y).x_adv)
    region = torch.zeros(1, 1, 16, 16)
    region[..., 4:12, 4:12] = 1.0
    res = attack(model, x, y, region=region)
    assert float(((res.x_adv - x) * (1 - region)).abs().max()) == 0.0
