"""The entry point of every audit: :func:`evaluate` dispatches on the model's task."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from medrobust.evaluation.api import EvaluationResult, audit
from medrobust.evaluation.audit import AttackSpec
from medrobust.evaluation.segmentation import SegmentationEvaluation, evaluate_segmentation
from medrobust.evaluation.tasks.classification import ClassificationTask
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.types import Task

__all__ = ["evaluate"]


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    attacks: Sequence[str | Mapping[str, Any] | AttackSpec] | None = None,
    eps: Any = (1 / 255, 2 / 255, 4 / 255),
    *,
    num_classes: int | None = None,
    bounds: tuple[float, float] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    **kwargs: Any,
) -> EvaluationResult | SegmentationEvaluation:
    """Audit a classifier: clean metrics, robust accuracy per attack and budget, the worst case
    per sample, and sanity checks against gradient masking.

    Budgets are processed from the smallest up. A sample broken by an attack at a budget stays
    broken at every larger budget (its adversarial example is inside the larger ball too), so it is
    not attacked again; only still-unbroken samples are attacked further. With
    ``mode="individual"`` every gradient attack runs on every sample still unbroken *by that
    attack*, giving per-attack robust accuracy; black-box attacks (Square) run only on the
    samples the attacks before them left unbroken, as a cross-check against gradient masking.
    With ``mode="cascade"`` (AutoAttack style, faster) every attack runs only on the samples no
    earlier attack of the suite broke at that budget. Rows of attacks that only saw unbroken
    samples report cumulative robust accuracy (``"scope": "unbroken"`` in ``metrics.json``).

    A segmentation model (an adapter with ``task="segmentation"``) is routed to
    :func:`medrobust.evaluation.evaluate_segmentation`.

    Args:
        model: A classifier; a :class:`ModelAdapter`, or a bare module whose inputs lie in
            ``bounds`` (default ``[0, 1]``).
        loader: Batches as dicts (``"image"``, ``"label"``, optional ``"id"``) or
            ``(images, labels)`` tuples, in a fixed order if ``checkpoint`` is used.
        attacks: Attack names or specs (``{"name": "pgd", "steps": 20}``), in suite order
            (default ``["fgsm", "pgd"]``; for a segmenter, the segmentation audit's default).
        eps: Budgets, in the model's input space (e.g. ``4/255`` for images in ``[0, 1]``).
        num_classes, bounds, mean, std: Adapter settings for a bare module.
        **kwargs: ``norm`` (``"linf"``/``"l2"``), ``mode`` (``"individual"``/``"cascade"``),
            ``seed``, ``device``, ``max_samples``, ``n_examples`` (example images kept for the
            report), ``keep_adversarial`` (worst-case adversarial examples kept per budget),
            ``checks`` (run the sanity checks, ``docs/checks.md``), ``probe_samples`` (check
            MR101), ``noise_draws`` (check MR104), ``checkpoint`` (a file where records are
            saved after each batch; an existing one of the same configuration is resumed),
            ``progress`` (callback receiving :class:`ProgressEvent`), ``model_info``,
            ``data_info`` and ``title``.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError: For an empty loader, ``eps <= 0``, unknown attacks (with suggestions), inputs
            that do not match the model (rank, channels, NaN, bounds) or labels out of range.
    """
    adapter = (
        as_adapter(model, num_classes=num_classes, bounds=bounds, mean=mean, std=std)
        if not isinstance(model, ModelAdapter)
        else model
    )
    if adapter.task is Task.SEGMENTATION:
        if attacks is not None:
            kwargs["attacks"] = attacks
        return evaluate_segmentation(adapter, loader, eps=eps, **kwargs)
    chosen = ("fgsm", "pgd") if attacks is None else attacks
    return audit(ClassificationTask(), adapter, loader, chosen, eps, **kwargs)
