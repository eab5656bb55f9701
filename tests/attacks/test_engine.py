"""The engine knows no task: ``Attack.__call__`` is final, and any engine runs any objective
(the objective brings the target checks, the task metrics and special gradients)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

import medrobust.attacks
from medrobust.attacks import APGD, Attack, GradientAttack
from medrobust.attacks.objectives.explanation import GradCamObjective
from medrobust.attacks.objectives.segmentation import PixelCrossEntropy, SoftDice, sample_dice
from medrobust.models import create_model
from tests.attacks.models import frozen, small_cnn

LAYER = "features.layer4"
MAP_METRICS = {"map_clean", "map_adv", "clean_pred", "label_kept", "moved", "topk_intersection"}


def _all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_call_is_final_and_no_attack_overrides_it() -> None:
    for mod in pkgutil.walk_packages(medrobust.attacks.__path__, "medrobust.attacks."):
        importlib.import_module(mod.name)
    assert getattr(Attack.__call__, "__final__", False)
    subclasses = _all_subclasses(Attack)
    assert {"GradientAttack", "APGD", "ASMA", "DAG", "SquareAttack"} <= {
        c.__name__ for c in subclasses
    }
    for cls in subclasses:
        assert "__call__" not in vars(cls), f"{cls.__qualname__} overrides Attack.__call__"


def _explanation_batch() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand((3, 1, 16, 16), generator=g) * 0.8 + 0.1
    return small_cnn(), x, torch.tensor([0, 1, 0])


@pytest.mark.parametrize("engine", [GradientAttack, APGD])
def test_pgd_and_apgd_on_a_gradcam_objective_return_the_map_metrics(engine: type) -> None:
    model, x, y = _explanation_batch()
    objective = GradCamObjective(loss="topk", layer=LAYER)
    attack = engine(objective=objective, eps=0.03, steps=3, seed=1)
    with frozen(attack):
        res = attack(model, x, y)
    assert set(res.extra) >= MAP_METRICS
    assert res.extra["map_adv"].shape == (3, 1, 16, 16)
    kept = res.extra["label_kept"]
    assert torch.equal(res.success, res.extra["moved"] & kept)
    assert float((res.x_adv - x).abs().max()) <= 0.03 + 1e-6
    # the explanation check of the labels comes with the objective, whatever the engine
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        attack(model, x, torch.tensor([0, 1, 5]))


def test_softplus_gradients_come_from_the_objective() -> None:
    model, x, y = _explanation_batch()
    plain = GradientAttack(objective=GradCamObjective(layer=LAYER), eps=0.03, steps=2)
    smooth = GradientAttack(
        objective=GradCamObjective(layer=LAYER, softplus_beta=5.0), eps=0.03, steps=2
    )
    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    a, b = plain(model, x, y), smooth(model, x, y)
    assert not torch.equal(a.x_adv, b.x_adv)  # another gradient, so other iterates
    assert relus and relus == [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    assert b.config["objective"]["softplus_beta"] == 5.0


def _unet() -> torch.nn.Module:
    return create_model(
        "unet", num_classes=3, spatial_dims=2, channels=(4, 8), strides=(2,), num_res_units=0
    ).eval()


@pytest.mark.parametrize(
    ("engine", "objective"), [(GradientAttack, PixelCrossEntropy), (APGD, SoftDice)]
)
def test_generic_engines_on_a_segmentation_objective_accept_masks(
    engine: type, objective: type
) -> None:
    model = _unet()
    g = torch.Generator().manual_seed(2)
    x = torch.rand((2, 1, 16, 16), generator=g)
    with torch.no_grad():
        masks = model(x).argmax(1)
    attack = engine(objective=objective(), eps=0.1, steps=3, early_stop=False)
    with frozen(attack):
        res = attack(model, x, masks)
    assert res.pred_adv.shape == masks.shape
    torch.testing.assert_close(res.extra["dice"], sample_dice(res.pred_adv, masks, 3).float())
    assert torch.equal(res.success, sample_dice(res.pred_adv, masks, 3) < 0.5)
    with pytest.raises(ValueError, match="look like class labels"):
        attack(model, x, torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="supports segmentation"):
        attack(small_cnn(), x, masks)


def test_engine_extras_come_back_from_the_run() -> None:
    model = _unet()
    x = torch.rand((2, 1, 16, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        target = torch.roll(model(x).argmax(1), 1, dims=0)
    from medrobust.attacks import create_attack

    res = create_attack("asma", steps=3)(model, x, target)
    assert res.extra["multiplier"].shape == (2,)
    assert {"target_iou", "pixel_accuracy"} <= set(res.extra)
