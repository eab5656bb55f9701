"""Defences: the training recipes and their registry (layer 4).

:data:`RECIPES` holds every recipe of the package as soon as :mod:`medrobust.defenses` is imported:
standard training, multi-task training, PGD-AT, TRADES, fast AT, SSAT, and Li, Pan & Zhu's
baselines: supervised FGSM AT and guided complement entropy (GCE). The label-scarce data
helpers live in :mod:`medrobust.defenses.data`. The training loop
(:func:`medrobust.training.fit`) and the defence study (:mod:`medrobust.pipelines.study`) are
higher layers that use them::

    from medrobust.training import TrainConfig, fit
    cfg = TrainConfig(epochs=10, recipe="ssat", recipe_params={"eps": 4 / 255},
                      labelled_fraction=0.1)
    fit(model, train_set, val_set, cfg, "runs/ssat")
"""

from medrobust.defenses.base import AdversarialRecipe
from medrobust.defenses.data import (
    UnlabelledStream,
    UnlabelledView,
    check_labelled_fraction,
    labelled_split,
)
from medrobust.defenses.fast_at import FastATRecipe
from medrobust.defenses.fgsm_at import FGSMATRecipe
from medrobust.defenses.gce import GCERecipe, guided_complement_entropy
from medrobust.defenses.multitask import MultitaskRecipe, soft_dice_loss
from medrobust.defenses.pgd_at import PGDATRecipe
from medrobust.defenses.recipes import (
    RECIPES,
    Recipe,
    StandardRecipe,
    create_recipe,
    list_recipes,
)
from medrobust.defenses.ssat import SSATRecipe
from medrobust.defenses.trades import CleanKL, TRADESRecipe

__all__ = [
    "RECIPES",
    "AdversarialRecipe",
    "CleanKL",
    "FGSMATRecipe",
    "FastATRecipe",
    "GCERecipe",
    "MultitaskRecipe",
    "PGDATRecipe",
    "Recipe",
    "SSATRecipe",
    "StandardRecipe",
    "TRADESRecipe",
    "UnlabelledStream",
    "UnlabelledView",
    "check_labelled_fraction",
    "create_recipe",
    "guided_complement_entropy",
    "labelled_split",
    "list_recipes",
    "soft_dice_loss",
]
