"""Targeted SegPGD and CosPGD through the registry, and SEA's progressive radius reduction:
its stages, its warm start, and that only iterates inside the final eps-ball ever become the
result (perturbation, success, Dice)."""

from __future__ import annotations

import pytest
import torch

from medrobust.attacks import ATTACKS, create_attack
from medrobust.attacks.objectives.base import ObjectiveOutput, Target
from medrobust.attacks.objectives.segmentation import sample_dice, target_iou
from medrobust.attacks.objectives.segmentation_losses import MaskedCrossEntropy
from medrobust.attacks.segmentation import (
    SEA_RADIUS_SCHEDULE,
    SegmentationAPGD,
    check_radius_schedule,
)
from tests.attacks.test_segmentation_contract import inputs, tiny_unet
from tests.attacks.test_segmentation_golden import pixel_model

TARGETED = ("segpgd-targeted", "cospgd-targeted")
SEA = ("apgd-sea-js", "apgd-sea-mce", "apgd-sea-mbce", "apgd-sea-msph")


# ------------------------------------------------------------------------------ targeted
@pytest.mark.parametrize("name", TARGETED)
def test_targeted_presets_carry_the_targeted_tag(name: str) -> None:
    tags = ATTACKS.get(name).tags
    assert "targeted" in tags and "untargeted" not in tags and "segmentation" in tags
    attack = create_attack(name)
    assert attack.targeted and attack.config()["objective"]["targeted"] is True


@pytest.mark.parametrize("name", TARGETED)
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_targeted_attacks_move_the_prediction_toward_the_target(
    name: str, spatial_dims: int, num_classes: int
) -> None:
    model = tiny_unet(spatial_dims, num_classes)
    x = inputs(spatial_dims, 4)
    with torch.no_grad():
        clean = model(x).argmax(1)
    target = torch.roll(clean, 1, dims=0)  # another image's prediction
    res = create_attack(name, eps=0.3, steps=10, success_fraction=0.6)(model, x, target)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(pred, res.pred_adv)
    iou = target_iou(pred, target, num_classes)
    torch.testing.assert_close(res.extra["target_iou"].double(), iou.double())
    # more than 0 steps do: every sample's target IoU rose
    assert bool((iou > target_iou(clean, target, num_classes)).all())
    # success is the targeted rule (share of the pixels that had to change), not Dice
    n0 = (clean != target).flatten(1).sum(1).double()
    wrong = (pred != target).flatten(1).sum(1).double()
    assert torch.equal(res.success, wrong <= 0.4 * n0 + 1e-9)
    torch.testing.assert_close(res.extra["pixel_success"].double(), 1 - wrong / n0)
    assert "dice" not in res.extra
    # a successful sample stops there; a failed one runs every step
    assert bool((res.steps[~res.success] == 10).all())
    assert float((res.x_adv - x).abs().amax()) <= 0.3 + 1e-6


def test_targeted_keyword_of_the_untargeted_preset_builds_the_same_attack() -> None:
    model = tiny_unet(2)
    x = inputs(2)
    with torch.no_grad():
        target = torch.roll(model(x).argmax(1), 1, dims=0)
    a = create_attack("segpgd-targeted", eps=0.1, steps=4)(model, x, target)
    b = create_attack("segpgd", targeted=True, eps=0.1, steps=4, early_stop=True)(model, x, target)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


@pytest.mark.parametrize("name", TARGETED)
def test_targeted_presets_reject_bad_input(name: str) -> None:
    for fixed in ("targeted", "broken_fraction"):
        with pytest.raises(TypeError, match=rf"unexpected parameter\(s\) '{fixed}'"):
            create_attack(name, **{fixed: 0.5})
    with pytest.raises(ValueError, match=r"success_fraction must be in \[0, 1\], got 1.5"):
        create_attack(name, success_fraction=1.5)
    model, x = tiny_unet(2), inputs(2)
    attack = create_attack(name, steps=2)
    with pytest.raises(ValueError, match="target masks must hold integer class indices"):
        attack(model, x, torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match=r"target masks must have shape \(B, \*spatial\)"):
        attack(model, x, torch.zeros(3, 1, 16, 16, dtype=torch.long))


