"""The checks :func:`~medrobust.training.fit` runs on ``best.pt`` once training has ended.

1. The BatchNorm running statistics (:mod:`medrobust.training.batchnorm`): eval-mode and
   train-mode predictions are compared on training images; failing statistics are recomputed
   over the training data (``TrainConfig.batchnorm_check="recompute"``, the default) or only
   reported (``"warn"``). ``best.pt`` is rewritten with the outcome in its model card
   (``training.batchnorm``) and, when the statistics were recomputed, with the new weights and
   the validation metrics measured with them (those measured before stay in the record as
   ``val_before``).
2. One predicted class (:func:`medrobust.models.diagnostics.single_class_warning`): a classifier
   whose eval-mode predictions on the validation set are all one class, while the labels hold
   several, gets a warning naming the class and the likely fixes.

Both are logged and returned, so the command line prints them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medrobust.models.adapter import ModelAdapter
from medrobust.models.card import ModelCard
from medrobust.models.checkpoint import load_state_dict_into, read_checkpoint, save_checkpoint
from medrobust.models.diagnostics import single_class_warning
from medrobust.training.batchnorm import check_batchnorm
from medrobust.training.config import TrainConfig
from medrobust.types import Task

__all__ = ["CHECK_SAMPLES", "FinalChecks", "check_best"]

logger = logging.getLogger(__name__)

CHECK_SAMPLES = 256
"""About how many training samples the BatchNorm modes are compared on (whole batches)."""

TrainBatches = Callable[[int | None], Iterable[dict[str, Any]]]
"""Prepared training batches: the first ``n`` (or all for None), on the model's device."""

Validation = Callable[[], tuple[dict[str, float], torch.Tensor | None, torch.Tensor | None]]
"""One validation pass: the ``val_*`` metrics, the predicted and the true classes (None for a
segmenter)."""


@dataclass
class FinalChecks:
    """What :func:`check_best` found.

    Attributes:
        batchnorm: The record of the BatchNorm check written to the model card, or None.
        warnings: Warnings for the training log (failing statistics, one predicted class).
    """

    batchnorm: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


def check_best(
    model: ModelAdapter,
    config: TrainConfig,
    best: Path,
    batches: TrainBatches,
    validate: Validation,
) -> FinalChecks:
    """Run the final checks on the weights of ``best`` (see the module docstring).

    The model's own weights are restored afterwards; ``best`` is rewritten when there is a
    BatchNorm check to record (once: a card that already records one is not checked again,
    e.g. when a finished run is resumed).

    Args:
        model: The trained model (on the training device).
        config: The run's settings (``batchnorm_check``, ``batch_size``).
        best: The ``best.pt`` of the run.
        batches: The training batches.
        validate: The validation pass (eval mode).

    Returns:
        The findings.
    """
    payload = read_checkpoint(best)
    card = ModelCard.from_dict(payload["card"])
    snapshot = {k: v.detach().clone() for k, v in model.state_dict().items()}
    load_state_dict_into(model, payload["state_dict"])
    out = FinalChecks()
    try:
        check = None
        if (
            config.batchnorm_check != "off"
            and card.training.batchnorm is None
            and model.task in (Task.CLASSIFICATION, Task.SEGMENTATION)
        ):
            subset = max(1, math.ceil(CHECK_SAMPLES / config.batch_size))
            check = check_batchnorm(
                model,
                lambda: batches(subset),
                lambda: batches(None),
                recompute=config.batchnorm_check == "recompute",
            )
        stats, pred, labels = validate()
        if check is not None:
            record = check.to_dict()
            if check.recomputed and check.kept:
                record["val_before"] = {k: card.metrics.get(k) for k in stats}
                card.metrics.update({k: _finite(v) for k, v in stats.items()})
            card.training.batchnorm = record
            save_checkpoint(best, model, card, write_card=True)
            out.batchnorm = record
            if check.failed:
                out.warnings.append(check.message())
        if pred is not None:
            msg = single_class_warning(
                pred,
                labels,
                where="validation samples (eval mode, best.pt)",
                class_names=model.class_names,
            )
            if msg is not None:
                out.warnings.append(msg)
    finally:
        model.load_state_dict(snapshot)
    for w in out.warnings:
        logger.warning("%s", w)
    return out


def _finite(value: Any) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None
