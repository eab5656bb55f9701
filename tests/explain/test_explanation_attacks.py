"""Contract and behaviour tests of the explanation attacks (gradcam-kept, -targeted, -flip)."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.explain.conftest import Trained
from torch import nn

from medrobust.attacks import AttackResult, create_attack, list_attacks
from medrobust.attacks.explanation import ExplanationAttack
from medrobust.attacks.objectives import create_objective
from medrobust.attacks.objectives.explanation import (
    REJECTED,
    GradCamObjective,
    default_gradcam_layer,
)
from medrobust.explain import grad_cam, topk_intersection
from medrobust.models import ModelAdapter, create_model

PRESETS = ["gradcam-kept", "gradcam-targeted", "gradcam-flip"]
LAYER = "features.layer4"


def _tiny(spatial_dims: int = 2, seed: int = 0) -> ModelAdapter:
    return create_model(
        "small-cnn", num_classes=2, width=4, spatial_dims=spatial_dims, seed=seed
    ).eval()


def _batch(spatial_dims: int = 2, n: int = 4, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 1, *([size] * spatial_dims)), generator=g) * 0.8 + 0.1


def test_presets_are_registered_with_the_explanation_tag() -> None:
    assert sorted(list_attacks(tag="explanation")) == sorted(PRESETS)
    for name in PRESETS:
        assert name not in list_attacks(tag="classification")
        assert isinstance(create_attack(name), ExplanationAttack)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_contract(name: str, norm: str) -> None:
    model = _tiny()
    x = _batch()
    y = torch.tensor([0, 1, 0, 1])
    eps = 0.03 if norm == "linf" else 0.3
    attack = create_attack(name, eps=eps, norm=norm, steps=4, layer=LAYER)
    before = copy.deepcopy(model.state_dict())
    model.train()
    res = attack(model, x, y)
    assert isinstance(res, AttackResult)
    # model untouched, mode restored, no parameter gradients
    assert model.training
    for key, v in model.state_dict().items():
        assert torch.equal(v, before[key]), key
    assert all(p.grad is None for p in model.parameters())
    # shapes, dtype, budget and bounds
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    for t in (res.success, res.loss, res.linf, res.l2, res.steps, res.pred_adv):
        assert t.shape == (4,)
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    d = (res.x_adv - x).flatten(1)
    if norm == "linf":
        assert float(d.abs().max()) <= eps + 1e-6
    else:
        assert float(d.norm(dim=1).max()) <= eps + 1e-5
    # extras: maps and per-sample metrics at x_adv
    ex = res.extra
    assert ex["map_clean"].shape == ex["map_adv"].shape == (4, 1, 16, 16)
    for key in ("topk_intersection", "spearman", "com_shift", "label_kept", "moved"):
        assert ex[key].shape == (4,)
    model.eval()
    with torch.no_grad():
        clean_pred = model(x).argmax(1)
        adv_pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.pred_adv, adv_pred)
    assert torch.equal(ex["clean_pred"], clean_pred)
    assert torch.equal(ex["label_kept"], adv_pred == clean_pred)
    # success is recomputable: map criterion and label rule
    rule = adv_pred == clean_pred if name != "gradcam-flip" else adv_pred != clean_pred
    assert torch.equal(res.success, ex["moved"] & rule)
    assert res.config["name"] == name and res.config["objective"]["layer"] == LAYER


@pytest.mark.parametrize("name", PRESETS)
def test_seeded_determinism(name: str) -> None:
    model = _tiny()
    x, y = _batch(), torch.tensor([0, 1, 1, 0])
    a = create_attack(name, eps=0.03, steps=3, random_start=True, seed=7, layer=LAYER)
    r1, r2 = a(model, x, y), a(model, x, y)
    assert torch.equal(r1.x_adv, r2.x_adv)
    r3 = create_attack(name, eps=0.03, steps=3, random_start=True, seed=8, layer=LAYER)(model, x, y)
    assert not torch.equal(r1.x_adv, r3.x_adv)


def test_region_mask_confines_the_perturbation() -> None:
    model = _tiny()
    x, y = _batch(), torch.zeros(4, dtype=torch.long)
    region = torch.zeros(1, 1, 16, 16)
    region[..., 4:12, 4:12] = 1.0
    res = create_attack("gradcam-kept", eps=0.05, steps=4, layer=LAYER)(model, x, y, region=region)
    delta = res.x_adv - x
    assert float(delta[..., region[0, 0] == 0].abs().max()) == 0.0
    assert float(delta[..., region[0, 0] == 1].abs().max()) > 0.0


def test_three_dimensional_volumes_and_gradcam_plus_plus() -> None:
    model = _tiny(spatial_dims=3)
    x = _batch(spatial_dims=3, n=2, size=16)
    res = create_attack("gradcam-kept", eps=0.05, steps=2, method="gradcam++", layer=LAYER)(
        model, x, torch.zeros(2, dtype=torch.long)
    )
    assert res.extra["map_adv"].shape == (2, 1, 16, 16, 16)
    assert float((res.x_adv - x).abs().max()) <= 0.05 + 1e-6


def test_label_kept_attack_never_returns_a_changed_label(trained_cnn: Trained) -> None:
    model, x, y = trained_cnn.model, trained_cnn.images[:16], trained_cnn.labels[:16]
    # a large budget and no class-preservation term: many iterates flip the label
    attack = create_attack("gradcam-kept", eps=24 / 255, steps=10, gamma=0.0)
    res = attack(model, x, y)
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(pred, y)
    assert bool(res.extra["label_kept"].all())
    # the flip attack with the same budget does change labels: the constraint was binding
    flip = create_attack("gradcam-flip", eps=24 / 255, steps=10)(model, x, y)
    assert bool((~flip.extra["label_kept"]).any())
    assert torch.equal(flip.success, flip.extra["moved"] & ~flip.extra["label_kept"])


def test_rejected_iterates_score_below_every_kept_iterate(trained_cnn: Trained) -> None:
    model, x = trained_cnn.model, trained_cnn.images[:4]
    obj = GradCamObjective(loss="topk", label="kept", gamma=0.0)
    target = obj.prepare(model, x, trained_cnn.labels[:4])
    assert isinstance(target, dict)
    flipped = dict(target)
    flipped["cls"] = 1 - target["cls"]  # pretend the clean class was the other one
    out_kept = obj(model, x, target)
    out_flip = obj(model, x, flipped)
    assert bool(out_kept.loss.min() > -2.0)  # top-k term lies in [-1, 0]
    assert bool((out_flip.loss < -REJECTED / 2).all())
    assert not bool(out_flip.success.any())


def test_maps_move_more_than_under_random_noise(trained_cnn: Trained) -> None:
    model, x, y = trained_cnn.model, trained_cnn.images[:24], trained_cnn.labels[:24]
    eps = 4 / 255
    res = create_attack("gradcam-kept", eps=eps, steps=10)(model, x, y)
    g = torch.Generator().manual_seed(0)
    noise = torch.where(torch.rand(x.shape, generator=g) < 0.5, -eps, eps)
    xn = (x + noise).clamp(0, 1)
    clean = grad_cam(model, x, LAYER, y)
    noisy = grad_cam(model, xn, LAYER, y)
    attacked = grad_cam(model, res.x_adv, LAYER, y)
    t_noise = topk_intersection(clean, noisy, 0.05).mean()
    t_attack = topk_intersection(clean, attacked, 0.05).mean()
    assert float(t_attack) < float(t_noise) - 0.3
    assert float(t_noise) > 0.7  # noise of the same budget barely moves the map
    assert float(res.success.float().mean()) >= 0.5
    torch.testing.assert_close(res.extra["topk_intersection"].mean(), t_attack)


def test_centre_of_mass_attack_moves_the_centre(trained_cnn: Trained) -> None:
    model, x, y = trained_cnn.model, trained_cnn.images[:12], trained_cnn.labels[:12]
    res = create_attack("gradcam-kept", loss="com", eps=8 / 255, steps=10)(model, x, y)
    shift = res.extra["com_shift"]
    assert float(shift.nanmean()) > 2.0
    threshold = 0.1 * 32  # default: 10% of the image side
    assert torch.equal(res.success, (shift >= threshold) & res.extra["label_kept"])


def test_targeted_attack_with_given_maps_moves_toward_them(trained_cnn: Trained) -> None:
    model, x = trained_cnn.model, trained_cnn.images[:8]
    target = torch.zeros(8, 1, 32, 32)
    target[..., 0:8, 0:8] = 1.0  # pull the explanation into the top-left corner
    res = create_attack("gradcam-targeted", eps=8 / 255, steps=10)(model, x, target)
    to_target = topk_intersection(target, res.extra["map_adv"], 0.05)
    before = topk_intersection(target, res.extra["map_clean"], 0.05)
    assert float(to_target.mean()) > float(before.mean()) + 0.2
    torch.testing.assert_close(res.extra["target_topk"], to_target)
    assert bool(res.extra["label_kept"].all())
    # (B, H, W) target maps are accepted too
    res2 = create_attack("gradcam-targeted", eps=8 / 255, steps=10)(model, x, target[:, 0])
    assert torch.equal(res.x_adv, res2.x_adv)


@pytest.mark.parametrize("strategy", ["shift", "flip", "other"])
def test_target_map_strategies(strategy: str, trained_cnn: Trained) -> None:
    model, x, y = trained_cnn.model, trained_cnn.images[:4], trained_cnn.labels[:4]
    obj = create_objective("gradcam-target", target_map=strategy)
    t = obj.prepare(model, x, y)
    assert isinstance(t, dict)
    clean, tmap = t["map"], t["target_map"]
    if strategy == "shift":
        expected = torch.roll(clean, shifts=(16, 16), dims=(2, 3))
    elif strategy == "flip":
        expected = torch.flip(clean, dims=(3,))
    else:
        expected = torch.roll(clean, shifts=1, dims=0)
    torch.testing.assert_close(tmap, expected)


def test_softplus_smoothing_restores_the_network(trained_cnn: Trained) -> None:
    model, x, y = trained_cnn.model, trained_cnn.images[:4], trained_cnn.labels[:4]
    relus = sum(isinstance(m, nn.ReLU) for m in model.modules())
    res = create_attack("gradcam-kept", eps=4 / 255, steps=3, softplus_beta=10.0)(model, x, y)
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == relus
    assert not any(isinstance(m, nn.Softplus) for m in model.modules())
    assert res.config["softplus_beta"] == 10.0
    # success was judged on the ReLU network
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1), res.pred_adv)


def test_first_order_and_second_order_agree_for_a_gap_linear_head(trained_cnn: Trained) -> None:
    model, x, y = trained_cnn.model, trained_cnn.images[:6], trained_cnn.labels[:6]
    a1 = create_attack("gradcam-kept", eps=4 / 255, steps=4, second_order=True)(model, x, y)
    a2 = create_attack("gradcam-kept", eps=4 / 255, steps=4, second_order=False)(model, x, y)
    # GAP -> linear: the Grad-CAM weights do not depend on the input, so the gradients agree
    torch.testing.assert_close(a1.x_adv, a2.x_adv)


def test_default_layer_per_architecture() -> None:
    assert default_gradcam_layer(_tiny()) == "features.layer4"
    assert default_gradcam_layer(create_model("resnet10", num_classes=2)) == "layer4"
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    )
    adapter = ModelAdapter(net, num_classes=2)
    assert default_gradcam_layer(adapter, _batch(n=1)) == "1"
    with pytest.raises(ValueError, match="pass layer="):
        default_gradcam_layer(adapter)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_unknown_layer_lists_the_layers() -> None:
    attack = create_attack("gradcam-kept", eps=0.03, steps=2, layer="features.layer9")
    with pytest.raises(ValueError, match=r"unknown layer 'features\.layer9'.*features\.layer4"):
        attack(_tiny(), _batch(), torch.zeros(4, dtype=torch.long))


def test_layer_without_spatial_output() -> None:
    attack = create_attack("gradcam-kept", eps=0.03, steps=2, layer="classifier")
    with pytest.raises(ValueError, match=r"layer 'classifier' has no spatial output"):
        attack(_tiny(), _batch(), torch.zeros(4, dtype=torch.long))


class _DetachedInput(nn.Module):
    """A classifier whose input is detached: the map has no gradient path to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x.detach()))).flatten(1))


