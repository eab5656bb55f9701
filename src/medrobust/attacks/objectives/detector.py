"""The adaptive objective against a detector-guarded classifier, and its PGD preset.

A detector evaluated only against attacks that ignore it is not evaluated (Carlini & Wagner,
2017): an adversary who knows the detector maximises

    L(x') = classifier loss(x') - weight * relu((s(x') - tau) / scale + margin)

where ``s`` is the detector's differentiable score, ``tau`` its threshold and ``scale`` the
standard deviation of its clean calibration scores (so ``weight = 1`` trades one unit of the
classifier loss for one standard deviation of the clean score). The penalty is zero once the
score is ``margin`` standard deviations under the threshold, so the attack spends no effort there.
An iterate *succeeds* when the classifier is fooled **and** the detector does not flag it, so the
engine keeps, per sample, the best iterate that evades both, and early stopping stops on it.

References:
    Carlini & Wagner, "Adversarial Examples Are Not Easily Detected: Bypassing Ten Detection
    Methods", AISec 2017; Athalye, Carlini & Wagner, ICML 2018; Tramer et al., "On Adaptive
    Attacks to Adversarial Example Defenses", NeurIPS 2020.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.engine import Attack, BestTracker, GradientAttack
from medrobust.attacks.objectives.base import OBJECTIVES, Objective, ObjectiveOutput, Target
from medrobust.attacks.presets import ATTACKS
from medrobust.attacks.threat import ThreatModel
from medrobust.models.adapter import ModelAdapter

if TYPE_CHECKING:
    from medrobust.detectors.base import Detector

__all__ = ["DetectorEvasion", "WeightSweepAttack", "pgd_adaptive"]

_LOSSES = ("margin", "ce")


def _check_detector(detector: Any) -> Detector:
    from medrobust.detectors.base import Detector, NotFittedError

    if detector is None:
        raise ValueError(
            "the adaptive attack needs the fitted detector that guards the model: "
            "create_attack('pgd-adaptive', detector=det, eps=...)"
        )
    if not isinstance(detector, Detector):
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


def _number(name: str, value: Any, minimum: float = 0.0) -> float:
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
        detector: A fitted :class:`~medrobust.detectors.Detector` guarding the attacked model.
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
        ValueError: For an unfitted or missing detector, a model other than the detector's, or
            invalid settings.

    References:
        Carlini & Wagner, AISec 2017 (attacking detectors with a combined loss).
    """

    name = "detector-evasion"
    tasks = ("classification",)

    def __init__(
        self,
        detector: Detector | None = None,
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
        self.weight = _number("weight", weight)
        self.margin = _number("margin", margin)
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {list(_LOSSES)}, got {loss!r}")
        self.loss = loss
        self.confidence = _number("confidence", confidence)
        self.targeted = False

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


class WeightSweepAttack(GradientAttack):
    """The gradient engine run once per penalty weight of a :class:`DetectorEvasion` objective.

    With the sign of the gradient as the step (Linf), whichever term has the larger gradient
    sets the direction, so no single weight suits every sample: a large weight keeps the score
    low but never flips the class, a small one flips the class but is caught. As Carlini &
    Wagner search over their constant, the attack tries each weight in turn on the samples not
    yet broken (the per-sample best iterate is kept across weights, success first).

    Args:
        objective: The detector-evasion objective (its ``weight`` is set per round).
        weights: Penalty weights, tried in this order.
        **kwargs: The gradient engine's settings (``eps``, ``steps``, ``restarts`` ...).

    References:
        Carlini & Wagner, AISec 2017.
    """

    def __init__(
        self, *, objective: DetectorEvasion, weights: Sequence[float], **kwargs: Any
    ) -> None:
        super().__init__(objective=objective, **kwargs)
        if isinstance(weights, (int, float)) and not isinstance(weights, bool):
            weights = [float(weights)]
        if isinstance(weights, str) or not isinstance(weights, Sequence) or not weights:
            raise ValueError(f"weight must be a number or a non-empty list, got {weights!r}")
        self.weights = [_number("weight", w) for w in weights]
        self.evasion = objective

    def params(self) -> dict[str, Any]:
        """The engine settings and the weights."""
        return {**super().params(), "weights": list(self.weights)}

    def _run(
        self,
        model: ModelAdapter,
        x: torch.Tensor,
        target: Target,
        threat: ThreatModel,
        region: torch.Tensor | None,
        best: BestTracker,
    ) -> None:
        for w in self.weights:
            if bool(best.success.all()):
                break
            self.evasion.weight = w
            super()._run(model, x, target, threat, region, best)
        self.evasion.weight = self.weights[0]


@ATTACKS.register(
    "pgd-adaptive",
    summary="Adaptive PGD on a detector-guarded classifier: fool it and stay under the "
    "detector's threshold",
    tags=("classification", "adaptive"),
)
def pgd_adaptive(
    *,
    detector: Detector | None = None,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 50,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    weight: float | Sequence[float] = (0.1, 1.0, 10.0),
    margin: float = 0.1,
    loss: str = "margin",
    confidence: float = 1.0,
    early_stop: bool = True,
    seed: int = 0,
) -> Attack:
    """PGD on :class:`DetectorEvasion`; ``detector`` (fitted) is required.

    Success means misclassified *and* undetected, so robust accuracy under this attack is the
    accuracy of the guarded system (a flagged input counts as caught). ``weight`` may list
    several penalty weights, tried in turn on the samples not yet broken (see
    :class:`WeightSweepAttack`).
    """
    weights = [weight] if isinstance(weight, (int, float)) else list(weight)
    objective = DetectorEvasion(
        detector,
        weight=weights[0] if weights else 1.0,
        margin=margin,
        loss=loss,
        confidence=confidence,
    )
    return WeightSweepAttack(
        objective=objective,
        weights=weights,
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        restarts=restarts,
        early_stop=early_stop,
        seed=seed,
        name="pgd-adaptive",
    )
