"""Class weights for imbalanced training sets.

``TrainConfig(class_weights="balanced")`` weights the cross-entropy of class ``k`` by
``n / (K * n_k)`` (``n`` training labels, ``K`` classes, ``n_k`` labels of class ``k``; the
"balanced" heuristic of King and Zeng, as in scikit-learn's ``compute_class_weight``), so every
class contributes as much to the loss as it would in a balanced set. Explicit weights (one per
class) are passed through. :func:`fit <medrobust.training.fit>` resolves them against the
training labels before the first step, hands them to the recipe
(:meth:`~medrobust.defenses.recipes.Recipe.set_class_weights`) and records them in the model
card.

References:
    King and Zeng, "Logistic Regression in Rare Events Data", Political Analysis 2001.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from medrobust.defenses.data import dataset_labels
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Task

__all__ = ["balanced_weights", "class_counts", "resolve_class_weights"]

logger = logging.getLogger(__name__)


def class_counts(data: DataLoader[Any] | Dataset[Any], num_classes: int) -> list[int]:
    """Number of training labels per class.

    Args:
        data: The training set (a map-style ``Dataset`` or a ``DataLoader`` over one); labels
            come from ``dataset.targets`` when present, else from ``item["label"]``.
        num_classes: ``K``.

    Returns:
        ``K`` counts.

    Raises:
        TypeError: If the labels cannot be read.
        ValueError: If a label is outside ``[0, K)``.
    """
    dataset = data.dataset if isinstance(data, DataLoader) else data
    labels = dataset_labels(dataset)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"training labels must be in [0, {num_classes - 1}] for a {num_classes}-class "
            f"model, got values in [{labels.min()}, {labels.max()}]"
        )
    return [int(c) for c in np.bincount(labels, minlength=num_classes)]


def balanced_weights(counts: list[int]) -> list[float]:
    """Inverse-frequency weights ``n / (K * n_k)``; a class without labels gets weight 0.

    Args:
        counts: Labels per class (``K`` entries).

    Returns:
        ``K`` weights (1.0 each for a balanced set).

    Raises:
        ValueError: If there are no labels at all.
    """
    n, k = sum(counts), len(counts)
    if n == 0:
        raise ValueError("balanced class weights need training labels, but the set has none")
    return [n / (k * c) if c else 0.0 for c in counts]


def resolve_class_weights(
    spec: str | tuple[float, ...] | None,
    data: DataLoader[Any] | Dataset[Any],
    model: ModelAdapter,
) -> dict[str, Any] | None:
    """The class weights of a run, with what they came from (for the model card).

    Args:
        spec: ``TrainConfig.class_weights``.
        data: The training set (labels are counted for ``"balanced"``).
        model: The model (its task and ``K``).

    Returns:
        None for no weights, else ``{"spec": "balanced" | "explicit", "weights": [...]}`` with
        ``"counts"`` for balanced weights.

    Raises:
        ValueError: If the number of explicit weights is not ``K``, or ``"balanced"`` is asked
            for a segmentation model (give explicit weights there).
    """
    if spec is None:
        return None
    k = model.num_classes
    if spec == "balanced":
        if model.task is not Task.CLASSIFICATION:
            raise ValueError(
                "class_weights='balanced' counts image labels, which a "
                f"{model.task.value} model does not train on; give one weight per class "
                f"instead ({k} numbers)"
            )
        counts = class_counts(data, k)
        weights = balanced_weights(counts)
        missing = [i for i, c in enumerate(counts) if c == 0]
        if missing:
            logger.warning(
                "class(es) %s have no training label; their weight is 0 (balanced weights)",
                missing,
            )
        return {"spec": "balanced", "weights": weights, "counts": counts}
    weights = [float(w) for w in spec]
    if len(weights) != k:
        raise ValueError(f"class_weights has {len(weights)} entries but the model has {k} classes")
    return {"spec": "explicit", "weights": weights}
