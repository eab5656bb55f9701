"""Noise baselines: Gaussian, Rician (MRI) and speckle (ultrasound) noise, and noise whose level
is found by bisection so that the noisy image reaches a target SSIM.

Adversarial perturbations are compared with random noise of the same perceptibility (the same
SSIM to the clean image), to show that the model is not merely fragile to any change but to
the particular changes an adversary finds.

* Gaussian: ``x + sigma n``;
* Rician: ``sqrt((x + sigma n_1)^2 + (sigma n_2)^2)``, the magnitude of complex Gaussian noise
  added to a real MR signal (Gudbjartsson & Patz 1995);
* speckle: ``x (1 + sigma n)``, multiplicative noise as in B-mode ultrasound.

``n``, ``n_1``, ``n_2`` are standard normal draws of a seeded generator; every result is clipped
to the input bounds. :func:`noise_for_ssim` keeps the noise draw fixed and bisects ``sigma`` per
sample, so the SSIM decreases (almost) monotonically with ``sigma`` and the search converges.

References:
    Paschali et al., "Generalizability vs. Robustness: Adversarial Examples for Medical
    Imaging", MICCAI 2018 (noise vs adversarial perturbations, SSIM in (0.97, 0.99));
    Gudbjartsson & Patz, "The Rician distribution of noisy MRI data", MRM 34(6), 1995;
    Wagner et al., "Statistics of speckle in ultrasound B-scans", IEEE TSU 30(3), 1983.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from medrobust.metrics import ssim
from medrobust.types import Bounds

#: The default input bounds, [0, 1].
_UNIT = Bounds(0.0, 1.0)

__all__ = [
    "NOISE_KINDS",
    "NoiseResult",
    "add_noise",
    "gaussian_noise",
    "noise_for_ssim",
    "rician_noise",
    "speckle_noise",
]


def _generator(seed: int | torch.Generator, device: torch.device) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _sigma(sigma: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if s.ndim == 0:
        s = s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(
            f"sigma must be a number or a (B,) tensor, got shape {tuple(s.shape)} for a batch "
            f"of {x.shape[0]}"
        )
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError("sigma must be finite and >= 0")
    return s.view(-1, *([1] * (x.ndim - 1)))


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"images must be a floating-point tensor, got {got}")
    if x.ndim < 3:
        raise ValueError(f"images must have shape (B, C, *spatial), got {tuple(x.shape)}")


def _draw(x: torch.Tensor, gen: torch.Generator, count: int) -> list[torch.Tensor]:
    return [
        torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) for _ in range(count)
    ]


def _apply(kind: str, x: torch.Tensor, s: torch.Tensor, n: list[torch.Tensor]) -> torch.Tensor:
    if kind == "gaussian":
        return x + s * n[0]
    if kind == "rician":
        return torch.sqrt((x + s * n[0]) ** 2 + (s * n[1]) ** 2)
    return x * (1 + s * n[0])


_DRAWS = {"gaussian": 1, "rician": 2, "speckle": 1}
#: The noise kinds understood by :func:`add_noise` and :func:`noise_for_ssim`.
NOISE_KINDS: tuple[str, ...] = tuple(_DRAWS)


def _kind(kind: str) -> str:
    key = str(kind).strip().lower()
    if key not in _DRAWS:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {', '.join(NOISE_KINDS)}")
    return key


def add_noise(
    x: torch.Tensor,
    kind: str,
    sigma: float | torch.Tensor,
    *,
    seed: int | torch.Generator = 0,
    bounds: Bounds | None = _UNIT,
) -> torch.Tensor:
    """Add noise of a kind and level to a batch.

    Args:
        x: Clean images.
        kind: ``"gaussian"``, ``"rician"`` or ``"speckle"``.
        sigma: Noise level, one number or one per sample.
        seed: Seed (or generator) of the noise draw.
        bounds: Clip the result into these bounds (None: no clipping).

    Returns:
        The noisy images.

    Raises:
        TypeError: If ``x`` is not a floating tensor.
        ValueError: For an unknown kind or a negative/non-finite ``sigma``.

    Shape:
        - x: ``(B, C, *spatial)``; sigma scalar or ``(B,)``; output like ``x``.

    References:
        Gudbjartsson & Patz, MRM 1995 (Rician); Wagner et al., IEEE TSU 1983 (speckle).
    """
    _check_images(x)
    k = _kind(kind)
    s = _sigma(sigma, x)
    gen = _generator(seed, x.device)
    out = _apply(k, x, s, _draw(x, gen, _DRAWS[k]))
    return bounds.clamp(out) if bounds is not None else out


def gaussian_noise(
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    seed: int | torch.Generator = 0,
    bounds: Bounds | None = _UNIT,
) -> torch.Tensor:
    """Additive Gaussian noise ``x + sigma n``, clipped to ``bounds``; see :func:`add_noise`.

    Shape:
        - x: ``(B, C, *spatial)``; output the same.
    """
    return add_noise(x, "gaussian", sigma, seed=seed, bounds=bounds)


def rician_noise(
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    seed: int | torch.Generator = 0,
    bounds: Bounds | None = _UNIT,
) -> torch.Tensor:
    """Rician noise ``sqrt((x + sigma n1)^2 + (sigma n2)^2)`` (MRI magnitude images), clipped
    to ``bounds``; see :func:`add_noise`.

    Shape:
        - x: ``(B, C, *spatial)``; output the same.

    References:
        Gudbjartsson & Patz, MRM 1995.
    """
    return add_noise(x, "rician", sigma, seed=seed, bounds=bounds)


def speckle_noise(
    x: torch.Tensor,
    sigma: float | torch.Tensor,
    *,
    seed: int | torch.Generator = 0,
    bounds: Bounds | None = _UNIT,
) -> torch.Tensor:
    """Multiplicative speckle noise ``x (1 + sigma n)`` (ultrasound), clipped to ``bounds``;
    see :func:`add_noise`.

    Shape:
        - x: ``(B, C, *spatial)``; output the same.

    References:
        Wagner et al., IEEE TSU 1983.
    """
    return add_noise(x, "speckle", sigma, seed=seed, bounds=bounds)


@dataclass
class NoiseResult:
    """Noise matched to a target SSIM.

    Attributes:
        images: The noisy images.
        sigma: ``(B,)`` noise level found for each sample.
        ssim: ``(B,)`` SSIM of each noisy image to its clean image.
        reached: ``(B,)`` bool: the SSIM is within the tolerance of the target (False where
            even the largest level tried could not bring the SSIM down that far).
    """

    images: torch.Tensor
    sigma: torch.Tensor
    ssim: torch.Tensor
    reached: torch.Tensor


def noise_for_ssim(
    x: torch.Tensor,
    kind: str,
    target_ssim: float | torch.Tensor,
    *,
    seed: int | torch.Generator = 0,
    bounds: Bounds = _UNIT,
    tol: float = 0.02,
    max_iter: int = 30,
    sigma_max: float | None = None,
    ssim_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> NoiseResult:
    """Noise whose per-sample level is found by bisection so that SSIM(clean, noisy) reaches a
    target (e.g. the SSIM of an adversarial example, or 0.98 for Paschali et al.'s (0.97, 0.99)).

    The noise draw is fixed for the whole search; only ``sigma`` changes, so the SSIM falls
    monotonically with ``sigma`` (up to clipping) and the bisection converges.

    Args:
        x: Clean images inside ``bounds``.
        kind: ``"gaussian"``, ``"rician"`` or ``"speckle"``.
        target_ssim: Target SSIM in ``(0, 1)``, one number or one per sample.
        seed: Seed (or generator) of the noise draw.
        bounds: Input bounds (clipping and the SSIM's data range).
        tol: Relative tolerance: stop when every sample's ``1 - SSIM`` is within a fraction
            ``tol`` of its target ``1 - target_ssim`` (default 2%).
        max_iter: Bisection steps at most.
        sigma_max: Largest level tried (default: the width of the bounds; for speckle 4).
        ssim_fn: SSIM of two batches, ``(B,)``; default
            :func:`medrobust.metrics.ssim` with the bounds' data range.

    Returns:
        A :class:`NoiseResult`.

    Raises:
        TypeError: If ``x`` is not a floating tensor.
        ValueError: For an unknown kind, a target outside ``(0, 1)`` or invalid parameters.

    Shape:
        - x: ``(B, C, *spatial)``; target_ssim scalar or ``(B,)``.

    References:
        Paschali et al., MICCAI 2018.
    """
    _check_images(x)
    k = _kind(kind)
    b = x.shape[0]
    tgt = torch.as_tensor(target_ssim, dtype=torch.float64).flatten()
    if tgt.numel() == 1:
        tgt = tgt.expand(b).clone()
    if tgt.shape != (b,):
        raise ValueError(
            f"target_ssim must be a number or have one value per sample ({b}), got "
            f"{tuple(tgt.shape)}"
        )
    if not bool(((tgt > 0) & (tgt < 1)).all()):
        raise ValueError(
            "target_ssim must lie in (0, 1), got values in "
            f"[{float(tgt.min()):.4g}, {float(tgt.max()):.4g}]"
        )
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    hi_default = 4.0 if k == "speckle" else bounds.width
    hi_val = hi_default if sigma_max is None else float(sigma_max)
    if not (math.isfinite(hi_val) and hi_val > 0):
        raise ValueError(f"sigma_max must be a finite number > 0, got {sigma_max!r}")
    spatial_dims = x.ndim - 2

    def measure(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if ssim_fn is not None:
            return ssim_fn(a, c).double().cpu()
        return ssim(a, c, data_range=bounds.width, spatial_dims=spatial_dims).double().cpu()

    gen = _generator(seed, x.device)
    draws = _draw(x, gen, _DRAWS[k])
    x = x.detach()

    def noisy(sig: torch.Tensor) -> torch.Tensor:
        s = sig.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (x.ndim - 1)))
        return bounds.clamp(_apply(k, x, s, draws))

    slack = tol * (1.0 - tgt)
    lo = torch.zeros(b, dtype=torch.float64)
    hi = torch.full((b,), hi_val, dtype=torch.float64)
    s_hi = measure(x, noisy(hi))
    reachable = s_hi <= tgt
    best_sig = hi.clone()
    best_ssim = s_hi.clone()
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        s_mid = measure(x, noisy(mid))
        above = s_mid > tgt  # still too similar: more noise
        lo = torch.where(above & reachable, mid, lo)
        hi = torch.where(~above & reachable, mid, hi)
        closer = (s_mid - tgt).abs() < (best_ssim - tgt).abs()
        best_sig = torch.where(closer & reachable, mid, best_sig)
        best_ssim = torch.where(closer & reachable, s_mid, best_ssim)
        if bool(((best_ssim - tgt).abs() <= slack).all()):
            break
    images = noisy(best_sig)
    return NoiseResult(
        images=images,
        sigma=best_sig.to(x.dtype),
        ssim=best_ssim.to(x.dtype),
        reached=((best_ssim - tgt).abs() <= slack),
    )
