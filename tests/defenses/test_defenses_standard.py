"""Tests of the recipe registry and the standard recipe (defenses/recipes.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medrobust.defenses import RECIPES, Recipe, StandardRecipe, create_recipe, list_recipes
from medrobust.models import ModelAdapter, create_model
from medrobust.registry import UnknownNameError


def test_registry() -> None:
    assert "standard" in list_recipes()
    assert RECIPES.kind == "defense"
    assert isinstance(create_recipe("standard"), StandardRecipe)
    with pytest.raises(UnknownNameError, match="Did you mean 'standard'"):
        create_recipe("standart")
    with pytest.raises(TypeError, match=r"'smoothing' \(did you mean 'label_smoothing'\?\)"):
        create_recipe("standard", smoothing=0.1)


def test_recipe_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Recipe()  # type: ignore[abstract]


def test_standard_classification_loss_matches_cross_entropy() -> None:
    model = ModelAdapter(nn.Linear(4, 3), num_classes=3, spatial_dims=1, in_channels=1)
    model.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(5, 1, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 1, 0])
    recipe = create_recipe("standard", label_smoothing=0.1, class_weights=[1.0, 2.0, 0.5])
    recipe.setup(model, generator=torch.Generator())
    loss, stats = recipe.loss(model, {"image": x, "label": y}, step=0, epoch=1)
    logits = model(x)
    want = F.cross_entropy(logits, y, weight=torch.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1)
    assert torch.allclose(loss, want)
    assert stats["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    loss.backward()  # differentiable
    assert model.net[1].weight.grad is not None


def test_standard_segmentation_loss_is_dice_ce() -> None:
    from monai.losses import DiceCELoss

    model = create_model(
        "unet", num_classes=3, channels=(4, 8), strides=(2,), num_res_units=0, seed=0
    )
    recipe = create_recipe("standard")
    recipe.setup(model, generator=torch.Generator())
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 8, 8, generator=g)
    mask = torch.randint(0, 3, (2, 8, 8), generator=g)
    loss, _ = recipe.loss(
        model, {"image": x, "mask": mask, "label": torch.zeros(2)}, step=0, epoch=1
    )
    want = DiceCELoss(to_onehot_y=True, softmax=True)(model(x), mask.unsqueeze(1))
    assert torch.allclose(loss, want)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"label_smoothing": 1.0}, ValueError, r"label_smoothing must be in \[0, 1\)"),
        ({"label_smoothing": "a"}, TypeError, "label_smoothing must be a number"),
        ({"class_weights": [1.0, -1.0]}, ValueError, "non-negative"),
        ({"class_weights": [0.0, 0.0]}, ValueError, "must not all be zero"),
        ({"class_weights": "ab"}, TypeError, "class_weights must be a list"),
    ],
)
def test_standard_bad_params(kwargs: dict[str, object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        create_recipe("standard", **kwargs)


def test_class_weights_must_match_classes() -> None:
    recipe = create_recipe("standard", class_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="class_weights has 3 entries but the model has 2"):
        recipe.setup(create_model("small-cnn", width=2), generator=torch.Generator())


def test_stateless_recipe_rejects_foreign_state() -> None:
    with pytest.raises(ValueError, match="keeps no state"):
        create_recipe("standard").load_state_dict({"eps": 1.0})
