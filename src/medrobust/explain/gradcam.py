"""Differentiable Grad-CAM and Grad-CAM++ for 2-D and 3-D classifiers.

The class score's gradient with respect to a layer's activation is taken with
``torch.autograd.grad(..., create_graph=True)`` when the input requires grad, so the returned map
is itself a differentiable function of the input and an explanation attack is just another
objective. The activation is captured by a forward hook that exists only inside
:func:`capture_activations` and is removed on exit, whatever happens. No parameter ``.grad`` is
ever written and the model's train/eval mode is left as it was.

Note on what is differentiated: for a ``layer → global average pooling → linear`` head (ResNet,
DenseNet) the Grad-CAM weights are the linear weights divided by the pooled size and do not depend
on the input, so Grad-CAM equals ``ReLU(CAM) / Z`` and the map's input gradient is first order.
When the head is non-linear (``FC → ReLU → FC``) the weights depend on the input only through
piecewise-constant ReLU gates; wrap the attack in :func:`medrobust.explain.softplus_relu` to get
informative second-order terms.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.explain.layers import (
    ActivationHolder,
    _display_name,
    _format_candidates,
    _is_spatial,
    _resolve_layer,
    _spatial_layer_names,
    capture_activations,
)
from medrobust.metrics.maps import normalize_map
from medrobust.models.adapter import ModelAdapter

__all__ = [
    "ActivationHolder",
    "GradCamOutput",
    "capture_activations",
    "grad_cam",
    "grad_cam_full",
]

logger = logging.getLogger(__name__)

Method = Literal["gradcam", "gradcam++"]
Normalize = Literal["minmax", "sum"]

_UPSAMPLE_MODE = {2: "bilinear", 3: "trilinear"}


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradCamOutput:
    """Everything one Grad-CAM call computes.

    Attributes:
        maps: Maps at the input resolution, ``(B, 1, *spatial)``, after ReLU (if requested),
            upsampling and normalisation (if requested).
        low_res_maps: The same maps at the layer's resolution ``(B, 1, *feature_spatial)``, after
            ReLU (if requested) but before upsampling and normalisation.
        logits: The model's logits ``(B, K)`` for the input.
        target: The explained class per sample, ``(B,)`` int64 (the predicted class when no
            target was given).
        layer: The resolved dotted name of the layer, relative to the model passed in.
    """

    maps: torch.Tensor
    low_res_maps: torch.Tensor
    logits: torch.Tensor
    target: torch.Tensor
    layer: str = ""

    @property
    def predicted(self) -> torch.Tensor:
        """The predicted class per sample, ``(B,)`` int64."""
        return self.logits.detach().argmax(dim=1)


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------


def _check_images(model: nn.Module, images: object) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor, got dtype {images.dtype}")
    shape = tuple(images.shape)
    if isinstance(model, ModelAdapter):
        sd = model.spatial_dims
        if sd not in _UPSAMPLE_MODE:
            raise ValueError(f"Grad-CAM supports 2-D and 3-D models, the adapter declares {sd}-D")
        if images.ndim != 2 + sd:
            spatial = ", ".join(["*"] * sd)
            raise ValueError(
                f"images must have shape (B, C, {spatial}) (rank {2 + sd}) for this {sd}-D "
                f"model, got shape {shape}"
            )
        if images.shape[1] != model.in_channels:
            raise ValueError(
                f"images have {images.shape[1]} channel(s) but the model expects "
                f"{model.in_channels} (shape {shape})"
            )
    elif images.ndim not in (4, 5):
        raise ValueError(
            "images must have shape (B, C, H, W) or (B, C, H, W, D) (rank 4 or 5), got shape "
            f"{shape} (rank {images.ndim})"
        )
    if images.shape[0] == 0:
        raise ValueError(f"images is an empty batch (shape {shape})")
    return images


def _resolve_target(target: object, logits: torch.Tensor) -> torch.Tensor:
    batch, num_classes = logits.shape
    if target is None:
        return logits.detach().argmax(dim=1)
    if isinstance(target, bool):
        raise TypeError("target must be an int class index or a (B,) integer tensor, got bool")
    if isinstance(target, numbers.Integral):
        value = int(target)
        if not 0 <= value < num_classes:
            raise ValueError(
                f"target class {value} is out of range for a model with {num_classes} classes "
                f"(valid: 0..{num_classes - 1})"
            )
        return torch.full((batch,), value, dtype=torch.long, device=logits.device)
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must be an integer tensor, got dtype {target.dtype}")
        t = target.reshape(1).expand(batch) if target.ndim == 0 else target
        if tuple(t.shape) != (batch,):
            raise ValueError(
                f"target must be an int or have shape ({batch},) (one class per image), got "
                f"shape {tuple(target.shape)}"
            )
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"target classes must be in 0..{num_classes - 1} for a model with "
                f"{num_classes} classes, got values in [{lo}, {hi}]"
            )
        return t.to(device=logits.device, dtype=torch.long)
    raise TypeError(
        f"target must be None, an int or a (B,) integer tensor, got {type(target).__name__}"
    )


def _check_logits(out: object, batch: int) -> torch.Tensor:
    hint = (
        "; wrap multi-output networks in medrobust.models.ModelAdapter with output_index or "
        "output_key selecting the classification logits"
    )
    if not isinstance(out, torch.Tensor):
        raise TypeError(
            f"Grad-CAM needs the model to return a logits tensor (B, K), got "
            f"{type(out).__name__}{hint}"
        )
    if out.ndim != 2 or out.shape[0] != batch:
        raise ValueError(
            f"Grad-CAM needs classification logits of shape ({batch}, K), got shape "
            f"{tuple(out.shape)}{hint}"
        )
    return out


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------


def _channel_weights(act: torch.Tensor, grads: torch.Tensor, method: str) -> torch.Tensor:
    spatial_axes = tuple(range(2, act.ndim))
    if method == "gradcam":
        return grads.mean(dim=spatial_axes, keepdim=True)
    # Grad-CAM++ with the exponential-score closed form:
    # alpha = g^2 / (2 g^2 + sum(A) g^3), weights = sum(alpha * relu(g)).
    g2 = grads * grads
    g3 = g2 * grads
    act_sum = act.sum(dim=spatial_axes, keepdim=True)
    denom = 2.0 * g2 + act_sum * g3
    nonzero = denom != 0
    alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)), 0.0)
    return (alpha * F.relu(grads)).sum(dim=spatial_axes, keepdim=True)


def grad_cam_full(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | nn.Module = "layer4",
    target: int | torch.Tensor | None = None,
    *,
    create_graph: bool | None = None,
    relu: bool = True,
    normalize: Normalize | None = None,
    method: Method = "gradcam",
) -> GradCamOutput:
    """Grad-CAM (or Grad-CAM++) maps with the low-resolution maps, logits and explained classes.

    For class ``c`` with logit ``y^c`` and activation ``A`` of shape ``(B, K, *feature_spatial)``
    at ``layer``: ``g = ∂Σ_b y_b^{c_b} / ∂A`` (one backward for the whole batch), the channel
    weights are ``α_k = mean(g_k)`` (Grad-CAM) or ``Σ a_k · relu(g_k)`` with
    ``a = g² / (2g² + ΣA·g³)`` (Grad-CAM++), and the map is ``ReLU(Σ_k α_k A_k)`` upsampled to
    the input size (bilinear / trilinear, ``align_corners=False``).

    Differentiability: with ``create_graph=True`` the weights keep their graph (second order) and
    the maps are differentiable with respect to ``images``. With ``create_graph=False`` and an
    input requiring grad, the maps are still differentiable through ``A`` with the weights treated
    as constants (exact for a GAP + linear head). When neither holds, all returned tensors are
    detached. Parameters never receive ``.grad``; the model's mode is not changed. In ``train``
    mode BatchNorm couples the samples of a batch, so explain in ``eval`` mode.

    Single-logit binary models: a ``ModelAdapter`` turns a sigmoid head ``z`` into the logits
    ``[0, z]``, so class 0's score is the constant 0 and its map is identically zero; explain
    class 1 (evidence for the positive class) and, for evidence against it, use ``relu=False``
    and negate the map.

    Args:
        model: A classifier returning logits ``(B, K)``, typically a ``ModelAdapter``.
        images: Input batch in the model's input space.
        layer: Dotted name of the layer (``"layer4"``, ``"net.layer4"``, ``"features.3"``) or the
            module itself; for an adapter, names are also resolved relative to its ``.net``.
        target: Class to explain: an int for the whole batch, a ``(B,)`` integer tensor, or None
            for the predicted class of each sample.
        create_graph: Keep the graph of the gradients (needed to attack the map through the
            weights). Defaults to ``images.requires_grad``.
        relu: Apply the final ReLU of Grad-CAM (keep positive evidence only).
        normalize: None, ``"minmax"`` or ``"sum"``, applied per sample to the upsampled maps.
        method: ``"gradcam"`` or ``"gradcam++"``.

    Returns:
        A :class:`GradCamOutput` with ``maps``, ``low_res_maps``, ``logits``, ``target``, ``layer``.

    Raises:
        TypeError: If the model, images, target or model output have the wrong type.
        ValueError: If the images have the wrong rank or channels, the layer is unknown, has no
            spatial output, is not called, has no gradient path to the score, or the target is
            out of range; also for an unknown ``normalize`` or ``method``.

    Shape:
        - images: ``(B, C, *spatial)`` with 2 or 3 spatial dims.
        - maps: ``(B, 1, *spatial)``.
        - low_res_maps: ``(B, 1, *feature_spatial)``.
        - logits: ``(B, K)``; target: ``(B,)``.

    References:
        Selvaraju et al., "Grad-CAM: visual explanations from deep networks via gradient-based
        localization", ICCV 2017; Chattopadhyay et al., "Grad-CAM++: improved visual explanations
        for deep convolutional networks", WACV 2018.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if method not in ("gradcam", "gradcam++"):
        raise ValueError(f"method must be 'gradcam' or 'gradcam++', got {method!r}")
    if normalize not in (None, "minmax", "sum"):
        raise ValueError(f"normalize must be None, 'minmax' or 'sum', got {normalize!r}")
    images = _check_images(model, images)
    name, module = _resolve_layer(model, layer, images)
    shown = _display_name(model, name)
    graph = images.requires_grad if create_graph is None else bool(create_graph)
    keep = graph or images.requires_grad

    with torch.enable_grad():
        with capture_activations(model, module) as holder:
            out = model(images)
        logits = _check_logits(out, images.shape[0])
        act = _checked_activation(holder, shown, model, images)
        tgt = _resolve_target(target, logits)
        low = _weighted_activation(act, logits, tgt, shown, graph=graph, keep=keep, method=method)
        if relu:
            low = F.relu(low)
        maps = F.interpolate(
            low,
            size=tuple(images.shape[2:]),
            mode=_UPSAMPLE_MODE[images.ndim - 2],
            align_corners=False,
        )
        if normalize is not None:
            maps = normalize_map(maps, normalize)

    if not keep:
        maps, low, logits = maps.detach(), low.detach(), logits.detach()
    return GradCamOutput(maps=maps, low_res_maps=low, logits=logits, target=tgt, layer=shown)


