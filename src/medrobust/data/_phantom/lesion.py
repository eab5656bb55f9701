"""Lesion geometry of the ``bus-phantom``: boundary r(theta), masks and rendering into the maps."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from medrobust.data._phantom.grid import (
    FloatArray,
    Grid,
    interp_matrix,
    sigmoid,
    stack,
    window,
)
from medrobust.data._phantom.params import HARMONICS

#: Angular samples used to tabulate a lesion boundary r(theta).
N_THETA = 1024


@functools.lru_cache(maxsize=1)
def harmonic_tables() -> tuple[FloatArray, FloatArray, FloatArray]:
    """The angles ``theta`` ``(N_THETA,)`` and ``cos(k theta)``, ``sin(k theta)`` per harmonic."""
    theta = np.linspace(-np.pi, np.pi, N_THETA, endpoint=False)
    k = HARMONICS[:, None]
    return (
        theta.astype(np.float32),
        np.cos(k * theta).astype(np.float32),
        np.sin(k * theta).astype(np.float32),
    )


def boundary_table(les: list[dict[str, Any]]) -> tuple[FloatArray, FloatArray]:
    """Tabulate each lesion's boundary radius r(theta) in its own (rotated) frame.

    Returns:
        ``(table, extent)``: radii ``(B, N_THETA)`` and the boundary's bounding box relative to the
        centre in image axes ``(B, 4)`` as ``(x_min, x_max, z_min, z_max)``.
    """
    theta, cos_k, sin_k = harmonic_tables()
    radius = stack(les, "radius")[:, None]
    aspect = stack(les, "aspect")[:, None]
    a = radius * np.sqrt(aspect)  # lateral semi-axis
    b = radius / np.sqrt(aspect)  # axial semi-axis
    c, s = np.cos(theta)[None], np.sin(theta)[None]
    ellipse = a * b / np.sqrt((b * c) ** 2 + (a * s) ** 2)
    modulation = np.einsum("bk,kt->bt", stack(les, "harm_cos"), cos_k) - np.einsum(
        "bk,kt->bt", stack(les, "harm_sin"), sin_k
    )
    table = ellipse * np.clip(1.0 + modulation, 0.5, 1.7)
    spic = stack(les, "spicules")  # (B, J, 3): angle, length, width
    diff = np.remainder(theta[None, None, :] - spic[:, :, :1] + np.pi, 2 * np.pi) - np.pi
    bumps = spic[:, :, 1:2] * np.exp(-(diff**2) / (2 * spic[:, :, 2:3] ** 2 + 1e-12))
    table = (table + radius * bumps.sum(axis=1)).astype(np.float32)
    angle = stack(les, "angle")[:, None]
    bx = table * np.cos(theta + angle)
    bz = table * np.sin(theta + angle)
    extent = np.stack([bx.min(1), bx.max(1), bz.min(1), bz.max(1)], axis=1).astype(np.float32)
    return table, extent


def polar(
    coords_z: FloatArray,
    coords_x: FloatArray,
    center_x: float,
    center_z: float,
    angle: float,
    table: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Distance of every pixel from a lesion centre and the boundary radius in its direction.

    Shape:
        - coords_z, coords_x: ``(Nz,)`` and ``(Nx,)`` normalised pixel-centre coordinates.
        - table: ``(N_THETA,)`` boundary radius over the angle in the lesion frame.
        - returns: two ``(Nz, Nx)`` arrays (rows = depth ``z``, columns = lateral ``x``).
    """
    dz = (coords_z - np.float32(center_z))[:, None]
    dx = (coords_x - np.float32(center_x))[None, :]
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = dx * ca + dz * sa
    v = dz * ca - dx * sa
    rho = np.sqrt(u * u + v * v)
    theta, _, _ = harmonic_tables()
    bound = np.interp(np.arctan2(v, u), theta, table, period=2 * np.pi)
    return rho.astype(np.float32), bound.astype(np.float32)


def lesion_mask(
    size: int, center: tuple[float, float], angle: float, table: FloatArray, extent: FloatArray
) -> npt.NDArray[np.uint8]:
    """Binary lesion mask at the output resolution (pixel centres inside the boundary)."""
    cx, cz = center
    coords = ((np.arange(size) + 0.5) / size).astype(np.float32)
    mask = np.zeros((size, size), dtype=np.uint8)
    pad = 2.0 / size
    rows = window(cz + extent[2] - pad, cz + extent[3] + pad, coords)
    cols = window(cx + extent[0] - pad, cx + extent[1] + pad, coords)
    rho, bound = polar(coords[rows], coords[cols], cx, cz, angle, table)
    mask[rows, cols] = rho <= bound
    # The centre always lies inside the lesion; keep at least that pixel for tiny lesions.
    mask[min(size - 1, int(cz * size)), min(size - 1, int(cx * size))] = 1
    return mask


