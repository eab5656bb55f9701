"""Natural corruptions calibrated by SSIM: registry, modality filter, determinism, shapes,
monotone SSIM, calibration to each target and every bad-input path."""

from __future__ import annotations

import pytest
import torch

from medrobust.data import generate_bus_phantom
from medrobust.data.volumes import generate_volume_phantom
from medrobust.evaluation.corruptions import (
    CORRUPTIONS,
    MODALITIES,
    SEVERITY_SSIM,
    Corruption,
    calibrate,
    check_applies,
    corrupt,
    corrupt_at_severity,
    get_corruption,
    list_corruptions,
    mean_ssim,
    ops,
)
from medrobust.metrics import ssim
from medrobust.registry import UnknownNameError

NAMES = list_corruptions()
EXPECTED = {
    "bias-field",
    "blur",
    "gamma",
    "gaussian",
    "ghosting",
    "gibbs",
    "motion",
    "rician",
    "speckle",
    "spike",
}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four 32x32 phantom B-mode images ``(4, 1, 32, 32)`` in [0, 1]."""
    return torch.from_numpy(generate_bus_phantom(4, size=32, seed=0).images)


@pytest.fixture(scope="module")
def volumes() -> torch.Tensor:
    """Two 16^3 phantom volumes ``(2, 1, 16, 16, 16)`` in [0, 1]."""
    return torch.as_tensor(generate_volume_phantom(2, size=16, seed=0).images).float()


def _frac(name: str, f: float) -> float:
    return f * get_corruption(name).strength_range[1]


# --------------------------------------------------------------------------- registry


def test_catalogue_is_complete_and_described() -> None:
    assert set(NAMES) == EXPECTED
    assert len(CORRUPTIONS) == len(EXPECTED)
    for name in NAMES:
        c = get_corruption(name)
        assert isinstance(c, Corruption) and c.name == name
        assert c.source in ("monai", "torchio", "medrobust")
        assert c.description and c.strength_unit
        assert c.strength_range[0] == 0.0 < c.strength_range[1]
        assert set(c.modalities) <= {"any", *MODALITIES}
    assert get_corruption("bias_field").name == "bias-field"  # '_' and '-' interchangeable


def test_sources_are_the_maintained_libraries() -> None:
    by_source = {n: get_corruption(n).source for n in NAMES}
    assert {n for n, s in by_source.items() if s == "torchio"} == {"motion", "ghosting"}
    assert {n for n, s in by_source.items() if s == "medrobust"} == {"gaussian", "speckle"}


def test_severities_are_five_descending_targets() -> None:
    assert len(SEVERITY_SSIM) == 5
    assert list(SEVERITY_SSIM) == sorted(SEVERITY_SSIM, reverse=True)
    assert all(0.0 < t < 1.0 for t in SEVERITY_SSIM)


def test_corruption_rejects_bad_definitions() -> None:
    with pytest.raises(ValueError, match="source"):
        Corruption("x", ("any",), "opencv", "d", (0.0, 1.0), "u", ops.gaussian)
    with pytest.raises(ValueError, match="unknown modalities"):
        Corruption("x", ("pet",), "monai", "d", (0.0, 1.0), "u", ops.gaussian)
    with pytest.raises(ValueError, match="strength_range"):
        Corruption("x", ("any",), "monai", "d", (0.5, 1.0), "u", ops.gaussian)


# --------------------------------------------------------------------------- modality filter


def test_modality_filter() -> None:
    generic = {"gaussian", "blur", "gamma"}
    assert set(list_corruptions("ultrasound")) == generic | {"speckle", "bias-field"}
    assert set(list_corruptions("mri")) == generic | {
        "rician",
        "bias-field",
        "gibbs",
        "spike",
        "motion",
        "ghosting",
    }
    assert set(list_corruptions("ct")) == generic
    assert set(list_corruptions("oct")) == generic | {"speckle"}
    assert set(list_corruptions("any")) == generic
    assert list_corruptions("MR") == list_corruptions("mri")  # alias, case-insensitive
    assert list_corruptions("US") == list_corruptions("ultrasound")


def test_unknown_modality_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown modality 'ultrasond'.*'ultrasound'.*mri, ct"):
        list_corruptions("ultrasond")
    with pytest.raises(ValueError, match="Known modalities"):
        check_applies("blur", "pet")


def test_check_applies_gives_the_skip_reason() -> None:
    assert check_applies("speckle", "ultrasound") is None
    assert check_applies("blur", "ct") is None
    assert check_applies("rician", "ultrasound") == "rician applies to mri, not ultrasound"
    assert check_applies("speckle", "mri") == "speckle applies to ultrasound, oct, not mri"
    reason = check_applies("speckle", "ultrasound", channels=3)
    assert reason is not None and "1-channel" in reason and "3 channels" in reason
    assert check_applies("blur", "dermoscopy", channels=3) is None
    with pytest.raises(UnknownNameError, match="Did you mean 'speckle'"):
        check_applies("speckel", "ultrasound")


def test_check_applies_reports_missing_torchio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "torchio_available", lambda: False)
    reason = check_applies("motion", "mri")
    assert reason is not None and "torchio" in reason
    assert check_applies("rician", "mri") is None


# --------------------------------------------------------------------------- corrupt


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_range_and_determinism_2d(name: str, images: torch.Tensor) -> None:
    s = _frac(name, 0.3)
    a = corrupt(name, images, s, seed=3)
    b = corrupt(name, images, s, seed=3)
    assert a.shape == images.shape and a.dtype == images.dtype and a.device == images.device
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert not torch.allclose(a, images, atol=1e-3), "a 30% strength must change the images"


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_range_3d(name: str, volumes: torch.Tensor) -> None:
    out = corrupt(name, volumes, _frac(name, 0.3), seed=0)
    assert out.shape == volumes.shape and out.dtype == volumes.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, volumes, atol=1e-3)


@pytest.mark.parametrize("name", [n for n in NAMES if get_corruption(n).channels is None])
def test_multichannel_and_float64(name: str, images: torch.Tensor) -> None:
    x = images[:2].repeat(1, 3, 1, 1).double()
    out = corrupt(name, x, _frac(name, 0.2), seed=1)
    assert out.shape == x.shape and out.dtype == torch.float64


@pytest.mark.parametrize(
    "name", ["gaussian", "speckle", "rician", "bias-field", "spike", "motion", "ghosting"]
)
def test_random_corruptions_depend_on_the_seed(name: str, images: torch.Tensor) -> None:
    s = _frac(name, 0.3)
    assert not torch.equal(corrupt(name, images, s, seed=0), corrupt(name, images, s, seed=1))


@pytest.mark.parametrize("name", NAMES)
def test_global_rng_untouched(name: str, images: torch.Tensor) -> None:
    import numpy as np

    torch.manual_seed(123)
    np.random.seed(123)
    corrupt(name, images[:2], _frac(name, 0.3), seed=5)
    after_torch, after_np = torch.rand(1), np.random.rand()
    torch.manual_seed(123)
    np.random.seed(123)
    assert torch.equal(after_torch, torch.rand(1)) and after_np == np.random.rand()


@pytest.mark.parametrize("name", NAMES)
def test_ssim_falls_as_strength_grows(name: str, images: torch.Tensor) -> None:
    values = [mean_ssim(name, images, _frac(name, f), seed=0) for f in (0.0, 0.05, 0.2, 0.6)]
    assert values[0] > 0.99, f"strength 0 must leave {name} images (nearly) unchanged"
    assert values[0] > values[1] > values[2] > values[3], f"{name}: SSIM {values}"


def test_strength_zero_is_identity_for_exact_corruptions(images: torch.Tensor) -> None:
    for name in ("gaussian", "speckle", "blur", "gamma", "gibbs", "motion", "ghosting"):
        assert torch.allclose(corrupt(name, images, 0.0, seed=0), images, atol=1e-5), name


def test_matches_the_noise_module(images: torch.Tensor) -> None:
    from medrobust.evaluation.noise import gaussian_noise, speckle_noise

    assert torch.equal(corrupt("gaussian", images, 0.1, 7), gaussian_noise(images, 0.1, seed=7))
    assert torch.equal(corrupt("speckle", images, 0.5, 7), speckle_noise(images, 0.5, seed=7))


def test_gamma_matches_the_closed_form(images: torch.Tensor) -> None:
    x = images[:1]
    lo, hi = x.min(), x.max()
    expected = ((x - lo) / (hi - lo + 1e-7)) ** 3.0 * (hi - lo) + lo
    assert torch.allclose(corrupt("gamma", x, 2.0, seed=0), expected, atol=1e-5)


def test_spike_strength_is_the_stripe_amplitude() -> None:
    x = torch.full((1, 1, 32, 32), 0.5)
    out = corrupt("spike", x, 0.2, seed=0)
    assert abs(float((out - x).abs().max()) - 0.2) < 0.01


def test_motion_in_2d_is_an_artefact_not_a_shift() -> None:
    """A pure shift moves every row the same way; a motion artefact (k-space segments from
    different positions) leaves the image unshifted on average but adds ringing."""
    x = torch.zeros(1, 1, 32, 32)
    x[..., 12:20, 12:20] = 1.0
    out = corrupt("motion", x, 4.0, seed=0)
    centre = (out[0, 0] * torch.arange(32.0)).sum() / out[0, 0].sum()
    assert abs(float(centre) - 15.5) < 1.5
    assert float(out[..., 12:20, 12:20].mean()) > 0.6  # the square is still in place


# --------------------------------------------------------------------------- calibrate


@pytest.mark.parametrize("name", NAMES)
def test_calibrate_hits_every_target_2d(name: str, images: torch.Tensor) -> None:
    tol = 0.005
    strengths = calibrate(name, images, seed=0, tol=tol)
    assert len(strengths) == len(SEVERITY_SSIM)
    assert strengths == sorted(strengths), f"{name}: strengths not increasing {strengths}"
    for target, s in zip(SEVERITY_SSIM, strengths, strict=True):
        y = corrupt(name, images, s, seed=0)
        got = float(ssim(images, y, data_range=1.0).mean())
        assert abs(got - target) <= tol + 1e-6, f"{name}: SSIM {got:.4f} for target {target}"


@pytest.mark.parametrize("name", ["blur", "rician", "motion", "spike"])
def test_calibrate_hits_targets_3d(name: str, volumes: torch.Tensor) -> None:
    strengths = calibrate(name, volumes, targets=(0.9, 0.8), seed=0)
    for target, s in zip((0.9, 0.8), strengths, strict=True):
        assert abs(mean_ssim(name, volumes, s, seed=0) - target) <= 0.005


def test_calibrate_depends_on_the_seed_only_through_the_draws(images: torch.Tensor) -> None:
    assert calibrate("speckle", images, seed=4) == calibrate("speckle", images, seed=4)


def test_calibrate_unreachable_target_names_everything(images: torch.Tensor) -> None:
    with pytest.raises(
        ValueError,
        match=r"'gamma' cannot reach mean SSIM 0.02: over its strength range \[0, 9\] .* "
        r"goes from 1.0000 to 0\.\d+ on these 4 images",
    ):
        calibrate("gamma", images, targets=(0.9, 0.02))


def test_calibrate_reports_a_jump_over_the_target(images: torch.Tensor) -> None:
    """Gibbs truncates k-space on the voxel grid: near alpha = 1 the SSIM falls in steps
    larger than a tight tolerance."""
    with pytest.raises(ValueError, match=r"'gibbs' cannot reach mean SSIM 0.01 within .*jumps"):
        calibrate("gibbs", images, targets=(0.01,))


def test_calibrate_bad_arguments(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"SSIM target must be a number in \(0, 1\)"):
        calibrate("blur", images, targets=(0.9, 1.2))
    with pytest.raises(TypeError, match="non-empty sequence"):
        calibrate("blur", images, targets=())
    with pytest.raises(ValueError, match="tol"):
        calibrate("blur", images, tol=0.0)
    with pytest.raises(ValueError, match="at least 3 voxels"):
        calibrate("blur", torch.rand(2, 1, 2, 16, 16), targets=(0.9,))


def test_corrupt_at_severity(images: torch.Tensor) -> None:
    strengths = calibrate("blur", images)
    out = corrupt_at_severity("blur", images, 3, strengths=strengths)
    assert torch.equal(out, corrupt("blur", images, strengths[2], seed=0))
    assert torch.equal(corrupt_at_severity("blur", images, 3), out)  # calibrates on x itself
    with pytest.raises(ValueError, match=r"severity must be an int in \[1, 5\]"):
        corrupt_at_severity("blur", images, 0, strengths=strengths)
    with pytest.raises(ValueError, match="5 entries"):
        corrupt_at_severity("blur", images, 1, strengths=strengths[:2])


# --------------------------------------------------------------------------- bad input


def test_unknown_corruption_suggests_close_names(images: torch.Tensor) -> None:
    with pytest.raises(UnknownNameError, match=r"unknown corruption 'gausian'.*'gaussian'"):
        corrupt("gausian", images, 0.1, seed=0)


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), float("inf")])
def test_strength_out_of_range(strength: float, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"strength of 'gibbs' .* must be in \[0, 1\]"):
        corrupt("gibbs", images, strength, seed=0)


def test_bad_types(images: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="strength must be a number"):
        corrupt("blur", images, "1", seed=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="seed must be an int"):
        corrupt("blur", images, 1.0, seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be in"):
        corrupt("blur", images, 1.0, seed=-1)
    with pytest.raises(TypeError, match="floating-point tensor"):
        corrupt("blur", (images * 255).to(torch.uint8), 1.0, seed=0)


def test_bad_images(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*window and rescale"):
        corrupt("blur", images * 2.0, 1.0, seed=0)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        corrupt("blur", images - 0.5, 1.0, seed=0)
    bad = images.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        corrupt("blur", bad, 1.0, seed=0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(B, C, D, H, W\)"):
        corrupt("blur", images[0], 1.0, seed=0)


def test_speckle_needs_one_channel(images: torch.Tensor) -> None:
    rgb = images.repeat(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"speckle needs 1-channel images.*got 3 channels"):
        corrupt("speckle", rgb, 0.5, seed=0)
