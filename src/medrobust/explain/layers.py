"""The explained layer: finding it by name and capturing its activation with a scoped hook.

A layer is named by its dotted path (``"layer4"``, ``"features.3"``), resolved relative to a
:class:`~medrobust.models.ModelAdapter`'s ``.net`` as well, or given as the module itself; an
unknown name fails with the closest names and the layers that have a spatial output. The
forward hook exists only inside :func:`capture_activations` and is removed on exit, whatever
happens.
"""

from __future__ import annotations

import difflib
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medrobust.models.adapter import ModelAdapter

__all__ = ["ActivationHolder", "capture_activations"]

logger = logging.getLogger(__name__)

_MAX_LISTED = 25


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