class _DetachedLayer(nn.Module):
    """The hooked layer's output is detached before the head: no path from score to layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).detach().mean(dim=(2, 3)))


def test_model_without_input_gradient_path() -> None:
    model = ModelAdapter(_DetachedInput(), num_classes=2).eval()
    attack = create_attack("gradcam-kept", eps=0.03, steps=2, layer="conv")
    with pytest.raises(ValueError, match="does not depend on the input"):
        attack(model, _batch(), torch.zeros(4, dtype=torch.long))


def test_model_without_gradient_path_to_the_layer() -> None:
    model = ModelAdapter(_DetachedLayer(), num_classes=2).eval()
    attack = create_attack("gradcam-kept", eps=0.03, steps=2, layer="conv")
    with pytest.raises(ValueError, match="no gradient path"):
        attack(model, _batch(), torch.zeros(4, dtype=torch.long))


def test_target_map_of_the_wrong_shape() -> None:
    attack = create_attack("gradcam-targeted", eps=0.03, steps=2, layer=LAYER)
    with pytest.raises(
        ValueError, match=r"target maps must have shape \(4, 1, 16, 16\).*got \(4, 1, 8, 8\)"
    ):
        attack(_tiny(), _batch(), torch.rand(4, 1, 8, 8))
    with pytest.raises(ValueError, match="non-negative"):
        attack(_tiny(), _batch(), -torch.rand(4, 1, 16, 16))
    with pytest.raises(ValueError, match=r"all zero for sample\(s\) \[2\]"):
        t = torch.rand(4, 1, 16, 16)
        t[2] = 0
        attack(_tiny(), _batch(), t)


def test_target_maps_given_to_an_untargeted_attack() -> None:
    attack = create_attack("gradcam-kept", eps=0.03, steps=2, layer=LAYER)
    with pytest.raises(ValueError, match="target maps were given"):
        attack(_tiny(), _batch(), torch.rand(4, 1, 16, 16))


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("gradcam-kept", {"loss": "target"}, "gradcam-targeted"),
        ("gradcam-kept", {"k": 1.5}, r"fractional k must lie in \(0, 1\)"),
        ("gradcam-kept", {"topk_threshold": 0.0}, "topk_threshold must be in"),
        ("gradcam-kept", {"gamma": -1.0}, "gamma must be in"),
        ("gradcam-kept", {"method": "lime"}, "method must be one of"),
        ("gradcam-targeted", {"target_map": "random"}, "target_map must be one of"),
        ("gradcam-flip", {"explain": "both"}, "explain must be one of"),
        ("gradcam-kept", {"softplus_beta": 0.0}, "softplus_beta must be None or a number > 0"),
    ],
)
def test_bad_parameters(name: str, params: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_attack(name, **params)


def test_a_non_explanation_objective_is_refused() -> None:
    with pytest.raises(TypeError, match="GradCamObjective"):
        ExplanationAttack(objective=create_objective("ce"))  # type: ignore[arg-type]


def test_labels_out_of_range_are_refused() -> None:
    attack = create_attack("gradcam-kept", eps=0.03, steps=2, layer=LAYER)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        attack(_tiny(), _batch(), torch.tensor([0, 1, 2, 0]))
