"""Feature extraction for detectors: forward hooks that live only inside a context manager.

:func:`capture_features` registers hooks on the named layers when the block is entered and
removes them when it is left, also when the block raises. Each hooked layer's output is reduced to
one vector per sample by averaging over its spatial dimensions (the spatially averaged features of
Lee et al.); the special name ``"penultimate"`` captures the input of the network's last
``nn.Linear`` layer (the last hidden representation). The captured tensors keep their autograd
graph, so a detector score built from them is differentiable with respect to the input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from medrobust._utils.dist import all_gather_objects, current_shard
from medrobust.attacks.engine import eval_mode
from medrobust.detectors.io import iter_images
from medrobust.models.adapter import ModelAdapter

__all__ = [
    "PENULTIMATE",
    "FeatureHolder",
    "capture_features",
    "class_feature_statistics",
    "collect_features",
    "default_layers",
    "last_linear",
    "model_device",
    "resolve_layer",
]

PENULTIMATE = "penultimate"
"""The layer name that captures the input of the network's last linear layer."""

# Multi-layer feature sets of the zoo architectures (names relative to the bare network).
_ZOO_LAYERS: dict[str, tuple[str, ...]] = {
    "small-cnn": ("features.layer1", "features.layer2", "features.layer3", "features.layer4"),
    "resnet10": ("layer1", "layer2", "layer3", "layer4"),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "resnet34": ("layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("layer1", "layer2", "layer3", "layer4"),
    "densenet121": (
        "features.transition1",
        "features.transition2",
        "features.transition3",
        "features.norm5",
    ),
}


class FeatureHolder:
    """The features captured by :func:`capture_features` during one forward pass.

    Attributes:
        features: Layer name -> ``(B, D)`` tensor (spatially averaged outputs, or the
            penultimate vector), with its autograd graph.
    """

    def __init__(self) -> None:
        self.features: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        """Forget the features of the last pass."""
        self.features = {}


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` module of a network (in registration order).

    Raises:
        ValueError: If the network has no linear layer.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "the model has no nn.Linear layer, so it has no 'penultimate' features; name the "
            "layers explicitly"
        )
    return linears[-1]


def resolve_layer(model: ModelAdapter, name: str) -> tuple[str, nn.Module]:
    """Find a submodule by dotted name, relative to the adapter or to its ``.net``.

    Args:
        model: The adapter.
        name: ``"features.layer4"``, ``"net.layer3"``, or ``"penultimate"``.

    Returns:
        ``(canonical name relative to the adapter, module)``; for ``"penultimate"`` the name is
        kept and the module is the last linear layer.

    Raises:
        ValueError: If no submodule has that name (the message lists top-level layers).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a layer name must be a non-empty string, got {name!r}")
    if name == PENULTIMATE:
        return name, last_linear(model)
    for prefix in ("", "net."):
        try:
            return prefix + name, model.get_submodule(prefix + name)
        except AttributeError:
            continue
    top = [n for n, _ in model.net.named_children()]
    raise ValueError(
        f"the model has no layer {name!r}; top-level layers of the network: {top} (names are "
        "dotted paths such as 'layer4' or 'features.layer2')"
    )


def _reduce(t: torch.Tensor) -> torch.Tensor:
    if t.ndim > 2:
        return t.flatten(2).mean(dim=2)
    if t.ndim == 2:
        return t
    return t.reshape(t.shape[0], -1)


@contextlib.contextmanager
def capture_features(model: ModelAdapter, layers: Sequence[str]) -> Iterator[FeatureHolder]:
    """Capture spatially averaged features of ``layers`` during forward passes in the block.

    Args:
        model: The adapter.
        layers: Layer names (see :func:`resolve_layer`), ``"penultimate"`` included.

    Yields:
        A :class:`FeatureHolder` whose ``features`` are overwritten by every forward pass.

    Raises:
        ValueError: If a layer does not exist, or a hooked layer returns no tensor.
    """
    holder = FeatureHolder()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for name in layers:
            canonical, module = resolve_layer(model, name)
            if canonical == PENULTIMATE:

                def pre_hook(mod: nn.Module, inputs: Any, key: str = name) -> None:
                    holder.features[key] = inputs[0].flatten(1)

                handles.append(module.register_forward_pre_hook(pre_hook))
            else:

                def hook(mod: nn.Module, inputs: Any, output: Any, key: str = name) -> None:
                    if not isinstance(output, torch.Tensor):
                        raise ValueError(
                            f"layer {key!r} returned a {type(output).__name__}, not a tensor; "
                            "choose another layer for the detector"
                        )
                    holder.features[key] = _reduce(output)

                handles.append(module.register_forward_hook(hook))
        yield holder
    finally:
        for h in handles:
            h.remove()


def default_layers(model: ModelAdapter, example: torch.Tensor | None = None) -> list[str]:
    """A multi-layer feature set for ``model`` (plus the penultimate features).

    Zoo architectures use their documented stages (``small-cnn``: ``features.layer1`` ...
    ``layer4``; ResNets: ``layer1`` ... ``layer4``; DenseNet-121: the transitions and ``norm5``).
    For other networks, every top-level child of the network whose output is a spatial feature
    map on ``example`` is used.

    Args:
        model: The adapter.
        example: One input batch, needed for networks outside the zoo.

    Returns:
        Layer names relative to the adapter's network, then ``"penultimate"``.

    Raises:
        ValueError: If no layer can be chosen (no example for a network outside the zoo, and no
            linear layer).
    """
    from medrobust.models.zoo import architecture_of

    spec = architecture_of(model)
    if spec is not None and spec.name in _ZOO_LAYERS:
        return [*_ZOO_LAYERS[spec.name], PENULTIMATE]
    names: list[str] = []
    if example is not None:
        outputs: dict[str, int] = {}
        handles = []
        for child, module in model.net.named_children():

            def hook(mod: nn.Module, inputs: Any, output: Any, key: str = child) -> None:
                if isinstance(output, torch.Tensor):
                    outputs[key] = output.ndim

            handles.append(module.register_forward_hook(hook))
        try:
            with torch.no_grad():
                model(example[:1])
        finally:
            for h in handles:
                h.remove()
        names = [n for n, nd in outputs.items() if nd >= 3]
    try:
        last_linear(model)
        names.append(PENULTIMATE)
    except ValueError:
        pass
    if not names:
        raise ValueError(
            "cannot choose detector layers for this network: name them with layers=[...]"
        )
    return names


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def collect_features(
    model: ModelAdapter,
    data: Any,
    layers: Sequence[str],
    batch_size: int,
    *,
    keep_images: bool = False,
    what: str = "clean",
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """Features, logits and (optionally) the images of all of ``data``, in eval mode.

    Args:
        model: The classifier.
        data: Images: a tensor, data set, data loader or iterable of batches (see
            :func:`~medrobust.detectors.io.iter_images`).
        layers: Layer names to capture.
        batch_size: Batch size for tensors and data sets.
        keep_images: Also return the images (as float, on the model's device).
        what: What the data is, for error messages (``"clean"``, ``"calibration"`` ...).

    Returns:
        ``(features {layer: (N, D_l)}, logits (N, K), images (N, C, *spatial) or None)``.

    Under a process group (``torchrun``) each process runs the model on its share of the batches
    (``r, r + n, ...``) and every process gets all of them back in the data's order: the same
    tensors as one process, so a detector fitted on sharded data has the same statistics and
    threshold.

    Raises:
        ValueError: If the data is empty or the images do not match the model.
    """
    shard = current_shard()
    parts: list[_Part] = []
    dev = model_device(model)
    with torch.no_grad(), eval_mode(model), capture_features(model, layers) as cap:
        for pos, x in enumerate(iter_images(data, batch_size)):
            if not shard.owns(pos):  # another process's batch (see medrobust._utils.dist)
                continue
            x = x.to(dev).float()
            model.check_input(x, f"{what} images")
            cap.clear()
            out = model(x)
            parts.append(
                (pos, {n: cap.features[n] for n in layers}, out, x if keep_images else None)
            )
    if shard.size > 1:  # every process's batches, in the data's order, on every process
        shares = all_gather_objects([_moved(q, torch.device("cpu")) for q in parts])
        parts = [_moved(q, dev) for q in sorted((q for sh in shares for q in sh), key=_first)]
    if not parts:
        raise ValueError(f"the {what} data is empty; the detector needs clean images")
    feats = {n: torch.cat([q[1][n] for q in parts]) for n in layers}
    logits = torch.cat([q[2] for q in parts])
    images = torch.cat([q[3] for q in parts if q[3] is not None]) if keep_images else None
    return feats, logits, images


_Part = tuple[int, dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]


def _first(part: _Part) -> int:
    return part[0]


def _moved(part: _Part, device: torch.device) -> _Part:
    """A collected batch ``(position, features, logits, images)`` on ``device``."""
    pos, feats, logits, images = part
    return (
        pos,
        {n: f.to(device) for n, f in feats.items()},
        logits.to(device),
        None if images is None else images.to(device),
    )


def class_feature_statistics(
    feats: dict[str, torch.Tensor], logits: torch.Tensor
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the mean feature of each predicted class and the features' spread.

    Args:
        feats: ``{layer: (N, D_l)}`` clean features.
        logits: ``(N, K)`` the model's logits on the same images.

    Returns:
        ``{layer: (means (K, D_l), std (D_l,))}``; a class without images gets the mean of all;
        a standard deviation below ``1e-6`` (or undefined) is replaced by 1.

    Shape:
        - feats: ``(N, D_l)``; logits: ``(N, K)``.
    """
    classes = logits.argmax(dim=1)
    k = int(logits.shape[1])
    out = {}
    for name, f in feats.items():
        f = f.detach()
        overall = f.mean(dim=0)
        means = torch.stack(
            [
                f[classes == c].mean(dim=0) if bool((classes == c).any()) else overall
                for c in range(k)
            ]
        )
        std = f.std(dim=0) if f.shape[0] > 1 else torch.ones_like(overall)
        std = torch.where(torch.isfinite(std) & (std > 1e-6), std, torch.ones_like(std))
        out[name] = (means, std)
    return out
