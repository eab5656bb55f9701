"""Grad-CAM map helpers of the explanation objectives: the default layer, sum-normalised maps
and their centre of mass, target-map strategies and option checks.

References:
    Selvaraju et al., "Grad-CAM", ICCV 2017; Ghorbani, Abid, Zou, "Interpretation of neural
    networks is fragile", AAAI 2019; Dombrowski et al., "Explanations can be manipulated and
    geometry is to blame", NeurIPS 2019.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from medrobust.explain.gradcam import _spatial_layer_names, grad_cam_full
from medrobust.metrics.maps import normalize_map

__all__ = [
    "check_choice",
    "check_number",
    "com_fraction",
    "default_gradcam_layer",
    "explained_maps",
    "map_mass",
    "outward_direction",
    "shifted_maps",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# layer resolution
# --------------------------------------------------------------------------------------------


def default_gradcam_layer(model: nn.Module, images: torch.Tensor | None = None) -> str:
    """The Grad-CAM layer to use when none is given.

    In order: the documented layer of a zoo architecture (``medrobust.models.gradcam_layer``,
    and ``encoder.layer4`` for the ``mtl-*`` networks); a module named ``layer4`` or ending in
    ``.layer4`` (ResNet convention, e.g. a ResNet encoder of a multi-task network; the shallowest
    such name wins); otherwise the deepest layer with a spatial output, found with one probing
    forward pass on ``images``.

    Args:
        model: The model (usually a ``ModelAdapter``).
        images: A batch to probe the layers with when no convention applies.

    Returns:
        A dotted layer name relative to the bare network (``adapter.net``).

    Raises:
        ValueError: If no layer can be chosen (no convention and no images, or no spatial
            layer); the message asks for an explicit ``layer``.
    """
    from medrobust.models.multitask import MULTITASK_GRADCAM_LAYERS
    from medrobust.models.zoo import _GRADCAM_LAYERS, architecture_of

    spec = architecture_of(model)
    if spec is not None:
        if spec.name in MULTITASK_GRADCAM_LAYERS:
            return MULTITASK_GRADCAM_LAYERS[spec.name]
        if spec.name in _GRADCAM_LAYERS:
            return _GRADCAM_LAYERS[spec.name]
    net = getattr(model, "net", model)
    resnet_like = sorted(
        (n for n, _ in net.named_modules() if n == "layer4" or n.endswith(".layer4")),
        key=lambda n: (n.count("."), n),
    )
    if resnet_like:
        return resnet_like[0]
    if images is not None:
        spatial = _spatial_layer_names(model, images)
        if spatial:
            logger.info("Grad-CAM layer not given; using the deepest spatial layer %r", spatial[0])
            return spatial[0]
    raise ValueError(
        f"cannot choose a Grad-CAM layer for {type(net).__name__}: it is not a zoo architecture "
        "and has no 'layer4'; pass layer='<dotted module name>' (the last convolutional stage)"
    )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def com_fraction(h: torch.Tensor) -> torch.Tensor:
    """Centre of mass of sum-normalised maps in fractions of each side; 0 for an empty map.

    Shape: ``(B, 1, *spatial)`` -> ``(B, spatial_dims)``.
    """
    flat_mass = h.flatten(1).sum(dim=1)
    safe = torch.where(flat_mass > 0, flat_mass, torch.ones_like(flat_mass))
    coords = []
    nd = h.ndim - 2
    for axis in range(nd):
        size = h.shape[2 + axis]
        shape = [1] * h.ndim
        shape[2 + axis] = size
        pos = torch.arange(size, dtype=h.dtype, device=h.device).reshape(shape) / size
        coords.append((h * pos).flatten(1).sum(dim=1) / safe)
    return torch.stack(coords, dim=1)


def outward_direction(com: torch.Tensor) -> torch.Tensor:
    """Unit vectors from the image centre toward each centre of mass (the last axis when the
    centre of mass is at the centre). Shape: ``(B, d)`` -> ``(B, d)``."""
    d = com - 0.5
    n = d.norm(dim=1, keepdim=True)
    fallback = torch.zeros_like(d)
    fallback[:, -1] = 1.0
    return torch.where(n > 1e-6, d / n.clamp_min(1e-6), fallback)


def map_mass(maps: torch.Tensor) -> torch.Tensor:
    return maps.detach().flatten(1).sum(dim=1)


def shifted_maps(maps: torch.Tensor, strategy: str) -> torch.Tensor:
    if strategy == "shift":
        dims = tuple(range(2, maps.ndim))
        shifts = tuple(maps.shape[d] // 2 for d in dims)
        return torch.roll(maps, shifts=shifts, dims=dims)
    if strategy == "flip":
        return torch.flip(maps, dims=(maps.ndim - 1,))
    return torch.roll(maps, shifts=1, dims=0)  # "other": the next image's map


def check_number(name: str, value: object, low: float, high: float, *, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and v <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value!r}")
    return v


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return str(value)


def explained_maps(
    model: nn.Module,
    images: torch.Tensor,
    layer: str,
    target: torch.Tensor | None,
    *,
    method: str = "gradcam",
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum-normalised Grad-CAM maps and the logits of one forward pass.

    Args:
        model: The classifier (adapter).
        images: Inputs; the maps are differentiable in them when they require grad.
        layer: Grad-CAM layer.
        target: Classes to explain ``(B,)``, or None for the predicted classes.
        method: ``"gradcam"`` or ``"gradcam++"``.
        create_graph: Keep second-order terms (needed when the Grad-CAM weights depend on the
            input, e.g. a non-linear head).

    Returns:
        ``(maps, logits)``: maps ``(B, 1, *spatial)`` summing to one (all zero where Grad-CAM
        is all zero) and logits ``(B, K)``.

    Raises:
        ValueError: See :func:`medrobust.explain.grad_cam_full` (unknown layer, no spatial
            output, no gradient path).

    Shape:
        - images: ``(B, C, *spatial)``; maps: ``(B, 1, *spatial)``; logits: ``(B, K)``.

    References:
        Selvaraju et al., ICCV 2017 (Grad-CAM); Dombrowski et al., NeurIPS 2019 (normalisation).
    """
    out = grad_cam_full(
        model,
        images,
        layer,
        target,
        create_graph=create_graph,
        method=method,  # type: ignore[arg-type]
    )
    return normalize_map(out.maps, "sum"), out.logits
