"""Helpers shared by the data tests."""

from __future__ import annotations

import numpy as np


def posterior_region(masks: np.ndarray, pad: int) -> np.ndarray:
    """Boolean ``(N, H, W)``: the lesion, its margin and everything below it in its columns.

    The box spans the lesion's columns widened by ``pad`` pixels on each side, from ``pad`` pixels
    above the lesion's top to the bottom of the image (the posterior acoustic region).
    """
    n, h, w = masks.shape
    region = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        rows, cols = np.nonzero(masks[i])
        top = max(0, rows.min() - pad)
        left, right = max(0, cols.min() - pad), min(w, cols.max() + pad + 1)
        region[i, top:, left:right] = True
    return region
