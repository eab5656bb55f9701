"""Evaluation (layer 5): one audit loop for every task, task plug-ins, records, sanity checks,
named suites, noise baselines and the detector risk.

* :func:`evaluate`: audit a model, dispatching on its task (classifier or segmenter).
* :func:`audit`: the loop with any :class:`~medrobust.evaluation.tasks.base.AuditTask`.
* :func:`evaluate_segmentation`, :func:`evaluate_explanations`, :func:`evaluate_detector`: the
  other tasks' audits on the same loop; :func:`assess_detector`: detection metrics and the
  system risk from a classification audit.

Writing the run folder (report, metrics, adversarial examples) belongs to the layers above:
``medrobust.evaluate(...)`` returns a result with ``write``.
"""

from medrobust.evaluation.api import EvaluationResult, audit
from medrobust.evaluation.audit import AttackSpec, ProgressEvent
from medrobust.evaluation.checks import CHECKS
from medrobust.evaluation.detection import evaluate_detector
from medrobust.evaluation.entry import evaluate
from medrobust.evaluation.explanation import ExplanationResult, evaluate_explanations
from medrobust.evaluation.risk import assess_detector
from medrobust.evaluation.segmentation import SegmentationEvaluation, evaluate_segmentation

__all__ = [
    "CHECKS",
    "AttackSpec",
    "EvaluationResult",
    "ExplanationResult",
    "ProgressEvent",
    "SegmentationEvaluation",
    "assess_detector",
    "audit",
    "evaluate",
    "evaluate_detector",
    "evaluate_explanations",
    "evaluate_segmentation",
]
