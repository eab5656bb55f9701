"""Map-comparison metrics for explanations (Grad-CAM and other saliency maps).

Every metric is a pure function over a batch of maps and returns one value per sample, so that a
stateful shell (sum/count) or an attack objective can use it directly. Maps may be given as
``(B, 1, *spatial)`` (channel-first, as returned by :func:`medrobust.explain.grad_cam`) or as
``(B, *spatial)``; 2-D and 3-D maps are supported:

* rank 3: ``(B, H, W)``;
* rank 4: ``(B, 1, H, W)`` when dimension 1 has size 1, otherwise ``(B, H, W, D)``;
* rank 5: ``(B, 1, H, W, D)``.

A rank-4 tensor whose dimension 1 has size 1 is always read as a channel-first 2-D map; pass a
3-D volume with a singleton first spatial axis as ``(B, 1, 1, W, D)``.

Undefined values are returned as NaN rather than hidden: a correlation of a constant map, the
centre of mass of an all-zero map, the lesion-hit ratio of an all-zero map, and the IoU of an empty
prediction with an empty mask. Reductions over a data set should use ``nanmean`` or count them.

The differentiable metrics (:func:`pearson`, :func:`center_of_mass`, :func:`com_shift`,
:func:`map_ssim`, :func:`map_mse`, :func:`normalize_map`, :func:`lesion_hit_ratio`) keep the
autograd graph, so they can also serve as attack objectives; :func:`spearman`,
:func:`topk_intersection` and :func:`localization_iou` are piecewise constant.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "center_of_mass",
    "com_shift",
    "lesion_hit_ratio",
    "localization_iou",
    "map_mse",
    "map_ssim",
    "normalize_map",
    "pearson",
    "spearman",
    "topk_intersection",
]

NormalizeMode = Literal["minmax", "sum"]


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}")
    return x


def _spatial_view(x: object, name: str) -> torch.Tensor:
    """Return ``x`` as ``(B, *spatial)`` with 2 or 3 spatial dims (see the module docstring)."""
    t = _check_tensor(x, name)
    shape = tuple(t.shape)
    if t.ndim == 3:
        out = t
    elif t.ndim == 4:
        out = t[:, 0] if t.shape[1] == 1 else t
    elif t.ndim == 5:
        if t.shape[1] != 1:
            raise ValueError(
                f"{name} must have shape (B, 1, H, W, D) for a 3-D map batch, got shape {shape} "
                f"(dimension 1 has size {t.shape[1]}, expected 1)"
            )
        out = t[:, 0]
    else:
        raise ValueError(
            f"{name} must be a batch of 2-D or 3-D maps with shape (B, [1,] H, W[, D]), got shape "
            f"{shape} (rank {t.ndim})"
        )
    if out.shape[0] == 0 or out[0].numel() == 0:
        raise ValueError(f"{name} is empty (shape {shape})")
    if not out.is_floating_point():
        out = out.to(torch.get_default_dtype())
    return out


def _map_pair(
    a: object, b: object, name_a: str = "a", name_b: str = "b"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Canonicalise two map batches to ``(B, *spatial)`` with a shared dtype and device."""
    shape_a = tuple(_check_tensor(a, name_a).shape)
    shape_b = tuple(_check_tensor(b, name_b).shape)
    ta = _spatial_view(a, name_a)
    tb = _spatial_view(b, name_b)
    if ta.shape != tb.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {shape_a} and {shape_b}"
        )
    if ta.device != tb.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {ta.device} and {tb.device}"
        )
    dtype = torch.promote_types(ta.dtype, tb.dtype)
    return ta.to(dtype), tb.to(dtype)


def _mask_view(mask: object, like: torch.Tensor, map_shape: tuple[int, ...]) -> torch.Tensor:
    """Validate a binary lesion mask and return it as a ``like``-dtype ``(B, *spatial)`` tensor."""
    t = _check_tensor(mask, "mask")
    m = _spatial_view(t, "mask") if t.ndim >= 3 else None
    if m is None or m.shape != like.shape:
        raise ValueError(
            f"map and mask must have the same shape, got {map_shape} and {tuple(t.shape)}"
        )
    if m.device != like.device:
        raise ValueError(
            f"map and mask must be on the same device, got {like.device} and {m.device}"
        )
    binary = (m == 0) | (m == 1)
    if not bool(binary.all()):
        bad = m[~binary].flatten()[:5].tolist()
        raise ValueError(f"mask must be binary (values 0 and 1), got values such as {bad}")
    return m.to(like.dtype)


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------


