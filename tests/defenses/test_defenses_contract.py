"""The contract every registered training recipe keeps, checked by iterating over ``RECIPES``.

A new recipe is picked up here without touching this file. Its task tags choose the models it
is tried on (``classification``, ``segmentation``, ``multitask``); with its default parameters
it must build a :class:`Recipe`, refuse unknown keywords with a suggestion, refuse unlabelled
data unless it is semi-supervised, and on every tagged task give a finite scalar loss with
gradients and float statistics, leave the weights untouched and the model in training mode,
repeat exactly under the same seed, report only the validation metrics it declares, and hand
its state to a fresh instance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from tests.attacks.models import batch, tiny_cnn

from medrobust.defenses import RECIPES, Recipe, UnlabelledView, create_recipe
from medrobust.models import ModelAdapter, create_model

TASKS = ("classification", "segmentation", "multitask")


def _classifier(seed: int) -> ModelAdapter:
    return tiny_cnn(seed=seed)


def _build(name: str, task: str, seed: int = 0) -> tuple[ModelAdapter, int]:
    """The model a recipe is tried on: recipes tagged ``multiclass`` get 3 classes."""
    build, size = MODELS[task]
    if task == "classification" and "multiclass" in RECIPES.get(name).tags:
        return tiny_cnn(seed=seed, num_classes=3), size
    return build(seed), size


def _segmenter(seed: int) -> ModelAdapter:
    return create_model(
        "unet", num_classes=2, channels=(4, 8), strides=(2,), num_res_units=0, seed=seed
    )


def _multitask(seed: int) -> ModelAdapter:
    return create_model(
        "mtl-resnet18",
        num_classes=2,
        seed=seed,
        widen_factor=0.25,
        decoder_channels=(8, 8, 4, 4),
    )


MODELS: dict[str, tuple[Callable[[int], ModelAdapter], int]] = {
    "classification": (_classifier, 8),
    "segmentation": (_segmenter, 8),
    "multitask": (_multitask, 32),
}

CASES = [(entry.name, task) for entry in RECIPES.entries() for task in TASKS if task in entry.tags]


def _batch(task: str, size: int) -> dict[str, torch.Tensor]:
    x = batch(n=4, size=size, seed=2)
    mask = torch.zeros(4, size, size, dtype=torch.long)
    mask[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    mask[0] = 0
    return {"image": x, "label": torch.tensor([0, 1, 1, 0]), "mask": mask}


def _ready(name: str, model: ModelAdapter, size: int, seed: int = 3) -> Recipe:
    recipe = create_recipe(name)
    if recipe.uses_unlabelled:
        recipe.set_unlabelled(UnlabelledView(batch(n=6, size=size, seed=7)))  # type: ignore[arg-type]
    recipe.setup(model, generator=torch.Generator().manual_seed(seed))
    return recipe


def test_every_recipe_names_a_task() -> None:
    assert {"standard", "multitask", "pgd-at", "trades", "fast-at", "ssat"} <= set(RECIPES.list())
    for entry in RECIPES.entries():
        assert set(entry.tags) & set(TASKS), f"recipe {entry.name!r} has no task tag"
        assert entry.summary, f"recipe {entry.name!r} has no summary"


@pytest.mark.parametrize("name", RECIPES.list())
def test_factory_builds_a_recipe_and_checks_keywords(name: str) -> None:
    recipe = create_recipe(name)
    assert isinstance(recipe, Recipe) and recipe.name == name
    assert all(isinstance(m, str) and m for m in recipe.validation_metrics)
    with pytest.raises(TypeError, match="no_such_setting"):
        create_recipe(name, no_such_setting=1)
    if not recipe.uses_unlabelled:
        with pytest.raises(ValueError, match=f"recipe '{name}' does not use unlabelled data"):
            recipe.set_unlabelled(UnlabelledView(batch(n=2)))  # type: ignore[arg-type]


def _loss(name: str, task: str, seed: int = 3) -> tuple[ModelAdapter, Recipe, Any, Any]:
    model, size = _build(name, task)
    model.train()
    recipe = _ready(name, model, size, seed)
    loss, stats = recipe.loss(model, _batch(task, size), step=0, epoch=1)
    return model, recipe, loss, stats


@pytest.mark.parametrize(("name", "task"), CASES)
def test_loss_is_a_finite_differentiable_scalar(name: str, task: str) -> None:
    model, size = _build(name, task)
    model.train()
    weights = {k: p.detach().clone() for k, p in model.named_parameters()}
    recipe = _ready(name, model, size)
    loss, stats = recipe.loss(model, _batch(task, size), step=0, epoch=1)
    assert isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad
    assert math.isfinite(float(loss.detach()))
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values()), stats
    assert model.training, f"{name} left the model in eval mode"
    for k, p in model.named_parameters():
        assert torch.equal(p, weights[k]), f"{name} changed {k} outside the optimiser"
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.parametrize(("name", "task"), CASES)
def test_same_seed_same_loss(name: str, task: str) -> None:
    _, _, first, stats = _loss(name, task)
    _, _, again, stats_again = _loss(name, task)
    assert torch.equal(first.detach(), again.detach()) and stats == stats_again


@pytest.mark.parametrize(("name", "task"), CASES)
def test_validation_metrics_and_state_hand_over(name: str, task: str) -> None:
    model, recipe, _, _ = _loss(name, task)
    _, size = _build(name, task)
    model.eval()
    with torch.no_grad():
        extra = recipe.validation_stats(model, _batch(task, size))
    assert set(extra) == set(recipe.validation_metrics)
    state = recipe.state_dict()
    fresh = _ready(name, _build(name, task)[0].train(), size)
    fresh.load_state_dict(state)
    assert fresh.state_dict().keys() == state.keys()
