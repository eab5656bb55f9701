"""Lesion-free breast tissue of the ``bus-phantom``: reflectivity and scatterer density maps."""

from __future__ import annotations

from typing import Any

import numpy as np

from medrobust.data._phantom.grid import (
    FloatArray,
    Grid,
    col,
    sigmoid,
    smooth_field,
    stack,
    window,
)
from medrobust.data._phantom.params import MAX_LIGAMENTS

#: Depth bands (fractions of the image side) outside which the fat layer and the muscle have
#: negligible weight (their boundaries are drawn in 0.12-0.34 and 0.75-0.96).
FAT_BAND_END = 0.42
MUSCLE_BAND_START = 0.68


def tissue(bg: list[dict[str, Any]], grid: Grid) -> tuple[FloatArray, FloatArray]:
    """Reflectivity (scatterer variance) and scatterer density of the lesion-free tissue.

    Shape:
        - returns: two ``(B, rows, cols)`` float32 maps on the map grid.
    """
    z = grid.coords_z[None, :, None]
    x = grid.coords_x[None, None, :]
    xs = grid.coords_x[None, :]
    edge = np.float32(0.006)
    skin = col(stack(bg, "skin"))
    fw = stack(bg, "fat_wave")
    fat_depth = (
        stack(bg, "fat_base")[:, None]
        + fw[:, 0:1] * np.sin(2 * np.pi * fw[:, 1:2] * xs + fw[:, 2:3])
        + fw[:, 3:4] * np.sin(2 * np.pi * fw[:, 4:5] * xs + fw[:, 5:6])
    )[:, None, :]
    dw = stack(bg, "deep_wave")
    deep_depth = (
        stack(bg, "deep_base")[:, None]
        + dw[:, 0:1] * np.sin(2 * np.pi * dw[:, 1:2] * xs + dw[:, 2:3])
    )[:, None, :]
    muscle_on = col(stack(bg, "muscle"))

    # Glandular tissue everywhere first; the superficial and deep bands are blended in below.
    refl = np.exp(col(stack(bg, "sigma_gland")) * smooth_field(stack(bg, "gland_noise"), grid))
    density = np.broadcast_to(col(stack(bg, "p_gland")), refl.shape).copy()

    # Superficial band: coupling gel (anechoic), skin, fat lobules with Cooper's ligaments.
    # Band limits are fixed (deepest possible fat layer, shallowest possible muscle) so that an
    # image never depends on the other images simulated in the same chunk.
    top = window(-1.0, FAT_BAND_END, grid.coords_z)
    zt = z[:, top]
    below_skin = sigmoid((zt - skin) / edge)
    w_fat = below_skin * (1.0 - sigmoid((zt - fat_depth) / edge))
    w_skin = 1.0 - below_skin
    lig = stack(bg, "ligaments")  # (B, L, 6)
    ligaments = np.zeros(w_fat.shape, dtype=np.float32)
    for j in range(MAX_LIGAMENTS):
        if not np.any(lig[:, j, 5] > 0):
            continue
        pos, slope, amp, phase, width, bright = (col(lig[:, j, k]) for k in range(6))
        line = (
            skin
            + pos * (fat_depth - skin)
            + slope * (x - 0.5)
            + amp * np.sin(2 * np.pi * 3.0 * x + phase)
        )
        ligaments += bright * np.exp(-(((zt - line) / np.maximum(width, 1e-6)) ** 2))
    fat_noise = smooth_field(stack(bg, "fat_noise"), grid, rows=top)
    fat = (
        col(stack(bg, "r_fat"))
        * np.exp(col(stack(bg, "sigma_fat")) * fat_noise)
        * (1.0 + ligaments)
    )
    w_gland = 1.0 - w_skin - w_fat
    gel = sigmoid(zt / edge)
    refl[:, top] = gel * (w_skin * col(stack(bg, "r_skin")) + w_fat * fat + w_gland * refl[:, top])
    density[:, top] = w_skin * 0.8 + w_fat * col(stack(bg, "p_fat")) + w_gland * density[:, top]

    # Deep band: striated pectoral muscle (present in most images).
    deep = window(MUSCLE_BAND_START, 2.0, grid.coords_z)
    zd = z[:, deep]
    w_muscle = sigmoid((zd - deep_depth) / edge) * muscle_on
    st = stack(bg, "striation")
    stripe = 2 * np.pi * (zd + col(st[:, 1]) * x) / col(st[:, 0]) + col(st[:, 2])
    muscle = col(stack(bg, "r_muscle")) * (1.0 + 1.5 * (0.5 + 0.5 * np.cos(stripe)) ** 3)
    refl[:, deep] += w_muscle * (muscle - refl[:, deep])
    density[:, deep] += w_muscle * (0.6 - density[:, deep])
    return refl.astype(np.float32), density.astype(np.float32)
