"""Surface Dice (normalised surface distance) of class-index masks, through MONAI.

The surface Dice of a class is the share of the two boundaries (prediction and ground truth)
that lies within ``tolerance`` of the other boundary: 1 when every boundary voxel of each mask
is within the tolerance of the other's, 0 when none is. Unlike the volumetric Dice it scores
where the outline of a lesion is, which is what a clinician contouring it looks at; unlike
HD95 it is bounded and defined whenever both masks hold the class. With a voxel spacing the
tolerance and the distances are in millimetres, else in voxels.

References:
    Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for
    radiotherapy", J. Med. Internet Res. 2021 (surface Dice); MONAI ``compute_surface_dice``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from medrobust.metrics.segmentation import check_pair, spacing_list

__all__ = ["DEFAULT_TOLERANCE", "surface_dice"]

#: Default boundary tolerance: one voxel, or 1 mm when the spacing is known.
DEFAULT_TOLERANCE = 1.0


def surface_dice(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    include_background: bool = False,
    spacing: float | Sequence[float] | None = None,
) -> torch.Tensor:
    """Per-sample, per-class surface Dice at ``tolerance`` (MONAI's ``compute_surface_dice``).

    Args:
        pred: Predicted classes.
        target: Ground-truth classes.
        num_classes: Number of classes ``K``.
        tolerance: Largest boundary distance counted as agreement, in the units of
            ``spacing`` (mm) or voxels when there is none; > 0.
        include_background: Keep class 0.
        spacing: Voxel size, one number or one per spatial dim (default 1).

    Returns:
        Float64 ``(B, K)`` or ``(B, K - 1)`` in ``[0, 1]``; NaN where the ground truth lacks the
        class (as :func:`~medrobust.metrics.segmentation.dice_score` with ``ignore_empty``),
        0 where the prediction lacks a class the ground truth holds.

    Raises:
        ValueError: For mismatched shapes, classes outside ``[0, K)``, a tolerance that is not
            a positive number or a spacing of the wrong length.

    Shape:
        - pred, target: ``(B, *spatial)`` with 2 or 3 spatial dims.

    References:
        Nikolov et al., J. Med. Internet Res. 2021; MONAI ``SurfaceDiceMetric``.
    """
    from monai.metrics import compute_surface_dice

    check_pair(pred, target, num_classes)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not math.isfinite(tolerance)
        or tolerance <= 0
    ):
        raise ValueError(f"tolerance must be a number > 0, got {tolerance!r}")
    nd = pred.ndim - 1
    if nd not in (2, 3):
        raise ValueError(f"surface Dice needs 2-D or 3-D masks, got {nd} spatial dims")
    sp = spacing_list(spacing, nd)
    first = 0 if include_background else 1
    p = pred.detach().cpu().long()
    t = target.detach().cpu().long()
    one_p = F.one_hot(p, num_classes).movedim(-1, 1).float()
    one_t = F.one_hot(t, num_classes).movedim(-1, 1).float()
    with warnings.catch_warnings():
        # MONAI warns for every empty mask (we mask those) and about its own deprecations
        warnings.simplefilter("ignore")
        value = compute_surface_dice(
            one_p,
            one_t,
            class_thresholds=[float(tolerance)] * (num_classes - first),
            include_background=include_background,
            spacing=sp,
        ).double()
    present = one_t.flatten(2).sum(dim=2)[:, first:] > 0
    value = torch.where(present, value.nan_to_num(0.0), torch.full_like(value, math.nan))
    return value
