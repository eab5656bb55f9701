"""Segmentation objectives: pixel-wise cross-entropy, soft Dice, and the targeted objectives of
ASMA (Ozbulak et al.) and DAG (Xie et al.), with the success semantics of segmentation attacks.

Every objective takes a segmentation model whose logits are ``(B, K, *spatial)`` and a mask of
class indices ``(B, *spatial)``: the true mask for untargeted objectives, the adversarial target
mask for targeted ones.

Success:

* **untargeted**: the mean foreground Dice of the prediction against the true mask falls below
  ``broken_fraction`` (default 0.5) times the sample's own clean Dice (the Dice of the clean
  prediction, measured once by :meth:`SegmentationObjective.prepare`), as Daza et al. (ROG)
  count a volume as broken; see :func:`sample_dice`. A sample whose clean Dice is already low is
  attacked all the same (it is broken when its Dice halves again), and a sample whose clean Dice
  is 0 can never be broken. Called directly with a bare mask (no prepared clean Dice), the clean
  Dice is taken as 1, i.e. the threshold is ``broken_fraction`` itself;
* **targeted**: at most ``1 - success_fraction`` of the pixels that had to change (where the
  clean prediction differs from the target) still disagree with the target, and every pixel
  that already agreed counts too: success iff ``#(pred != target) <= (1 - success_fraction) *
  #(clean pred != target)``. With the default 0.99 this is the stopping rule of DAG (fewer than
  1% of the target pixels remain); a target equal to the clean prediction is met at once.

References:
    Ozbulak, Van Messem, De Neve, "Impact of Adversarial Examples on Deep Learning Models for
    Biomedical Image Segmentation", MICCAI 2019 (ASMA).
    Xie et al., "Adversarial Examples for Semantic Segmentation and Object Detection", ICCV 2017
    (DAG).
    Daza et al., "Towards Robust General Medical Image Segmentation", MICCAI 2021 (ROG: broken
    below half the clean Dice).
    Milletari, Navab, Ahmadi, "V-Net", 3DV 2016 (soft Dice).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.objectives.base import OBJECTIVES, Objective, ObjectiveOutput, Target
from medrobust.metrics.segmentation import (
    pixel_agreement,
    sample_dice,
    target_iou,
)
from medrobust.models.adapter import ModelAdapter
from medrobust.models.segmentation import DEFAULT_MAX_VOXELS, check_volume_size

__all__ = [
    "ASMALoss",
    "DAGLoss",
    "PixelCrossEntropy",
    "SegmentationObjective",
    "SoftDice",
    "check_fraction",
    "check_mask",
    "class_argmax",
    "create_segmentation_objective",
    "pixel_agreement",
    "sample_dice",
    "segmentation_logits",
    "target_iou",
]


def class_argmax(z: torch.Tensor) -> torch.Tensor:
    """The predicted class per pixel, ``z.argmax(dim=1)`` (the first maximum on ties).

    Computed by a running comparison over the ``K`` channels, which is an order of magnitude
    faster on CPU than a reduction over the strided channel dimension of a large map.

    Shape:
        - z: ``(B, K, *spatial)``; output int64 ``(B, *spatial)``.
    """
    z = z.detach()
    best = z[:, 0]
    idx = torch.zeros(best.shape, dtype=torch.long, device=z.device)
    for c in range(1, z.shape[1]):
        better = z[:, c] > best
        best = torch.where(better, z[:, c], best)
        idx.masked_fill_(better, c)
    return idx


# --------------------------------------------------------------------------------------------
# model output and mask validation
# --------------------------------------------------------------------------------------------
def segmentation_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The logits ``(B, K, *spatial)`` of a segmentation model.

    Raises:
        ValueError: If the output is not a per-pixel map for ``x`` or its class count differs
            from the adapter's ``num_classes``.
    """
    z = model(x)
    if not isinstance(z, torch.Tensor) or z.ndim != x.ndim or z.shape[0] != x.shape[0]:
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(
            f"a segmentation objective needs logits of shape (B, K, *spatial) for images of "
            f"shape {tuple(x.shape)}, got {got}; is this a classification model? use a "
            "classification objective"
        )
    k = getattr(model, "num_classes", None)
    if isinstance(k, int) and z.shape[1] != k:
        raise ValueError(
            f"the model declares {k} classes but its output has {z.shape[1]} channels "
            f"(shape {tuple(z.shape)})"
        )
    return z


