"""Attacks: one engine with pluggable objectives and threat models, named presets.

Importing the package registers every preset, so :func:`list_attacks` is complete at once.
"""

from medrobust.attacks import adaptive as _adaptive  # noqa: F401 (pgd-adaptive)
from medrobust.attacks import asma as _asma  # noqa: F401 (asma, asma-bounded)
from medrobust.attacks import dag as _dag  # noqa: F401 (dag)
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
from medrobust.attacks.objectives import detector as _detector  # noqa: F401 (detector-evasion)
from medrobust.attacks.presets import ATTACKS, create_attack, list_attacks
from medrobust.attacks.result import AttackResult, perturbation_norms
from medrobust.attacks.segmentation import SegmentationAttack  # noqa: F401 (pgd-seg, apgd-seg)
from medrobust.attacks.square import SquareAttack
from medrobust.attacks.tags import EXTRAS, KINDS, TASKS, attack_kind, attack_tags, attack_task
from medrobust.attacks.threat import ThreatModel

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
    "GradientAttack",
    "Objective",
    "ObjectiveOutput",
    "SquareAttack",
    "ThreatModel",
    "attack_kind",
    "attack_tags",
    "attack_task",
    "create_attack",
    "create_objective",
    "eval_mode",
    "list_attacks",
    "list_objectives",
    "perturbation_norms",
]
