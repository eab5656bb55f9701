"""Attack objectives: what an attack maximises, pluggable into every engine."""

from medrobust.attacks.objectives import classification as _classification  # noqa: F401 (register)
from medrobust.attacks.objectives.base import (
    OBJECTIVES,
    Objective,
    ObjectiveOutput,
    Target,
    create_objective,
    index_target,
    list_objectives,
)
from medrobust.attacks.objectives.classification import DLR, CrossEntropy, Margin

__all__ = [
    "DLR",
    "OBJECTIVES",
    "CrossEntropy",
    "Margin",
    "Objective",
    "ObjectiveOutput",
    "Target",
    "create_objective",
    "index_target",
    "list_objectives",
]
