"""BatchNorm running statistics, checked after training and recomputed when they fail.

A network with BatchNorm normalises by the statistics of the current batch while it trains and
by running averages of them (``running_mean``, ``running_var``) in eval mode. After few steps,
or with a default momentum of 0.1 on a small set, those running averages still lean on their
initial values (mean 0, variance 1), so the eval-mode model can predict one class while the
train-mode model is right on every training image. :func:`check_batchnorm` compares the two on
a training subset and, when the eval-mode score falls short by more than a tolerance (or the
eval-mode model predicts a single class where the train-mode model predicts several),
recomputes the running statistics with one pass over the training data using a cumulative
average (``momentum=None``, as ``torch.optim.swa_utils.update_bn`` does), then checks again.

References:
    Ioffe and Szegedy, "Batch Normalization", ICML 2015 (running statistics at inference);
    Izmailov et al., "Averaging Weights Leads to Wider Optima and Better Generalization",
    UAI 2018 (recomputing BatchNorm statistics with a pass over the training data).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medrobust.metrics import dice_per_sample
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Task

__all__ = [
    "DEFAULT_TOLERANCE",
    "BatchNormCheck",
    "batch_statistics",
    "batchnorm_layers",
    "check_batchnorm",
    "compare_modes",
    "recompute_statistics",
]

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 0.1
"""Largest shortfall of the eval-mode score (accuracy or Dice) below the train-mode score on the
training subset that still passes the check."""

Batches = Callable[[], Iterable[dict[str, Any]]]
"""A callable returning a fresh iterable of prepared batches (tensors on the model's device)."""


@dataclass
class BatchNormCheck:
    """The outcome of :func:`check_batchnorm`.

    Attributes:
        metric: ``"accuracy"`` (classification) or ``"dice"`` (segmentation, mean foreground
            Dice per sample).
        samples: Training samples the two modes were compared on.
        train_mode: Score with batch statistics (train-mode BatchNorm, dropout off).
        eval_mode: Score with the running statistics (eval mode) before any recomputation.
        train_classes: Classes the train-mode model predicted (classification).
        eval_classes: Classes the eval-mode model predicted (classification).
        failed: Whether the running statistics failed the check.
        recomputed: Whether the running statistics were recomputed.
        eval_mode_after: Eval-mode score after recomputing (None when not recomputed).
        eval_classes_after: Classes the eval-mode classifier predicted after recomputing.
        kept: Whether the recomputed statistics were kept (they are dropped when they score
            lower than the old ones).
        recompute_samples: Training samples of the recomputing pass.
    """

    metric: str
    samples: int
    train_mode: float
    eval_mode: float
    train_classes: list[int] = field(default_factory=list)
    eval_classes: list[int] = field(default_factory=list)
    failed: bool = False
    recomputed: bool = False
    eval_mode_after: float | None = None
    eval_classes_after: list[int] = field(default_factory=list)
    kept: bool = False
    recompute_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of the fields (for the model card; NaN becomes None)."""
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in asdict(self).items()
        }

    def message(self) -> str:
        """One line for the training log saying what was found and what was done."""
        found = (
            f"eval-mode {self.metric} {self.eval_mode:.3f} vs train-mode {self.train_mode:.3f} "
            f"on {self.samples} training samples"
        )
        if self.eval_classes and len(self.eval_classes) == 1:
            found += f" (eval mode predicts only class {self.eval_classes[0]})"
        if not self.failed:
            return f"BatchNorm running statistics checked: {found}"
        if not self.recomputed:
            return (
                f"BatchNorm running statistics disagree with the batch statistics: {found}; "
                "recompute them (batchnorm_check='recompute'), train longer, or use a smaller "
                "batch size"
            )
        after = f"{self.eval_mode_after:.3f}" if self.eval_mode_after is not None else "n/a"
        if self.kept:
            return (
                f"BatchNorm running statistics disagreed with the batch statistics ({found}); "
                f"recomputed over {self.recompute_samples} training samples: eval-mode "
                f"{self.metric} now {after}"
            )
        return (
            f"BatchNorm running statistics disagree with the batch statistics ({found}); "
            f"recomputing them did not help (eval-mode {self.metric} {after}), so the old ones "
            "were kept; train longer or use a smaller batch size"
        )


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


@contextlib.contextmanager
def batch_statistics(model: nn.Module, *, keep: bool) -> Iterator[list[_BatchNorm]]:
    """Run ``model`` in eval mode except its BatchNorm layers, which use batch statistics.

    Dropout and every other layer stay in eval mode. The modes of all submodules are restored
    on exit; with ``keep=False`` the running statistics are restored too, so the pass leaves
    the model unchanged.

    Args:
        model: The model.
        keep: Keep the running statistics the BatchNorm layers accumulate in the block.

    Yields:
        The BatchNorm layers.
    """
    modes = {m: m.training for m in model.modules()}
    layers = batchnorm_layers(model)
    saved = [_buffers(m) for m in layers] if not keep else []
    model.eval()
    for layer in layers:
        layer.train()
    try:
        yield layers
    finally:
        for module, mode in modes.items():
            module.training = mode
        for layer, buffers in zip(layers, saved, strict=False):
            _restore(layer, buffers)


def _buffers(m: _BatchNorm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.named_buffers(recurse=False) if v is not None}


def _restore(m: _BatchNorm, buffers: dict[str, torch.Tensor]) -> None:
    for k, v in buffers.items():
        getattr(m, k).copy_(v)


@torch.no_grad()
def _score(model: ModelAdapter, batches: Iterable[dict[str, Any]]) -> tuple[float, list[int], int]:
    """Accuracy (or mean Dice), predicted classes and sample count of ``model`` as it is."""
    seg = model.task is Task.SEGMENTATION
    total, n = 0.0, 0
    classes: set[int] = set()
    for batch in batches:
        images = batch["image"]
        if images.shape[0] < 2:  # train-mode BatchNorm needs two samples
            continue
        logits = model(images)
        if seg:
            d = dice_per_sample(logits, batch["mask"])
            ok = torch.isfinite(d)
            total += float(d[ok].sum())
            n += int(ok.sum())
        else:
            pred = logits.argmax(dim=1)
            total += float((pred == batch["label"]).sum())
            n += int(pred.numel())
            classes.update(int(c) for c in pred.unique())
    return (total / n if n else math.nan), sorted(classes), n


def compare_modes(
    model: ModelAdapter, batches: Batches, *, tolerance: float = DEFAULT_TOLERANCE
) -> BatchNormCheck:
    """Score the model with batch statistics and with its running statistics on ``batches``.

    Args:
        model: The model (its modes and statistics are left as they were).
        batches: Fresh iterables of prepared training batches.
        tolerance: Largest shortfall of the eval-mode score that passes.

    Returns:
        The comparison (``failed`` set when the eval-mode score falls short by more than
        ``tolerance``, or the eval-mode classifier predicts one class where the train-mode one
        predicts several).
    """
    was = model.training
    with batch_statistics(model, keep=False):
        train_score, train_classes, n = _score(model, batches())
    model.eval()
    try:
        eval_score, eval_classes, _ = _score(model, batches())
    finally:
        model.train(was)
    metric = "dice" if model.task is Task.SEGMENTATION else "accuracy"
    failed = bool(
        math.isfinite(train_score)
        and math.isfinite(eval_score)
        and (
            train_score - eval_score > tolerance
            or (len(eval_classes) == 1 and len(train_classes) > 1)
        )
    )
    return BatchNormCheck(
        metric=metric,
        samples=n,
        train_mode=train_score,
        eval_mode=eval_score,
        train_classes=train_classes,
        eval_classes=eval_classes,
        failed=failed,
    )


@torch.no_grad()
def recompute_statistics(model: nn.Module, batches: Iterable[dict[str, Any]]) -> int:
    """Recompute the running statistics of every BatchNorm layer over ``batches``.

    The statistics are reset and accumulated as a cumulative average (``momentum=None``) over
    one pass, with every other layer in eval mode (dropout off); each layer's momentum and all
    modes are restored afterwards. Batches of one sample are skipped.

    Args:
        model: The model.
        batches: Prepared training batches (``"image"`` ``(B, C, *spatial)`` on the model's
            device).

    Returns:
        The number of samples the statistics were computed from.
    """
    layers = batchnorm_layers(model)
    momenta = [m.momentum for m in layers]
    n = 0
    try:
        with batch_statistics(model, keep=True):
            for m in layers:
                m.reset_running_stats()
                m.momentum = None
            for batch in batches:
                images = batch["image"]
                if images.shape[0] < 2:
                    continue
                model(images)
                n += int(images.shape[0])
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
    return n


def check_batchnorm(
    model: ModelAdapter,
    subset: Batches,
    everything: Batches,
    *,
    recompute: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> BatchNormCheck | None:
    """Check the running statistics of ``model`` and recompute them when they fail.

    Args:
        model: The trained model (BatchNorm statistics changed in place when recomputed and
            kept).
        subset: Fresh iterables of the training batches to compare the modes on.
        everything: Fresh iterables of all training batches, for the recomputing pass.
        recompute: Recompute failing statistics (else only report).
        tolerance: See :data:`DEFAULT_TOLERANCE`.

    Returns:
        The check, or None when the model has no BatchNorm layer with running statistics.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return None
    check = compare_modes(model, subset, tolerance=tolerance)
    if not check.failed or not recompute:
        return check
    saved = [_buffers(m) for m in layers]
    check.recompute_samples = recompute_statistics(model, everything())
    check.recomputed = True
    was = model.training
    model.eval()
    try:
        after, classes, _ = _score(model, subset())
    finally:
        model.train(was)
    check.eval_mode_after, check.eval_classes_after = after, classes
    check.kept = math.isfinite(after) and after >= check.eval_mode
    if not check.kept:
        for m, buffers in zip(layers, saved, strict=True):
            _restore(m, buffers)
    logger.info("%s", check.message())
    return check