def normalize_map(m: torch.Tensor, mode: NormalizeMode = "minmax") -> torch.Tensor:
    """Normalise each map of a batch, over all non-batch dimensions.

    * ``"minmax"``: ``(m - min) / (max - min)``, into ``[0, 1]``; a constant map becomes all zeros.
    * ``"sum"``: ``m / sum(|m|)``, so a non-negative map sums to one (the Dombrowski
      normalisation); an all-zero map stays all zeros.

    The operation is differentiable (no epsilon is added: degenerate maps are detected exactly).

    Args:
        m: A batch of maps, any shape ``(B, ...)`` with at least one element per sample.
        mode: ``"minmax"`` or ``"sum"``.

    Returns:
        The normalised maps, same shape and dtype as ``m``.

    Raises:
        TypeError: If ``m`` is not a real tensor.
        ValueError: If ``mode`` is unknown or ``m`` has no batch dimension or is empty.

    Shape:
        - Input: ``(B, ...)``.
        - Output: same as input.

    References:
        Dombrowski et al., "Explanations can be manipulated and geometry is to blame",
        NeurIPS 2019 (sum normalisation).
    """
    t = _check_tensor(m, "m")
    if mode not in ("minmax", "sum"):
        raise ValueError(f"normalize mode must be 'minmax' or 'sum', got {mode!r}")
    if t.ndim < 2 or t.shape[0] == 0 or t[0].numel() == 0:
        raise ValueError(
            f"m must be a non-empty batch of maps (B, ...), got shape {tuple(t.shape)}"
        )
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    flat = _flat(t)
    view = (t.shape[0],) + (1,) * (t.ndim - 1)
    if mode == "minmax":
        lo = flat.min(dim=1).values
        span = flat.max(dim=1).values - lo
        safe = torch.where(span > 0, span, torch.ones_like(span))
        out = (t - lo.reshape(view)) / safe.reshape(view)
        return torch.where((span > 0).reshape(view), out, torch.zeros_like(out))
    total = flat.abs().sum(dim=1)
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return t / safe.reshape(view)


# --------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------