def _checked_activation(
    holder: ActivationHolder, shown: str, model: nn.Module, images: torch.Tensor
) -> torch.Tensor:
    """The captured activation of the explained layer, checked to be a usable feature map.

    Raises:
        ValueError: If the layer was not called, returned no tensor or has no spatial output.
    """
    act = holder.activation
    if holder.calls == 0:
        raise ValueError(
            f"layer {shown!r} was not called during the forward pass of "
            f"{type(model).__name__}; choose a layer on the path to the logits"
        )
    if act is None:
        raise ValueError(
            f"layer {shown!r} returned a {holder.output_type}, not a tensor; Grad-CAM needs a "
            "convolutional feature map (B, C, *spatial)"
        )
    if not _is_spatial(tuple(act.shape), images.ndim):
        spatial = _spatial_layer_names(model, images)
        listed = _format_candidates("", spatial) if spatial is not None else "(unknown)"
        raise ValueError(
            f"layer {shown!r} has no spatial output: it returned shape {tuple(act.shape)}, "
            f"but Grad-CAM needs a feature map (B, C, *spatial) of rank {images.ndim} with a "
            f"spatial size above 1; layers with spatial outputs (deepest first): {listed}"
        )
    if holder.calls > 1:
        logger.warning(
            "layer %r ran %d times in one forward pass; Grad-CAM uses its last call",
            shown,
            holder.calls,
        )
    if images.requires_grad and holder.detached:
        logger.warning(
            "the output of layer %r does not depend on images with gradients (detached "
            "inside the model?); the maps will not be differentiable with respect to images",
            shown,
        )
    out: torch.Tensor = act
    return out