def check_mask(
    mask: torch.Tensor, logits_shape: torch.Size | tuple[int, ...], name: str = "masks"
) -> None:
    """Validate a mask of class indices against the model's logits shape.

    Args:
        mask: Class indices.
        logits_shape: ``(B, K, *spatial)`` of the model output.
        name: What the mask is, for messages (``"masks"``, ``"target masks"``).

    Raises:
        TypeError: If ``mask`` is not a tensor.
        ValueError: If it is not integer, its shape is not ``(B, *spatial)`` of the output or it
            holds classes outside ``[0, K)``.

    Shape:
        - mask: ``(B, *spatial)``.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.is_floating_point() or mask.dtype == torch.bool or mask.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {mask.dtype}")
    want = (logits_shape[0], *logits_shape[2:])
    if tuple(mask.shape) != tuple(want):
        raise ValueError(
            f"{name} have shape {tuple(mask.shape)} but the model's output "
            f"{tuple(logits_shape)} needs masks of shape {tuple(want)} (B, *spatial)"
        )
    _check_classes(mask, int(logits_shape[1]), name)


def _check_classes(mask: torch.Tensor, k: int, name: str) -> None:
    if mask.numel() and (int(mask.min()) < 0 or int(mask.max()) >= k):
        bad = torch.unique(mask[(mask < 0) | (mask >= k)])[:10].tolist()
        raise ValueError(
            f"{name} contain class(es) {bad} unknown to the model, which has {k} classes "
            f"(0..{k - 1})"
        )


def _mask_of(target: Target) -> torch.Tensor:
    if isinstance(target, dict):
        if "mask" not in target:
            raise TypeError(
                f"a segmentation target dict needs a 'mask' entry, got {sorted(target)}"
            )
        return target["mask"]
    return target


def check_fraction(name: str, value: float, *, open_low: bool = False) -> float:
    """``value`` as a float in ``[0, 1]`` (``(0, 1]`` with ``open_low``).

    Raises:
        ValueError: Naming ``name``, the interval and what came.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not (0.0 < v <= 1.0 if open_low else 0.0 <= v <= 1.0):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------
