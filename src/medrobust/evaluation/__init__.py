"""Evaluation: clean and robust metrics, the worst-case suite, sanity checks."""

from medrobust.evaluation.checks import CHECKS
from medrobust.evaluation.suite import (
    AttackSpec,
    EvaluationResult,
    ProgressEvent,
    evaluate,
)

__all__ = ["CHECKS", "AttackSpec", "EvaluationResult", "ProgressEvent", "evaluate"]
