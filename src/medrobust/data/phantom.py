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

This module holds the public API and the chunked, threaded driver; the simulation steps live in
:mod:`medrobust.data._phantom`: ``params`` (random draws), ``grid`` (grids and smooth fields),
``tissue`` (step 1), ``lesion`` (step 2 and the masks) and ``imaging`` (steps 4-5).

References:
    Wagner et al., "Statistics of speckle in ultrasound B-scans", IEEE Trans. Sonics Ultrason.
    30(3), 1983 (scatterer model and speckle statistics); Stavros et al., "Solid breast nodules:
    use of sonography to distinguish between benign and malignant lesions", Radiology 196(1), 1995
    (benign/malignant sonographic features); Al-Dhabyani et al., "Dataset of breast ultrasound
    images", Data in Brief 28, 2020 (the BUSI layout this phantom imitates).
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from medrobust.data._phantom.grid import AXIAL_OVERSAMPLING, FloatArray, col, grid_for, stack
from medrobust.data._phantom.imaging import bmode, scatterers
from medrobust.data._phantom.lesion import render_lesions
from medrobust.data._phantom.params import draw_background, draw_lesion
from medrobust.data._phantom.scanner import Scanner, parse_scanner
from medrobust.data._phantom.tissue import tissue

logger = logging.getLogger(__name__)

#: Bumped whenever the simulation changes, so cached arrays from an older generator are ignored.
GENERATOR_VERSION = 1
#: Labels are assigned in blocks of this many consecutive indices with an exact class count.
_LABEL_BLOCK = 16
#: Spawn-key tags of the independent random streams of one image.
#: Keys are ``(stream, _KIND_IMAGE, index, part)`` for images and ``(stream, _KIND_LABELS, block)``
#: for label blocks, so no two streams can ever share a key.
_KIND_IMAGE = 0
_KIND_LABELS = 1
_KEY_BACKGROUND = 0
_KEY_LESION = 1


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
    scanner: str | Scanner | None = None,
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
        scanner: Acquisition settings (a name of
            :data:`~medrobust.data._phantom.scanner.SCANNERS`, a mapping or a ``Scanner``):
            the same tissue, lesions and speckle draws imaged with another PSF width, scatterer
            density, gain or depth compensation. None (the default scanner) leaves every image
            unchanged.

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
    fraction = _check_fraction(malignant_fraction)
    indices = np.arange(start, start + n, dtype=np.int64)
    labels = _labels_for(indices, seed, stream, fraction)
    job = _Job(
        seed=seed, stream=stream, size=size, lesion=bool(lesion), scanner=parse_scanner(scanner)
    )
    images, masks, meta = _simulate_all(indices, labels, job, chunk_size)
    logger.debug("generated %d bus-phantom images of %dx%d (seed=%d)", n, size, size, seed)
    return PhantomArrays(
        images=images,
        masks=masks,
        labels=labels,
        meta=meta,
        seed=seed,
        size=size,
        stream=stream,
        lesion=bool(lesion),
    )


@dataclass(frozen=True)
class _Job:
    """What every chunk of one :func:`generate_bus_phantom` call shares."""

    seed: int
    stream: int
    size: int
    lesion: bool
    scanner: Scanner = field(default_factory=Scanner)


def _check_fraction(malignant_fraction: object) -> float:
    """``malignant_fraction`` as a float in ``[0, 1]`` (TypeError/ValueError otherwise)."""
    if isinstance(malignant_fraction, bool) or not isinstance(malignant_fraction, (int, float)):
        raise TypeError(
            f"malignant_fraction must be a float in [0, 1], got {type(malignant_fraction).__name__}"
        )
    fraction = float(malignant_fraction)
    if not (0.0 <= fraction <= 1.0):
        raise ValueError(f"malignant_fraction must lie in [0, 1], got {malignant_fraction!r}")
    return fraction


