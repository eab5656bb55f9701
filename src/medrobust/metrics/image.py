"""Image similarity of adversarial examples to their clean images: PSNR and SSIM (2-D, 3-D).

References:
    Wang et al., "Image quality assessment: from error visibility to structural similarity",
    IEEE TIP 2004 (SSIM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.metrics.regression import compute_ssim_and_cs

from medrobust.metrics.perturbation import check_image_pair

__all__ = ["psnr", "ssim", "ssim_or_nan"]


def _check_data_range(data_range: float) -> float:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)):
        raise TypeError(f"data_range must be a number, got {type(data_range).__name__}")
    if not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a finite positive number, got {data_range}")
    return float(data_range)


def psnr(
    x: torch.Tensor, y: torch.Tensor, data_range: float, cap: float | None = None
) -> torch.Tensor:
    """Per-sample peak signal-to-noise ratio in decibels.

    ``PSNR = 10 log10(data_range**2 / MSE)`` with the mean squared error over all non-batch axes.
    Identical images have ``MSE = 0`` and therefore ``PSNR = +inf``; pass ``cap`` (e.g. ``100``) to
    get a finite value instead (every PSNR above ``cap`` is replaced by ``cap``), which keeps means
    over a batch finite.

    Args:
        x: Reference images.
        y: Compared images of the same shape.
        data_range: Width of the value range, e.g. ``bounds.high - bounds.low``.
        cap: Optional upper limit in dB; ``None`` keeps ``inf`` for identical images.

    Returns:
        A float tensor of PSNR values in the dtype of ``x``.

    Raises:
        TypeError: If the inputs are not floating tensors or ``data_range`` is not a number.
        ValueError: If the shapes differ, ``data_range <= 0`` or ``cap`` is not finite.

    Shape:
        - x, y: ``(B, *)``.
        - output: ``(B,)``.

    References:
        Huynh-Thu & Ghanbari, "Scope of validity of PSNR in image/video quality assessment",
        Electronics Letters 2008.
    """
    check_image_pair(x, y, ("x", "y"))
    dr = _check_data_range(data_range)
    if cap is not None and not math.isfinite(cap):
        raise ValueError(f"cap must be a finite number of decibels or None, got {cap}")
    diff = (x.detach().double() - y.detach().double()).flatten(1)
    mse = diff.pow(2).mean(dim=1)
    with torch.no_grad():
        out = 10.0 * torch.log10(dr**2 / mse)  # mse == 0 -> +inf
    if cap is not None:
        out = out.clamp(max=float(cap))
    return out.to(x.dtype)


def _ssim_window(
    spatial: Sequence[int], win_size: int, kernel_sigma: float, reduce_window: bool
) -> tuple[list[int], list[float]]:
    sizes: list[int] = []
    sigmas: list[float] = []
    for axis, n in enumerate(spatial):
        if n >= win_size:
            sizes.append(win_size)
            sigmas.append(kernel_sigma)
            continue
        if not reduce_window:
            raise ValueError(
                f"spatial axis {axis} has {n} voxels, fewer than the SSIM window ({win_size}); "
                "pass a smaller win_size or reduce_window=True"
            )
        w = n if n % 2 == 1 else n - 1
        if w < 3:
            raise ValueError(
                f"images of spatial shape {tuple(spatial)} are too small for SSIM: every spatial "
                "axis needs at least 3 voxels (compute a 2-D SSIM per slice for thin volumes)"
            )
        sizes.append(w)
        sigmas.append(kernel_sigma * w / win_size)
    return sizes, sigmas


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float,
    spatial_dims: int | None = None,
    *,
    win_size: int = 11,
    kernel_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduce_window: bool = True,
) -> torch.Tensor:
    """Per-sample structural similarity (Gaussian window) for 2-D images and 3-D volumes.

    Uses MONAI's :func:`monai.metrics.regression.compute_ssim_and_cs` (valid convolution, no
    padding, population statistics) and averages the SSIM map over channels and positions.
    With the defaults this matches the original definition (11-tap Gaussian, sigma 1.5).

    Small images: along any spatial axis shorter than ``win_size`` the window is reduced to the
    largest odd size that fits (and its sigma is scaled by the same factor, so the window keeps
    its shape) when ``reduce_window`` is true; otherwise a ``ValueError`` is raised. An axis with
    fewer than 3 voxels always raises (SSIM needs a neighbourhood); use a 2-D SSIM per slice for
    such thin volumes.

    Args:
        x: Reference images.
        y: Compared images of the same shape.
        data_range: Width of the value range, e.g. ``bounds.high - bounds.low``.
        spatial_dims: 2 or 3; inferred from ``x.ndim - 2`` when ``None``.
        win_size: Odd side length of the Gaussian window (default 11).
        kernel_sigma: Standard deviation of the Gaussian window (default 1.5).
        k1: Luminance stability constant (default 0.01).
        k2: Contrast stability constant (default 0.03).
        reduce_window: Shrink the window on axes shorter than ``win_size`` (default) instead of
            raising.

    Returns:
        A float32 tensor of per-sample SSIM values (1 for identical images).

    Raises:
        TypeError: If the inputs are not floating tensors or ``data_range`` is not a number.
        ValueError: If the shapes differ or do not match ``spatial_dims``, the parameters are
            invalid, or the images are too small for the window (see above).

    Shape:
        - x, y: ``(B, C, H, W)`` for ``spatial_dims=2``, ``(B, C, H, W, D)`` for 3.
        - output: ``(B,)``.

    References:
        Wang et al., "Image quality assessment: from error visibility to structural similarity",
        IEEE TIP 2004.
    """
    check_image_pair(x, y, ("x", "y"))
    dr = _check_data_range(data_range)
    dims = x.ndim - 2 if spatial_dims is None else spatial_dims
    if dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {dims} (input shape {tuple(x.shape)})")
    if x.ndim != dims + 2:
        raise ValueError(
            f"expected {dims + 2}-D inputs (B, C, *spatial) for spatial_dims={dims}, got shape "
            f"{tuple(x.shape)}"
        )
    if (
        isinstance(win_size, bool)
        or not isinstance(win_size, int)
        or win_size < 3
        or win_size % 2 == 0
    ):
        raise ValueError(f"win_size must be an odd int >= 3, got {win_size!r}")
    if not math.isfinite(kernel_sigma) or kernel_sigma <= 0:
        raise ValueError(f"kernel_sigma must be a finite positive number, got {kernel_sigma}")
    if not (k1 > 0 and k2 > 0):
        raise ValueError(f"k1 and k2 must be positive, got k1={k1}, k2={k2}")
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float32, device=x.device)
    if x.shape[1] == 0:
        raise ValueError(f"inputs have no channels: shape {tuple(x.shape)}")
    sizes, sigmas = _ssim_window(x.shape[2:], win_size, kernel_sigma, reduce_window)
    with torch.no_grad():
        ssim_map, _ = compute_ssim_and_cs(
            y_pred=y.detach(),
            y=x.detach(),
            spatial_dims=dims,
            kernel_size=sizes,
            kernel_sigma=sigmas,
            data_range=dr,
            k1=k1,
            k2=k2,
        )
    return ssim_map.flatten(1).mean(dim=1).float()


def ssim_or_nan(
    x: torch.Tensor, y: torch.Tensor, data_range: float, spatial_dims: int
) -> torch.Tensor:
    """:func:`ssim`, or NaN for every sample where :func:`ssim` refuses the images (e.g. too
    small for its window): for reporting, where a missing similarity must not stop an audit.

    Shape:
        - x, y: ``(B, C, *spatial)``; output ``(B,)`` float32.
    """
    try:
        return ssim(x, y, data_range=data_range, spatial_dims=spatial_dims)
    except ValueError:
        return torch.full((x.shape[0],), math.nan, dtype=torch.float32, device=x.device)
