"""The ``"multitask"`` training recipe: classification and lesion segmentation, jointly.

For a network that returns ``(class_logits, lesion_logits)`` (see
:mod:`medrobust.models.multitask`) the loss of a batch is

    L = CE(class_logits, label) + λ · (Dice(σ(lesion_logits), mask) + BCE(lesion_logits, mask))

with the soft Dice loss ``1 − (2 Σ p·m + s) / (Σ p + Σ m + s)`` per image (``s = 1e-5``, as in
MONAI's ``DiceLoss``), averaged over the batch, and the pixel-wise binary cross-entropy with
logits. The lesion mask comes from ``batch["mask"]``; any non-zero value is lesion. The training
loop validates the classification head as usual (accuracy, sensitivity, specificity, AUC) and
this recipe adds ``val_dice`` (hard Dice of ``σ > 0.5`` against the mask) and ``val_seg_loss``.

References:
    Rasaee & Rivaz, IEEE IUS 2021 (multi-task network for breast ultrasound); Milletari et al.,
    "V-Net", 3DV 2016 (Dice loss); Ruder, "An overview of multi-task learning", 2017.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.defenses.recipes import RECIPES, Recipe
from medrobust.models.adapter import ModelAdapter
from medrobust.models.multitask import split_multitask_output
from medrobust.types import Task

__all__ = ["MultitaskRecipe", "soft_dice_loss"]

_SMOOTH = 1e-5


def soft_dice_loss(
    logits: torch.Tensor, mask: torch.Tensor, smooth: float = _SMOOTH
) -> torch.Tensor:
    """Soft Dice loss of one-channel lesion logits against a binary mask, per sample.

    ``1 − (2 Σ σ(z)·m + s) / (Σ σ(z) + Σ m + s)`` over all pixels of each sample.

    Args:
        logits: Lesion logits.
        mask: Binary mask (0/1), same spatial shape.
        smooth: The smoothing constant ``s`` (> 0) that keeps empty masks defined.

    Returns:
        Per-sample losses in ``[0, 1]``.

    Shape:
        - logits: ``(B, 1, *spatial)``; mask: ``(B, *spatial)`` or ``(B, 1, *spatial)``.
        - Output: ``(B,)``.

    References:
        Milletari et al., "V-Net", 3DV 2016.
    """
    p = torch.sigmoid(logits).flatten(1)
    m = mask.reshape(p.shape).to(p.dtype)
    inter = (p * m).sum(dim=1)
    return 1.0 - (2.0 * inter + smooth) / (p.sum(dim=1) + m.sum(dim=1) + smooth)


class MultitaskRecipe(Recipe):
    """Joint training of a classification head and a one-channel lesion decoder.

    Args:
        seg_weight: The weight ``λ >= 0`` of the segmentation term (1.0 in the paper's
            reconstruction; 0 trains the classifier alone while keeping the decoder in the graph).
        label_smoothing: Label smoothing of the cross-entropy, in ``[0, 1)``.

    Shape:
        - batch["image"]: ``(B, C, *spatial)``; batch["label"]: ``(B,)``;
          batch["mask"]: ``(B, *spatial)`` lesion mask.

    Raises:
        ValueError: From :meth:`setup` for a segmentation model, and from :meth:`loss` when the
            batch has no mask, the mask's shape does not match the images, or the network does
            not return two heads.

    References:
        Rasaee & Rivaz, IEEE IUS 2021.
    """

    name: ClassVar[str] = "multitask"
    validation_metrics: ClassVar[tuple[str, ...]] = ("dice", "seg_loss")

    def __init__(self, *, seg_weight: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        for pname, value in (("seg_weight", seg_weight), ("label_smoothing", label_smoothing)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{pname} must be a number, got {type(value).__name__} {value!r}")
        if not (math.isfinite(seg_weight) and seg_weight >= 0):
            raise ValueError(f"seg_weight must be a finite number >= 0, got {seg_weight}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.seg_weight = float(seg_weight)
        self.label_smoothing = float(label_smoothing)

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Check that the model can be a multi-task network; see :class:`Recipe`.

        Raises:
            ValueError: If the model is a segmentation model.
        """
        super().setup(model, generator=generator)
        if model.task not in (Task.MULTITASK, Task.CLASSIFICATION):
            raise ValueError(
                f"recipe 'multitask' trains multi-task networks (class logits + lesion logits), "
                f"got a {model.task.value} model; use recipe 'standard'"
            )

    def _heads(
        self, model: ModelAdapter, batch: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = batch["image"]
        if "mask" not in batch:
            raise ValueError(
                f"recipe 'multitask' needs lesion masks: the batch has keys {sorted(batch)} but "
                "no 'mask' (use a data set with masks, e.g. bus-phantom or busi)"
            )
        mask = batch["mask"]
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"batch['mask'] must be a tensor, got {type(mask).__name__}")
        want = (images.shape[0], *images.shape[2:])
        if tuple(mask.shape) != want:
            raise ValueError(
                f"batch['mask'] must have shape {want} (B, *spatial) to match the images "
                f"{tuple(images.shape)}, got {tuple(mask.shape)}"
            )
        try:
            cls, seg = split_multitask_output(model.raw_forward(images))
        except TypeError as exc:
            raise ValueError(
                f"recipe 'multitask' cannot read two heads from the model: {exc}"
            ) from exc
        if seg.shape[1] != 1 or tuple(seg.shape[2:]) != tuple(images.shape[2:]):
            raise ValueError(
                f"recipe 'multitask' needs one-channel lesion logits (B, 1, *spatial) at the "
                f"input size {tuple(images.shape[2:])}, got {tuple(seg.shape)}"
            )
        return cls, seg, (mask != 0).to(seg.dtype)

    def _seg_loss(self, seg: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dice = soft_dice_loss(seg, target).mean()
        bce = F.binary_cross_entropy_with_logits(seg[:, 0], target)
        return dice + bce

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``CE + λ (Dice + BCE)`` of the batch, with the terms as statistics."""
        cls, seg, target = self._heads(model, batch)
        labels = batch["label"]
        ce = F.cross_entropy(cls, labels, label_smoothing=self.label_smoothing)
        seg_loss = self._seg_loss(seg, target)
        total = ce + self.seg_weight * seg_loss
        acc = float((cls.detach().argmax(dim=1) == labels).float().mean())
        return total, {
            "ce": float(ce.detach()),
            "seg_loss": float(seg_loss.detach()),
            "accuracy": acc,
        }

    def validation_stats(self, model: ModelAdapter, batch: dict[str, Any]) -> dict[str, float]:
        """Mean hard Dice (``σ > 0.5`` vs mask; 1 for an empty prediction of an empty mask) and
        the segmentation loss of a validation batch."""
        _, seg, target = self._heads(model, batch)
        pred = (seg[:, 0] > 0).to(target.dtype).flatten(1)
        t = target.flatten(1)
        inter = (pred * t).sum(dim=1)
        denom = pred.sum(dim=1) + t.sum(dim=1)
        dice = torch.where(denom > 0, 2.0 * inter / denom.clamp_min(1.0), torch.ones_like(denom))
        return {"dice": float(dice.mean()), "seg_loss": float(self._seg_loss(seg, target))}


@RECIPES.register(
    "multitask",
    summary="Joint classification + lesion segmentation: CE + lambda * (Dice + BCE)",
    tags=("multitask",),
)
def _multitask(*, seg_weight: float = 1.0, label_smoothing: float = 0.0) -> Recipe:
    """Multi-task training of ``mtl-*`` networks; see :class:`MultitaskRecipe`."""
    return MultitaskRecipe(seg_weight=seg_weight, label_smoothing=label_smoothing)