def _weighted_activation(
    act: torch.Tensor,
    logits: torch.Tensor,
    tgt: torch.Tensor,
    shown: str,
    *,
    graph: bool,
    keep: bool,
    method: Method,
) -> torch.Tensor:
    """``Σ_k α_k A_k`` at the feature resolution, before the ReLU (see :func:`grad_cam_full`).

    Raises:
        ValueError: If the target scores have no gradient path to the activation.

    Shape:
        - act: ``(B, K, *feature_spatial)``; logits: ``(B, classes)``; tgt: ``(B,)``.
        - returns: ``(B, 1, *feature_spatial)``.
    """
    score = logits.gather(1, tgt.unsqueeze(1)).sum()
    no_path = (
        f"no gradient path from the target class score to layer {shown!r}: the logits do "
        "not depend on it through differentiable operations (is the layer after the head, "
        "on another branch, or detached?)"
    )
    if not score.requires_grad:
        raise ValueError(no_path)
    (grads,) = torch.autograd.grad(
        score, act, create_graph=graph, retain_graph=keep, allow_unused=True
    )
    if grads is None:
        raise ValueError(no_path)
    weights = _channel_weights(act, grads, method)
    low: torch.Tensor = (weights * act).sum(dim=1, keepdim=True)
    return low


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    layer: str | nn.Module = "layer4",
    target: int | torch.Tensor | None = None,
    *,
    create_graph: bool | None = None,
    relu: bool = True,
    normalize: Normalize | None = None,
    method: Method = "gradcam",
) -> torch.Tensor:
    """Grad-CAM (or Grad-CAM++) maps at the input resolution.

    A shortcut for ``grad_cam_full(...).maps``; see :func:`grad_cam_full` for the definition,
    the differentiability rules and the errors.

    Args:
        model: A classifier returning logits ``(B, K)``, typically a ``ModelAdapter``.
        images: Input batch in the model's input space.
        layer: Dotted layer name or module (resolved relative to an adapter and its ``.net``).
        target: An int, a ``(B,)`` integer tensor, or None for the predicted classes.
        create_graph: Keep the gradient graph; defaults to ``images.requires_grad``.
        relu: Apply the final ReLU.
        normalize: None, ``"minmax"`` or ``"sum"`` (per sample).
        method: ``"gradcam"`` or ``"gradcam++"``.

    Returns:
        The maps, differentiable with respect to ``images`` when it requires grad.

    Raises:
        TypeError: See :func:`grad_cam_full`.
        ValueError: See :func:`grad_cam_full`.

    Shape:
        - images: ``(B, C, *spatial)`` with 2 or 3 spatial dims.
        - Output: ``(B, 1, *spatial)``.

    References:
        Selvaraju et al., ICCV 2017 (Grad-CAM); Chattopadhyay et al., WACV 2018 (Grad-CAM++).
    """
    return grad_cam_full(
        model,
        images,
        layer,
        target,
        create_graph=create_graph,
        relu=relu,
        normalize=normalize,
        method=method,
    ).maps
