"""Shared small types: bounds of the input domain, task kinds, norms, the batch convention.

Batch convention: a data set yields dictionaries with the keys

* ``"image"``: float tensor ``(C, *spatial)`` in the model's documented input space,
* ``"label"``: int64 scalar class index (classification),
* ``"mask"``: int64 tensor ``(*spatial)`` of class indices (segmentation), optional,
* ``"id"``: a string identifier, optional.

A DataLoader stacks them into ``(B, C, *spatial)``, ``(B,)`` and ``(B, *spatial)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch


class NotFittedError(ValueError, RuntimeError):
    """A fitted component (a detector) was used before it was fitted or loaded."""


class Task(str, enum.Enum):
    """What a model predicts."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"
    MULTITASK = "multitask"


class Norm(str, enum.Enum):
    """Perturbation norms of a threat model."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def parse(cls, value: str | Norm) -> Norm:
        """Parse ``"linf"``, ``"Linf"``, ``"inf"``, ``"l2"`` or ``"2"`` into a :class:`Norm`.

        Raises:
            ValueError: For any other value.
        """
        if isinstance(value, Norm):
            return value
        key = str(value).strip().lower().replace("_", "")
        if key in {"linf", "inf", "l-inf", "linfinity"}:
            return cls.LINF
        if key in {"l2", "2"}:
            return cls.L2
        raise ValueError(f"unknown norm {value!r}: expected 'linf' or 'l2'")


@dataclass(frozen=True)
class Bounds:
    """The valid range of input values, in the space where epsilon is measured.

    Attributes:
        low: Smallest valid value (e.g. 0.0 after an intensity window).
        high: Largest valid value (e.g. 1.0).
    """

    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(
                f"bounds must be finite with low < high, got low={self.low}, high={self.high}"
            )

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp ``x`` into the bounds (no autograd-breaking in-place ops)."""
        return x.clamp(self.low, self.high)

    def check(self, x: torch.Tensor, name: str = "images", tol: float = 1e-5) -> None:
        """Validate that ``x`` is finite and inside the bounds.

        Raises:
            ValueError: If ``x`` has NaN/infinite values or values outside the bounds.
        """
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"{name} contain {bad} NaN or infinite value(s); expected finite values"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < self.low - tol or hi > self.high + tol:
            raise ValueError(
                f"{name} have values in [{lo:.4g}, {hi:.4g}] but the model's input bounds are "
                f"[{self.low:g}, {self.high:g}]; rescale the data or declare other bounds on the "
                "model adapter"
            )