def _pearson_flat(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ac = a - a.mean(dim=1, keepdim=True)
    bc = b - b.mean(dim=1, keepdim=True)
    num = (ac * bc).sum(dim=1)
    den = torch.sqrt((ac * ac).sum(dim=1) * (bc * bc).sum(dim=1))
    return num / den


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between two batches of maps, per sample.

    Computed in float64 and returned in the maps' dtype. A constant map has no defined correlation
    and gives NaN (as :func:`scipy.stats.pearsonr` does).

    Args:
        a: First batch of maps.
        b: Second batch of maps, same shape as ``a``.

    Returns:
        Correlations in ``[-1, 1]`` (or NaN), one per sample.

    Raises:
        TypeError: If an input is not a real tensor.
        ValueError: If the shapes differ or are not ``(B, [1,] *spatial)`` with 2 or 3 spatial dims.

    Shape:
        - a, b: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Dombrowski et al., NeurIPS 2019 (Pearson correlation between explanation maps).
    """
    ta, tb = _map_pair(a, b)
    return _pearson_flat(_flat(ta).double(), _flat(tb).double()).to(ta.dtype)


def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks ``1..N`` along dim 1, ties sharing the average of their ranks (float64)."""
    bsz, n = x.shape
    sorted_vals, order = torch.sort(x, dim=1, stable=True)
    new_group = torch.ones_like(sorted_vals, dtype=torch.bool)
    new_group[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    group = torch.cumsum(new_group.long(), dim=1) - 1  # group index within each row
    offset = (torch.arange(bsz, device=x.device) * n).unsqueeze(1)
    flat_group = (group + offset).flatten()
    positions = torch.arange(1, n + 1, device=x.device, dtype=torch.float64).repeat(bsz)
    sums = torch.zeros(bsz * n, dtype=torch.float64, device=x.device)
    counts = torch.zeros(bsz * n, dtype=torch.float64, device=x.device)
    sums.index_add_(0, flat_group, positions)
    counts.index_add_(0, flat_group, torch.ones_like(positions))
    mean_rank = (sums[flat_group] / counts[flat_group]).reshape(bsz, n)
    ranks = torch.empty_like(mean_rank)
    ranks.scatter_(1, order, mean_rank)
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between two batches of maps, per sample.

    Pixels are ranked within each map, ties receiving the average of their ranks, and the Pearson
    correlation of the ranks is returned (the definition of :func:`scipy.stats.spearmanr`). A
    constant map gives NaN. Not differentiable (ranks are piecewise constant).

    Args:
        a: First batch of maps.
        b: Second batch of maps, same shape as ``a``.

    Returns:
        Rank correlations in ``[-1, 1]`` (or NaN), one per sample, in the maps' dtype.

    Raises:
        TypeError: If an input is not a real tensor.
        ValueError: If the shapes differ or are not ``(B, [1,] *spatial)`` with 2 or 3 spatial dims.

    Shape:
        - a, b: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Ghorbani, Abid, Zou, "Interpretation of neural networks is fragile", AAAI 2019.
    """
    ta, tb = _map_pair(a, b)
    ra = _average_ranks(_flat(ta.detach()))
    rb = _average_ranks(_flat(tb.detach()))
    return _pearson_flat(ra, rb).to(ta.dtype)


# --------------------------------------------------------------------------------------------
# top-k and centre of mass
# --------------------------------------------------------------------------------------------


def _resolve_k(k: int | float, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise TypeError(f"k must be an int or a float fraction in (0, 1), got {type(k).__name__}")
    if isinstance(k, float) and not k.is_integer():
        if not 0.0 < k < 1.0:
            raise ValueError(
                f"a fractional k must lie in (0, 1) (a share of the {n} pixels), got {k}"
            )
        return max(1, min(n, round(k * n)))
    k_int = int(k)
    if not 1 <= k_int <= n:
        raise ValueError(f"k must be in [1, {n}] (the number of pixels per map), got {k}")
    return k_int


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int | float) -> torch.Tensor:
    """Share of the ``k`` most important pixels of ``a`` that are also among the top ``k`` of ``b``.

    ``|TopK(a) ∩ TopK(b)| / k``. Ties at the k-th value are broken by :func:`torch.topk`, so use
    continuous maps (or a ``k`` that does not split a tie) for exactly reproducible values.

    Args:
        a: Reference batch of maps (e.g. the clean explanation).
        b: Compared batch of maps, same shape as ``a``.
        k: Number of pixels (an int in ``[1, N]``) or a fraction in ``(0, 1)`` of the ``N`` pixels
            per map, rounded to the nearest integer and at least 1.

    Returns:
        Intersections in ``[0, 1]``, one per sample, in the maps' dtype.

    Raises:
        TypeError: If an input is not a tensor or ``k`` is not a number.
        ValueError: If the shapes differ or ``k`` is out of range.

    Shape:
        - a, b: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Ghorbani, Abid, Zou, "Interpretation of neural networks is fragile", AAAI 2019.
    """
    ta, tb = _map_pair(a, b)
    fa, fb = _flat(ta.detach()), _flat(tb.detach())
    kk = _resolve_k(k, fa.shape[1])
    top_a = torch.topk(fa, kk, dim=1).indices
    top_b = torch.topk(fb, kk, dim=1).indices
    in_b = torch.zeros_like(fb, dtype=torch.bool).scatter_(1, top_b, True)
    hits = in_b.gather(1, top_a).sum(dim=1)
    return hits.to(ta.dtype) / kk


def center_of_mass(m: torch.Tensor) -> torch.Tensor:
    """Centre of mass of each map, in pixel (index) coordinates.

    ``CoM_d = Σ_x m(x) · x_d / Σ_x m(x)`` with 0-based pixel indices, the convention of
    :func:`scipy.ndimage.center_of_mass`. An all-zero map has no centre: its row is NaN.
    Differentiable in ``m``.

    Args:
        m: A batch of maps (normally non-negative).

    Returns:
        Coordinates ordered like the spatial axes (``(row, col)`` in 2-D, ``(h, w, d)`` in 3-D).

    Raises:
        TypeError: If ``m`` is not a real tensor.
        ValueError: If ``m`` is not ``(B, [1,] *spatial)`` with 2 or 3 spatial dims.

    Shape:
        - m: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B, spatial_dims)``.

    References:
        Ghorbani, Abid, Zou, "Interpretation of neural networks is fragile", AAAI 2019.
    """
    t = _spatial_view(m, "m")
    spatial = t.shape[1:]
    total = _flat(t).sum(dim=1)
    coords = []
    for axis, size in enumerate(spatial):
        shape = [1] * (len(spatial) + 1)
        shape[axis + 1] = size
        pos = torch.arange(size, device=t.device, dtype=t.dtype).reshape(shape)
        coords.append(_flat(t * pos).sum(dim=1) / total)
    return torch.stack(coords, dim=1)


def com_shift(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance, in pixels, between the centres of mass of two batches of maps.

    Args:
        a: First batch of maps.
        b: Second batch of maps, same shape as ``a``.

    Returns:
        ``‖CoM(a) − CoM(b)‖₂`` per sample (NaN if either map is all zero).

    Raises:
        TypeError: If an input is not a real tensor.
        ValueError: If the shapes differ or are not ``(B, [1,] *spatial)`` with 2 or 3 spatial dims.

    Shape:
        - a, b: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Ghorbani, Abid, Zou, "Interpretation of neural networks is fragile", AAAI 2019.
    """
    ta, tb = _map_pair(a, b)
    diff = center_of_mass(ta) - center_of_mass(tb)
    return torch.sqrt((diff * diff).sum(dim=1))


# --------------------------------------------------------------------------------------------
# SSIM and MSE
# --------------------------------------------------------------------------------------------


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    pos = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (pos / sigma) ** 2)
    return g / g.sum()