def insert_lesion(
    refl: FloatArray,
    density: FloatArray,
    gain_db: FloatArray,
    les: dict[str, Any],
    table: FloatArray,
    extent: FloatArray,
    center: tuple[float, float],
    grid: Grid,
) -> None:
    """Render one lesion into its image's maps, in place, inside a window around the lesion.

    The lesion replaces the tissue's reflectivity and scatterer density (with a soft margin whose
    width encodes circumscribed vs indistinct margins), adds an echogenic rim, and changes the
    attenuation integrated along every beam line (column) that crosses it, which darkens
    (shadowing) or brightens (enhancement) everything behind it.
    """
    cx, cz = center
    margin = float(les["margin"])
    halo_w = float(les["halo_width"])
    pad = max(5 * margin, 4 * halo_w) + 3.0 / grid.sim
    pad_x = max(pad, 0.05)
    rows = window(cz + extent[2] - pad, cz + extent[3] + pad, grid.coords_z)
    cols = window(cx + extent[0] - pad_x, cx + extent[1] + pad_x, grid.coords_x)
    zc, xc = grid.coords_z[rows], grid.coords_x[cols]
    rho, bound = polar(zc, xc, cx, cz, float(les["angle"]), table)
    inside = sigmoid((bound - rho) / np.float32(margin))
    noise = np.asarray(les["lesion_noise"], dtype=np.float32)
    c = noise.shape[0]
    mz = interp_matrix(grid.rows, c, grid.sim, grid.offset_z)[rows]
    mx = interp_matrix(grid.cols, c, grid.sim, grid.offset_x)[cols]
    texture = np.einsum("rj,cj->rc", np.einsum("ri,ij->rj", mz, noise), mx)
    lesion_refl = 10.0 ** (float(les["contrast"]) / 10.0) * np.exp(float(les["hetero"]) * texture)
    rim = float(les["halo"]) * np.exp(-(((rho - bound - halo_w) / halo_w) ** 2))
    r = refl[rows, cols]
    refl[rows, cols] = (r + (lesion_refl - r) * inside) * (1.0 + rim)
    d = density[rows, cols]
    density[rows, cols] = d + (float(les["density"]) - d) * inside
    # Posterior enhancement / shadowing: the attenuation change accumulates with the path length
    # through the lesion, normalised so the thickest column gets the full ``posterior`` gain.
    path = np.cumsum(inside, axis=0)
    per_db = float(les["posterior"]) / max(float(path[-1].max()), 1e-6)
    gain_db[rows, cols] += per_db * path
    gain_db[rows.stop :, cols] += per_db * path[-1]
    # Refraction (edge) shadows below the lateral margins of smooth masses.
    edge_db = float(les["edge_shadow"])
    if edge_db > 0:
        below = window(cz, 2.0, grid.coords_z)
        zb = grid.coords_z[below][:, None]
        fall = sigmoid((zb - cz) / np.float32(0.01))
        for xe in (cx + float(extent[0]), cx + float(extent[1])):
            gain_db[below, cols] -= edge_db * fall * np.exp(-(((xc - xe) / 0.012) ** 2))


def render_lesions(
    les: list[dict[str, Any]],
    maps: tuple[FloatArray, FloatArray, FloatArray],
    grid: Grid,
    *,
    draw: bool,
) -> tuple[npt.NDArray[np.uint8], FloatArray, FloatArray]:
    """Place each image's lesion, draw its mask and (if ``draw``) render it into the maps.

    The centre is clipped so the whole boundary stays inside the image, away from the skin and
    the deepest rows.

    Args:
        les: Lesion parameters of each image (:func:`~.params.draw_lesion`).
        maps: Reflectivity, scatterer density and gain (dB) of the chunk, changed in place.
        grid: The simulation grid.
        draw: Whether to render the lesions (False for the lesion-free control).

    Returns:
        ``(masks, center_x, center_z)``: masks ``(B, size, size)`` uint8 and the centres ``(B,)``.
    """
    refl, density, gain_db = maps
    table, extent = boundary_table(les)
    cx = np.clip(stack(les, "center_x"), 0.04 - extent[:, 0], 0.96 - extent[:, 1])
    cz = np.clip(stack(les, "center_z"), 0.1 - extent[:, 2], 0.88 - extent[:, 3])
    angle = stack(les, "angle")
    masks = np.empty((len(les), grid.size, grid.size), dtype=np.uint8)
    for b in range(len(les)):
        center = (float(cx[b]), float(cz[b]))
        masks[b] = lesion_mask(grid.size, center, float(angle[b]), table[b], extent[b])
        if draw:
            maps_b = (refl[b], density[b], gain_db[b])
            insert_lesion(*maps_b, les[b], table[b], extent[b], center, grid)
    return masks, cx, cz
