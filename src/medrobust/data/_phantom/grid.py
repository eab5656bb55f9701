"""Simulation grids, smooth random fields and small array helpers of the ``bus-phantom``."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
#: The smallest lateral simulation grid; smaller outputs are simulated at a multiple of their size
#: and block-averaged.
SIM_BASE = 128
#: The axial axis is simulated this many times finer than the lateral one, so that the RF carrier
#: is sampled above the Nyquist rate.
AXIAL_OVERSAMPLING = 2
#: Point-spread function on the base grid, in simulation pixels (scaled with the grid).
CARRIER_PERIOD = 4.0  # axial pixels
SIGMA_AXIAL = 1.6  # axial pixels
SIGMA_LATERAL = 1.5  # lateral pixels


def smooth_number(n: int) -> int:
    """Smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


@dataclass(frozen=True)
class Grid:
    """The padded simulation grids of one output size (rows = depth z, columns = lateral x).

    Tissue maps live on the *map* grid (``rows x cols``); the RF simulation runs on the *RF* grid,
    which has ``AXIAL_OVERSAMPLING`` times more rows so that the carrier is sampled above the
    Nyquist rate. Both cover the same field of view; the unpadded part is ``sim x sim`` map pixels.
    """

    size: int  # output side
    factor: int  # block-averaging factor from the map grid to the output
    sim: int  # unpadded side of the map grid (size * factor)
    rows: int  # padded rows of the map grid
    cols: int  # padded columns of the map grid
    offset_z: int  # first unpadded row of the map grid
    offset_x: int  # first unpadded column of the map grid
    scale: float  # PSF scale relative to the base grid
    coords_z: FloatArray  # normalised row centres of the map grid, (rows,)
    coords_x: FloatArray  # normalised column centres of the map grid, (cols,)


@functools.lru_cache(maxsize=16)
def grid_for(size: int) -> Grid:
    """The simulation grids of an output side: a multiple of it of at least ``SIM_BASE``, padded
    by three PSF widths on each side to a fast FFT size."""
    factor = max(1, math.ceil(SIM_BASE / size))
    sim = size * factor
    scale = sim / SIM_BASE
    margin_z = math.ceil(3.0 * SIGMA_AXIAL * scale / AXIAL_OVERSAMPLING) + 2
    margin_x = math.ceil(3.0 * SIGMA_LATERAL * scale) + 2
    rows = smooth_number(sim + 2 * margin_z)
    cols = smooth_number(sim + 2 * margin_x)
    oz, ox = (rows - sim) // 2, (cols - sim) // 2
    coords_z = ((np.arange(rows) - oz + 0.5) / sim).astype(np.float32)
    coords_x = ((np.arange(cols) - ox + 0.5) / sim).astype(np.float32)
    return Grid(size, factor, sim, rows, cols, oz, ox, scale, coords_z, coords_x)


@functools.lru_cache(maxsize=32)
def interp_matrix(n_fine: int, n_coarse: int, sim: int, offset: int) -> FloatArray:
    """Gaussian interpolation weights from a coarse lattice to the map grid (unit variance)."""
    fine = (np.arange(n_fine) - offset + 0.5) / sim
    nodes = np.linspace(-0.15, 1.15, n_coarse)
    spacing = nodes[1] - nodes[0]
    w = np.exp(-((fine[:, None] - nodes[None, :]) ** 2) / (2 * (0.7 * spacing) ** 2))
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def smooth_field(coarse: FloatArray, grid: Grid, rows: slice | None = None) -> FloatArray:
    """Upsample coarse unit-variance noise ``(B, c, c)`` to a smooth field on the map grid.

    Shape:
        - returns: ``(B, rows, cols)``, or only the rows selected by ``rows``.
    """
    c = coarse.shape[-1]
    mz = interp_matrix(grid.rows, c, grid.sim, grid.offset_z)[
        rows if rows is not None else slice(None)
    ]
    mx = interp_matrix(grid.cols, c, grid.sim, grid.offset_x)
    # einsum's own loops: these products are tiny, and a threaded BLAS only adds overhead here.
    lateral = np.einsum("bij,kj->bik", coarse, mx)
    out: FloatArray = np.einsum("ri,bic->brc", mz, lateral)
    return out


def window(lo: float, hi: float, coords: FloatArray) -> slice:
    """Index range of the grid pixels whose centres fall in ``[lo, hi]`` (clipped to the grid)."""
    start = int(np.searchsorted(coords, lo, side="left"))
    stop = int(np.searchsorted(coords, hi, side="right"))
    return slice(max(0, start), min(coords.size, max(stop, start + 1)))


def stack(params: list[dict[str, Any]], key: str) -> npt.NDArray[np.float32]:
    """One parameter of every image of a chunk as a float32 array ``(B, ...)``."""
    return np.stack([np.asarray(p[key], dtype=np.float32) for p in params])


def col(values: FloatArray) -> FloatArray:
    """Per-image scalars ``(B,)`` as ``(B, 1, 1)`` for broadcasting over an image."""
    return values[:, None, None]


def sigmoid(x: FloatArray) -> FloatArray:
    """The logistic function, through ``tanh`` (no overflow for large ``|x|``)."""
    out: FloatArray = 0.5 + 0.5 * np.tanh(0.5 * x)
    return out