def map_ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity between two batches of maps, each min-max normalised first.

    Both maps are scaled to ``[0, 1]`` per sample (:func:`normalize_map`), so the data range is 1.
    Local statistics use a separable Gaussian window over the valid region (no padding), and the
    SSIM index map is averaged per sample, as in Wang et al. and MONAI's ``SSIMMetric``. Along any
    spatial axis shorter than ``win_size`` the window shrinks to the largest odd size that fits,
    so low-resolution maps (e.g. 7×7 Grad-CAM maps) are accepted. Differentiable.

    Args:
        a: First batch of maps.
        b: Second batch of maps, same shape as ``a``.
        win_size: Odd Gaussian window size (default 11).
        sigma: Standard deviation of the Gaussian window, in pixels (default 1.5).
        k1: Luminance stability constant (default 0.01).
        k2: Contrast stability constant (default 0.03).

    Returns:
        SSIM values (at most 1; 1 for identical maps), one per sample.

    Raises:
        TypeError: If an input is not a real tensor.
        ValueError: If the shapes differ, are not 2-D/3-D map batches, or a parameter is invalid.

    Shape:
        - a, b: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
        structural similarity", IEEE TIP 2004; used for explanation maps by Dombrowski et al. 2019.
    """
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size!r}")
    if win_size < 1:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    for name, val in (("k1", k1), ("k2", k2)):
        if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be a positive finite number, got {val!r}")
    ta, tb = _map_pair(a, b)
    x = normalize_map(ta, "minmax").unsqueeze(1)
    y = normalize_map(tb, "minmax").unsqueeze(1)
    nd = x.ndim - 2
    conv = F.conv2d if nd == 2 else F.conv3d

    def blur(t: torch.Tensor) -> torch.Tensor:
        for axis in range(nd):
            size = t.shape[2 + axis]
            w = min(win_size, size if size % 2 == 1 else size - 1)
            kernel_shape = [1, 1] + [1] * nd
            kernel_shape[2 + axis] = w
            kernel = _gaussian_1d(w, float(sigma), t.dtype, t.device).reshape(kernel_shape)
            t = conv(t, kernel)
        return t

    c1 = float(k1) ** 2
    c2 = float(k2) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x * mu_x
    syy = blur(y * y) - mu_y * mu_y
    sxy = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
    )
    return _flat(ssim_map).mean(dim=1)


def map_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error between two batches of maps, each sum-normalised first.

    Both maps are divided by their total absolute mass (:func:`normalize_map` with ``"sum"``),
    as in Dombrowski et al.'s manipulation loss; the squared differences are averaged over pixels.
    Differentiable.

    Args:
        a: First batch of maps.
        b: Second batch of maps, same shape as ``a``.

    Returns:
        Non-negative MSE values, one per sample.

    Raises:
        TypeError: If an input is not a real tensor.
        ValueError: If the shapes differ or are not 2-D/3-D map batches.

    Shape:
        - a, b: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Dombrowski et al., "Explanations can be manipulated and geometry is to blame",
        NeurIPS 2019.
    """
    ta, tb = _map_pair(a, b)
    diff = normalize_map(ta, "sum") - normalize_map(tb, "sum")
    return _flat(diff * diff).mean(dim=1)


