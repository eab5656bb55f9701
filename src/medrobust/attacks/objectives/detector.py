"""The adaptive objective against a detector-guarded classifier.

A detector evaluated only against attacks that ignore it is not evaluated (Carlini & Wagner,
2017): an adversary who knows the detector maximises

    L(x') = classifier loss(x') - weight * relu((s(x') - tau) / scale + margin)

where ``s`` is the detector's differentiable score, ``tau`` its threshold and ``scale`` the
standard deviation of its clean calibration scores (so ``weight = 1`` trades one unit of the
classifier loss for one standard deviation of the clean score). The penalty is zero once the
score is ``margin`` standard deviations under the threshold, so the attack spends no effort there.
An iterate *succeeds* when the classifier is fooled **and** the detector does not flag it, so the
engine keeps, per sample, the best iterate that evades both, and early stopping stops on it.

The objective needs only what :class:`GuardDetector` describes (any object with those members
works; medrobust's detectors have them), so attacks do not depend on the detectors package.

References:
    Carlini & Wagner, "Adversarial Examples Are Not Easily Detected: Bypassing Ten Detection
    Methods", AISec 2017; Athalye, Carlini & Wagner, ICML 2018; Tramer et al., "On Adaptive
    Attacks to Adversarial Example Defenses", NeurIPS 2020.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.objectives.base import OBJECTIVES, Objective, ObjectiveOutput, Target
from medrobust.types import NotFittedError

__all__ = ["DetectorEvasion", "GuardDetector", "check_number", "is_guard_detector"]

_LOSSES = ("margin", "ce")


class GuardDetector(Protocol):
    """What the adaptive objective uses of a fitted detector guarding a classifier.

    Attributes:
        name: The detector's registered name.
        fitted: Whether it has been fitted (or loaded).
        model: The model it guards (the same object the attack must run on).
        threshold: Inputs scoring above it are flagged.
        score_scale: Standard deviation of its clean calibration scores.
    """

    name: str

    @property
    def fitted(self) -> bool:
        """Whether the detector has been fitted (or loaded)."""
        ...

    @property
    def model(self) -> nn.Module | None:
        """The model it guards (None before fitting)."""
        ...

    @property
    def threshold(self) -> float:
        """The decision threshold: inputs scoring above it are flagged."""
        ...

    @property
    def score_scale(self) -> float:
        """Standard deviation of the clean calibration scores."""
        ...

    def logits_and_score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's logits ``(B, K)`` and the score ``(B,)``, differentiable in ``images``."""
        ...


_MEMBERS = ("name", "fitted", "model", "threshold", "score_scale", "logits_and_score")
_MISSING = object()


def is_guard_detector(obj: object) -> bool:
    """Whether ``obj`` has every member of :class:`GuardDetector` (looked up statically, so the
    properties of an unfitted detector are not evaluated)."""
    return all(inspect.getattr_static(obj, m, _MISSING) is not _MISSING for m in _MEMBERS)


def _check_detector(detector: Any) -> GuardDetector:
    if detector is None:
        raise ValueError(
            "the adaptive attack needs the fitted detector that guards the model: "
            "create_attack('pgd-adaptive', detector=det, eps=...)"
        )
    if not is_guard_detector(detector):
        raise TypeError(
            f"detector must be a medrobust detector (medrobust.detectors.create_detector), got "
            f"{type(detector).__name__}"
        )
    if not detector.fitted:
        raise NotFittedError(
            f"detector {detector.name!r} is not fitted: fit it before building an adaptive "
            "attack against it"
        )
    return detector


def check_number(name: str, value: Any, minimum: float = 0.0) -> float:
    """``value`` as a finite float ``>= minimum``.

    Raises:
        TypeError: For a non-number.
        ValueError: For a value out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")
    return v


@OBJECTIVES.register(
    "detector-evasion",
    summary="Fool the classifier and keep a fitted detector's score under its threshold",
)
class DetectorEvasion(Objective):
    """Classifier loss minus a weighted penalty on the detector score above its threshold.

    Args:
        detector: A fitted detector guarding the attacked model (see :class:`GuardDetector`).
        weight: Weight of the detector penalty (>= 0; 0 ignores the detector's score but still
            counts detected examples as failures).
        margin: Aim this many clean-score standard deviations under the threshold (>= 0).
        loss: Classifier term: ``"margin"`` (Carlini & Wagner's logit margin, capped at
            ``confidence`` so that once the class is flipped the effort goes to evasion) or
            ``"ce"`` (cross-entropy).
        confidence: Cap of the margin term.
        targeted: Not supported (the objective is untargeted); True raises.

    Shape:
        - target: labels ``(B,)``; loss and success ``(B,)``.

    Raises:
        ValueError: For a missing detector, a model other than the detector's, or invalid
            settings.
        NotFittedError: For an unfitted detector.
        TypeError: For an object that is not a detector.

    References:
        Carlini & Wagner, AISec 2017 (attacking detectors with a combined loss).
    """

    name = "detector-evasion"
    tasks = ("classification",)

    def __init__(
        self,
        detector: GuardDetector | None = None,
        *,
        weight: float = 1.0,
        margin: float = 0.1,
        loss: str = "margin",
        confidence: float = 1.0,
        targeted: bool = False,
    ) -> None:
        if targeted:
            raise ValueError("the detector-evasion objective is untargeted only")
        self.detector = _check_detector(detector)
        self.weight = check_number("weight", weight)
        self.margin = check_number("margin", margin)
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {list(_LOSSES)}, got {loss!r}")
        self.loss = loss
        self.confidence = check_number("confidence", confidence)
        self.targeted = False

    def with_weight(self, weight: float) -> DetectorEvasion:
        """The same objective with another penalty weight (a new object)."""
        return DetectorEvasion(
            self.detector,
            weight=weight,
            margin=self.margin,
            loss=self.loss,
            confidence=self.confidence,
        )

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        if isinstance(target, dict):
            raise TypeError("the detector-evasion objective expects a label tensor as target")
        det = self.detector
        if model is not det.model:
            raise ValueError(
                "the adaptive attack must run on the model the detector guards (the same "
                "ModelAdapter object that was passed to detector.fit)"
            )
        logits, score = det.logits_and_score(x)
        y = target
        if self.loss == "ce":
            cls = F.cross_entropy(logits, y, reduction="none")
        else:
            zy = logits.gather(1, y[:, None]).squeeze(1)
            other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
            cls = (other.amax(dim=1) - zy).clamp(max=self.confidence)
        tau = det.threshold
        excess = (score - tau) / det.score_scale + self.margin
        value = cls - self.weight * F.relu(excess)
        pred = logits.argmax(dim=1)
        undetected = score.detach() <= tau
        success = (pred != y) & undetected
        return ObjectiveOutput(value, success.detach(), pred.detach(), logits)

    def describe(self) -> dict[str, Any]:
        """Settings and the detector's name and threshold (JSON-serialisable)."""
        return {
            "name": self.name,
            "targeted": False,
            "weight": self.weight,
            "margin": self.margin,
            "loss": self.loss,
            "confidence": self.confidence,
            "detector": getattr(self.detector, "name", "?"),
            "threshold": self.detector.threshold,
        }
