"""``bus-phantom``: simulated B-mode breast ultrasound with benign and malignant lesions.

The embedded default data set of medrobust. Every image is simulated from first principles of
B-mode imaging, deterministically from ``(seed, stream, index)``:

1. **Tissue model.** A reflectivity map (scatterer variance) with skin, a subcutaneous fat layer
   crossed by Cooper's ligaments, heterogeneous fibroglandular tissue and, in most images, the
   striated pectoral muscle; smooth random fields give every layer its own texture.
2. **Lesion.** A hypoechoic mass whose boundary is an ellipse modulated by angular harmonics and
   radial spicules. Benign masses tend to be oval, circumscribed, wider-than-tall, with posterior
   acoustic enhancement; malignant masses tend to be irregular or spiculated, taller-than-wide,
   with indistinct margins, an echogenic halo and posterior acoustic shadowing. Every feature is
   drawn from class-conditional distributions that overlap, so the task is learnable but not
   trivially separable.
3. **Propagation.** Depth attenuation partly compensated by time-gain compensation (TGC), and an
   extra attenuation (shadow) or reduced attenuation (enhancement) integrated along the beam path
   through the lesion, so the posterior effect follows the lesion's own thickness per column.
4. **Scatterers.** Gaussian-amplitude point scatterers present with a tissue-dependent density
   (scatterers per resolution cell), plus band-limited receiver noise, on an RF grid sampled
   twice as finely in depth as laterally so that the carrier is above the Nyquist rate.
5. **Imaging.** Convolution with a point-spread function (Gaussian-enveloped cosine axially,
   Gaussian laterally) and envelope detection by the Hilbert transform along the axial axis, both
   by batched FFTs; post-detection averaging of the envelope power over the axial oversampling,
   log compression to a dynamic range of 50-60 dB mapped to ``[0, 1]``, and block averaging to
   the output size (outputs below 128 pixels are simulated at an integer multiple of their size).

No per-image normalisation is applied: the grey level of tissue away from the lesion has the same
distribution in both classes, so a classifier can only learn the label from the lesion and its
posterior region (see the shortcut control ``lesion=False``).

References:
    Wagner et al., "Statistics of speckle in ultrasound B-scans", IEEE Trans. Sonics Ultrason.
    30(3), 1983 (scatterer model and speckle statistics); Stavros et al., "Solid breast nodules:
    use of sonography to distinguish between benign and malignant lesions", Radiology 196(1), 1995
    (benign/malignant sonographic features); Al-Dhabyani et al., "Dataset of breast ultrasound
    images", Data in Brief 28, 2020 (the BUSI layout this phantom imitates).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

#: Bumped whenever the simulation changes, so cached arrays from an older generator are ignored.
GENERATOR_VERSION = 1

#: The smallest lateral simulation grid; smaller outputs are simulated at a multiple of their size
#: and block-averaged.
_SIM_BASE = 128
#: The axial axis is simulated this many times finer than the lateral one, so that the RF carrier
#: is sampled above the Nyquist rate.
_AXIAL_OVERSAMPLING = 2
#: Point-spread function on the base grid, in simulation pixels (scaled with the grid).
_CARRIER_PERIOD = 4.0  # axial pixels
_SIGMA_AXIAL = 1.6  # axial pixels
_SIGMA_LATERAL = 1.5  # lateral pixels
#: Level (dB) of the top of the displayed dynamic range; mean glandular tissue sits near 0 dB.
_TOP_DB = 30.0
#: Angular samples used to tabulate a lesion boundary r(theta).
_N_THETA = 1024
#: Harmonic orders used for boundary irregularity.
_HARMONICS = np.arange(2, 13)
#: Maximum number of spicules and Cooper's ligaments per image.
_MAX_SPICULES = 12
_MAX_LIGAMENTS = 6
#: Coarse-grid sizes of the smooth random texture fields.
_COARSE_GLAND = 10
_COARSE_FAT = 16
_COARSE_LESION = 12
#: Labels are assigned in blocks of this many consecutive indices with an exact class count.
_LABEL_BLOCK = 16
#: Depth bands (fractions of the image side) outside which the fat layer and the muscle have
#: negligible weight (their boundaries are drawn in 0.12-0.34 and 0.75-0.96).
_FAT_BAND_END = 0.42
_MUSCLE_BAND_START = 0.68
#: Spawn-key tags of the independent random streams of one image.
#: Keys are ``(stream, _KIND_IMAGE, index, part)`` for images and ``(stream, _KIND_LABELS, block)``
#: for label blocks, so no two streams can ever share a key.
_KIND_IMAGE = 0
_KIND_LABELS = 1
_KEY_BACKGROUND = 0
_KEY_LESION = 1

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class PhantomArrays:
    """Arrays of a generated ``bus-phantom`` set.

    Attributes:
        images: B-mode images in ``[0, 1]``, float32, shape ``(N, 1, H, W)``; depth runs down the
            rows (axial axis = ``H``), the transducer is at row 0.
        masks: Lesion masks at the output resolution, uint8 in ``{0, 1}``, shape ``(N, H, W)``.
        labels: Class labels, int64, shape ``(N,)``: 0 = benign, 1 = malignant.
        meta: Per-image generation parameters, each an array of shape ``(N,)``: ``center_x``,
            ``center_z`` (fractions of the image side), ``radius`` (equivalent radius, fraction of
            the side), ``aspect_ratio`` (width / height before rotation), ``angle`` (radians),
            ``irregularity`` (harmonic amplitude), ``spicules`` (count), ``margin_width``,
            ``contrast_db`` (lesion echogenicity relative to glandular tissue), ``posterior_db``
            (two-way gain behind the lesion centre: > 0 enhancement, < 0 shadowing), ``halo``
            (rim strength), ``dynamic_range_db`` and ``index`` (the generator index).
        seed: The seed the arrays were generated from.
        size: Output side length in pixels.
        stream: The stream the arrays were generated from (see :func:`generate_bus_phantom`).
        lesion: Whether lesions were rendered (False for the shortcut control).
    """

    images: FloatArray
    masks: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    meta: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    seed: int = 0
    size: int = 128
    stream: int = 0
    lesion: bool = True

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def generate_bus_phantom(
    n: int,
    size: int = 128,
    seed: int = 0,
    malignant_fraction: float = 0.5,
    *,
    stream: int = 0,
    start: int = 0,
    lesion: bool = True,
    chunk_size: int = 32,
) -> PhantomArrays:
    """Simulate ``n`` B-mode breast-ultrasound images with lesion masks and labels.

    Image ``i`` depends only on ``(seed, stream, start + i)`` and ``malignant_fraction``:
    generating 10 or 100 images with the same seed gives the same first 10. Each image draws
    from its own :class:`numpy.random.SeedSequence` children (background, lesion), and labels are
    assigned in blocks of 16 consecutive indices holding an exact number of malignant cases, so
    any prefix is balanced to within one block.

    Args:
        n: Number of images (>= 0).
        size: Output side length in pixels (square images, >= 32). Outputs smaller than 128 are
            simulated at an integer multiple of ``size`` and block-averaged, so the speckle and
            the field of view match across sizes.
        seed: Non-negative integer seed.
        malignant_fraction: Fraction of malignant images, in ``[0, 1]``.
        stream: Independent stream number (>= 0). Different streams never share images;
            :class:`~medrobust.data.BusPhantom` uses 1, 2 and 3 for train, val and test, and a
            direct call uses 0.
        start: Index of the first image (to generate a window of a longer sequence).
        lesion: If False, render the lesion-free background of every image (the same tissue,
            speckle and gain as with ``lesion=True``) while returning the labels, masks and
            metadata the lesion would have had. Used as a control for shortcut learning.
        chunk_size: Images simulated together (memory/speed trade-off only; never changes the
            result).

    Returns:
        The images, masks, labels and per-image metadata.

    Raises:
        TypeError: If an integer argument is not an integer.
        ValueError: If an argument is out of range.

    Shape:
        - images: ``(n, 1, size, size)`` float32 in ``[0, 1]``.
        - masks: ``(n, size, size)`` uint8.
        - labels: ``(n,)`` int64.

    References:
        Wagner et al., IEEE Trans. Sonics Ultrason. 30(3), 1983; Stavros et al., Radiology
        196(1), 1995.
    """
    n = _check_int("n", n, minimum=0)
    size = _check_int("size", size, minimum=32)
    seed = _check_int("seed", seed, minimum=0)
    stream = _check_int("stream", stream, minimum=0)
    start = _check_int("start", start, minimum=0)
    chunk_size = _check_int("chunk_size", chunk_size, minimum=1)
    if isinstance(malignant_fraction, bool) or not isinstance(malignant_fraction, (int, float)):
        raise TypeError(
            f"malignant_fraction must be a float in [0, 1], got {type(malignant_fraction).__name__}"
        )
    fraction = float(malignant_fraction)
    if not (0.0 <= fraction <= 1.0):
        raise ValueError(f"malignant_fraction must lie in [0, 1], got {malignant_fraction!r}")

    indices = np.arange(start, start + n, dtype=np.int64)
    labels = _labels_for(indices, seed, stream, fraction)
    images = np.empty((n, 1, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.uint8)
    bounds = [(lo, min(n, lo + chunk_size)) for lo in range(0, n, chunk_size)]

    def run(lo: int, hi: int) -> dict[str, npt.NDArray[np.float64]]:
        img, msk, meta = _simulate_chunk(
            indices[lo:hi], labels[lo:hi], seed=seed, stream=stream, size=size, lesion=lesion
        )
        images[lo:hi, 0] = img
        masks[lo:hi] = msk
        return meta

    # Chunks are independent and NumPy releases the GIL in its array kernels and FFTs, so a few
    # threads overlap well; results never depend on the number of workers.
    workers = min(_max_workers(), len(bounds))
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            meta_parts = list(pool.map(lambda b: run(*b), bounds))
    else:
        meta_parts = [run(lo, hi) for lo, hi in bounds]
    keys = list(meta_parts[0]) if meta_parts else list(_META_KEYS)
    meta_all = {
        k: (np.concatenate([m[k] for m in meta_parts]) if meta_parts else np.zeros(0)) for k in keys
    }
    logger.debug("generated %d bus-phantom images of %dx%d (seed=%d)", n, size, size, seed)
    return PhantomArrays(
        images=images,
        masks=masks,
        labels=labels,
        meta=meta_all,
        seed=seed,
        size=size,
        stream=stream,
        lesion=bool(lesion),
    )


_META_KEYS = (
    "index",
    "center_x",
    "center_z",
    "radius",
    "aspect_ratio",
    "angle",
    "irregularity",
    "spicules",
    "margin_width",
    "contrast_db",
    "posterior_db",
    "halo",
    "dynamic_range_db",
)


def _max_workers() -> int:
    """Threads used for generation: the CPUs available to this process, at most 4."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def _labels_for(
    indices: npt.NDArray[np.int64], seed: int, stream: int, fraction: float
) -> npt.NDArray[np.int64]:
    """Labels of the given indices: exact class counts per block of consecutive indices."""
    labels = np.zeros(indices.shape, dtype=np.int64)
    if indices.size == 0:
        return labels
    blocks = indices // _LABEL_BLOCK
    for b in np.unique(blocks):
        total = _LABEL_BLOCK * fraction
        n_mal = int(math.floor(total * (b + 1) + 0.5) - math.floor(total * b + 0.5))
        block = np.zeros(_LABEL_BLOCK, dtype=np.int64)
        block[:n_mal] = 1
        block = _rng(seed, stream, _KIND_LABELS, int(b)).permutation(block)
        sel = blocks == b
        labels[sel] = block[indices[sel] % _LABEL_BLOCK]
    return labels


