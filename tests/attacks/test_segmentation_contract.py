"""Contract tests over every registered segmentation attack, 2-D and 3-D: result type and shapes,
bounds and budgets, region masks, success semantics, determinism, model untouched, and for
untargeted attacks: every sample attacked and the Dice never above the clean Dice.

Everything is derived from the registry (kind and tags, the preset's keywords), so a new
segmentation preset joins these tests without an edit here."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from medrobust.attacks import ATTACKS, AttackResult, attack_kind, create_attack, list_attacks
from medrobust.attacks.objectives.segmentation import sample_dice
from medrobust.models import ModelAdapter, create_model
from tests.attacks.models import frozen

TASK = "segmentation"
# every attack of the task, none left out (tests/attacks/test_families.py checks it)
NAMES = list_attacks(tag=TASK)
SEG = NAMES
#: minimal-perturbation attacks take no budget by default; every other kind is bounded
BOUNDED = {n for n in SEG if attack_kind(n) != "minimal"}
LINF_ONLY = {n for n in SEG if "linf-only" in ATTACKS.get(n).tags}


def fast(name: str) -> dict[str, object]:
    """Few iterations, from the keywords the preset accepts (steps, queries)."""
    params = inspect.signature(ATTACKS.get(name).factory).parameters
    out: dict[str, object] = {}
    if "steps" in params:
        out["steps"] = 4 if attack_kind(name) == "minimal" else 3
    if "n_queries" in params:
        out["n_queries"] = 30
    return out


def tiny_unet(spatial_dims: int, num_classes: int = 3) -> ModelAdapter:
    model = create_model(
        "unet",
        num_classes=num_classes,
        spatial_dims=spatial_dims,
        channels=(4, 8),
        strides=(2,),
        num_res_units=0,
        seed=0,
    )
    return model.eval()


def inputs(spatial_dims: int, n: int = 3) -> torch.Tensor:
    size = 16 if spatial_dims == 2 else 8
    g = torch.Generator().manual_seed(1)
    return torch.rand((n, 1) + (size,) * spatial_dims, generator=g) * 0.8 + 0.1


def is_targeted(name: str) -> bool:
    return "targeted" in ATTACKS.get(name).tags


def masks_for(name: str, model: ModelAdapter, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        pred = model(x).argmax(1)
    if is_targeted(name):
        return torch.roll(pred, 1, dims=0)  # another image's prediction as the target
    return pred


def make(name: str, norm: str = "linf", eps: float | None = None) -> object:
    params = fast(name)
    if name in BOUNDED:
        params.update(norm=norm, eps=eps if eps is not None else (0.05 if norm == "linf" else 0.5))
    elif eps is not None:
        params.update(norm=norm, eps=eps)
    else:
        params.update(norm=norm)
    return create_attack(name, **params)


def test_registered() -> None:
    assert {"asma", "asma-bounded", "dag", "pgd-seg", "apgd-seg"} <= set(SEG)
    assert {"segpgd", "cospgd", "apgd-sea-js", "apgd-sea-mce", "apgd-sea-mbce"} <= set(SEG)
    assert {"apgd-sea-msph", "segpgd-targeted", "cospgd-targeted"} <= set(SEG)
    assert is_targeted("segpgd-targeted") and is_targeted("cospgd-targeted")
    assert "square-seg" in LINF_ONLY and attack_kind("square-seg") == "black-box"


@pytest.mark.parametrize("name", SEG)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_contract(name: str, spatial_dims: int, norm: str) -> None:
    if norm == "l2" and name in LINF_ONLY:
        pytest.skip("Linf-only by design (test_linf_only_attacks_refuse_l2)")
    model = tiny_unet(spatial_dims)
    x = inputs(spatial_dims)
    y = masks_for(name, model, x)
    attack = make(name, norm=norm)
    before = copy.deepcopy(model.state_dict())
    model.train()
    with frozen(attack):  # no per-call state on the attack or its objective
        res = attack(model, x, y)  # type: ignore[operator]
    assert isinstance(res, AttackResult)
    assert model.training
    for key, v in model.state_dict().items():
        assert torch.equal(v, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    for t in (res.success, res.loss, res.linf, res.l2, res.steps):
        assert t.shape == (x.shape[0],)
    assert res.pred_adv.shape == y.shape
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    d = (res.x_adv - x).flatten(1)
    torch.testing.assert_close(res.linf, d.abs().amax(1))
    torch.testing.assert_close(res.l2, d.norm(dim=1))
    assert res.l0.dtype == torch.int64 and torch.equal(res.l0, (d != 0).sum(1))
    if name in BOUNDED:
        eps = res.config["eps"]
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps + 1e-5
    model.eval()
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.pred_adv, pred)
    if is_targeted(name):
        assert set(res.extra) >= {"target_iou", "pixel_accuracy"}
        with torch.no_grad():
            n0 = (model(x).argmax(1) != y).flatten(1).sum(1).double()
        wrong = (pred != y).flatten(1).sum(1).double()
        assert torch.equal(res.success, wrong <= 0.01 * n0 + 1e-9)
        torch.testing.assert_close(
            res.extra["pixel_accuracy"], (pred == y).flatten(1).float().mean(1)
        )
    else:
        assert set(res.extra) >= {"dice", "pixel_accuracy"}
        assert torch.equal(res.success, sample_dice(pred, y, 3) < 0.5)
    assert res.config["name"] == name


@pytest.mark.parametrize("name", SEG)
def test_deterministic(name: str) -> None:
    model = tiny_unet(2)
    x = inputs(2)
    y = masks_for(name, model, x)
    a = make(name)(model, x, y)  # type: ignore[operator]
    b = make(name)(model, x, y)  # type: ignore[operator]
    assert torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.success, b.success)


@pytest.mark.parametrize("name", SEG)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_region_limits_perturbation(name: str, spatial_dims: int) -> None:
    model = tiny_unet(spatial_dims)
    x = inputs(spatial_dims)
    y = masks_for(name, model, x)
    region = torch.zeros((1, 1, *x.shape[2:]))
    region[0, 0, : x.shape[2] // 2] = 1
    res = make(name)(model, x, y, region=region)  # type: ignore[operator]
    outside = (res.x_adv - x) * (1 - region)
    assert float(outside.abs().max()) == 0.0
    if float(((res.x_adv - x) * region).abs().max()) == 0.0:
        # only a minimal attack whose best iterate is the clean input even without a region
        # (asma-paper: raw tau = 1e-7 moves a tiny model's input by less than float precision
        # in a few steps) may return no perturbation
        free = make(name)(model, x, y)  # type: ignore[operator]
        assert attack_kind(name) == "minimal" and float(free.l2.max()) == 0.0


@pytest.mark.parametrize("name", SEG)
def test_rejects_classifier_and_labels(name: str) -> None:
    from tests.attacks.models import tiny_cnn

    attack = make(name)
    x = inputs(2)
    with pytest.raises(ValueError, match="supports segmentation"):
        attack(tiny_cnn(2), x, torch.zeros(3, dtype=torch.long))  # type: ignore[operator]
    model = tiny_unet(2)
    with pytest.raises(ValueError, match="look like class labels"):
        attack(model, x, torch.zeros(3, dtype=torch.long))  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"squeeze\(1\)"):
        attack(model, x, torch.zeros(3, 1, 16, 16, dtype=torch.long))  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"class\(es\) \[7\] unknown to the model"):
        bad = torch.zeros(3, 16, 16, dtype=torch.long)
        bad[0, 0, 0] = 7
        attack(model, x, bad)  # type: ignore[operator]
    with pytest.raises(ValueError, match="integer class indices"):
        attack(model, x, torch.zeros(3, 16, 16))  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"masks must be a torch\.Tensor, got list"):
        attack(model, x, [[0]])  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"needs masks of shape \(3, 16, 16\)"):
        attack(model, x, torch.zeros(3, 8, 8, dtype=torch.long))  # type: ignore[operator]


UNTARGETED = [n for n in SEG if not is_targeted(n)]


@pytest.mark.parametrize("name", sorted(LINF_ONLY))
def test_linf_only_attacks_refuse_l2(name: str) -> None:
    with pytest.raises(ValueError, match="'linf' norm only"):
        create_attack(name, norm="l2", eps=0.5)


@pytest.mark.parametrize("name", UNTARGETED)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_untargeted_attacks_every_sample_relative_to_its_clean_dice(
    name: str, spatial_dims: int
) -> None:
    """A sample whose clean Dice is already low (~0.2-0.3) is attacked like the others and its
    Dice falls; success is Dice below half of the sample's own clean Dice; the returned Dice is
    never above the clean Dice."""
    model = tiny_unet(spatial_dims)
    x = inputs(spatial_dims)
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = pred.clone()
    y[0] = torch.roll(pred[0], 3, dims=0)  # a poor clean segmentation of sample 0
    clean = sample_dice(pred, y, 3)
    assert 0.1 < float(clean[0]) < 0.4 and bool((clean[1:] == 1).all())
    res = make(name, eps=0.3)(model, x, y)  # type: ignore[operator]
    assert bool((res.steps > 0).all()), "every sample must be attacked"
    torch.testing.assert_close(res.extra["clean_dice"].double(), clean)
    with torch.no_grad():
        dice = sample_dice(model(res.x_adv).argmax(1), y, 3)
    torch.testing.assert_close(res.extra["dice"].double(), dice)
    assert bool((dice <= clean + 1e-9).all())
    assert float(dice[0]) < float(clean[0]), "the poorly segmented sample was not attacked"
    assert torch.equal(res.success, dice < 0.5 * clean)