def _simulate_all(
    indices: npt.NDArray[np.int64], labels: npt.NDArray[np.int64], job: _Job, chunk_size: int
) -> tuple[FloatArray, npt.NDArray[np.uint8], dict[str, npt.NDArray[np.float64]]]:
    """Simulate the images of ``indices`` chunk by chunk, on a few threads.

    Returns:
        ``(images, masks, meta)`` as in :class:`PhantomArrays`.
    """
    n, size = indices.size, job.size
    images = np.empty((n, 1, size, size), dtype=np.float32)
    masks = np.empty((n, size, size), dtype=np.uint8)
    bounds = [(lo, min(n, lo + chunk_size)) for lo in range(0, n, chunk_size)]

    def run(lo: int, hi: int) -> dict[str, npt.NDArray[np.float64]]:
        img, msk, meta = _simulate_chunk(indices[lo:hi], labels[lo:hi], job)
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
    return images, masks, meta_all


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
    """The independent random stream of ``seed`` named by its spawn ``key``."""
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


def _simulate_chunk(
    indices: npt.NDArray[np.int64], labels: npt.NDArray[np.int64], job: _Job
) -> tuple[FloatArray, npt.NDArray[np.uint8], dict[str, npt.NDArray[np.float64]]]:
    """Simulate one chunk of images: tissue, lesions, gain, speckle and B-mode imaging.

    Returns:
        ``(images, masks, meta)``: images ``(B, size, size)`` float32, masks ``(B, size, size)``
        uint8 and the per-image metadata.
    """
    grid = grid_for(job.size)
    rf_shape = (grid.rows * AXIAL_OVERSAMPLING, grid.cols)
    bg = [
        draw_background(_rng(job.seed, job.stream, _KIND_IMAGE, int(i), _KEY_BACKGROUND), rf_shape)
        for i in indices
    ]
    les = [
        draw_lesion(_rng(job.seed, job.stream, _KIND_IMAGE, int(i), _KEY_LESION), bool(y))
        for i, y in zip(indices, labels, strict=True)
    ]
    refl, density = tissue(bg, grid)
    z = grid.coords_z[None, :, None]
    sc = job.scanner
    att = col(stack(bg, "att_db") + np.float32(sc.attenuation_db))
    gain = col(stack(bg, "gain_db") + np.float32(sc.gain_db))
    gain_db = np.broadcast_to(att * z + gain, refl.shape).astype(np.float32)
    # Lesion geometry is always computed: masks and metadata exist even without a lesion.
    masks, cx, cz = render_lesions(les, (refl, density, gain_db), grid, draw=job.lesion)
    refl *= 10.0 ** (gain_db / 10.0)
    if sc.density != 1.0:
        density = density * np.float32(sc.density)
    img = bmode(scatterers(refl, density, bg), grid, stack(bg, "dr_db"), sc.psf_width)
    return img, masks, _chunk_meta(indices, les, bg, cx, cz)


def _chunk_meta(
    indices: npt.NDArray[np.int64],
    les: list[dict[str, Any]],
    bg: list[dict[str, Any]],
    cx: FloatArray,
    cz: FloatArray,
) -> dict[str, npt.NDArray[np.float64]]:
    """The per-image metadata of a chunk (see :class:`PhantomArrays`), in ``_META_KEYS`` order."""
    return {
        "index": indices.astype(np.float64),
        "center_x": cx.astype(np.float64),
        "center_z": cz.astype(np.float64),
        "radius": stack(les, "radius").astype(np.float64),
        "aspect_ratio": stack(les, "aspect").astype(np.float64),
        "angle": stack(les, "angle").astype(np.float64),
        "irregularity": stack(les, "irregularity").astype(np.float64),
        "spicules": stack(les, "n_spicules").astype(np.float64),
        "margin_width": stack(les, "margin").astype(np.float64),
        "contrast_db": stack(les, "contrast").astype(np.float64),
        "posterior_db": stack(les, "posterior").astype(np.float64),
        "halo": stack(les, "halo").astype(np.float64),
        "dynamic_range_db": stack(bg, "dr_db").astype(np.float64),
    }
