"""Li, Pan & Zhu's baselines as recipes: supervised FGSM AT and guided complement entropy."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from tests.attacks.models import batch, tiny_cnn

from medrobust.defenses import (
    FGSMATRecipe,
    GCERecipe,
    create_recipe,
    guided_complement_entropy,
    list_recipes,
)
from medrobust.models import ModelAdapter


def _gce_by_hand(logits: torch.Tensor, labels: torch.Tensor, alpha: float) -> float:
    total = 0.0
    for z, g in zip(logits.tolist(), labels.tolist(), strict=True):
        e = [math.exp(v) for v in z]
        p = [v / sum(e) for v in e]
        rest = 1.0 - p[g]
        h = sum((p[j] / rest) * math.log(p[j] / rest) for j in range(len(p)) if j != g)
        total += p[g] ** alpha * h / math.log(len(p) - 1)
    return total / len(labels)


def test_registered_with_the_other_recipes() -> None:
    assert {"fgsm-at", "gce"} <= set(list_recipes())
    assert isinstance(create_recipe("fgsm-at"), FGSMATRecipe)
    assert isinstance(create_recipe("gce"), GCERecipe)
    assert list_recipes(tag="multiclass") == ["gce"]


def test_gce_matches_the_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 4, (7,), generator=g)
    for alpha in (0.2, 0.333):
        got = float(guided_complement_entropy(logits, labels, alpha))
        assert got == pytest.approx(_gce_by_hand(logits, labels, alpha), rel=1e-10)
    # a flat complement has entropy log(K - 1): the loss is -p_g^alpha
    flat = torch.tensor([[2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    pg = float(torch.softmax(flat, 1)[0, 0])
    value = float(guided_complement_entropy(flat, torch.tensor([0]), 0.5))
    assert value == pytest.approx(-(pg**0.5), rel=1e-10)
    assert -1.0 <= float(guided_complement_entropy(logits, labels, 0.2)) <= 0.0


def test_gce_refuses_two_classes_and_bad_settings() -> None:
    with pytest.raises(ValueError, match="needs at least 3 classes, got 2"):
        guided_complement_entropy(torch.zeros(2, 2), torch.tensor([0, 1]), 0.2)
    with pytest.raises(ValueError, match=r"logits must be \(B, K\) and labels \(B,\)"):
        guided_complement_entropy(torch.zeros(2, 3), torch.tensor([0]), 0.2)
    recipe = create_recipe("gce")
    with pytest.raises(ValueError, match="recipe 'gce' needs at least 3 classes, the model has 2"):
        recipe.setup(tiny_cnn(), generator=torch.Generator())
    with pytest.raises(ValueError, match="alpha must be a finite number > 0"):
        create_recipe("gce", alpha=0.0)
    with pytest.raises(TypeError, match="alpha must be a number"):
        create_recipe("gce", alpha="0.2")


def test_gce_alone_trains_a_classifier() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0]])
    labels = torch.randint(0, 3, (120,), generator=g)
    x = centres[labels] + torch.randn(120, 2, generator=g)
    net = torch.nn.Linear(2, 3)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        guided_complement_entropy(net(x), labels, 0.333).backward()
        opt.step()
    with torch.no_grad():
        acc = float((net(x).argmax(1) == labels).float().mean())
    assert acc > 0.9


def test_fgsm_at_is_the_mean_of_clean_and_fgsm_cross_entropy() -> None:
    model: ModelAdapter = tiny_cnn().train()
    x = batch(n=6, size=8, seed=2)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    recipe = create_recipe("fgsm-at", eps=0.05, eps_min=None)
    recipe.setup(model, generator=torch.Generator().manual_seed(0))
    loss, stats = recipe.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    x_adv = (x + 0.05 * grad.sign()).clamp(0, 1)
    want = 0.5 * (F.cross_entropy(model(x), y) + F.cross_entropy(model(x_adv), y))
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    assert set(stats) == {"accuracy", "adv_accuracy"}


def test_fgsm_at_budget_is_drawn_per_step_and_reproducible() -> None:
    recipe = create_recipe("fgsm-at")  # U(0.001, 0.003), as in the notebook
    assert isinstance(recipe, FGSMATRecipe)
    from medrobust.defenses.fgsm_at import uniform_budget

    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    draws = [uniform_budget(recipe.eps, recipe.eps_min, g1) for _ in range(50)]
    assert draws == [uniform_budget(0.003, 0.001, g2) for _ in range(50)]
    assert all(0.001 <= d <= 0.003 for d in draws) and len(set(draws)) == 50
    assert uniform_budget(0.003, None, None) == 0.003
    with pytest.raises(RuntimeError, match="setup"):
        uniform_budget(0.003, 0.001, None)
    with pytest.raises(ValueError, match=r"eps_min \(0.01\) must not exceed eps \(0.003\)"):
        create_recipe("fgsm-at", eps_min=0.01)


def test_the_study_trains_fgsm_at_at_its_budget() -> None:
    from medrobust.pipelines.study import StudyConfig

    cfg = StudyConfig(recipes=("standard", "fgsm-at"))
    assert cfg.params_for("fgsm-at") == {"eps": 4 / 255, "norm": "linf", "eps_min": None}