class SegmentationObjective(Objective):
    """Base of segmentation objectives: logits and mask checks, targets and success semantics.

    Targeted objectives prepare a dict target ``{"mask", "x0", "n0"}`` (the target mask, the
    clean input and the number of pixels where the clean prediction differs from the target);
    untargeted ones prepare ``{"mask", "clean_dice"}`` (the true mask and the Dice of the clean
    prediction, from one clean forward pass).

    Args:
        targeted: Attack toward the given mask instead of away from it.
        broken_fraction: Untargeted success: :func:`sample_dice` strictly below this fraction of
            the sample's clean Dice (0.5, as Daza et al.).
        success_fraction: Targeted success: share of the initially wrong pixels that must agree
            with the target (see the module docstring).
    """

    tasks = ("segmentation",)
    #: Largest ``B * prod(spatial)`` attacked without sliding windows (see
    #: :func:`medrobust.models.segmentation.check_volume_size`); None turns the check off.
    max_voxels: int | None = DEFAULT_MAX_VOXELS

    def __init__(
        self,
        targeted: bool = False,
        broken_fraction: float = 0.5,
        success_fraction: float = 0.99,
    ) -> None:
        self.targeted = bool(targeted)
        self.broken_fraction = check_fraction("broken_fraction", broken_fraction)
        self.success_fraction = check_fraction("success_fraction", success_fraction)

    def check_target(self, model: ModelAdapter, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Validate masks: integer class indices ``(B, *spatial)`` in ``[0, K)``.

        The exact spatial size is checked against the model's output later (a network with
        valid convolutions predicts a smaller map than its input).

        Raises:
            TypeError: If ``labels`` is not a tensor.
            ValueError: For a wrong dtype, rank, batch size or unknown classes, or a batch too
                large to segment without sliding windows.

        Shape:
            - images: ``(B, C, *spatial)``; labels ``(B, *spatial)``.
        """
        name = "target masks" if self.targeted else "masks"
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
        b, nd = images.shape[0], model.spatial_dims
        if labels.ndim != nd + 1 or labels.shape[0] != b:
            hint = ""
            if labels.ndim == nd + 2 and labels.shape[1] == 1:
                hint = "; drop the channel dimension (mask.squeeze(1))"
            elif labels.ndim == 1:
                hint = "; these look like class labels: segmentation attacks need masks"
            raise ValueError(
                f"{name} must have shape (B, *spatial) = ({b}, {', '.join(['*'] * nd)}) for "
                f"images of shape {tuple(images.shape)}, got {tuple(labels.shape)}{hint}"
            )
        _check_classes(labels, model.num_classes, name)
        check_volume_size(model, images, self.max_voxels)

    def extras(
        self, model: nn.Module, x_adv: torch.Tensor, pred_adv: torch.Tensor, target: Target
    ) -> dict[str, torch.Tensor]:
        """``target_iou`` and ``pixel_success`` (targeted, see :meth:`pixel_success`) or
        ``dice`` and ``clean_dice`` (untargeted), and ``pixel_accuracy``, of the returned
        predictions against the (target) masks, in the inputs' dtype.

        Shape:
            - pred_adv: ``(B, *spatial)``; every output ``(B,)``.
        """
        mask = _mask_of(target).to(pred_adv.device)
        if mask.shape != pred_adv.shape:
            return {}
        k = int(getattr(model, "num_classes", 0)) or None
        out = {}
        if self.targeted:
            out["target_iou"] = target_iou(pred_adv, mask, k).to(x_adv.dtype)
            out["pixel_success"] = self.pixel_success(pred_adv, target).to(x_adv.dtype)
        else:
            out["dice"] = sample_dice(pred_adv, mask, k).to(x_adv.dtype)
            if isinstance(target, dict) and "clean_dice" in target:
                out["clean_dice"] = target["clean_dice"].to(x_adv.dtype)
        out["pixel_accuracy"] = pixel_agreement(pred_adv, mask).to(x_adv.dtype)
        return out

    def prepare(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Target:
        """Untargeted: ``{"mask", "clean_dice"}``; targeted: ``{"mask", "x0", "n0"}``; both
        from one clean forward pass.

        Raises:
            ValueError: If the mask does not match the model output (see :func:`check_mask`).
        """
        with torch.no_grad():
            z = segmentation_logits(model, x.detach())
        if not self.targeted:
            check_mask(labels, z.shape, "masks")
            clean = sample_dice(class_argmax(z), labels, z.shape[1])
            return {"mask": labels, "clean_dice": clean.to(x.dtype)}
        check_mask(labels, z.shape, "target masks")
        n0 = (class_argmax(z) != labels).flatten(1).sum(dim=1).to(x.dtype)
        return {"mask": labels, "x0": x.detach(), "n0": n0}

    def logits_and_mask(
        self, model: nn.Module, x: torch.Tensor, target: Target
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at ``x`` and the validated mask of ``target``."""
        z = segmentation_logits(model, x)
        mask = _mask_of(target)
        check_mask(mask, z.shape, "target masks" if self.targeted else "masks")
        return z, mask

    def pixel_success(self, pred: torch.Tensor, target: Target) -> torch.Tensor:
        """Targeted: the share of the pixels whose clean prediction differed from the target
        that now agree with it (1 where none differed), what the success rule thresholds.

        Shape:
            - pred: ``(B, *spatial)``; output ``(B,)`` float64.
        """
        mask = _mask_of(target).to(pred.device)
        wrong = (pred != mask).flatten(1).sum(dim=1).double()
        if isinstance(target, dict) and "n0" in target:
            n0 = target["n0"].to(wrong.device).double()
        else:
            n0 = torch.full_like(wrong, float(mask[0].numel()))
        share = 1.0 - wrong / n0.clamp_min(1.0)
        return torch.where(n0 > 0, share, torch.ones_like(share)).clamp(min=0.0)

    def success(self, pred: torch.Tensor, target: Target, num_classes: int) -> torch.Tensor:
        """Per-sample success of a prediction (see the module docstring)."""
        mask = _mask_of(target)
        if not self.targeted:
            dice = sample_dice(pred, mask, num_classes)
            clean = torch.ones_like(dice)
            if isinstance(target, dict) and "clean_dice" in target:
                clean = target["clean_dice"].to(dice.device, dice.dtype)
            return dice < self.broken_fraction * clean
        wrong = (pred != mask).flatten(1).sum(dim=1).double()
        if isinstance(target, dict) and "n0" in target:
            n0 = target["n0"].double()
        else:
            n0 = torch.full_like(wrong, float(mask[0].numel()))
        return wrong <= (1.0 - self.success_fraction) * n0 + 1e-9

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "targeted": self.targeted}
        if self.targeted:
            out["success_fraction"] = self.success_fraction
        else:
            out["broken_fraction"] = self.broken_fraction
        return out


