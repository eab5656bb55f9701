"""APGD on the losses of the SEA ensemble: Jensen-Shannon divergence, masked cross-entropy,
masked balanced cross-entropy and the masked spherical loss, one preset each (so a suite can
list them side by side and keep each sample's worst case).

Croce, Singh & Hein show that a single loss overestimates the robustness of a segmenter: each
loss breaks different images, and the worst case over the ensemble is much lower than any one
of them. The losses live in :mod:`medrobust.attacks.objectives.segmentation_losses`.

Every preset runs SEA's progressive radius reduction by default (``radius_schedule``, see
:class:`~medrobust.attacks.segmentation.SegmentationAPGD`): 3/10 of the iterations in the ball
of radius 2 eps, 3/10 in 1.5 eps, the last 4/10 in the eps-ball, each stage warm-started from
the previous one's best point projected onto the smaller ball, as the authors' SEA runs do
(``apgd_largereps`` in github.com/nmndeep/robust-segmentation). Only iterates of the last
stage, inside the eps-ball, can become the result. ``radius_schedule=None`` turns it off.

References:
    Croce, Singh, Hein, "Towards Reliable Evaluation and Fast Training of Robust Semantic
    Segmentation Models", ECCV 2024; Croce & Hein, ICML 2020 (APGD).
"""

from __future__ import annotations

from typing import Any

from medrobust.attacks.objectives.segmentation_losses import (
    JensenShannonLoss,
    MaskedBalancedCE,
    MaskedCrossEntropy,
    MaskedSphericalLoss,
)
from medrobust.attacks.presets import ObjectiveChoice, register_attack
from medrobust.attacks.segmentation import SEA_RADIUS_SCHEDULE, SegmentationAPGD

__all__: list[str] = []

_TAGS: dict[str, Any] = {
    "kind": "iterative",
    "task": "segmentation",
    "extras": ("gradient", "untargeted"),
}


def _sea(kw: dict[str, Any]) -> dict[str, Any]:
    """The SEA defaults: 20 steps, Linf 4/255, every sample runs all steps, radius reduction."""
    return {
        "eps": 4 / 255,
        "steps": 20,
        "early_stop": False,
        "radius_schedule": SEA_RADIUS_SCHEDULE,
        **kw,
    }


@register_attack(
    "apgd-sea-js",
    SegmentationAPGD,
    ObjectiveChoice("sea-js", {"sea-js": JensenShannonLoss}, "segmentation"),
    summary="APGD on the Jensen-Shannon divergence to the label (SEA, untargeted)",
    **_TAGS,
)
def apgd_sea_js(kw: dict[str, Any]) -> dict[str, Any]:
    """APGD on :class:`JensenShannonLoss` (SEA), 20 steps, Linf 4/255 by default."""
    return _sea(kw)


@register_attack(
    "apgd-sea-mce",
    SegmentationAPGD,
    ObjectiveChoice("sea-mce", {"sea-mce": MaskedCrossEntropy}, "segmentation"),
    summary="APGD on the cross-entropy of the still-correct pixels (SEA, untargeted)",
    **_TAGS,
)
def apgd_sea_mce(kw: dict[str, Any]) -> dict[str, Any]:
    """APGD on :class:`MaskedCrossEntropy` (SEA), 20 steps, Linf 4/255 by default."""
    return _sea(kw)


@register_attack(
    "apgd-sea-mbce",
    SegmentationAPGD,
    ObjectiveChoice("sea-mbce", {"sea-mbce": MaskedBalancedCE}, "segmentation"),
    summary="APGD on the class-balanced CE of the still-correct pixels (SEA, untargeted)",
    **_TAGS,
)
def apgd_sea_mbce(kw: dict[str, Any]) -> dict[str, Any]:
    """APGD on :class:`MaskedBalancedCE` (SEA), 20 steps, Linf 4/255 by default."""
    return _sea(kw)


@register_attack(
    "apgd-sea-msph",
    SegmentationAPGD,
    ObjectiveChoice("sea-msph", {"sea-msph": MaskedSphericalLoss}, "segmentation"),
    summary="APGD on the masked spherical loss of the still-correct pixels (SEA, untargeted)",
    **_TAGS,
)
def apgd_sea_msph(kw: dict[str, Any]) -> dict[str, Any]:
    """APGD on :class:`MaskedSphericalLoss` (SEA), 20 steps, Linf 4/255 by default."""
    return _sea(kw)
