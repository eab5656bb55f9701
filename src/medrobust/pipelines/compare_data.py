"""What every candidate of ``medrobust compare`` is measured on, shared by both tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from medrobust.evaluation.comparison import CorruptionPlan

__all__ = ["SharedData", "corruption_summary"]


@dataclass
class SharedData:
    """What every candidate is measured on (the same tensors for all of them).

    Attributes:
        train, val: Training data sets (for the candidates the command trains).
        x, y: The test images ``(N, C, *spatial)`` and labels ``(N,)``.
        x_shift, y_shift: The shifted test split, or None.
        plans: The calibrated corrupted copies (of the first ``corrupt_samples`` images).
        num_classes, in_channels, spatial_dims, class_names: The data set's description.
    """

    train: Dataset[Any]
    val: Dataset[Any]
    x: torch.Tensor
    y: torch.Tensor
    x_shift: torch.Tensor | None
    y_shift: torch.Tensor | None
    plans: list[CorruptionPlan]
    num_classes: int
    in_channels: int
    spatial_dims: int
    class_names: list[str]

    def audit_batches(self, n: int, batch_size: int, target: str) -> list[dict[str, Any]]:
        """The first ``n`` test images as audit batches of ``batch_size``, their labels or
        masks under the key ``target`` (``"label"`` or ``"mask"``)."""
        n = min(n, self.x.shape[0])
        ends = [(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
        return [{"image": self.x[a:b], target: self.y[a:b]} for a, b in ends]


def corruption_summary(
    per_copy: dict[str, dict[str, Any]], name: str, lower_is_better: bool
) -> dict[str, Any] | None:
    """The mean score over every corrupted copy (None without corruptions)."""
    if not per_copy:
        return None
    mean = sum(float(c["score"]) for c in per_copy.values()) / len(per_copy)
    return {"score": mean, "name": name, "lower_is_better": lower_is_better}
