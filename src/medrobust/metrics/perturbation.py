"""Perturbation sizes: the one ``perturbation_norms`` every attack result and audit uses.

References:
    Carlini & Wagner, "Towards evaluating the robustness of neural networks", S&P 2017.
"""

from __future__ import annotations

import math

import torch

__all__ = ["check_image_pair", "perturbation_norms"]


def check_image_pair(x: torch.Tensor, y: torch.Tensor, names: tuple[str, str]) -> None:
    """Raise unless ``x`` and ``y`` are floating tensors of one shape ``(B, ...)``."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{names[0]} and {names[1]} must be torch.Tensors, got {type(x).__name__} and "
            f"{type(y).__name__}"
        )
    if x.shape != y.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{names[0]} must have a batch axis and at least one more axis (B, ...), got shape "
            f"{tuple(x.shape)}"
        )
    if not (x.is_floating_point() and y.is_floating_point()):
        raise TypeError(
            f"{names[0]} and {names[1]} must be floating tensors, got {x.dtype} and {y.dtype}"
        )


def perturbation_norms(
    x: torch.Tensor, x_adv: torch.Tensor, l0_tol: float = 0.0
) -> dict[str, torch.Tensor]:
    """Per-sample L-inf, L2 and L0 sizes of ``x_adv - x`` over all non-batch axes.

    Args:
        x: Clean inputs.
        x_adv: Perturbed inputs of the same shape.
        l0_tol: An element counts as changed for L0 when ``|x_adv - x| > l0_tol`` (default 0:
            any change; pass a small value to ignore floating-point noise).

    Returns:
        ``{"linf": (B,), "l2": (B,), "l0": (B,)}``: ``linf`` and ``l2`` in the dtype of ``x``,
        ``l0`` as int64 counts of changed elements (channels counted separately).

    Raises:
        TypeError: If the inputs are not floating tensors.
        ValueError: If the shapes differ, there is no non-batch axis or ``l0_tol < 0``.

    Shape:
        - x, x_adv: ``(B, *)``, e.g. ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        - each output: ``(B,)``.

    References:
        Carlini & Wagner, "Towards evaluating the robustness of neural networks", S&P 2017
        (the L0/L2/L-inf distance metrics).
    """
    check_image_pair(x, x_adv, ("x", "x_adv"))
    if not math.isfinite(l0_tol) or l0_tol < 0:
        raise ValueError(f"l0_tol must be a finite non-negative number, got {l0_tol}")
    delta = (x_adv.detach() - x.detach()).flatten(1)
    if delta.shape[1] == 0:
        zeros = torch.zeros(delta.shape[0], dtype=x.dtype, device=x.device)
        return {"linf": zeros, "l2": zeros.clone(), "l0": zeros.long()}
    return {
        "linf": delta.abs().amax(dim=1),
        "l2": torch.linalg.vector_norm(delta, ord=2, dim=1),
        "l0": (delta.abs() > l0_tol).sum(dim=1),
    }