# --------------------------------------------------------------------------------------------
# lesion-based metrics
# --------------------------------------------------------------------------------------------


def lesion_hit_ratio(map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Share of a map's total mass that lies inside the binary lesion mask.

    ``Σ map · mask / Σ map`` per sample. An all-zero map has no mass, so its ratio is undefined and
    returned as NaN (skip it with ``nanmean`` or count it separately). Differentiable in ``map``.

    Args:
        map: A batch of non-negative maps (e.g. Grad-CAM at input resolution).
        mask: The binary lesion masks (0/1 or bool), same spatial shape as ``map``.

    Returns:
        Ratios in ``[0, 1]`` (or NaN), one per sample.

    Raises:
        TypeError: If an input is not a real tensor.
        ValueError: If the shapes differ, the mask is not binary or the map has negative values.

    Shape:
        - map, mask: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Rasaee & Rivaz, "Explainable AI and susceptibility to adversarial attacks: a case study in
        classification of breast ultrasound images", IEEE IUS 2021 (medrobust's lesion metric).
    """
    t = _spatial_view(map, "map")
    m = _mask_view(mask, t, tuple(map.shape))
    if bool((t.detach() < 0).any()):
        raise ValueError(
            f"map must be non-negative for a mass ratio (apply ReLU), got minimum {float(t.min())}"
        )
    return _flat(t * m).sum(dim=1) / _flat(t).sum(dim=1)


def localization_iou(
    map: torch.Tensor,
    mask: torch.Tensor,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Intersection over union between the thresholded map and the binary lesion mask.

    The map is min-max normalised per sample and the region ``normalised >= threshold`` is compared
    with the mask. A constant map (including all zero) has an empty region; when both the region
    and the mask are empty the IoU is undefined and returned as NaN.

    Args:
        map: A batch of maps.
        mask: The binary lesion masks (0/1 or bool), same spatial shape as ``map``.
        threshold: Threshold in ``(0, 1]`` on the min-max normalised map.

    Returns:
        IoU values in ``[0, 1]`` (or NaN), one per sample.

    Raises:
        TypeError: If an input is not a real tensor.
        ValueError: If the shapes differ, the mask is not binary or the threshold is out of range.

    Shape:
        - map, mask: ``(B, 1, *spatial)`` or ``(B, *spatial)``.
        - Output: ``(B,)``.

    References:
        Zhou et al., "Learning deep features for discriminative localization", CVPR 2016
        (thresholded class-activation maps for localisation).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    t = _spatial_view(map, "map")
    m = _mask_view(mask, t, tuple(map.shape)) > 0.5
    region = normalize_map(t.detach(), "minmax") >= float(threshold)
    inter = _flat(region & m).sum(dim=1).to(t.dtype)
    union = _flat(region | m).sum(dim=1).to(t.dtype)
    return inter / union
