"""Validation and boundary helpers shared by the segmentation metrics (private).

References:
    MONAI ``get_mask_edges`` (the boundary as the mask minus its erosion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["boundary", "check_pair", "directed_distances", "spacing_list"]


def check_pair(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
    """Validate two class-index masks ``(B, *spatial)`` of the same shape with classes in
    ``[0, K)``.

    Raises:
        TypeError: If either is not a tensor.
        ValueError: For a float or bool dtype, different shapes, no spatial axis, ``K < 2``
            or classes outside ``[0, K)``.
    """
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape (B, *spatial), got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )
    if pred.ndim < 2:
        raise ValueError(f"masks must have shape (B, *spatial), got {tuple(pred.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"{name} holds classes in [{int(t.min())}, {int(t.max())}] but num_classes is "
                f"{num_classes}"
            )


def spacing_list(spacing: float | Sequence[float] | None, nd: int) -> list[float]:
    """The voxel size as one positive float per spatial dim (1 where ``spacing`` is None).

    Raises:
        ValueError: If ``spacing`` has the wrong length or a value that is not > 0.
    """
    if spacing is None:
        return [1.0] * nd
    sp = [float(spacing)] * nd if isinstance(spacing, (int, float)) else list(map(float, spacing))
    if len(sp) != nd:
        raise ValueError(f"spacing needs {nd} values (one per spatial dim), got {len(sp)}")
    if not all(math.isfinite(v) and v > 0 for v in sp):
        raise ValueError(f"spacing must hold finite values > 0, got {sp}")
    return sp


def boundary(mask: np.ndarray) -> np.ndarray:
    """The voxels of a boolean mask with a neighbour outside it (the mask minus its erosion)."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, border_value=0)


def directed_distances(a: np.ndarray, b: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distances from every boundary voxel of ``a`` to the nearest boundary voxel of ``b``."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(~b, sampling=spacing)
    return np.asarray(dist[a], dtype=np.float64)
