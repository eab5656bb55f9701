"""Diagnostics of a classifier's predictions that point at a broken model rather than a hard task.

:func:`single_class_warning` says when an eval-mode classifier predicts one class for every
sample of a set whose labels hold several: the usual signs of BatchNorm running statistics that
do not match the data (see :mod:`medrobust.training.batchnorm`), of an imbalanced training set
without class weights, or of a model that has not learned yet. The training loop calls it on the
validation set at the end of training and the audit on its clean pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["single_class_warning"]

FIXES = (
    "recompute the BatchNorm running statistics (fit's batchnorm_check='recompute', the "
    "default of `medrobust train`), weight the classes of an imbalanced set "
    "(--class-weights balanced), train longer or with a lower learning rate, and select the "
    "checkpoint by val_balanced_accuracy"
)
"""The likely fixes named by :func:`single_class_warning`."""


def single_class_warning(
    pred: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    where: str,
    class_names: Sequence[str] | None = None,
) -> str | None:
    """A warning when every prediction is the same class while the labels hold several.

    Args:
        pred: Predicted class indices ``(N,)``.
        labels: True class indices ``(N,)``, or None (then one predicted class for two or more
            samples is enough to warn).
        where: The set and mode, e.g. ``"validation samples (eval mode)"``.
        class_names: Names of the classes, to name the predicted one.

    Returns:
        The warning (naming the class and the likely fixes), or None.

    Raises:
        ValueError: If ``pred`` and ``labels`` differ in length.

    Shape:
        - pred, labels: ``(N,)``.
    """
    pred = pred.reshape(-1)
    if labels is not None:
        labels = labels.reshape(-1)
        if labels.numel() != pred.numel():
            raise ValueError(
                f"pred has {pred.numel()} entries but labels has {labels.numel()}; they must match"
            )
    if pred.numel() < 2:
        return None
    classes = torch.unique(pred)
    if classes.numel() != 1:
        return None
    true = torch.unique(labels) if labels is not None else None
    if true is not None and true.numel() < 2:
        return None
    k = int(classes[0])
    name = f" ({class_names[k]!r})" if class_names is not None and 0 <= k < len(class_names) else ""
    held = f"; the labels hold {true.numel()} classes" if true is not None else ""
    return (
        f"the model predicts class {k}{name} for all {pred.numel()} {where}{held}. Likely "
        f"fixes: {FIXES}"
    )
