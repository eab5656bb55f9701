"""The adaptive attack on a detector-guarded classifier: PGD on
:class:`~medrobust.attacks.objectives.detector.DetectorEvasion`, swept over penalty weights.

References:
    Carlini & Wagner, "Adversarial Examples Are Not Easily Detected: Bypassing Ten Detection
    Methods", AISec 2017; Tramer et al., "On Adaptive Attacks to Adversarial Example Defenses",
    NeurIPS 2020.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medrobust.attacks.engine import GradientAttack, Run
from medrobust.attacks.objectives.detector import (
    DetectorEvasion,
    GuardDetector,
    check_number,
)
from medrobust.attacks.presets import register_attack

__all__ = ["WeightSweepAttack", "pgd_adaptive"]


def _weights(weight: float | Sequence[float]) -> list[float]:
    if isinstance(weight, (int, float)) and not isinstance(weight, bool):
        return [weight]
    if isinstance(weight, str) or not isinstance(weight, Sequence) or not weight:
        raise ValueError(f"weight must be a number or a non-empty list, got {weight!r}")
    return list(weight)


class WeightSweepAttack(GradientAttack):
    """The gradient engine run once per penalty weight of a :class:`DetectorEvasion` objective.

    With the sign of the gradient as the step (Linf), whichever term has the larger gradient
    sets the direction, so no single weight suits every sample: a large weight keeps the score
    low but never flips the class, a small one flips the class but is caught. As Carlini &
    Wagner search over their constant, the attack tries each weight in turn on the samples not
    yet broken (the per-sample best iterate is kept across weights, success first). Each weight
    has its own objective, built once; nothing changes during a call.

    Args:
        detector: The fitted detector guarding the model (see
            :class:`~medrobust.attacks.objectives.detector.GuardDetector`).
        weight: A penalty weight, or several tried in this order.
        margin: See :class:`DetectorEvasion`.
        loss: See :class:`DetectorEvasion`.
        confidence: See :class:`DetectorEvasion`.
        steps: Gradient steps per weight.
        **kwargs: The other settings of :class:`~medrobust.attacks.GradientAttack` (``norm``,
            ``eps``, ``step_size``, ``random_start``, ``restarts``, ``early_stop``, ``seed``,
            ``name``).

    Raises:
        ValueError: For a missing detector, an empty weight list or invalid settings.

    References:
        Carlini & Wagner, AISec 2017.
    """

    def __init__(
        self,
        *,
        detector: GuardDetector | None = None,
        weight: float | Sequence[float] = (0.1, 1.0, 10.0),
        margin: float = 0.1,
        loss: str = "margin",
        confidence: float = 1.0,
        steps: int = 50,
        **kwargs: Any,
    ) -> None:
        base = DetectorEvasion(detector, margin=margin, loss=loss, confidence=confidence)
        weights = [check_number("weight", w) for w in _weights(weight)]
        kwargs.setdefault("name", "pgd-adaptive")
        super().__init__(objective=base.with_weight(weights[0]), steps=steps, **kwargs)
        self.weights = weights
        self._rounds = [
            GradientAttack(objective=base.with_weight(w), steps=steps, **kwargs) for w in weights
        ]

    def params(self) -> dict[str, Any]:
        """The engine settings and the weights."""
        return {**super().params(), "weights": list(self.weights)}

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        for attack in self._rounds:
            if bool(run.best.success.all()):
                break
            attack._run(run)
        return None


@register_attack(
    "pgd-adaptive",
    WeightSweepAttack,
    kind="iterative",
    task="detection",
    extras=("gradient", "adaptive"),
    summary="Adaptive PGD on a detector-guarded classifier: fool it and stay under the "
    "detector's threshold",
)
def pgd_adaptive(kw: dict[str, Any]) -> dict[str, Any]:
    """PGD on :class:`DetectorEvasion`; ``detector`` (fitted) is required.

    Success means misclassified *and* undetected, so robust accuracy under this attack is the
    accuracy of the guarded system (a flagged input counts as caught). ``weight`` may list
    several penalty weights, tried in turn on the samples not yet broken (see
    :class:`WeightSweepAttack`).
    """
    return kw
