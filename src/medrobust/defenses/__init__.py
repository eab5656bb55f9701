"""Defences: adversarial-training recipes (PGD-AT, TRADES, fast AT, SSAT) registered in
:data:`medrobust.training.RECIPES`, the label-scarce data helpers, and the defence study.

Importing this package registers the recipes; :func:`medrobust.training.create_recipe` and
:class:`medrobust.training.TrainConfig` import it on first use::

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
from medrobust.defenses.pgd_at import PGDATRecipe
from medrobust.defenses.ssat import SSATRecipe
from medrobust.defenses.trades import CleanKL, TRADESRecipe

__all__ = [
    "AdversarialRecipe",
    "CleanKL",
    "FastATRecipe",
    "PGDATRecipe",
    "SSATRecipe",
    "TRADESRecipe",
    "UnlabelledStream",
    "UnlabelledView",
    "check_labelled_fraction",
    "labelled_split",
]