# --------------------------------------------------------------------------- grids and filters


def _smooth_number(n: int) -> int:
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
class _Grid:
    """The padded simulation grids of one output size (rows = depth z, columns = lateral x).

    Tissue maps live on the *map* grid (``rows x cols``); the RF simulation runs on the *RF* grid,
    which has ``_AXIAL_OVERSAMPLING`` times more rows so that the carrier is sampled above the
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
def _grid(size: int) -> _Grid:
    factor = max(1, math.ceil(_SIM_BASE / size))
    sim = size * factor
    scale = sim / _SIM_BASE
    margin_z = math.ceil(3.0 * _SIGMA_AXIAL * scale / _AXIAL_OVERSAMPLING) + 2
    margin_x = math.ceil(3.0 * _SIGMA_LATERAL * scale) + 2
    rows = _smooth_number(sim + 2 * margin_z)
    cols = _smooth_number(sim + 2 * margin_x)
    oz, ox = (rows - sim) // 2, (cols - sim) // 2
    coords_z = ((np.arange(rows) - oz + 0.5) / sim).astype(np.float32)
    coords_x = ((np.arange(cols) - ox + 0.5) / sim).astype(np.float32)
    return _Grid(size, factor, sim, rows, cols, oz, ox, scale, coords_z, coords_x)


@functools.lru_cache(maxsize=16)
def _analytic_psf_filter(rows: int, cols: int, scale: float) -> npt.NDArray[np.complex64]:
    """Transfer function of PSF convolution followed by the axial Hilbert transform.

    The PSF ``h(z, x) = exp(-z²/2σz²) cos(2π z/λ) exp(-x²/2σx²)`` is sampled on the periodic RF
    grid (centred at pixel 0) and transformed by FFT. Multiplying its spectrum by the one-sided
    axial weights ``(1, 2, ..., 2, 1)`` on the non-negative axial frequencies (and 0 on the
    negative ones) gives the spectrum of the analytic signal, i.e. the RF line plus ``i`` times
    its Hilbert transform along the axial axis; its modulus is the envelope. Only the
    non-negative axial frequencies are returned (rows ``0 .. rows // 2``), matching
    ``numpy.fft.rfft`` along the axial axis. The filter is scaled so that a uniform
    unit-variance scatterer field gives an envelope with unit mean power.

    Shape:
        - returns: ``(rows // 2 + 1, cols)`` complex64.
    """
    dz = np.fft.fftfreq(rows, d=1.0 / rows)  # signed pixel offsets 0, 1, ..., -1
    dx = np.fft.fftfreq(cols, d=1.0 / cols)
    sz, sx, lam = _SIGMA_AXIAL * scale, _SIGMA_LATERAL * scale, _CARRIER_PERIOD * scale
    axial = np.exp(-(dz**2) / (2 * sz**2)) * np.cos(2 * np.pi * dz / lam)
    lateral = np.exp(-(dx**2) / (2 * sx**2))
    spectrum = np.fft.fft(axial)[:, None] * np.fft.fft(lateral)[None, :]
    filt = spectrum * _one_sided(rows)[:, None]
    filt /= np.sqrt(np.mean(np.abs(filt) ** 2))
    return filt[: rows // 2 + 1].astype(np.complex64)


def _one_sided(n: int) -> npt.NDArray[np.float64]:
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


def _analytic_signal(rf: FloatArray, filt: npt.NDArray[np.complex64]) -> npt.NDArray[np.complex64]:
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


@functools.lru_cache(maxsize=32)
def _interp_matrix(n_fine: int, n_coarse: int, sim: int, offset: int) -> FloatArray:
    """Gaussian interpolation weights from a coarse lattice to the map grid (unit variance)."""
    fine = (np.arange(n_fine) - offset + 0.5) / sim
    nodes = np.linspace(-0.15, 1.15, n_coarse)
    spacing = nodes[1] - nodes[0]
    w = np.exp(-((fine[:, None] - nodes[None, :]) ** 2) / (2 * (0.7 * spacing) ** 2))
    w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
    return w.astype(np.float32)


def _smooth_field(coarse: FloatArray, grid: _Grid, rows: slice | None = None) -> FloatArray:
    """Upsample coarse unit-variance noise ``(B, c, c)`` to a smooth field on the map grid.

    Shape:
        - returns: ``(B, rows, cols)``, or only the rows selected by ``rows``.
    """
    c = coarse.shape[-1]
    mz = _interp_matrix(grid.rows, c, grid.sim, grid.offset_z)[
        rows if rows is not None else slice(None)
    ]
    mx = _interp_matrix(grid.cols, c, grid.sim, grid.offset_x)
    # einsum's own loops: these products are tiny, and a threaded BLAS only adds overhead here.
    lateral = np.einsum("bij,kj->bik", coarse, mx)
    out: FloatArray = np.einsum("ri,bic->brc", mz, lateral)
    return out


@functools.lru_cache(maxsize=1)
def _harmonic_tables() -> tuple[FloatArray, FloatArray, FloatArray]:
    theta = np.linspace(-np.pi, np.pi, _N_THETA, endpoint=False)
    k = _HARMONICS[:, None]
    return (
        theta.astype(np.float32),
        np.cos(k * theta).astype(np.float32),
        np.sin(k * theta).astype(np.float32),
    )


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 + 0.5 * np.tanh(0.5 * x)
    return out


# --------------------------------------------------------------------------- parameters


def _draw_background(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, Any]:
    """Class-independent parameters and noise of one image's tissue, gain and speckle."""
    p: dict[str, Any] = {}
    p["skin"] = rng.uniform(0.02, 0.045)
    p["r_skin"] = rng.uniform(2.0, 4.0)
    p["fat_base"] = rng.uniform(0.12, 0.28)
    p["fat_wave"] = np.array(
        [
            rng.uniform(0.0, 0.04),
            rng.uniform(0.5, 2.0),
            rng.uniform(0, 2 * np.pi),
            rng.uniform(0.0, 0.02),
            rng.uniform(2.0, 4.0),
            rng.uniform(0, 2 * np.pi),
        ]
    )
    p["r_fat"] = rng.uniform(0.15, 0.4)
    p["sigma_fat"] = rng.uniform(0.2, 0.5)
    p["p_fat"] = rng.uniform(0.15, 0.4)
    n_lig = int(rng.integers(2, _MAX_LIGAMENTS + 1))
    lig = np.zeros((_MAX_LIGAMENTS, 6))
    for j in range(n_lig):
        lig[j] = [
            rng.uniform(0.0, 1.0),  # depth position within the fat layer (fraction)
            rng.uniform(-0.9, 0.9),  # slope
            rng.uniform(0.0, 0.03),  # waviness amplitude
            rng.uniform(0, 2 * np.pi),  # waviness phase
            rng.uniform(0.003, 0.007),  # width
            rng.uniform(2.0, 6.0),  # brightness
        ]
    p["ligaments"] = lig
    p["sigma_gland"] = rng.uniform(0.3, 0.6)
    p["p_gland"] = rng.uniform(0.4, 1.0)
    p["deep_base"] = rng.uniform(0.78, 0.93)
    p["deep_wave"] = np.array([rng.uniform(0.0, 0.03), rng.uniform(0.3, 1.5), rng.uniform(0, 6.3)])
    p["muscle"] = float(rng.random() < 0.75)
    p["r_muscle"] = rng.uniform(0.3, 0.7)
    p["striation"] = np.array(
        [rng.uniform(0.02, 0.045), rng.uniform(-0.25, 0.25), rng.uniform(0, 2 * np.pi)]
    )
    p["att_db"] = rng.uniform(-5.0, 1.0)  # residual depth slope after TGC, dB over full depth
    p["gain_db"] = rng.uniform(-2.0, 2.0)
    p["dr_db"] = rng.uniform(50.0, 60.0)
    p["noise_db"] = rng.uniform(-46.0, -40.0)
    p["gland_noise"] = rng.standard_normal((_COARSE_GLAND, _COARSE_GLAND), dtype=np.float32)
    p["fat_noise"] = rng.standard_normal((_COARSE_FAT, _COARSE_FAT), dtype=np.float32)
    p["amplitude"] = rng.standard_normal(shape, dtype=np.float32)
    # Occupancy of each map pixel by a scatterer, as a byte compared with 256 x density.
    rows = shape[0] // _AXIAL_OVERSAMPLING
    occupancy = np.frombuffer(rng.bytes(rows * shape[1]), dtype=np.uint8)
    p["occupancy"] = occupancy.reshape(rows, shape[1])
    return p


def _draw_lesion(rng: np.random.Generator, malignant: bool) -> dict[str, Any]:
    """Lesion parameters from overlapping class-conditional distributions."""
    p: dict[str, Any] = {}
    if malignant:
        radius = rng.uniform(0.075, 0.16)
        aspect = math.exp(rng.normal(math.log(1.0), 0.22))
        angle = rng.normal(0.0, 0.3)
        style = rng.random()
        if style < 0.2:  # circumscribed-looking malignant mass
            irregularity = rng.uniform(0.02, 0.07)
            n_spic = 0
        elif style < 0.6:  # irregular / microlobulated
            irregularity = rng.uniform(0.06, 0.18)
            n_spic = int(rng.integers(0, 4))
        else:  # spiculated
            irregularity = rng.uniform(0.04, 0.14)
            n_spic = int(rng.integers(4, _MAX_SPICULES + 1))
        margin = rng.uniform(0.003, 0.014)
        contrast = rng.uniform(-21.0, -8.0)
        hetero = rng.uniform(0.2, 0.6)
        u = rng.random()
        if u < 0.65:
            posterior = rng.uniform(-12.0, -3.0)
        elif u < 0.92:
            posterior = rng.normal(0.0, 1.0)
        else:
            posterior = rng.uniform(1.0, 4.0)
        rim = rng.random() < 0.35
        halo = rng.uniform(0.6, 2.0) if rim else 0.0
        halo_width = rng.uniform(0.01, 0.025)
        edge_shadow = rng.uniform(3.0, 8.0) if rng.random() < 0.1 else 0.0
    else:
        radius = rng.uniform(0.07, 0.15)
        aspect = math.exp(rng.normal(math.log(1.5), 0.2))
        angle = rng.normal(0.0, 0.18)
        lobulated = rng.random() < 0.3  # gently macrolobulated (e.g. fibroadenoma)
        irregularity = rng.uniform(0.0, 0.05) if not lobulated else rng.uniform(0.05, 0.1)
        n_spic = 0
        margin = rng.uniform(0.002, 0.008)
        contrast = rng.uniform(-20.0, -6.0)
        hetero = rng.uniform(0.1, 0.4)
        u = rng.random()
        if u < 0.65:
            posterior = rng.uniform(2.0, 7.0)
        elif u < 0.92:
            posterior = rng.normal(0.0, 1.0)
        else:
            posterior = rng.uniform(-5.0, -2.0)
        rim = rng.random() < 0.35
        halo = rng.uniform(0.8, 2.5) if rim else 0.0
        halo_width = rng.uniform(0.004, 0.009)
        edge_shadow = rng.uniform(3.0, 8.0) if rng.random() < 0.3 else 0.0
    # Low harmonics dominate smooth (benign) outlines; malignant outlines keep more high orders.
    decay = 1.2 if not malignant else 0.6
    amps = rng.standard_normal(_HARMONICS.size) / _HARMONICS**decay
    amps *= irregularity / max(1e-9, float(np.sqrt(np.sum(amps**2) / 2)))
    phases = rng.uniform(0, 2 * np.pi, _HARMONICS.size)
    spic = np.zeros((_MAX_SPICULES, 3))
    for j in range(n_spic):
        spic[j] = [rng.uniform(-np.pi, np.pi), rng.uniform(0.25, 0.8), rng.uniform(0.05, 0.12)]
    p.update(
        radius=radius,
        aspect=aspect,
        angle=angle,
        irregularity=irregularity,
        harm_cos=amps * np.cos(phases),
        harm_sin=amps * np.sin(phases),
        spicules=spic,
        n_spicules=n_spic,
        margin=margin,
        contrast=contrast,
        hetero=hetero,
        posterior=posterior,
        halo=halo,
        halo_width=halo_width,
        edge_shadow=edge_shadow,
        density=rng.uniform(0.2, 0.8),
        center_x=rng.uniform(0.3, 0.7),
        center_z=rng.uniform(0.33, 0.58),
        lesion_noise=rng.standard_normal((_COARSE_LESION, _COARSE_LESION), dtype=np.float32),
    )
    return p


def _stack(params: list[dict[str, Any]], key: str) -> npt.NDArray[np.float32]:
    return np.stack([np.asarray(p[key], dtype=np.float32) for p in params])


# --------------------------------------------------------------------------- geometry


def _boundary_table(les: list[dict[str, Any]]) -> tuple[FloatArray, FloatArray]:
    """Tabulate each lesion's boundary radius r(theta) in its own (rotated) frame.

    Returns:
        ``(table, extent)``: radii ``(B, N_THETA)`` and the boundary's bounding box relative to the
        centre in image axes ``(B, 4)`` as ``(x_min, x_max, z_min, z_max)``.
    """
    theta, cos_k, sin_k = _harmonic_tables()
    radius = _stack(les, "radius")[:, None]
    aspect = _stack(les, "aspect")[:, None]
    a = radius * np.sqrt(aspect)  # lateral semi-axis
    b = radius / np.sqrt(aspect)  # axial semi-axis
    c, s = np.cos(theta)[None], np.sin(theta)[None]
    ellipse = a * b / np.sqrt((b * c) ** 2 + (a * s) ** 2)
    modulation = np.einsum("bk,kt->bt", _stack(les, "harm_cos"), cos_k) - np.einsum(
        "bk,kt->bt", _stack(les, "harm_sin"), sin_k
    )
    table = ellipse * np.clip(1.0 + modulation, 0.5, 1.7)
    spic = _stack(les, "spicules")  # (B, J, 3): angle, length, width
    diff = np.remainder(theta[None, None, :] - spic[:, :, :1] + np.pi, 2 * np.pi) - np.pi
    bumps = spic[:, :, 1:2] * np.exp(-(diff**2) / (2 * spic[:, :, 2:3] ** 2 + 1e-12))
    table = (table + radius * bumps.sum(axis=1)).astype(np.float32)
    angle = _stack(les, "angle")[:, None]
    bx = table * np.cos(theta + angle)
    bz = table * np.sin(theta + angle)
    extent = np.stack([bx.min(1), bx.max(1), bz.min(1), bz.max(1)], axis=1).astype(np.float32)
    return table, extent


def _polar(
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
    theta, _, _ = _harmonic_tables()
    bound = np.interp(np.arctan2(v, u), theta, table, period=2 * np.pi)
    return rho.astype(np.float32), bound.astype(np.float32)


def _window(lo: float, hi: float, coords: FloatArray) -> slice:
    """Index range of the grid pixels whose centres fall in ``[lo, hi]`` (clipped to the grid)."""
    start = int(np.searchsorted(coords, lo, side="left"))
    stop = int(np.searchsorted(coords, hi, side="right"))
    return slice(max(0, start), min(coords.size, max(stop, start + 1)))


# --------------------------------------------------------------------------- simulation


def _col(values: FloatArray) -> FloatArray:
    """Per-image scalars ``(B,)`` as ``(B, 1, 1)`` for broadcasting over an image."""
    return values[:, None, None]


def _tissue(bg: list[dict[str, Any]], grid: _Grid) -> tuple[FloatArray, FloatArray]:
    """Reflectivity (scatterer variance) and scatterer density of the lesion-free tissue.

    Shape:
        - returns: two ``(B, rows, cols)`` float32 maps on the map grid.
    """
    z = grid.coords_z[None, :, None]
    x = grid.coords_x[None, None, :]
    xs = grid.coords_x[None, :]
    edge = np.float32(0.006)
    skin = _col(_stack(bg, "skin"))
    fw = _stack(bg, "fat_wave")
    fat_depth = (
        _stack(bg, "fat_base")[:, None]
        + fw[:, 0:1] * np.sin(2 * np.pi * fw[:, 1:2] * xs + fw[:, 2:3])
        + fw[:, 3:4] * np.sin(2 * np.pi * fw[:, 4:5] * xs + fw[:, 5:6])
    )[:, None, :]
    dw = _stack(bg, "deep_wave")
    deep_depth = (
        _stack(bg, "deep_base")[:, None]
        + dw[:, 0:1] * np.sin(2 * np.pi * dw[:, 1:2] * xs + dw[:, 2:3])
    )[:, None, :]
    muscle_on = _col(_stack(bg, "muscle"))

    # Glandular tissue everywhere first; the superficial and deep bands are blended in below.
    refl = np.exp(_col(_stack(bg, "sigma_gland")) * _smooth_field(_stack(bg, "gland_noise"), grid))
    density = np.broadcast_to(_col(_stack(bg, "p_gland")), refl.shape).copy()

    # Superficial band: coupling gel (anechoic), skin, fat lobules with Cooper's ligaments.
    # Band limits are fixed (deepest possible fat layer, shallowest possible muscle) so that an
    # image never depends on the other images simulated in the same chunk.
    top = _window(-1.0, _FAT_BAND_END, grid.coords_z)
    zt = z[:, top]
    below_skin = _sigmoid((zt - skin) / edge)
    w_fat = below_skin * (1.0 - _sigmoid((zt - fat_depth) / edge))
    w_skin = 1.0 - below_skin
    lig = _stack(bg, "ligaments")  # (B, L, 6)
    ligaments = np.zeros(w_fat.shape, dtype=np.float32)
    for j in range(_MAX_LIGAMENTS):
        if not np.any(lig[:, j, 5] > 0):
            continue
        pos, slope, amp, phase, width, bright = (_col(lig[:, j, k]) for k in range(6))
        line = (
            skin
            + pos * (fat_depth - skin)
            + slope * (x - 0.5)
            + amp * np.sin(2 * np.pi * 3.0 * x + phase)
        )
        ligaments += bright * np.exp(-(((zt - line) / np.maximum(width, 1e-6)) ** 2))
    fat_noise = _smooth_field(_stack(bg, "fat_noise"), grid, rows=top)
    fat = (
        _col(_stack(bg, "r_fat"))
        * np.exp(_col(_stack(bg, "sigma_fat")) * fat_noise)
        * (1.0 + ligaments)
    )
    w_gland = 1.0 - w_skin - w_fat
    gel = _sigmoid(zt / edge)
    refl[:, top] = gel * (
        w_skin * _col(_stack(bg, "r_skin")) + w_fat * fat + w_gland * refl[:, top]
    )
    density[:, top] = w_skin * 0.8 + w_fat * _col(_stack(bg, "p_fat")) + w_gland * density[:, top]

    # Deep band: striated pectoral muscle (present in most images).
    deep = _window(_MUSCLE_BAND_START, 2.0, grid.coords_z)
    zd = z[:, deep]
    w_muscle = _sigmoid((zd - deep_depth) / edge) * muscle_on
    st = _stack(bg, "striation")
    stripe = 2 * np.pi * (zd + _col(st[:, 1]) * x) / _col(st[:, 0]) + _col(st[:, 2])
    muscle = _col(_stack(bg, "r_muscle")) * (1.0 + 1.5 * (0.5 + 0.5 * np.cos(stripe)) ** 3)
    refl[:, deep] += w_muscle * (muscle - refl[:, deep])
    density[:, deep] += w_muscle * (0.6 - density[:, deep])
    return refl.astype(np.float32), density.astype(np.float32)


def _insert_lesion(
    refl: FloatArray,
    density: FloatArray,
    gain_db: FloatArray,
    les: dict[str, Any],
    table: FloatArray,
    extent: FloatArray,
    center: tuple[float, float],
    grid: _Grid,
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
    rows = _window(cz + extent[2] - pad, cz + extent[3] + pad, grid.coords_z)
    cols = _window(cx + extent[0] - pad_x, cx + extent[1] + pad_x, grid.coords_x)
    zc, xc = grid.coords_z[rows], grid.coords_x[cols]
    rho, bound = _polar(zc, xc, cx, cz, float(les["angle"]), table)
    inside = _sigmoid((bound - rho) / np.float32(margin))
    noise = np.asarray(les["lesion_noise"], dtype=np.float32)
    c = noise.shape[0]
    mz = _interp_matrix(grid.rows, c, grid.sim, grid.offset_z)[rows]
    mx = _interp_matrix(grid.cols, c, grid.sim, grid.offset_x)[cols]
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
        below = _window(cz, 2.0, grid.coords_z)
        zb = grid.coords_z[below][:, None]
        fall = _sigmoid((zb - cz) / np.float32(0.01))
        for xe in (cx + float(extent[0]), cx + float(extent[1])):
            gain_db[below, cols] -= edge_db * fall * np.exp(-(((xc - xe) / 0.012) ** 2))


def _lesion_mask(
    size: int, center: tuple[float, float], angle: float, table: FloatArray, extent: FloatArray
) -> npt.NDArray[np.uint8]:
    """Binary lesion mask at the output resolution (pixel centres inside the boundary)."""
    cx, cz = center
    coords = ((np.arange(size) + 0.5) / size).astype(np.float32)
    mask = np.zeros((size, size), dtype=np.uint8)
    pad = 2.0 / size
    rows = _window(cz + extent[2] - pad, cz + extent[3] + pad, coords)
    cols = _window(cx + extent[0] - pad, cx + extent[1] + pad, coords)
    rho, bound = _polar(coords[rows], coords[cols], cx, cz, angle, table)
    mask[rows, cols] = rho <= bound
    # The centre always lies inside the lesion; keep at least that pixel for tiny lesions.
    mask[min(size - 1, int(cz * size)), min(size - 1, int(cx * size))] = 1
    return mask


def _simulate_chunk(
    indices: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int64],
    *,
    seed: int,
    stream: int,
    size: int,
    lesion: bool,
) -> tuple[FloatArray, npt.NDArray[np.uint8], dict[str, npt.NDArray[np.float64]]]:
    grid = _grid(size)
    bsz = indices.size
    up = _AXIAL_OVERSAMPLING
    rf_shape = (grid.rows * up, grid.cols)
    bg = [
        _draw_background(_rng(seed, stream, _KIND_IMAGE, int(i), _KEY_BACKGROUND), rf_shape)
        for i in indices
    ]
    les = [
        _draw_lesion(_rng(seed, stream, _KIND_IMAGE, int(i), _KEY_LESION), bool(y))
        for i, y in zip(indices, labels, strict=True)
    ]
    refl, density = _tissue(bg, grid)
    z = grid.coords_z[None, :, None]
    gain_db = np.broadcast_to(
        _col(_stack(bg, "att_db")) * z + _col(_stack(bg, "gain_db")), refl.shape
    ).astype(np.float32)

    # ---- lesion geometry (always computed: masks and metadata exist even without a lesion)
    table, extent = _boundary_table(les)
    cx = np.clip(_stack(les, "center_x"), 0.04 - extent[:, 0], 0.96 - extent[:, 1])
    cz = np.clip(_stack(les, "center_z"), 0.1 - extent[:, 2], 0.88 - extent[:, 3])
    angle = _stack(les, "angle")
    masks = np.empty((bsz, size, size), dtype=np.uint8)
    for b in range(bsz):
        center = (float(cx[b]), float(cz[b]))
        masks[b] = _lesion_mask(size, center, float(angle[b]), table[b], extent[b])
        if lesion:
            _insert_lesion(
                refl[b], density[b], gain_db[b], les[b], table[b], extent[b], center, grid
            )
    refl *= 10.0 ** (gain_db / 10.0)

    # ---- scatterers on the RF grid: Gaussian amplitudes present at a tissue-dependent density
    # (scatterers per resolution cell), plus receiver noise. A sum of independent Gaussians is one
    # Gaussian with the summed variance, so one amplitude draw per RF pixel serves both.
    density = np.clip(density, 1.0 / 256.0, 1.0)
    occupancy = np.stack([np.asarray(p["occupancy"]) for p in bg])
    occupied = np.repeat(occupancy < density * 256.0, up, axis=1)
    variance = np.where(occupied, np.repeat(refl / density, up, axis=1), 0.0)
    variance += _col(10.0 ** (_stack(bg, "noise_db") / 10.0))
    scatter = _stack(bg, "amplitude") * np.sqrt(variance, dtype=np.float32)

    # ---- PSF convolution and envelope detection (Hilbert transform along depth)
    analytic = _analytic_signal(scatter, _analytic_psf_filter(*rf_shape, grid.scale))
    oz, ox = grid.offset_z * up, grid.offset_x
    analytic = analytic[:, oz : oz + grid.sim * up, ox : ox + grid.sim]
    power = analytic.real**2 + analytic.imag**2
    # Post-detection low-pass: average the envelope power over each axial group of RF samples.
    power = power.reshape(bsz, grid.sim, up, grid.sim).mean(axis=2)

    # ---- log compression to the dynamic range, then block-average to the output size
    dr = _col(_stack(bg, "dr_db"))
    level = np.float32(10.0 / math.log(10.0)) * np.log(power + np.float32(1e-12))
    img = np.clip((level - _TOP_DB + dr) / dr, 0.0, 1.0)
    if grid.factor > 1:
        f = grid.factor
        img = img.reshape(bsz, size, f, size, f).mean(axis=(2, 4))

    meta: dict[str, npt.NDArray[np.float64]] = {
        "index": indices.astype(np.float64),
        "center_x": cx.astype(np.float64),
        "center_z": cz.astype(np.float64),
        "radius": _stack(les, "radius").astype(np.float64),
        "aspect_ratio": _stack(les, "aspect").astype(np.float64),
        "angle": angle.astype(np.float64),
        "irregularity": _stack(les, "irregularity").astype(np.float64),
        "spicules": _stack(les, "n_spicules").astype(np.float64),
        "margin_width": _stack(les, "margin").astype(np.float64),
        "contrast_db": _stack(les, "contrast").astype(np.float64),
        "posterior_db": _stack(les, "posterior").astype(np.float64),
        "halo": _stack(les, "halo").astype(np.float64),
        "dynamic_range_db": _stack(bg, "dr_db").astype(np.float64),
    }
    return img.astype(np.float32), masks, meta
