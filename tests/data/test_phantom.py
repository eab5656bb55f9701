"""Tests of the bus-phantom generator: determinism, formats, physics and class structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, signal

from medrobust.data import PhantomArrays, generate_bus_phantom
from medrobust.data._phantom import grid as phantom_grid
from medrobust.data._phantom.grid import grid_for
from medrobust.data._phantom.imaging import analytic_psf_filter, analytic_signal

from .helpers import posterior_region


def _compactness(masks: np.ndarray) -> np.ndarray:
    """Squared (4-connected) perimeter over 4π·area: larger for irregular/spiculated shapes."""
    m = masks.astype(bool)
    perimeter = (m[:, 1:, :] != m[:, :-1, :]).sum((1, 2)) + (m[:, :, 1:] != m[:, :, :-1]).sum(
        (1, 2)
    )
    return perimeter**2 / (4 * np.pi * m.sum((1, 2)))


def _height_over_width(masks: np.ndarray) -> np.ndarray:
    """Ratio of the axial to the lateral standard deviation of the mask pixels."""
    out = []
    for m in masks:
        rows, cols = np.nonzero(m)
        out.append(rows.std() / cols.std())
    return np.array(out)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_arrays() -> None:
    a = generate_bus_phantom(6, size=64, seed=3)
    b = generate_bus_phantom(6, size=64, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.labels, b.labels)
    for key in a.meta:
        np.testing.assert_array_equal(a.meta[key], b.meta[key])


def test_prefix_property_and_chunking_do_not_change_images() -> None:
    short = generate_bus_phantom(5, size=64, seed=4)
    long = generate_bus_phantom(20, size=64, seed=4, chunk_size=7)
    np.testing.assert_array_equal(short.images, long.images[:5])
    np.testing.assert_array_equal(short.masks, long.masks[:5])
    np.testing.assert_array_equal(short.labels, long.labels[:5])
    window = generate_bus_phantom(4, size=64, seed=4, start=10)
    np.testing.assert_array_equal(window.images, long.images[10:14])
    np.testing.assert_array_equal(window.labels, long.labels[10:14])


def test_different_seeds_and_streams_differ() -> None:
    a = generate_bus_phantom(4, size=64, seed=0)
    b = generate_bus_phantom(4, size=64, seed=1)
    c = generate_bus_phantom(4, size=64, seed=0, stream=2)
    for other in (b, c):
        for i in range(4):
            assert not np.array_equal(a.images[i], other.images[i])
        assert np.abs(a.images - other.images).mean() > 0.05


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("size", [64, 128, 224])
def test_shapes_dtypes_and_range(size: int) -> None:
    n = 3 if size < 224 else 2
    out = generate_bus_phantom(n, size=size, seed=5)
    assert isinstance(out, PhantomArrays)
    assert len(out) == n
    assert out.images.shape == (n, 1, size, size) and out.images.dtype == np.float32
    assert out.masks.shape == (n, size, size) and out.masks.dtype == np.uint8
    assert out.labels.shape == (n,) and out.labels.dtype == np.int64
    assert np.isfinite(out.images).all()
    assert out.images.min() >= 0.0 and out.images.max() <= 1.0
    # A real B-mode image: a spread of grey levels, not a constant or a saturated picture.
    assert 0.15 < float(out.images.mean()) < 0.65
    assert float(out.images.std()) > 0.05
    assert set(np.unique(out.masks)) <= {0, 1}
    assert set(np.unique(out.labels)) <= {0, 1}
    for key, values in out.meta.items():
        assert values.shape == (n,), key


@pytest.mark.parametrize("size", [32, 100])
def test_other_square_sizes_work(size: int) -> None:
    out = generate_bus_phantom(2, size=size, seed=0)
    assert out.images.shape == (2, 1, size, size)
    assert out.masks.reshape(2, -1).sum(1).min() > 0


def test_zero_images() -> None:
    out = generate_bus_phantom(0, size=64)
    assert out.images.shape == (0, 1, 64, 64) and out.labels.shape == (0,)


def test_masks_non_empty_and_lesion_inside_the_image(phantom_200: PhantomArrays) -> None:
    masks = phantom_200.masks
    area = masks.reshape(len(masks), -1).sum(1)
    assert area.min() > 0.005 * 128 * 128  # at least ~80 pixels
    border = masks[:, 0, :].any(1) | masks[:, -1, :].any(1)
    border |= masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    assert not border.any(), "a lesion touches the image border"
    # Lesions sit in the glandular zone, below the subcutaneous fat.
    rows = [np.nonzero(m)[0] for m in masks]
    assert min(r.min() for r in rows) > 0.08 * 128


def test_class_balance_is_exact_per_block() -> None:
    out = generate_bus_phantom(64, size=32, seed=9)
    assert out.labels.sum() == 32
    for block in range(4):
        assert out.labels[16 * block : 16 * (block + 1)].sum() == 8
    skewed = generate_bus_phantom(64, size=32, seed=9, malignant_fraction=0.25)
    assert skewed.labels.sum() == 16
    assert generate_bus_phantom(16, size=32, malignant_fraction=0.0).labels.sum() == 0
    assert generate_bus_phantom(16, size=32, malignant_fraction=1.0).labels.sum() == 16


def test_balance_of_a_larger_set(phantom_200: PhantomArrays) -> None:
    # 12 full blocks of 16 hold exactly 96 malignant cases; the last 8 images hold 0..8.
    assert 96 <= int(phantom_200.labels.sum()) <= 104


# --------------------------------------------------------------------------- physics


def test_analytic_signal_matches_psf_convolution_and_scipy_hilbert() -> None:
    rows, cols, scale = 64, 48, 1.0
    rng = np.random.default_rng(0)
    field = rng.standard_normal((1, rows, cols)).astype(np.float32)
    ours = analytic_signal(field, analytic_psf_filter(rows, cols, scale))[0]
    # Reference: the same PSF sampled in space, circular convolution, then scipy's Hilbert
    # transform along the axial axis.
    dz = np.arange(-rows // 2, rows // 2)[:, None]
    dx = np.arange(-cols // 2, cols // 2)[None, :]
    psf = (
        np.exp(-(dz**2) / (2 * phantom_grid.SIGMA_AXIAL**2))
        * np.cos(2 * np.pi * dz / phantom_grid.CARRIER_PERIOD)
        * np.exp(-(dx**2) / (2 * phantom_grid.SIGMA_LATERAL**2))
    )
    rf = ndimage.convolve(field[0].astype(np.float64), psf, mode="wrap")
    reference = signal.hilbert(rf, axis=0)
    # Our filter is normalised to unit output power; compare up to that scale.
    gain = np.sqrt(np.mean(np.abs(ours) ** 2) / np.mean(np.abs(reference) ** 2))
    np.testing.assert_allclose(ours, reference * gain, atol=2e-3 * np.abs(ours).max())


def test_envelope_of_a_uniform_medium_is_fully_developed_speckle() -> None:
    grid = grid_for(128)
    rng = np.random.default_rng(1)
    shape = (4, grid.rows * 2, grid.cols)
    field = rng.standard_normal(shape).astype(np.float32)
    analytic = analytic_signal(field, analytic_psf_filter(shape[1], shape[2], grid.scale))
    intensity = np.abs(analytic) ** 2
    # Circular complex Gaussian field: exponential intensity, mean 1 (normalised), SNR 1, and
    # real/imaginary parts uncorrelated with equal power.
    assert abs(intensity.mean() - 1.0) < 0.05
    assert abs(intensity.std() / intensity.mean() - 1.0) < 0.08
    assert abs(np.mean(analytic.real**2) - np.mean(analytic.imag**2)) < 0.05
    assert abs(np.mean(analytic.real * analytic.imag)) < 0.03


def test_lesion_is_hypoechoic_and_lesion_false_keeps_the_background() -> None:
    with_lesion = generate_bus_phantom(8, size=128, seed=2)
    without = generate_bus_phantom(8, size=128, seed=2, lesion=False)
    np.testing.assert_array_equal(with_lesion.labels, without.labels)
    np.testing.assert_array_equal(with_lesion.masks, without.masks)
    region = posterior_region(with_lesion.masks, pad=12)
    darker = []
    for i in range(8):
        inside = with_lesion.masks[i].astype(bool)
        # The lesion is darker than the same place without it.
        lesion_mean = with_lesion.images[i, 0][inside].mean()
        darker.append(without.images[i, 0][inside].mean() - lesion_mean)
        # Away from the lesion and its posterior region, the two images are the same tissue.
        far = ~region[i]
        diff = np.abs(with_lesion.images[i, 0][far] - without.images[i, 0][far])
        assert diff.max() < 0.02
    assert min(darker) > 0.04 and np.mean(darker) > 0.1


# --------------------------------------------------------------------------- class structure


def test_malignant_shapes_are_more_irregular_and_taller(phantom_200: PhantomArrays) -> None:
    y = phantom_200.labels
    compact = _compactness(phantom_200.masks)
    assert compact[y == 1].mean() > compact[y == 0].mean() + 0.5
    ratio = _height_over_width(phantom_200.masks)
    assert ratio[y == 1].mean() > ratio[y == 0].mean() + 0.15
    # ... but the classes overlap: some malignant masses are as smooth as the median benign one,
    # and some are clearly wider than tall.
    assert (compact[y == 1] < np.median(compact[y == 0])).sum() >= 3
    assert (ratio[y == 1] < 0.8).any()


def test_posterior_shadowing_and_enhancement_by_class(phantom_200: PhantomArrays) -> None:
    y, images, masks = phantom_200.labels, phantom_200.images[:, 0], phantom_200.masks
    region = posterior_region(masks, pad=10)
    relative = []
    for i in range(len(y)):
        rows, cols = np.nonzero(masks[i])
        behind = images[i, rows.max() + 3 :, cols.min() : cols.max() + 1].mean()
        relative.append(behind - images[i][~region[i]].mean())
    rel = np.array(relative)
    assert rel[y == 0].mean() > 0.0 > rel[y == 1].mean()
    # Overlap: some malignant lesions show no shadow, some benign ones no enhancement.
    assert (rel[y == 1] > 0).any() and (rel[y == 0] < 0).any()


def test_no_global_brightness_shortcut(phantom_200: PhantomArrays) -> None:
    y = phantom_200.labels
    region = posterior_region(phantom_200.masks, pad=int(0.08 * 128))
    outside = np.array([phantom_200.images[i, 0][~region[i]].mean() for i in range(len(y))])
    assert abs(outside[y == 0].mean() - outside[y == 1].mean()) < 0.015
    # Speckle contrast (noise level) outside the lesion does not depend on the class either.
    spread = np.array([phantom_200.images[i, 0][~region[i]].std() for i in range(len(y))])
    assert abs(spread[y == 0].mean() - spread[y == 1].mean()) < 0.01
    # Nor does the lesion position.
    for key in ("center_x", "center_z"):
        values = phantom_200.meta[key]
        assert abs(values[y == 0].mean() - values[y == 1].mean()) < 0.04, key


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n": -1}, ValueError, "n must be >= 0"),
        ({"n": 2.5}, TypeError, "n must be an integer"),
        ({"n": 2, "size": 16}, ValueError, "size must be >= 32"),
        ({"n": 2, "size": "64"}, TypeError, "size must be an integer"),
        ({"n": 2, "seed": -3}, ValueError, "seed must be >= 0"),
        (
            {"n": 2, "malignant_fraction": 1.5},
            ValueError,
            r"malignant_fraction must lie in \[0, 1\]",
        ),
        ({"n": 2, "malignant_fraction": "half"}, TypeError, "malignant_fraction must be a float"),
        ({"n": 2, "chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        generate_bus_phantom(**kwargs)  # type: ignore[arg-type]
