"""Training: a seeded, resumable loop (:func:`fit`) driven by the recipes of
:mod:`medrobust.defenses` (re-exported here: :data:`RECIPES`, :func:`create_recipe` ...).

Example:
    >>> from medrobust.models import create_model
    >>> from medrobust.training import TrainConfig, fit
    >>> model = create_model("small-cnn", num_classes=2, seed=0)
    >>> result = fit(model, train_set, val_set, TrainConfig(epochs=5), "runs/demo")
    >>> result.best_checkpoint  # load with medrobust.models.load_checkpoint
"""

from medrobust.defenses.recipes import (
    RECIPES,
    Recipe,
    StandardRecipe,
    create_recipe,
    list_recipes,
)
from medrobust.training.config import TrainConfig
from medrobust.training.loop import TrainEvent, TrainResult, fit

__all__ = [
    "RECIPES",
    "Recipe",
    "StandardRecipe",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "create_recipe",
    "fit",
    "list_recipes",
]
