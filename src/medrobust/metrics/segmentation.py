"""Segmentation metrics and the one Dice/IoU counting kernel.

:func:`class_counts` (per-sample, per-class intersection and sizes from one ``bincount``) is the
kernel every Dice and IoU in medrobust is computed from: the reported metrics (:func:`dice_score`,
:func:`iou_score`, MONAI semantics), the success tests of the segmentation attacks
(:func:`sample_dice`, :func:`target_iou`) and the validation Dice of the training loop
(:func:`dice_per_sample`). :class:`SegmentationStats` is the thin stateful shell (sums and counts).

References:
    Dice, Ecology 1945; Jaccard, 1912; MONAI ``DiceMetric``, ``MeanIoU``,
    ``HausdorffDistanceMetric``; Ozbulak et al., MICCAI 2019 (ASMA's IoU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from medrobust.metrics._masks import boundary, check_pair, directed_distances, spacing_list

__all__ = [
    "SegmentationStats",
    "check_pair",
    "class_counts",
    "dice_per_sample",
    "dice_score",
    "hausdorff_distance",
    "iou_score",
    "pixel_agreement",
    "sample_dice",
    "spacing_list",
    "target_iou",
    "target_present",
]


def class_counts(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample, per-class intersection and the two class sizes: the counting kernel.

    Args:
        pred: Predicted class indices.
        target: True (or target) class indices.
        num_classes: Number of classes ``K`` (inferred from the values when None).

    Returns:
        ``(intersection, pred_size, target_size)``, each float64 ``(B, K)``.

    Raises:
        ValueError: If the shapes differ or there is no spatial axis.

    Shape:
        - pred, target: ``(B, *spatial)``.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction and mask must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    if pred.ndim < 2:
        raise ValueError(f"masks must have shape (B, *spatial), got {tuple(pred.shape)}")
    k = num_classes
    if k is None:
        k = int(max(int(pred.max()), int(target.max()))) + 1 if pred.numel() else 1
    p = pred.flatten(1).long()
    t = target.flatten(1).long()
    b = p.shape[0]
    offsets = (torch.arange(b, device=p.device) * k)[:, None]
    size_p = torch.bincount((p + offsets).flatten(), minlength=b * k).view(b, k)
    size_t = torch.bincount((t + offsets).flatten(), minlength=b * k).view(b, k)
    same = p == t
    inter = torch.bincount((p + offsets)[same], minlength=b * k).view(b, k)
    return inter.double(), size_p.double(), size_t.double()


def dice_score(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    include_background: bool = False,
    ignore_empty: bool = True,
) -> torch.Tensor:
    """Per-sample, per-class Dice of class-index masks (MONAI ``compute_dice`` semantics).

    Args:
        pred: Predicted classes.
        target: Ground-truth classes.
        num_classes: Number of classes ``K``.
        include_background: Keep class 0.
        ignore_empty: NaN where the ground truth lacks the class (else 1 if the prediction
            lacks it too, 0 otherwise).

    Returns:
        Float64 ``(B, K)`` or ``(B, K - 1)`` without background.

    Raises:
        ValueError: For mismatched shapes or classes outside ``[0, K)``.

    Shape:
        - pred, target: ``(B, *spatial)``.

    References:
        Dice, Ecology 1945; MONAI ``DiceMetric``.
    """
    check_pair(pred, target, num_classes)
    inter, sp, st = class_counts(pred, target, num_classes)
    if not include_background:
        inter, sp, st = inter[:, 1:], sp[:, 1:], st[:, 1:]
    denom = sp + st
    value = 2 * inter / denom.clamp_min(1)
    if ignore_empty:
        return torch.where(st > 0, value, torch.full_like(value, math.nan))
    empty = torch.where(denom > 0, torch.zeros_like(value), torch.ones_like(value))
    return torch.where(st > 0, value, empty)


def iou_score(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    include_background: bool = False,
    ignore_empty: bool = True,
) -> torch.Tensor:
    """Per-sample, per-class IoU (Jaccard) of class-index masks (MONAI ``compute_iou``).

    Args:
        pred: Predicted classes.
        target: Ground-truth classes.
        num_classes: Number of classes ``K``.
        include_background: Keep class 0.
        ignore_empty: NaN where the ground truth lacks the class (else 1 where the union is
            empty, 0 otherwise).

    Returns:
        Float64 ``(B, K)`` or ``(B, K - 1)``.

    Raises:
        ValueError: For mismatched shapes or classes outside ``[0, K)``.

    Shape:
        - pred, target: ``(B, *spatial)``.

    References:
        Jaccard, 1912; MONAI ``MeanIoU``.
    """
    check_pair(pred, target, num_classes)
    inter, sp, st = class_counts(pred, target, num_classes)
    if not include_background:
        inter, sp, st = inter[:, 1:], sp[:, 1:], st[:, 1:]
    union = sp + st - inter
    value = inter / union.clamp_min(1)
    if ignore_empty:
        return torch.where(st > 0, value, torch.full_like(value, math.nan))
    return torch.where(union > 0, value, torch.ones_like(value))


def hausdorff_distance(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    percentile: float = 95.0,
    include_background: bool = False,
    spacing: float | Sequence[float] | None = None,
) -> torch.Tensor:
    """Per-sample, per-class symmetric percentile Hausdorff distance (HD95 by default).

    For each direction the ``percentile`` of the distances from one boundary to the other is
    taken (linear interpolation), and the larger of the two directions is reported, as in
    MONAI's ``compute_hausdorff_distance(percentile=95)``.

    Args:
        pred: Predicted classes.
        target: Ground-truth classes.
        num_classes: Number of classes ``K``.
        percentile: In ``[0, 100]``; 100 gives the classical Hausdorff distance.
        include_background: Keep class 0.
        spacing: Voxel size, one number or one per spatial dim (default 1).

    Returns:
        Float64 ``(B, K)`` or ``(B, K - 1)``; NaN where the prediction or the ground truth of a
        class is empty (as MONAI with a percentile; its classical distance, without percentile,
        is inf there).

    Raises:
        ValueError: For mismatched shapes, classes outside ``[0, K)``, a percentile outside
            ``[0, 100]`` or a spacing of the wrong length.

    Shape:
        - pred, target: ``(B, *spatial)``.

    References:
        Huttenlocher et al., IEEE TPAMI 1993; MONAI ``HausdorffDistanceMetric``.
    """
    check_pair(pred, target, num_classes)
    if not (isinstance(percentile, (int, float)) and 0 <= percentile <= 100):
        raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
    sp = spacing_list(spacing, pred.ndim - 1)
    p_np = pred.detach().cpu().numpy()
    t_np = target.detach().cpu().numpy()
    first = 0 if include_background else 1
    out = torch.full((pred.shape[0], num_classes - first), math.nan, dtype=torch.float64)
    q = float(percentile) / 100.0
    for i in range(pred.shape[0]):
        for c in range(first, num_classes):
            pm, tm = p_np[i] == c, t_np[i] == c
            if not pm.any() or not tm.any():
                continue
            ep, et = boundary(pm), boundary(tm)
            d1 = torch.from_numpy(directed_distances(ep, et, sp))
            d2 = torch.from_numpy(directed_distances(et, ep, sp))
            out[i, c - first] = max(float(torch.quantile(d1, q)), float(torch.quantile(d2, q)))
    return out


class SegmentationStats:
    """Accumulates Dice, IoU, HD95, surface Dice and pixel accuracy over batches (sums and
    counts only).

    Args:
        num_classes: Number of classes ``K >= 2``.
        include_background: Include class 0 in Dice/IoU/HD95/surface Dice.
        hd95: Compute the 95th-percentile Hausdorff distance and the surface Dice (each costs
            distance transforms per sample and class).
        spacing: Voxel size (mm) for the Hausdorff distance and the surface Dice; without it
            both are in voxels.
        class_names: Names of the ``K`` classes (default their indices).
        tolerance: Boundary tolerance of the surface Dice, in mm with a spacing, else voxels.

    Example:
        >>> stats = SegmentationStats(num_classes=2)
        >>> stats.update(model(x).argmax(1), masks)
        >>> stats.compute()["mean_dice"]
    """

    def __init__(
        self,
        num_classes: int,
        *,
        include_background: bool = False,
        hd95: bool = True,
        spacing: float | Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        tolerance: float = 1.0,
    ) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} entries for {num_classes} classes"
            )
        self.num_classes = num_classes
        self.include_background = bool(include_background)
        self.hd95 = bool(hd95)
        self.spacing = spacing
        self.tolerance = float(tolerance)
        names = (
            list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        )
        self.class_names = names if include_background else names[1:]
        c = len(self.class_names)
        keys = ("dice", "iou", "hd95", "surface_dice")
        self._sum = {k: torch.zeros(c, dtype=torch.float64) for k in keys}
        self._cnt = {k: torch.zeros(c, dtype=torch.int64) for k in keys}
        self._sample_sum = dict.fromkeys(keys, 0.0)
        self._sample_cnt = dict.fromkeys(keys, 0)
        self.n = 0
        self.pixels = 0
        self.correct = 0
        self.hd95_undefined = 0

    def _add(self, key: str, values: torch.Tensor) -> None:
        ok = ~torch.isnan(values)
        filled = torch.where(ok, values, torch.zeros_like(values))
        self._sum[key] += filled.sum(dim=0)
        self._cnt[key] += ok.sum(dim=0)
        per_class = ok.sum(dim=1)
        has = per_class > 0
        self._sample_sum[key] += float((filled.sum(dim=1)[has] / per_class[has]).sum())
        self._sample_cnt[key] += int(has.sum())

    def rows(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample measurements of a batch, without adding them: ``dice``, ``iou`` (and
        ``hd95`` and ``surface_dice``) ``(B, C)``, ``correct`` and ``pixels`` ``(B,)`` and
        ``hd95_undefined`` ``(B,)`` (classes present in the ground truth whose HD95 is
        undefined). Feed them to
        :meth:`add_rows` (possibly later: the rows are what an audit checkpoints).

        Raises:
            ValueError: For mismatched shapes or classes (see :func:`dice_score`).

        Shape:
            - pred, target: ``(B, *spatial)``.
        """
        pred, target = pred.detach().cpu(), target.detach().cpu()
        kw = {"include_background": self.include_background}
        out = {
            "dice": dice_score(pred, target, self.num_classes, **kw),
            "iou": iou_score(pred, target, self.num_classes, **kw),
            "correct": (pred == target).flatten(1).sum(dim=1).double(),
            "pixels": torch.full((pred.shape[0],), float(pred[0].numel()), dtype=torch.float64),
        }
        if self.hd95:
            from medrobust.metrics.surface import surface_distance_metrics

            hd, nsd = surface_distance_metrics(
                pred, target, self.num_classes, tolerance=self.tolerance,
                spacing=self.spacing, percentile=95.0, **kw,
            )  # fmt: skip
            hd = hd if hd is not None else torch.full_like(nsd, math.nan)  # (never: 95 given)
            defined_gt = target_present(target, self.num_classes, self.include_background)
            out["hd95"] = hd
            out["hd95_undefined"] = (torch.isnan(hd) & defined_gt).sum(dim=1).double()
            out["surface_dice"] = nsd
        return out

    def add_rows(self, rows: dict[str, torch.Tensor]) -> None:
        """Add per-sample rows from :meth:`rows`."""
        self._add("dice", rows["dice"])
        self._add("iou", rows["iou"])
        if self.hd95:
            self.hd95_undefined += int(rows["hd95_undefined"].sum())
            self._add("hd95", rows["hd95"])
        if self.hd95 and "surface_dice" in rows:  # absent from checkpoints of older versions
            self._add("surface_dice", rows["surface_dice"])
        self.n += int(rows["dice"].shape[0])
        self.pixels += int(rows["pixels"].sum())
        self.correct += int(rows["correct"].sum())

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Add a batch; returns its per-sample Dice matrix ``(B, C)`` (NaN where undefined).

        Raises:
            ValueError: For mismatched shapes or classes (see :func:`dice_score`).

        Shape:
            - pred, target: ``(B, *spatial)``.
        """
        rows = self.rows(pred, target)
        self.add_rows(rows)
        return rows["dice"]

    def _means(self, key: str) -> tuple[dict[str, float | None], float | None]:
        s, c = self._sum[key], self._cnt[key]
        per = {
            name: (float(s[i] / c[i]) if int(c[i]) else None)
            for i, name in enumerate(self.class_names)
        }
        n = self._sample_cnt[key]
        return per, (self._sample_sum[key] / n if n else None)

    def compute(self) -> dict[str, Any]:
        """``{"n", "pixel_accuracy", "dice", "mean_dice", "iou", "mean_iou", "hd95",
        "mean_hd95", "hd95_undefined", "surface_dice", "mean_surface_dice", "distance_unit",
        "surface_tolerance"}``; per-class values are dicts by class name, None where no sample
        defines them; ``distance_unit`` is ``"mm"`` with a spacing, else ``"voxel"``."""
        dice, mean_dice = self._means("dice")
        iou, mean_iou = self._means("iou")
        out: dict[str, Any] = {
            "n": self.n,
            "pixel_accuracy": self.correct / self.pixels if self.pixels else None,
            "mean_dice": mean_dice,
            "dice": dice,
            "mean_iou": mean_iou,
            "iou": iou,
        }
        if self.hd95:
            hd, mean_hd = self._means("hd95")
            out.update({"mean_hd95": mean_hd, "hd95": hd, "hd95_undefined": self.hd95_undefined})
            nsd, mean_nsd = self._means("surface_dice")
            out.update({"mean_surface_dice": mean_nsd, "surface_dice": nsd})
            out["distance_unit"] = "voxel" if self.spacing is None else "mm"
            out["surface_tolerance"] = self.tolerance
        return out


def target_present(
    target: torch.Tensor, num_classes: int, include_background: bool
) -> torch.Tensor:
    """``(B, C)`` bool: whether each class occurs in each ground-truth mask."""
    t = target.flatten(1).long()
    b = t.shape[0]
    off = (torch.arange(b) * num_classes)[:, None]
    cnt = torch.bincount((t + off).flatten(), minlength=b * num_classes).view(b, num_classes)
    present = cnt > 0
    return present if include_background else present[:, 1:]


def target_iou(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Per-sample IoU between a prediction and a (target) mask, as ASMA measures it.

    For binary masks this is ASMA's foreground IoU ``sum(p * t) / sum(min(p + t, 1))``. For
    multi-class masks it is the mean over the foreground classes (``c >= 1``) present in the
    prediction or the mask of the per-class IoU. For a target with no foreground at all (the
    all-background target that erases a lesion) the foreground IoU is undefined, so the IoU of
    the background class is reported instead: 1 when the prediction is all background too, the
    share of background pixels predicted as such otherwise (never 0 beside a reached target).

    Args:
        pred: Predicted class indices.
        target: Target class indices.
        num_classes: Number of classes ``K`` (inferred from the values when None).

    Returns:
        Float64 ``(B,)`` in ``[0, 1]``: 1 for identical masks, 0 for disjoint foregrounds.

    Raises:
        ValueError: If the shapes differ.

    Shape:
        - pred, target: ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Ozbulak et al., MICCAI 2019 (the IoU of the ASMA code).
    """
    inter_all, sp, st = class_counts(pred, target, num_classes)
    union_all = sp + st - inter_all
    union, inter = union_all[:, 1:], inter_all[:, 1:]
    present = union > 0
    ratio = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(union))
    n = present.sum(dim=1)
    foreground = ratio.sum(dim=1) / n.clamp_min(1)
    background = inter_all[:, 0] / union_all[:, 0].clamp_min(1)
    no_target_fg = st[:, 1:].sum(dim=1) == 0
    out = torch.where(no_target_fg, background, foreground)
    return torch.where(n > 0, out, torch.ones_like(out))


