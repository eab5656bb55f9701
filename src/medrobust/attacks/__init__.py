"""Attacks: one engine with pluggable objectives and threat models, named presets."""

from medrobust.attacks.apgd import APGD
from medrobust.attacks.engine import Attack, BestTracker, GradientAttack, eval_mode
from medrobust.attacks.explanation import ExplanationAttack  # noqa: F401 (gradcam-* presets)
from medrobust.attacks.minimal import CarliniWagnerL2, DeepFool
from medrobust.attacks.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveOutput,
    create_objective,
    list_objectives,
)
from medrobust.attacks.objectives import detector as _detector  # noqa: F401 (pgd-adaptive)
from medrobust.attacks.presets import ATTACKS, create_attack, list_attacks
from medrobust.attacks.result import AttackResult, perturbation_norms
from medrobust.attacks.segmentation import SegmentationAttack  # noqa: F401 (asma, dag, pgd-seg)
from medrobust.attacks.square import SquareAttack
from medrobust.attacks.threat import ThreatModel

__all__ = [
    "APGD",
    "ATTACKS",
    "OBJECTIVES",
    "Attack",
    "AttackResult",
    "BestTracker",
    "CarliniWagnerL2",
    "DeepFool",
    "GradientAttack",
    "Objective",
    "ObjectiveOutput",
    "SquareAttack",
    "ThreatModel",
    "create_attack",
    "create_objective",
    "eval_mode",
    "list_attacks",
    "list_objectives",
    "perturbation_norms",
]
