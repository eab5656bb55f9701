"""Attacks: one engine with pluggable objectives and threat models, named presets.

Importing the package imports every module of it (and of :mod:`medrobust.attacks.objectives`),
so every preset and objective is registered and :func:`list_attacks` is complete at once: adding
an attack is one engine class or one preset in a module of this package, nothing else.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from medrobust.attacks.apgd import APGD
from medrobust.attacks.engine import Attack, BestTracker, GradientAttack, eval_mode
from medrobust.attacks.explanation import ExplanationAttack
from medrobust.attacks.minimal import CarliniWagnerL2, DeepFool
from medrobust.attacks.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveOutput,
    create_objective,
    list_objectives,
)
from medrobust.attacks.precision import SpeedOptions, attack_speed
from medrobust.attacks.presets import ATTACKS, create_attack, list_attacks
from medrobust.attacks.result import AttackResult
from medrobust.attacks.segmentation import SegmentationAttack
from medrobust.attacks.square import SquareAttack
from medrobust.attacks.tags import EXTRAS, KINDS, TASKS, attack_kind, attack_tags, attack_task
from medrobust.attacks.threat import ThreatModel
from medrobust.metrics.perturbation import perturbation_norms

for _module in _pkgutil.walk_packages(__path__, f"{__name__}."):
    _importlib.import_module(_module.name)

__all__ = [
    "APGD",
    "ATTACKS",
    "EXTRAS",
    "KINDS",
    "OBJECTIVES",
    "TASKS",
    "Attack",
    "AttackResult",
    "BestTracker",
    "CarliniWagnerL2",
    "DeepFool",
    "ExplanationAttack",
    "GradientAttack",
    "Objective",
    "ObjectiveOutput",
    "SegmentationAttack",
    "SpeedOptions",
    "SquareAttack",
    "ThreatModel",
    "attack_kind",
    "attack_speed",
    "attack_tags",
    "attack_task",
    "create_attack",
    "create_objective",
    "eval_mode",
    "list_attacks",
    "list_objectives",
    "perturbation_norms",
]