def sample_dice(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int | None = None
) -> torch.Tensor:
    """Per-sample mean foreground Dice used for the success of untargeted attacks.

    The mean over the foreground classes present in the prediction or the mask of
    ``2 |P_c ∩ T_c| / (|P_c| + |T_c|)``; a class absent from both is left out, and a sample
    where both are all background scores 1. (The reported metrics follow MONAI's semantics
    instead; see :func:`dice_score`.)

    Args:
        pred: Predicted class indices.
        target: True class indices.
        num_classes: Number of classes ``K`` (inferred when None).

    Returns:
        Float64 ``(B,)`` in ``[0, 1]``.

    Raises:
        ValueError: If the shapes differ.

    Shape:
        - pred, target: ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Dice, "Measures of the amount of ecologic association between species", Ecology 1945.
    """
    inter, sp, st = class_counts(pred, target, num_classes)
    denom = (sp + st)[:, 1:]
    inter = inter[:, 1:]
    present = denom > 0
    ratio = torch.where(present, 2 * inter / denom.clamp_min(1), torch.zeros_like(denom))
    n = present.sum(dim=1)
    return torch.where(
        n > 0, ratio.sum(dim=1) / n.clamp_min(1), torch.ones_like(n, dtype=ratio.dtype)
    )


def pixel_agreement(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample pixel accuracy ``mean(pred == target)`` (ASMA's PA against the target).

    Shape:
        - pred, target: ``(B, *spatial)``.
        - Output: float64 ``(B,)``.

    Raises:
        ValueError: If the shapes differ.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction and mask must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    return (pred == target).flatten(1).double().mean(dim=1)


def dice_per_sample(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean foreground Dice of each sample (argmax prediction vs mask), for validation.

    Classes ``1 .. K-1`` are foreground. A class absent from the ground truth of a sample is
    left out of that sample's mean (MONAI's ``ignore_empty`` convention); a sample without any
    foreground class in its ground truth gets ``nan``.

    Args:
        logits: Segmentation logits.
        mask: Ground-truth class indices.

    Returns:
        Per-sample Dice in ``[0, 1]`` or ``nan``.

    Shape:
        - logits: ``(B, K, *spatial)``; mask: ``(B, *spatial)``; output ``(B,)``.

    References:
        Dice, "Measures of the amount of ecologic association between species", Ecology 1945.
    """
    num_classes = logits.shape[1]
    if num_classes < 2:
        return torch.full((logits.shape[0],), math.nan, dtype=torch.float64)
    inter, sp, st = class_counts(logits.argmax(dim=1), mask, num_classes)
    inter, sp, st = inter[:, 1:], sp[:, 1:], st[:, 1:]
    dice = torch.where(st > 0, 2.0 * inter / (sp + st).clamp_min(1.0), math.nan)
    return dice.nanmean(dim=1)
