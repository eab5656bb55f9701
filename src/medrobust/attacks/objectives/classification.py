"""Classification objectives: cross-entropy, margin (Carlini & Wagner) and DLR (Croce & Hein).

References:
    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.
    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.objectives.base import OBJECTIVES, Objective, ObjectiveOutput, Target


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    z = model(x)
    if z.ndim != 2:
        raise ValueError(
            f"a classification objective needs logits of shape (B, K), got {tuple(z.shape)}; "
            "is this a segmentation model? use a segmentation objective"
        )
    return z


def _other_max(z: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Largest logit among the classes other than ``cls``. Shape: ``(B,)``."""
    masked = z.masked_fill(F.one_hot(cls, z.shape[1]).bool(), float("-inf"))
    return masked.amax(dim=1)


def _as_target(target: Target) -> torch.Tensor:
    if isinstance(target, dict):
        raise TypeError("a classification objective expects a label tensor as target")
    return target


class _ClassificationObjective(Objective):
    tasks = ("classification", "multitask")

    def __init__(self, targeted: bool = False) -> None:
        self.targeted = bool(targeted)

    @abstractmethod
    def value(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample untargeted loss to maximise (targeted: loss toward class ``y``)."""

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        y = _as_target(target)
        z = _logits(model, x)
        pred = z.argmax(dim=1)
        success = (pred == y) if self.targeted else (pred != y)
        return ObjectiveOutput(self.value(z, y), success.detach(), pred.detach(), z)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "targeted": self.targeted}


@OBJECTIVES.register("ce", summary="Cross-entropy of the true (or target) class")
class CrossEntropy(_ClassificationObjective):
    """Cross-entropy: maximised untargeted, minimised (negated) toward a target class.

    Shape:
        - logits: ``(B, K)``; labels ``(B,)``; loss ``(B,)``.
    """

    name = "ce"

    def value(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(z, y, reduction="none")
        return -ce if self.targeted else ce


@OBJECTIVES.register("margin", summary="Logit margin of Carlini & Wagner (optionally capped)")
class Margin(_ClassificationObjective):
    """Carlini & Wagner's logit margin ``max_{i != y} z_i - z_y`` (targeted: ``z_t - max_{i != t}
    z_i``), capped at ``confidence`` so that samples already past the boundary by that much stop
    pulling.

    Args:
        targeted: Attack toward the given class instead of away from it.
        confidence: The cap ``kappa`` (``None`` for no cap).

    References:
        Carlini & Wagner, IEEE S&P 2017.
    """

    name = "margin"

    def __init__(self, targeted: bool = False, confidence: float | None = None) -> None:
        super().__init__(targeted)
        if confidence is not None and confidence < 0:
            raise ValueError(f"confidence must be >= 0 or None, got {confidence}")
        self.confidence = confidence

    def value(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        zy = z.gather(1, y[:, None]).squeeze(1)
        m = zy - _other_max(z, y) if self.targeted else _other_max(z, y) - zy
        if self.confidence is not None:
            m = m.clamp(max=self.confidence)
        return m

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "confidence": self.confidence}


@OBJECTIVES.register("dlr", summary="Difference of logits ratio (scale invariant; >= 3 classes)")
class DLR(_ClassificationObjective):
    """Difference of Logits Ratio, invariant to shifts and rescaling of the logits.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``pi`` the logits sorted in decreasing
    order, so it needs at least 3 classes. Only the untargeted form is provided (the targeted form
    needs both the true and the target class); use ``margin`` with ``targeted=True`` for targeted
    attacks.

    Raises:
        ValueError: When constructed with ``targeted=True`` or called on a model with fewer than
            3 classes.

    References:
        Croce & Hein, ICML 2020.
    """

    name = "dlr"

    def __init__(self, targeted: bool = False) -> None:
        if targeted:
            raise ValueError(
                "the DLR objective is untargeted only; use 'margin' with targeted=True instead"
            )
        super().__init__(False)

    @staticmethod
    def check_classes(k: int) -> None:
        """Raise a clear error when the model has fewer than 3 classes."""
        if k < 3:
            raise ValueError(
                f"the DLR loss needs at least 3 classes, but the model has {k}; "
                "use the 'ce' or 'margin' objective for binary tasks"
            )

    def value(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_classes(z.shape[1])
        srt = z.sort(dim=1, descending=True).values
        zy = z.gather(1, y[:, None]).squeeze(1)
        return -(zy - _other_max(z, y)) / (srt[:, 0] - srt[:, 2] + 1e-12)
