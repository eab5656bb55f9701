"""Validation metrics of the training loop (private).

Classification metrics come from :mod:`medrobust.evaluation.metrics`; the Dice score of
segmentation validation is computed here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Loss, accuracy and balanced accuracy; for two classes also sensitivity, specificity, AUC.

    The positive class of a binary task is class 1; the AUC scores are ``p(class 1)``.

    Args:
        logits: Validation logits.
        labels: True class indices.

    Returns:
        Metric values by name (``nan`` where undefined, e.g. the AUC with one class present).

    Shape:
        - logits: ``(N, K)``; labels: ``(N,)``.

    References:
        Hanley & McNeil, Radiology 1982 (AUC); Brodersen et al., ICPR 2010 (balanced accuracy).
    """
    from medrobust.evaluation.metrics import (
        accuracy,
        balanced_accuracy,
        roc_auc,
        sensitivity_specificity,
    )

    logits = logits.float()
    out = {
        "loss": float(F.cross_entropy(logits, labels)),
        "accuracy": accuracy(logits, labels),
        "balanced_accuracy": balanced_accuracy(logits, labels),
    }
    if logits.shape[1] == 2:
        sens, spec = sensitivity_specificity(logits, labels, positive=1)
        probs = torch.softmax(logits, dim=1)[:, 1]
        out["sensitivity"] = sens
        out["specificity"] = spec
        out["auc"] = roc_auc(probs, labels) if bool(torch.isfinite(probs).all()) else math.nan
    return out


def dice_per_sample(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean foreground Dice of each sample (argmax prediction vs mask).

    Classes ``1 .. K-1`` are foreground. A class absent from the ground truth of a sample is
    left out of that sample's mean (MONAI's ``ignore_empty`` convention); a sample without any
    foreground class in its ground truth gets ``nan``.

    Args:
        logits: Segmentation logits.
        mask: Ground-truth class indices.

    Returns:
        Per-sample Dice in ``[0, 1]`` or ``nan``.

    Shape:
        - logits: ``(B, K, *spatial)``; mask: ``(B, *spatial)``; output ``(B,)``.

    References:
        Dice, "Measures of the amount of ecologic association between species", Ecology 1945.
    """
    num_classes = logits.shape[1]
    pred = logits.argmax(dim=1).flatten(1)
    target = mask.flatten(1)
    scores = []
    for c in range(1, num_classes):
        p, t = pred == c, target == c
        inter = (p & t).sum(dim=1).double()
        denom = p.sum(dim=1).double() + t.sum(dim=1).double()
        dice = torch.where(t.any(dim=1), 2.0 * inter / denom.clamp_min(1.0), math.nan)
        scores.append(dice)
    if not scores:
        return torch.full((logits.shape[0],), math.nan, dtype=torch.float64)
    return torch.stack(scores, dim=1).nanmean(dim=1)
