"""Noise baselines: Gaussian, Rician and speckle noise and their bisection to a target SSIM."""

from __future__ import annotations

import pytest
import torch

from medrobust.evaluation.noise import (
    add_noise,
    gaussian_noise,
    noise_for_ssim,
    rician_noise,
    speckle_noise,
)
from medrobust.metrics import ssim
from medrobust.types import Bounds


def images(n: int = 3, spatial_dims: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    size = (24, 24) if spatial_dims == 2 else (12, 12, 12)
    return torch.rand((n, 1, *size), generator=g) * 0.6 + 0.2


def test_seeded_and_kind_definitions() -> None:
    x = images()
    a = gaussian_noise(x, 0.1, seed=3)
    assert torch.equal(a, gaussian_noise(x, 0.1, seed=3))
    assert not torch.equal(a, gaussian_noise(x, 0.1, seed=4))
    g = torch.Generator().manual_seed(3)
    n = torch.randn(x.shape, generator=g)
    torch.testing.assert_close(a, (x + 0.1 * n).clamp(0, 1))
    torch.testing.assert_close(speckle_noise(x, 0.2, seed=3), (x * (1 + 0.2 * n)).clamp(0, 1))
    g = torch.Generator().manual_seed(3)
    n1, n2 = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    expected = torch.sqrt((x + 0.05 * n1) ** 2 + (0.05 * n2) ** 2).clamp(0, 1)
    torch.testing.assert_close(rician_noise(x, 0.05, seed=3), expected)
    assert torch.equal(add_noise(x, "gaussian", 0.0), x)
    assert float(add_noise(x, "gaussian", 5.0).max()) <= 1.0


def test_rician_bias_on_dark_background() -> None:
    # Rician noise is positively biased where the signal is zero (mean sigma * sqrt(pi / 2))
    x = torch.zeros(1, 1, 64, 64)
    out = rician_noise(x, 0.1, seed=0, bounds=None)
    assert float(out.mean()) == pytest.approx(0.1 * (torch.pi / 2) ** 0.5, rel=0.05)
    assert float(out.min()) >= 0.0


def test_speckle_is_multiplicative() -> None:
    x = images()
    x[:, :, :4] = 0.0
    out = speckle_noise(x, 0.5, seed=1)
    assert float(out[:, :, :4].abs().max()) == 0.0  # no signal, no speckle
    assert float((out - x).abs().max()) > 0


@pytest.mark.parametrize("kind", ["gaussian", "rician", "speckle"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bisection_reaches_target_ssim(kind: str, spatial_dims: int) -> None:
    x = images(spatial_dims=spatial_dims)
    target = torch.tensor([0.97, 0.98, 0.99], dtype=torch.float64)
    res = noise_for_ssim(x, kind, target, seed=0)
    assert res.reached.all()
    measured = ssim(x, res.images, data_range=1.0, spatial_dims=spatial_dims).double()
    torch.testing.assert_close(measured, res.ssim.double(), atol=1e-6, rtol=0)
    assert torch.all((measured - target).abs() <= 0.02 * (1 - target) + 1e-9)
    # less noise for a higher target SSIM
    assert float(res.sigma[0]) > float(res.sigma[2])
    again = noise_for_ssim(x, kind, target, seed=0)
    assert torch.equal(again.images, res.images)


def test_unreachable_target_is_reported() -> None:
    x = images(1)
    res = noise_for_ssim(x, "gaussian", 0.5, sigma_max=1e-3)
    assert not bool(res.reached[0])
    assert float(res.sigma[0]) == pytest.approx(1e-3)


def test_bounds_respected() -> None:
    x = images() * 2 - 1
    b = Bounds(-1.0, 1.0)
    res = noise_for_ssim(x, "gaussian", 0.9, bounds=b)
    assert float(res.images.min()) >= -1.0 and float(res.images.max()) <= 1.0
    assert res.reached.all()


def test_errors() -> None:
    x = images()
    with pytest.raises(ValueError, match="unknown noise kind"):
        add_noise(x, "salt", 0.1)
    with pytest.raises(ValueError, match="sigma must be finite and >= 0"):
        add_noise(x, "gaussian", -0.1)
    with pytest.raises(ValueError, match=r"target_ssim must lie in \(0, 1\)"):
        noise_for_ssim(x, "gaussian", 1.0)
    with pytest.raises(ValueError, match="one value per sample"):
        noise_for_ssim(x, "gaussian", torch.tensor([0.9, 0.9]))
    with pytest.raises(TypeError, match="floating-point"):
        add_noise(x.long(), "gaussian", 0.1)
    with pytest.raises(TypeError, match="seed"):
        add_noise(x, "gaussian", 0.1, seed=1.5)  # type: ignore[arg-type]