# --------------------------------------------------------------------------------------------
# untargeted (or targeted) dense losses
# --------------------------------------------------------------------------------------------
@OBJECTIVES.register(
    "pixel-ce", summary="Pixel-wise cross-entropy of a segmentation (untargeted or toward a mask)"
)
class PixelCrossEntropy(SegmentationObjective):
    """Mean pixel-wise cross-entropy: maximised away from the true mask, or minimised (negated)
    toward a target mask.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
        CVPR 2015 (the pixel-wise loss); Madry et al., ICLR 2018 (PGD on it).
    """

    name = "pixel-ce"

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        z, mask = self.logits_and_mask(model, x, target)
        ce = F.cross_entropy(z, mask.long(), reduction="none").flatten(1).mean(dim=1)
        pred = class_argmax(z)
        succ = self.success(pred, target, z.shape[1])
        return ObjectiveOutput(-ce if self.targeted else ce, succ, pred, z)


def soft_dice(
    z: torch.Tensor, mask: torch.Tensor, include_background: bool, smooth: float
) -> torch.Tensor:
    """Per-sample soft Dice of the softmax of ``z`` against the one-hot ``mask``, averaged over
    the classes (MONAI ``DiceLoss`` conventions: smoothing in numerator and denominator).

    Shape:
        - z: ``(B, K, *spatial)``; mask ``(B, *spatial)``; output ``(B,)``.
    """
    k = z.shape[1]
    p = torch.softmax(z, dim=1).flatten(2)
    t = F.one_hot(mask.long().flatten(1), k).transpose(1, 2).to(p.dtype)
    if not include_background and k > 1:
        p, t = p[:, 1:], t[:, 1:]
    inter = (p * t).sum(dim=2)
    denom = p.sum(dim=2) + t.sum(dim=2)
    return ((2 * inter + smooth) / (denom + smooth)).mean(dim=1)


@OBJECTIVES.register(
    "soft-dice", summary="Soft Dice loss of a segmentation (untargeted or toward a mask)"
)
class SoftDice(SegmentationObjective):
    """Soft Dice loss ``1 - softDice(softmax(z), onehot(mask))``: maximised away from the true
    mask (untargeted), or minimised (negated) toward a target mask.

    Args:
        targeted: Attack toward the given mask.
        include_background: Average the Dice over the background class too (MONAI's default).
        smooth: Smoothing constant in numerator and denominator.
        broken_fraction: See :class:`SegmentationObjective`.
        success_fraction: See :class:`SegmentationObjective`.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Milletari, Navab, Ahmadi, "V-Net", 3DV 2016.
    """

    name = "soft-dice"

    def __init__(
        self,
        targeted: bool = False,
        include_background: bool = True,
        smooth: float = 1e-5,
        broken_fraction: float = 0.5,
        success_fraction: float = 0.99,
    ) -> None:
        super().__init__(targeted, broken_fraction, success_fraction)
        if not (isinstance(smooth, (int, float)) and math.isfinite(smooth) and smooth >= 0):
            raise ValueError(f"smooth must be a finite number >= 0, got {smooth!r}")
        self.include_background = bool(include_background)
        self.smooth = float(smooth)

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        z, mask = self.logits_and_mask(model, x, target)
        loss = 1.0 - soft_dice(z, mask, self.include_background, self.smooth)
        pred = class_argmax(z)
        succ = self.success(pred, target, z.shape[1])
        return ObjectiveOutput(-loss if self.targeted else loss, succ, pred, z)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "include_background": self.include_background,
            "smooth": self.smooth,
        }


