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

import difflib
import itertools
import logging
import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

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
_MAX_LISTED = 25


# --------------------------------------------------------------------------------------------
# results and activation capture
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


@dataclass
class ActivationHolder:
    """What :func:`capture_activations` records during a forward pass.

    Attributes:
        name: Resolved dotted name of the hooked layer.
        module: The hooked module.
        activation: The layer's output from its most recent call, or None before any call. When
            gradients are enabled this tensor is part of the autograd graph (it is the tensor to
            differentiate with respect to); downstream code receives a copy of it, so in-place
            operations after the layer (``out += residual``, ``ReLU(inplace=True)``) cannot
            alter it.
        calls: How many times the layer ran since the context was entered.
        output_type: Type name of the last output when it was not a tensor, else None.
        detached: True when the layer's output did not require grad and a leaf was substituted so
            that Grad-CAM weights can still be computed (frozen model, input without grad).
    """

    name: str
    module: nn.Module
    activation: torch.Tensor | None = None
    calls: int = 0
    output_type: str | None = None
    detached: bool = False


def _is_adapter(model: nn.Module) -> bool:
    return isinstance(model, ModelAdapter)


def _display_name(model: nn.Module, name: str) -> str:
    """Names of modules inside an adapter are shown relative to its ``.net``."""
    if _is_adapter(model) and name.startswith("net."):
        return name[len("net.") :]
    return name


def _all_layer_names(model: nn.Module) -> list[str]:
    return [_display_name(model, n) for n, _ in model.named_modules() if n and n != "net"]


def _find_module(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module] | None:
    """Resolve a dotted name (or a module object) to ``(name, module)``, or None if unknown."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name, module
        return None
    named = dict(model.named_modules())
    if layer in named:
        return layer, named[layer]
    if _is_adapter(model) and f"net.{layer}" in named:
        return f"net.{layer}", named[f"net.{layer}"]
    return None


def _resolve_layer(
    model: nn.Module, layer: str | nn.Module, images: torch.Tensor | None = None
) -> tuple[str, nn.Module]:
    """Resolve ``layer`` or raise a ValueError listing the candidates (closest matches first)."""
    if isinstance(layer, str):
        if not layer.strip():
            raise ValueError("layer must be a non-empty dotted module name such as 'layer4'")
    elif not isinstance(layer, nn.Module):
        raise TypeError(
            f"layer must be a dotted module name (str) or an nn.Module, got {type(layer).__name__}"
        )
    found = _find_module(model, layer)
    if found is not None:
        return found
    if isinstance(layer, nn.Module):
        raise ValueError(
            f"layer {type(layer).__name__} is not a submodule of the model {type(model).__name__}"
        )
    spatial = _spatial_layer_names(model, images) if images is not None else None
    if spatial is not None:
        candidates, kind = spatial, "layers with spatial outputs"
    else:
        candidates, kind = _all_layer_names(model), "layers"
    raise ValueError(
        f"unknown layer {layer!r} in {type(model).__name__}; {kind} (closest first): "
        f"{_format_candidates(layer, candidates)}"
    )


def _format_candidates(query: str, names: list[str]) -> str:
    if not names:
        return "(none)"
    close = difflib.get_close_matches(query, names, n=5, cutoff=0.3) if query else []
    ordered = close + [n for n in names if n not in close]
    shown = ", ".join(repr(n) for n in ordered[:_MAX_LISTED])
    if len(ordered) > _MAX_LISTED:
        shown += f", ... ({len(ordered) - _MAX_LISTED} more)"
    return shown


def _is_spatial(shape: tuple[int, ...], image_ndim: int) -> bool:
    return len(shape) == image_ndim and any(s > 1 for s in shape[2:])


def _spatial_layer_names(model: nn.Module, images: torch.Tensor) -> list[str] | None:
    """Run one probing forward pass and list layers whose output is a spatial feature map.

    The names are ordered deepest first (reverse order of their last completed call), so the
    layers nearest the head, the usual Grad-CAM choices, come first. Buffers (BatchNorm running
    statistics) are restored afterwards so the probe has no side effect on the model. Returns None
    when the probe itself fails.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    finished: dict[str, int] = {}
    tick = itertools.count()
    handles = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                shapes.setdefault(name, tuple(output.shape))
                finished[name] = next(tick)

        return hook

    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        for name, module in model.named_modules():
            if name and name != "net":
                handles.append(module.register_forward_hook(make_hook(name)))
        with torch.no_grad():
            model(images.detach())
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
        logger.debug("probing forward pass for layer names failed: %s", exc)
        return None
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)
    spatial = [n for n in shapes if _is_spatial(shapes[n], images.ndim)]
    spatial.sort(key=lambda n: finished[n], reverse=True)
    return [_display_name(model, n) for n in spatial]


@contextmanager
def capture_activations(model: nn.Module, layer: str | nn.Module) -> Iterator[ActivationHolder]:
    """Capture a layer's output during forward passes run inside the block.

    A forward hook is registered on entry and removed on exit, also when the block raises. The
    hook records the layer's output in the yielded holder and hands a copy of it to the rest of
    the network, which protects the recorded tensor from later in-place operations. When gradients
    are enabled and the output does not require grad (frozen parameters, input without grad), a
    leaf tensor requiring grad is substituted so that the class score can still be differentiated
    with respect to the activation.

    Args:
        model: The network or ``ModelAdapter``. For an adapter, names are resolved relative to the
            adapter and, failing that, to its ``.net`` (so ``"layer4"`` finds ``net.layer4``).
        layer: A dotted module name (``"layer4"``, ``"features.3"``) or the module itself.

    Yields:
        An :class:`ActivationHolder` filled by each forward pass.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module`` or ``layer`` has the wrong type.
        ValueError: If ``layer`` does not name a submodule (the message lists the layers).

    References:
        Selvaraju et al., "Grad-CAM: visual explanations from deep networks via gradient-based
        localization", ICCV 2017.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name, module = _resolve_layer(model, layer)
    holder = ActivationHolder(name=_display_name(model, name), module=module)

    def hook(mod: nn.Module, inputs: Any, output: Any) -> Any:
        holder.calls += 1
        if not isinstance(output, torch.Tensor):
            holder.output_type = type(output).__name__
            holder.activation = None
            return None
        holder.output_type = None
        captured = output
        if torch.is_grad_enabled() and not output.requires_grad:
            captured = output.detach().requires_grad_(True)
            holder.detached = True
        holder.activation = captured
        return captured.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield holder
    finally:
        handle.remove()


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
        tgt = _resolve_target(target, logits)
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
        low = (weights * act).sum(dim=1, keepdim=True)
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
