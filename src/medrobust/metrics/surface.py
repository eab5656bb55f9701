"""Surface Dice (normalised surface distance) of class-index masks, through MONAI.

The surface Dice of a class is the share of the two boundaries (prediction and ground truth)
that lies within ``tolerance`` of the other boundary: 1 when every boundary voxel of each mask
is within the tolerance of the other's, 0 when none is. Unlike the volumetric Dice it scores
where the outline of a lesion is, which is what a clinician contouring it looks at; unlike
HD95 it is bounded and defined whenever both masks hold the class. With a voxel spacing the
tolerance and the distances are in millimetres, else in voxels.

References:
    Nikolov et al., "Clinically applicable segmentation of head and neck anatomy for
    radiotherapy", J. Med. Internet Res. 2021 (surface Dice); MONAI ``compute_surface_dice``
    (the reference the tests compare with; computed here with the distance transforms that
    also give HD95, about 20x faster than calling MONAI per sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from medrobust.metrics._masks import (
    boundary,
    check_pair,
    directed_distances,
    spacing_list,
)

__all__ = ["DEFAULT_TOLERANCE", "surface_dice", "surface_distance_metrics"]

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
    """Per-sample, per-class surface Dice at ``tolerance`` (MONAI ``compute_surface_dice``).

    The boundary of a mask is the set of its voxels with a neighbour outside it (the mask
    minus its erosion, as MONAI's ``get_mask_edges``); the surface Dice of a class is
    ``(|{p in dP: d(p, dT) <= tau}| + |{t in dT: d(t, dP) <= tau}|) / (|dP| + |dT|)`` with
    Euclidean distances in the units of ``spacing``. One distance transform per direction
    serves both this and :func:`surface_distance_metrics`' HD95.

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
        Nikolov et al., J. Med. Internet Res. 2021; MONAI ``SurfaceDiceMetric`` (the tests
        compare with it).
    """
    return surface_distance_metrics(
        pred, target, num_classes, tolerance=tolerance, include_background=include_background,
        spacing=spacing, percentile=None,
    )[1]  # fmt: skip


def surface_distance_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    include_background: bool = False,
    spacing: float | Sequence[float] | None = None,
    percentile: float | None = 95.0,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The percentile Hausdorff distance and the surface Dice from one pass of distance
    transforms per sample and class.

    Args:
        pred: Predicted classes.
        target: Ground-truth classes.
        num_classes: Number of classes ``K``.
        tolerance: Surface Dice tolerance (see :func:`surface_dice`).
        include_background: Keep class 0.
        spacing: Voxel size, one number or one per spatial dim (default 1).
        percentile: Of the Hausdorff distance (as
            :func:`~medrobust.metrics.segmentation.hausdorff_distance`); None skips it.

    Returns:
        ``(hd, nsd)``, each float64 ``(B, C)``: ``hd`` as ``hausdorff_distance`` (None when
        ``percentile`` is None), ``nsd`` as :func:`surface_dice`.

    Raises:
        ValueError: As :func:`surface_dice`, or a percentile outside ``[0, 100]``.

    Shape:
        - pred, target: ``(B, *spatial)`` with 2 or 3 spatial dims.
    """
    check_pair(pred, target, num_classes)
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, (int, float))
        or not math.isfinite(tolerance)
        or tolerance <= 0
    ):
        raise ValueError(f"tolerance must be a number > 0, got {tolerance!r}")
    if percentile is not None and not (
        isinstance(percentile, (int, float)) and 0 <= percentile <= 100
    ):
        raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
    nd = pred.ndim - 1
    if nd not in (2, 3):
        raise ValueError(f"surface Dice needs 2-D or 3-D masks, got {nd} spatial dims")
    sp = spacing_list(spacing, nd)
    first = 0 if include_background else 1
    shape = (pred.shape[0], num_classes - first)
    hd = torch.full(shape, math.nan, dtype=torch.float64) if percentile is not None else None
    nsd = torch.full(shape, math.nan, dtype=torch.float64)
    p_np, t_np = pred.detach().cpu().numpy(), target.detach().cpu().numpy()
    for i in range(pred.shape[0]):
        for c in range(first, num_classes):
            pm, tm = p_np[i] == c, t_np[i] == c
            if not tm.any():
                continue
            if not pm.any():
                nsd[i, c - first] = 0.0
                continue
            ep, et = boundary(pm), boundary(tm)
            d1, d2 = directed_distances(ep, et, sp), directed_distances(et, ep, sp)
            agree = int((d1 <= tolerance).sum()) + int((d2 <= tolerance).sum())
            nsd[i, c - first] = agree / (d1.size + d2.size)
            if hd is not None:
                q = float(percentile) / 100.0  # type: ignore[arg-type]
                h1 = float(np.quantile(d1, q))
                h2 = float(np.quantile(d2, q))
                hd[i, c - first] = max(h1, h2)
    return hd, nsd
