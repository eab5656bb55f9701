"""B-mode imaging of the ``bus-phantom``: PSF, envelope detection and log compression."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from medrobust.data._phantom.grid import (
    AXIAL_OVERSAMPLING,
    CARRIER_PERIOD,
    SIGMA_AXIAL,
    SIGMA_LATERAL,
    FloatArray,
    Grid,
    col,
    stack,
)

#: Level (dB) of the top of the displayed dynamic range; mean glandular tissue sits near 0 dB.
TOP_DB = 30.0


@functools.lru_cache(maxsize=16)
def analytic_psf_filter(
    rows: int, cols: int, scale: float, width: float = 1.0
) -> npt.NDArray[np.complex64]:
    """Transfer function of PSF convolution followed by the axial Hilbert transform.

    The PSF ``h(z, x) = exp(-z²/2σz²) cos(2π z/λ) exp(-x²/2σx²)`` is sampled on the periodic RF
    grid (centred at pixel 0) and transformed by FFT. Multiplying its spectrum by the one-sided
    axial weights ``(1, 2, ..., 2, 1)`` on the non-negative axial frequencies (and 0 on the
    negative ones) gives the spectrum of the analytic signal, i.e. the RF line plus ``i`` times
    its Hilbert transform along the axial axis; its modulus is the envelope. Only the
    non-negative axial frequencies are returned (rows ``0 .. rows // 2``), matching
    ``numpy.fft.rfft`` along the axial axis. The filter is scaled so that a uniform
    unit-variance scatterer field gives an envelope with unit mean power. ``width`` multiplies
    both envelope widths (not the carrier period): a wider PSF, as of another probe or focus.

    Shape:
        - returns: ``(rows // 2 + 1, cols)`` complex64.
    """
    dz = np.fft.fftfreq(rows, d=1.0 / rows)  # signed pixel offsets 0, 1, ..., -1
    dx = np.fft.fftfreq(cols, d=1.0 / cols)
    sz, sx = SIGMA_AXIAL * scale * width, SIGMA_LATERAL * scale * width
    lam = CARRIER_PERIOD * scale
    axial = np.exp(-(dz**2) / (2 * sz**2)) * np.cos(2 * np.pi * dz / lam)
    lateral = np.exp(-(dx**2) / (2 * sx**2))
    spectrum = np.fft.fft(axial)[:, None] * np.fft.fft(lateral)[None, :]
    filt = spectrum * one_sided(rows)[:, None]
    filt /= np.sqrt(np.mean(np.abs(filt) ** 2))
    return filt[: rows // 2 + 1].astype(np.complex64)


def one_sided(n: int) -> npt.NDArray[np.float64]:
    """FFT-domain weights of the analytic signal: keep DC and Nyquist, double positive bins."""
    h = np.zeros(n)
    h[0] = 1.0
    half = n // 2
    if n % 2 == 0:
        h[1:half] = 2.0
        h[half] = 1.0
    else:
        h[1 : half + 1] = 2.0
    return h


def analytic_signal(rf: FloatArray, filt: npt.NDArray[np.complex64]) -> npt.NDArray[np.complex64]:
    """Analytic signal of the PSF-filtered field by batched FFTs.

    The field is real, so only the non-negative axial frequencies are computed (``rfft`` along
    the axial axis, then a full FFT laterally); the filter zeroes the negative axial frequencies
    anyway, so the inverse transform of the one-sided spectrum is exactly the analytic signal.

    Shape:
        - rf: ``(B, R, C)`` real; filt: ``(R // 2 + 1, C)``; returns ``(B, R, C)`` complex64.
    """
    rows = rf.shape[-2]
    spec = np.fft.fft(np.fft.rfft(rf, axis=-2), axis=-1)
    spec *= filt
    spec = np.fft.ifft(spec, axis=-1)
    full = np.zeros(rf.shape, dtype=np.complex64)
    full[:, : rows // 2 + 1] = spec
    out: npt.NDArray[np.complex64] = np.fft.ifft(full, axis=-2).astype(np.complex64, copy=False)
    return out


def scatterers(refl: FloatArray, density: FloatArray, bg: list[dict[str, Any]]) -> FloatArray:
    """Scatterer amplitudes on the RF grid, receiver noise included.

    Gaussian amplitudes are present at a tissue-dependent density (scatterers per resolution
    cell), plus receiver noise. A sum of independent Gaussians is one Gaussian with the summed
    variance, so one amplitude draw per RF pixel serves both.

    Shape:
        - refl, density: ``(B, rows, cols)`` on the map grid.
        - returns: ``(B, rows * AXIAL_OVERSAMPLING, cols)`` float32 on the RF grid.
    """
    up = AXIAL_OVERSAMPLING
    density = np.clip(density, 1.0 / 256.0, 1.0)
    occupancy = np.stack([np.asarray(p["occupancy"]) for p in bg])
    occupied = np.repeat(occupancy < density * 256.0, up, axis=1)
    variance = np.where(occupied, np.repeat(refl / density, up, axis=1), 0.0)
    variance += col(10.0 ** (stack(bg, "noise_db") / 10.0))
    out: FloatArray = stack(bg, "amplitude") * np.sqrt(variance, dtype=np.float32)
    return out


def bmode(scatter: FloatArray, grid: Grid, dr_db: FloatArray, psf_width: float = 1.0) -> FloatArray:
    """B-mode images from the scatterer field: PSF, envelope, log compression, block averaging.

    The PSF convolution and the envelope detection (Hilbert transform along depth) are one
    filter; the envelope power is averaged over each axial group of RF samples (post-detection
    low-pass), log-compressed to each image's dynamic range ``dr_db`` and block-averaged to the
    output size. ``psf_width`` widens the PSF (see :func:`analytic_psf_filter`).

    Shape:
        - scatter: ``(B, R, C)`` on the RF grid; dr_db: ``(B,)``.
        - returns: ``(B, size, size)`` float32 in ``[0, 1]``.
    """
    up, bsz, size = AXIAL_OVERSAMPLING, scatter.shape[0], grid.size
    filt = analytic_psf_filter(*scatter.shape[1:], grid.scale, float(psf_width))
    analytic = analytic_signal(scatter, filt)
    oz, ox = grid.offset_z * up, grid.offset_x
    analytic = analytic[:, oz : oz + grid.sim * up, ox : ox + grid.sim]
    power = analytic.real**2 + analytic.imag**2
    power = power.reshape(bsz, grid.sim, up, grid.sim).mean(axis=2)
    dr = col(dr_db)
    level = np.float32(10.0 / math.log(10.0)) * np.log(power + np.float32(1e-12))
    img = np.clip((level - TOP_DB + dr) / dr, 0.0, 1.0)
    if grid.factor > 1:
        f = grid.factor
        img = img.reshape(bsz, size, f, size, f).mean(axis=(2, 4))
    out: FloatArray = img.astype(np.float32)
    return out
