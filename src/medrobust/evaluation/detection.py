"""The system audit of a detector-guarded classifier, on the one audit loop."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medrobust.detectors.base import Detector
from medrobust.evaluation.api import EvaluationResult, audit
from medrobust.evaluation.tasks.detection import DetectionTask
from medrobust.models.adapter import ModelAdapter

__all__ = ["evaluate_detector"]


def evaluate_detector(
    model: ModelAdapter,
    detector: Detector,
    loader: Iterable[Any],
    attacks: Sequence[str | Mapping[str, Any]] = ("pgd", "pgd-adaptive"),
    eps: Any = (1 / 255, 2 / 255, 4 / 255),
    **kwargs: Any,
) -> EvaluationResult:
    """Audit classifier + detector as one system: per sample, did any attack of the list get a
    misclassified input past the detector?

    Runs :func:`medrobust.evaluation.audit` with the
    :class:`~medrobust.evaluation.tasks.detection.DetectionTask`: per-sample records, the worst
    case per sample across ``attacks`` at every budget (the detection missed), samples fooled at
    a smaller budget not attacked again, the sanity checks, resume and the shared header.
    ``metrics.json`` gains ``detection_results`` (per attack and budget: detection rate of the
    misclassified examples, system robust accuracy) and ``system_risk`` (per budget:
    ``P[f(x') != y and D(x') = 0]``, the classifier-only risk and the false-alarm rate). For the
    AUROC and TPR at a fixed FPR of a detector, see :func:`medrobust.evaluation.assess_detector`.

    Args:
        model: The classifier the detector guards.
        detector: A detector fitted for ``model``.
        loader: Batches as for :func:`medrobust.evaluation.evaluate`.
        attacks: Classification attacks (which ignore the detector) and detection attacks
            (``pgd-adaptive``, which knows it).
        eps: Budgets.
        **kwargs: As :func:`medrobust.evaluation.audit`.

    Returns:
        An :class:`~medrobust.evaluation.EvaluationResult`.

    Raises:
        NotFittedError: If the detector is not fitted.
        ValueError: If the detector guards another model, or for bad settings or batches.

    References:
        Li, Pan & Zhu, arXiv:2006.13555, 2020; Carlini & Wagner, AISec 2017.
    """
    return audit(DetectionTask(detector), model, loader, attacks, eps, **kwargs)