# ---------------------------------------------------------------------- radius reduction
@pytest.mark.parametrize("name", SEA)
def test_sea_presets_run_the_radius_reduction(name: str) -> None:
    attack = create_attack(name, steps=30)
    assert isinstance(attack, SegmentationAPGD)
    assert attack.radius_schedule == SEA_RADIUS_SCHEDULE == ((2.0, 0.3), (1.5, 0.3), (1.0, 0.4))
    assert attack.config()["radius_schedule"] == [[2.0, 0.3], [1.5, 0.3], [1.0, 0.4]]
    assert attack.stage_steps() == [9, 9, 12]
    off = create_attack(name, radius_schedule=None)
    assert off.radius_schedule is None and off.config()["radius_schedule"] is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([(2.0, 0.5), (1.5, 0.5)], "last stage of radius_schedule must have factor 1"),
        ([(2.0, 0.5), (1.0, 0.4)], "must sum to 1, got 0.9"),
        ([(0.5, 0.5), (1.0, 0.5)], "radius factors >= 1"),
        ([(2.0, 0.0), (1.0, 1.0)], r"shares in \(0, 1\]"),
        ([], "at least one stage"),
        ([2.0, 1.0], r"\(radius factor, share of the iterations\) pairs"),
    ],
)
def test_radius_schedule_rejects_bad_values(value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_radius_schedule(value)
    with pytest.raises(ValueError, match=match):
        create_attack("apgd-sea-mce", radius_schedule=value)


class _Spy(MaskedCrossEntropy):
    """Records every evaluated iterate and its success (test only)."""

    calls: list[tuple[torch.Tensor, torch.Tensor]]

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        out = super().__call__(model, x, target)
        self.calls.append((x.detach().clone(), out.success.detach().clone()))
        return out


def _size(d: torch.Tensor, norm: str) -> torch.Tensor:
    flat = d.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_out_of_ball_success_is_never_returned(norm: str, spatial_dims: int) -> None:
    """Every pixel is 0.6 (class 1, the true class): the 2 eps stage breaks the sample, the
    eps-ball cannot (Linf: 0.6 - eps > 0.5; L2: flipping enough pixels needs more than eps),
    so the attack must return an unbroken sample inside the eps-ball."""
    model = pixel_model(spatial_dims)
    x = torch.full((1, 1) + (2,) * spatial_dims, 0.6)
    mask = torch.ones((1,) + (2,) * spatial_dims, dtype=torch.long)
    eps = {"linf": 0.06, "l2": 0.12 if spatial_dims == 2 else 0.2}[norm]
    spy = _Spy()
    spy.calls = []
    attack = SegmentationAPGD(
        objective=spy, norm=norm, eps=eps, steps=20, early_stop=False,
        radius_schedule=SEA_RADIUS_SCHEDULE,
    )  # fmt: skip
    res = attack(model, x, mask)
    sizes = torch.stack([_size(c - x, norm)[0] for c, _ in spy.calls])
    won = torch.stack([s[0] for _, s in spy.calls])
    assert bool((won & (sizes > eps + 1e-6)).any()), "the 2 eps stage should break the sample"
    assert not bool((won & (sizes <= eps + 1e-6)).any())
    assert not bool(res.success[0])
    assert float(_size(res.x_adv - x, norm)[0]) <= eps + 1e-6
    assert float(res.linf[0]) <= (eps if norm == "linf" else 1.0) + 1e-6
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(pred, res.pred_adv)
    torch.testing.assert_close(res.extra["dice"].double(), sample_dice(pred, mask, 2))
    assert float(res.extra["dice"][0]) >= 0.5
    assert int(res.steps[0]) == 20  # the iterations of all stages


def test_stages_shrink_the_ball_and_warm_start_from_the_previous_best() -> None:
    model = pixel_model()
    x = torch.rand((1, 1, 4, 4), generator=torch.Generator().manual_seed(3)) * 0.4 + 0.3
    with torch.no_grad():
        mask = model(x).argmax(1)
    eps = 0.05
    spy = _Spy()
    spy.calls = []
    attack = SegmentationAPGD(
        objective=spy, eps=eps, steps=20, early_stop=False, radius_schedule=SEA_RADIUS_SCHEDULE
    )
    res = attack(model, x, mask)
    calls = [c for c, _ in spy.calls]
    clean = 1 if len(calls) == 24 else 0  # the engine may evaluate the clean input first
    assert len(calls) == clean + 23  # 6, 6 and 8 steps, each stage from its own start point
    stages = [calls[clean : clean + 7], calls[clean + 7 : clean + 14], calls[clean + 14 :]]
    for factor, stage in zip((2.0, 1.5, 1.0), stages, strict=True):
        assert max(float((c - x).abs().max()) for c in stage) <= factor * eps + 1e-6
    assert max(float((c - x).abs().max()) for c in stages[0]) > 1.5 * eps  # it used 2 eps
    for prev, stage, factor in ((stages[0], stages[1], 1.5), (stages[1], stages[2], 1.0)):
        start = stage[0]
        projected = [x + (c - x).clamp(-factor * eps, factor * eps) for c in prev]
        assert any(torch.allclose(start, p, atol=1e-7) for p in projected)
    assert float((res.x_adv - x).abs().max()) <= eps + 1e-6
    assert any(torch.equal(res.x_adv, c) for c in stages[2])


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("num_classes", [2, 3])
def test_spherical_loss_preset_with_radius_reduction_on_a_unet(
    spatial_dims: int, num_classes: int
) -> None:
    model = tiny_unet(spatial_dims, num_classes)
    x = inputs(spatial_dims)
    with torch.no_grad():
        y = model(x).argmax(1)
    res = create_attack("apgd-sea-msph", eps=0.05, steps=10)(model, x, y)
    assert float((res.x_adv - x).abs().amax()) <= 0.05 + 1e-6
    with torch.no_grad():
        dice = sample_dice(model(res.x_adv).argmax(1), y, num_classes)
    torch.testing.assert_close(res.extra["dice"].double(), dice)
    assert bool((dice < 1).all())  # it moved every sample's prediction
    assert torch.equal(res.success, dice < 0.5)
    assert bool((res.steps == 10).all())
