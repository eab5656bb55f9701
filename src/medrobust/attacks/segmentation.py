"""Attacks on segmentation models: PGD/APGD on dense losses (here), ASMA
(:mod:`medrobust.attacks.asma`) and DAG (:mod:`medrobust.attacks.dag`).

All of them run through the one engine (:class:`~medrobust.attacks.engine.Attack`): the same
input validation, eval-mode handling, :class:`~medrobust.attacks.engine.BestTracker` and
:class:`~medrobust.attacks.result.AttackResult`. The segmentation objective
(:mod:`medrobust.attacks.objectives.segmentation`) validates the masks and adds the mask metrics
to the result, so any engine runs on it. They are batched: every sample of a batch has its own
step multiplier, active set and stopping point.

Calling convention::

    attack = medrobust.create_attack("asma")            # or "dag", "asma-bounded"
    result = attack(model, images, target_masks)         # targeted: toward the target masks
    attack = medrobust.create_attack("pgd-seg", eps=4/255)  # or "apgd-seg"
    result = attack(model, images, masks)                # untargeted: away from the true masks

Masks are class indices ``(B, *spatial)`` matching the model's output. ``result.extra`` holds
``"target_iou"`` and ``"pixel_accuracy"`` (agreement with the target) for targeted attacks and
``"dice"`` and ``"pixel_accuracy"`` (against the true mask) for untargeted ones; ASMA adds its
final ``"multiplier"``.

References:
    Ozbulak, Van Messem, De Neve, MICCAI 2019 (ASMA); Xie et al., ICCV 2017 (DAG); Paschali et
    al., MICCAI 2018; Madry et al., ICLR 2018 (PGD); Croce & Hein, ICML 2020 (APGD).
"""

from __future__ import annotations

from typing import Any

from medrobust.attacks.apgd import APGD
from medrobust.attacks.engine import Attack, GradientAttack
from medrobust.attacks.objectives.segmentation import (
    PixelCrossEntropy,
    SegmentationObjective,
    SoftDice,
)
from medrobust.attacks.presets import ObjectiveChoice, register_attack

__all__ = [
    "SEGMENTATION_LOSSES",
    "SegmentationAPGD",
    "SegmentationAttack",
    "SegmentationPGD",
]

#: The dense losses of the untargeted segmentation presets.
SEGMENTATION_LOSSES = ObjectiveChoice(
    "ce",
    {
        "ce": PixelCrossEntropy,
        "pixel-ce": PixelCrossEntropy,
        "dice": SoftDice,
        "soft-dice": SoftDice,
    },
    "segmentation",
)


class SegmentationAttack(Attack):
    """Base of the segmentation engines: exposes the objective's volume-size limit.

    Attributes:
        max_voxels: Largest ``B * prod(spatial)`` attacked without sliding windows (see
            :func:`medrobust.models.segmentation.check_volume_size`); None turns the check off.
            It is the objective's setting, shown here for convenience.
    """

    @property
    def max_voxels(self) -> int | None:
        """The objective's volume-size limit (None: no limit)."""
        obj = self.objective
        return obj.max_voxels if isinstance(obj, SegmentationObjective) else None

    @max_voxels.setter
    def max_voxels(self, value: int | None) -> None:
        if not isinstance(self.objective, SegmentationObjective):
            raise TypeError(f"attack {self.name!r} has no segmentation objective to limit")
        self.objective.max_voxels = value


class SegmentationPGD(SegmentationAttack, GradientAttack):
    """PGD (or BIM/FGSM) on a dense segmentation loss: :class:`GradientAttack`'s loop with a
    segmentation objective (arguments as :class:`GradientAttack`).

    References:
        Madry et al., ICLR 2018; Arnab, Miksik, Torr, "On the Robustness of Semantic
        Segmentation Models to Adversarial Attacks", CVPR 2018.
    """


class SegmentationAPGD(SegmentationAttack, APGD):
    """APGD on a dense segmentation loss (arguments as :class:`APGD`).

    References:
        Croce & Hein, ICML 2020.
    """


@register_attack(
    "pgd-seg",
    SegmentationPGD,
    SEGMENTATION_LOSSES,
    kind="iterative",
    task="segmentation",
    extras=("gradient", "untargeted"),
    summary="PGD on pixel-wise cross-entropy or soft Dice of a segmentation (untargeted)",
)
def pgd_seg(kw: dict[str, Any]) -> dict[str, Any]:
    """PGD on ``objective`` ``"ce"`` (pixel-wise cross-entropy) or ``"dice"`` (soft Dice).
    Without early stop every sample runs all steps, so the Dice it reports is the lowest the
    attack reaches rather than the first one below ``success_dice``."""
    return {"eps": 4 / 255, "early_stop": False, **kw}


@register_attack(
    "apgd-seg",
    SegmentationAPGD,
    SEGMENTATION_LOSSES,
    kind="iterative",
    task="segmentation",
    extras=("gradient", "untargeted"),
    summary="APGD on pixel-wise cross-entropy or soft Dice of a segmentation (untargeted)",
)
def apgd_seg(kw: dict[str, Any]) -> dict[str, Any]:
    """APGD (Croce & Hein 2020) on ``objective`` ``"ce"`` or ``"dice"``."""
    return {"eps": 4 / 255, "steps": 20, "early_stop": False, **kw}