# --------------------------------------------------------------------------------------------
# ASMA and DAG
# --------------------------------------------------------------------------------------------
@OBJECTIVES.register(
    "asma", summary="ASMA: target-class logits at pixels not yet matching the target, minus L2^2"
)
class ASMALoss(SegmentationObjective):
    """The adaptive segmentation mask loss of ASMA (targeted only).

    ``J(X) = sum_c sum_pixels z_c(X) 1{Y^A = c} 1{pred(X) != c} - w ||X - X_0||_2^2`` with raw
    logits ``z`` and the indicator masks recomputed at every call and held constant (no
    gradient flows through them), so pixels that already match the target contribute nothing.
    Summing over the classes present in ``Y^A`` is the same as gathering ``z`` at the target
    class of every pixel.

    Args:
        distance_weight: Weight ``w`` of the distance term (1 in the paper).
        success_fraction: See :class:`SegmentationObjective`.

    Shape:
        - logits: ``(B, K, *spatial)``; target mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Ozbulak, Van Messem, De Neve, MICCAI 2019, Eq. 2.
    """

    name = "asma"

    def __init__(self, distance_weight: float = 1.0, success_fraction: float = 0.99) -> None:
        super().__init__(True, 0.5, success_fraction)
        if not (
            isinstance(distance_weight, (int, float))
            and math.isfinite(distance_weight)
            and distance_weight >= 0
        ):
            raise ValueError(
                f"distance_weight must be a finite number >= 0, got {distance_weight!r}"
            )
        self.distance_weight = float(distance_weight)

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        if not isinstance(target, dict) or "x0" not in target:
            raise TypeError("the ASMA objective needs the target prepared by ASMALoss.prepare")
        z, mask = self.logits_and_mask(model, x, target)
        pred = class_argmax(z)
        z_target = z.gather(1, mask.long().unsqueeze(1)).squeeze(1)
        adaptive = (pred != mask).to(z.dtype)
        l_pred = (z_target * adaptive).flatten(1).sum(dim=1)
        l_dist = (x - target["x0"]).flatten(1).pow(2).sum(dim=1)
        loss = l_pred - self.distance_weight * l_dist
        return ObjectiveOutput(loss, self.success(pred, target, z.shape[1]), pred, z)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "distance_weight": self.distance_weight}


@OBJECTIVES.register(
    "dag", summary="DAG: target-minus-current logit summed over the pixels not yet fooled"
)
class DAGLoss(SegmentationObjective):
    """The dense adversary generation objective (targeted only).

    ``L(X) = sum_{t in T} [z_{l'_t}(X, t) - z_{l_t}(X, t)]`` over the active set ``T`` of pixels
    whose prediction ``l_t`` differs from the target ``l'_t``, with ``T`` and ``l_t`` held
    constant for the gradient. Its gradient is DAG's step direction ``r_m``; the value is
    ``<= 0`` and reaches 0 when every pixel agrees with the target. Xie et al. compare with the
    original label ``l_t``; taking the currently winning class keeps a pixel that drifted to a
    third class in the active set until it reaches its target (identical while it still holds
    its original label).

    Args:
        success_fraction: Stop rule: share of the initially wrong pixels that must agree with
            the target (0.99: fewer than 1% remain, as in Xie et al.).

    Shape:
        - logits: ``(B, K, *spatial)``; target mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Xie et al., ICCV 2017; Paschali et al., MICCAI 2018.
    """

    name = "dag"

    def __init__(self, success_fraction: float = 0.99) -> None:
        super().__init__(True, 0.5, success_fraction)

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        z, mask = self.logits_and_mask(model, x, target)
        pred = class_argmax(z)
        active = (pred != mask).to(z.dtype)
        diff = z.gather(1, mask.long().unsqueeze(1)) - z.gather(1, pred.unsqueeze(1))
        loss = (diff.squeeze(1) * active).flatten(1).sum(dim=1)
        return ObjectiveOutput(loss, self.success(pred, target, z.shape[1]), pred, z)


_ALIASES = {"ce": "pixel-ce", "pixel-ce": "pixel-ce", "dice": "soft-dice", "soft-dice": "soft-dice"}


def create_segmentation_objective(
    name: str,
    *,
    targeted: bool = False,
    broken_fraction: float = 0.5,
    success_fraction: float = 0.99,
) -> SegmentationObjective:
    """Build a dense segmentation loss by name: ``"ce"``/``"pixel-ce"`` or ``"dice"``/
    ``"soft-dice"``.

    Raises:
        ValueError: For any other name.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in _ALIASES:
        raise ValueError(
            f"unknown segmentation objective {name!r}; expected 'ce' (pixel-wise cross-entropy) "
            "or 'dice' (soft Dice)"
        )
    cls = PixelCrossEntropy if _ALIASES[key] == "pixel-ce" else SoftDice
    return cls(
        targeted=targeted, broken_fraction=broken_fraction, success_fraction=success_fraction
    )
