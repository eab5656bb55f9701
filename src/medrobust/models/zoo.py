"""The model zoo: named architectures for 2-D images and 3-D volumes behind one registry.

``create_model("resnet18", num_classes=2, in_channels=1, spatial_dims=2)`` builds the bare network
through the :data:`MODELS` registry and wraps it in a :class:`~medrobust.models.ModelAdapter` that
declares the input bounds and the in-graph normalisation. The adapter remembers the registered
name and the architecture keyword arguments (see :func:`architecture_of`) so that a checkpoint
can rebuild exactly the same network later.

Registered architectures (``list_models()``):

============  ==================  ===========================================================
name          task                layer names (inside the bare network, i.e. ``adapter.net``)
============  ==================  ===========================================================
small-cnn     classification      ``features.layer1`` ... ``features.layer4`` (last conv
                                  stage, Grad-CAM target), ``pool``, ``classifier``
resnet10/18/  classification      MONAI ResNet: ``conv1``, ``bn1``, ``act``, ``maxpool``,
34/50                             ``layer1`` ... ``layer4`` (Grad-CAM target), ``avgpool``,
                                  ``fc``
densenet121   classification      MONAI DenseNet121: ``features.conv0`` ...
                                  ``features.denseblock4``, ``features.norm5`` (Grad-CAM
                                  target), ``class_layers``
inception     classification      ``features.stem``, ``features.stage1`` ... (Grad-CAM target:
                                  ``features``), ``pool``, ``classifier`` (models/inception.py)
unet          segmentation        MONAI UNet: ``model`` (nested encoder/decoder)
============  ==================  ===========================================================

:func:`gradcam_layer` returns the documented Grad-CAM target for a registered name.

Adding an architecture: decorate a factory with ``@MODELS.register("name", tags=(...))``. The
factory must take the keyword-only parameters ``num_classes``, ``in_channels`` and
``spatial_dims`` plus explicit architecture parameters (no ``**kwargs``, so that misspelt keyword
arguments are reported), and return a bare ``nn.Module``. Tag it ``"segmentation"`` if it
predicts per-voxel logits ``(B, K, *spatial)``; the default task is classification.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medrobust.models.adapter import ModelAdapter
from medrobust.registry import Registry
from medrobust.types import Bounds, Task

__all__ = [
    "MODELS",
    "ArchitectureSpec",
    "SmallCNN",
    "architecture_of",
    "create_model",
    "gradcam_layer",
    "list_models",
]

MODELS: Registry[nn.Module] = Registry("model")
"""Registry of network factories; see the module docstring for the factory contract."""

_SPEC_ATTR = "_medrobust_architecture"

_GRADCAM_LAYERS: dict[str, str] = {
    "small-cnn": "features.layer4",
    "resnet10": "layer4",
    "resnet18": "layer4",
    "resnet34": "layer4",
    "resnet50": "layer4",
    "densenet121": "features.norm5",
    "inception": "features",
}


@dataclass(frozen=True)
class ArchitectureSpec:
    """How a zoo network was built: enough to rebuild it with :func:`create_model`.

    Attributes:
        name: The registered model name.
        num_classes: Number of output classes passed to the factory.
        in_channels: Number of input channels.
        spatial_dims: 2 for images, 3 for volumes.
        kwargs: The remaining architecture keyword arguments.
    """

    name: str
    num_classes: int
    in_channels: int
    spatial_dims: int
    kwargs: dict[str, Any] = field(default_factory=dict)


def architecture_of(model: nn.Module) -> ArchitectureSpec | None:
    """The :class:`ArchitectureSpec` recorded by :func:`create_model`, or None.

    Args:
        model: An adapter returned by :func:`create_model` (or any module).

    Returns:
        A copy of the recorded spec, or None if the model was not built by the zoo.
    """
    spec = model.__dict__.get(_SPEC_ATTR)
    if not isinstance(spec, ArchitectureSpec):
        return None
    return copy.deepcopy(spec)


def list_models(pattern: str = "*", tag: str | None = None) -> list[str]:
    """Sorted names of registered architectures matching a shell-style pattern.

    Args:
        pattern: Shell-style pattern, e.g. ``"resnet*"``.
        tag: Keep only architectures with this tag (``"classification"``, ``"segmentation"``,
            ``"3d"``, ``"monai"``).

    Returns:
        The matching names.
    """
    return MODELS.list(pattern, tag=tag)


def gradcam_layer(name: str) -> str:
    """The documented Grad-CAM target layer of a registered classifier.

    The name is relative to the bare network; on an adapter prefix it with ``"net."``.

    Args:
        name: A registered model name.

    Returns:
        A dotted module name such as ``"layer4"``.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        ValueError: If the architecture has no documented Grad-CAM layer (e.g. segmenters).
    """
    entry = MODELS.get(name)
    if entry.name not in _GRADCAM_LAYERS:
        raise ValueError(f"model {entry.name!r} has no documented Grad-CAM target layer")
    return _GRADCAM_LAYERS[entry.name]


def create_model(
    name: str,
    *,
    num_classes: int = 2,
    in_channels: int = 1,
    spatial_dims: int = 2,
    bounds: Bounds | tuple[float, float] = (0.0, 1.0),
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    seed: int | None = None,
    **kwargs: Any,
) -> ModelAdapter:
    """Build a registered architecture wrapped in a :class:`ModelAdapter`.

    Args:
        name: Registered name (see :func:`list_models`); ``_`` and ``-`` are interchangeable.
        num_classes: Number of classes ``K`` (at least 2; use 2 with softmax for binary tasks).
        in_channels: Number of input channels ``C``.
        spatial_dims: 2 for images, 3 for volumes (1 for signals where the network allows it).
        bounds: Valid input range; attack budgets are measured in this space.
        mean: Per-channel mean subtracted inside the graph, or None.
        std: Per-channel standard deviation divided inside the graph, or None.
        class_names: Optional names of the ``K`` classes.
        seed: If given, the weights are initialised from this seed without touching the global
            random state; if None, the global PyTorch generator initialises them.
        **kwargs: Architecture parameters of the factory (e.g. ``width`` for ``small-cnn``,
            ``no_max_pool`` for the ResNets).

    Returns:
        The adapter in training mode; :func:`architecture_of` returns how it was built.

    Raises:
        UnknownNameError: If ``name`` is not registered (the message suggests close names).
        TypeError: If a keyword argument is not accepted by the architecture, or an argument
            has the wrong type.
        ValueError: If an argument value is out of range.

    Shape:
        - Input of the adapter: ``(B, C, *spatial)`` with ``len(spatial) == spatial_dims``.
        - Output: ``(B, K)`` for classifiers, ``(B, K, *spatial)`` for segmenters.

    References:
        Wightman, "PyTorch Image Models" (timm), for the ``create_model``/``list_models`` API.
    """
    entry = MODELS.get(name)
    _check_int("num_classes", num_classes, minimum=2)
    _check_int("in_channels", in_channels, minimum=1)
    _check_int("spatial_dims", spatial_dims, minimum=1)
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    if seed is not None:
        _check_int("seed", seed, minimum=0)
    factory_kwargs = {
        "num_classes": num_classes,
        "in_channels": in_channels,
        "spatial_dims": spatial_dims,
        **kwargs,
    }
    adapter = ModelAdapter(
        _build_network(entry.name, factory_kwargs, seed),
        num_classes=num_classes,
        task=task_of_tags(entry.tags),
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        bounds=bounds,
        mean=mean,
        std=std,
        class_names=class_names,
    )
    adapter.__dict__[_SPEC_ATTR] = ArchitectureSpec(
        name=entry.name,
        num_classes=num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        kwargs=copy.deepcopy(kwargs),
    )
    return adapter


def _check_fits_in_memory(name: str, factory_kwargs: dict[str, Any]) -> None:
    """Refuse an architecture whose weights alone would not fit in this machine's memory,
    before allocating them: the network is first built on the ``meta`` device (no storage).

    Raises:
        ValueError: Naming the architecture, its parameter count and the bytes it would need.
    """
    try:
        have = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        with torch.device("meta"):
            probe = MODELS.create(name, **factory_kwargs)
    except Exception:
        return
    n = sum(p.numel() for p in probe.parameters())
    need = sum(p.numel() * p.element_size() for p in probe.parameters())
    if need > have:
        raise ValueError(
            f"model {name!r} with {factory_kwargs} has {n:,} parameters, "
            f"{need / 2**30:.3g} GiB of weights alone, more than this machine's memory "
            f"({have / 2**30:.3g} GiB); choose a smaller width or depth"
        )


def _build_network(name: str, factory_kwargs: dict[str, Any], seed: int | None) -> nn.Module:
    """Call the registered factory, seeding its initialisation without touching global state."""
    _check_fits_in_memory(name, factory_kwargs)
    if seed is None:
        return MODELS.create(name, **factory_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS.create(name, **factory_kwargs)


def task_of_tags(tags: Sequence[str]) -> Task:
    """The task a registered architecture solves, from its registry tags.

    Args:
        tags: The entry's tags; ``"multitask"`` and ``"segmentation"`` name those tasks, any
            other architecture is a classifier.

    Returns:
        The task.
    """
    if "multitask" in tags:
        return Task.MULTITASK
    if "segmentation" in tags:
        return Task.SEGMENTATION
    return Task.CLASSIFICATION


# --------------------------------------------------------------------------- validation helpers


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_float(name: str, value: object, *, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not low <= float(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return float(value)


def _check_int_list(name: str, value: object) -> list[int]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{name} must be a sequence of ints, got {type(value).__name__}")
    items = list(value)
    for v in items:
        _check_int(name, v, minimum=1)
    return [int(v) for v in items]


def check_unet_levels(channels: object, strides: object) -> tuple[list[int], list[int]]:
    """Validate the ``channels`` / ``strides`` of a U-Net-style encoder (one stride fewer than
    channels, at least two levels) and return them as int lists.

    Raises:
        ValueError: If either is not a list of positive ints or their lengths do not match.
    """
    chans = _check_int_list("channels", channels)
    strd = _check_int_list("strides", strides)
    if len(chans) < 2:
        raise ValueError(f"channels needs at least 2 entries, got {chans}")
    if len(strd) != len(chans) - 1:
        raise ValueError(
            f"strides must have len(channels) - 1 = {len(chans) - 1} entries, got {strd}"
        )
    return chans, strd


def _check_size(name: str, value: int | Sequence[int], spatial_dims: int) -> int | tuple[int, ...]:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
    if isinstance(value, int):
        _check_int(name, value, minimum=1)
        return value
    if isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) != spatial_dims:
            raise ValueError(
                f"{name} must have {spatial_dims} entries (one per spatial dim), got {items}"
            )
        for v in items:
            _check_int(name, v, minimum=1)
        return tuple(items)
    raise TypeError(f"{name} must be an int or a sequence of ints, got {type(value).__name__}")


# --------------------------------------------------------------------------- small CNN


def _conv(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def _batchnorm(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]


def _maxpool(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]


def _adaptive_avgpool(spatial_dims: int) -> type[nn.Module]:
    return {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[spatial_dims]


class PooledClassifier(nn.Module):
    """The zoo CNNs' head: ``features`` (the subclass's), average pooling, dropout, linear."""

    features: nn.Module

    def _init_head(self, dims: int, channels: int, classes: int, dropout: float) -> None:
        self.pool = _adaptive_avgpool(dims)(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of a batch ``(B, C, *spatial)``."""
        out: torch.Tensor = self.classifier(self.dropout(self.pool(self.features(x)).flatten(1)))
        return out


class SmallCNN(PooledClassifier):
    """A compact CNN for quick experiments on small 2-D images or 3-D volumes.

    Four conv stages ``features.layer1`` ... ``features.layer4``, each ``conv3 -> BatchNorm ->
    ReLU``; the first three end with a 2x max-pool, the last keeps its resolution so Grad-CAM on
    ``features.layer4`` has a 1/8-resolution map; then the shared head (``pool``, ``dropout``,
    ``classifier``, see :class:`PooledClassifier`). Widths are ``width * (1, 2, 4, 8)``.

    Args:
        num_classes: Number of output logits ``K``.
        in_channels: Number of input channels ``C``.
        spatial_dims: 1, 2 or 3.
        width: Channels of the first stage.
        dropout: Dropout probability before the head.

    Shape:
        - Input: ``(B, C, *spatial)``; spatial sizes of at least 8 are recommended.
        - Output: ``(B, K)``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        spatial_dims: int = 2,
        width: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        conv, bn, pool = _conv(spatial_dims), _batchnorm(spatial_dims), _maxpool(spatial_dims)
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(4):
            layers: list[nn.Module] = [
                conv(chans[i], chans[i + 1], kernel_size=3, padding=1, bias=False),
                bn(chans[i + 1]),
                nn.ReLU(),
            ]
            if i < 3:
                layers.append(pool(kernel_size=2, ceil_mode=True))
            stages[f"layer{i + 1}"] = nn.Sequential(*layers)
        self.features = nn.Sequential(stages)
        self._init_head(spatial_dims, chans[-1], num_classes, dropout)


@MODELS.register(
    "small-cnn",
    summary="Compact 4-stage CNN (BatchNorm, ReLU, max-pool); trains in seconds on 64x64",
    tags=("classification", "2d", "3d"),
)
def _small_cnn(
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    width: int = 16,
    dropout: float = 0.0,
) -> nn.Module:
    """Compact 4-stage CNN; see :class:`SmallCNN`."""
    _check_int("width", width, minimum=1)
    _check_float("dropout", dropout, low=0.0, high=1.0)
    return SmallCNN(
        num_classes=num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        width=width,
        dropout=float(dropout),
    )


# --------------------------------------------------------------------------- MONAI networks


def _monai_resnet(
    depth: int,
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    conv1_t_size: int | Sequence[int],
    conv1_t_stride: int | Sequence[int],
    no_max_pool: bool,
    widen_factor: float,
    shortcut_type: str,
) -> nn.Module:
    from monai.networks import nets  # lazy: MONAI is heavy to import

    size = _check_size("conv1_t_size", conv1_t_size, spatial_dims)
    stride = _check_size("conv1_t_stride", conv1_t_stride, spatial_dims)
    if not isinstance(no_max_pool, bool):
        raise TypeError(f"no_max_pool must be a bool, got {type(no_max_pool).__name__}")
    _check_float("widen_factor", widen_factor, low=1e-3, high=64.0)
    if shortcut_type not in ("A", "B"):
        raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}")
    builder = {10: nets.resnet10, 18: nets.resnet18, 34: nets.resnet34, 50: nets.resnet50}[depth]
    net: nn.Module = builder(
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        num_classes=num_classes,
        conv1_t_size=size,
        conv1_t_stride=stride,
        no_max_pool=no_max_pool,
        widen_factor=float(widen_factor),
        shortcut_type=shortcut_type,
    )
    return net


_RESNET_DOC = """MONAI ResNet-{depth} (Chen et al., "Med3D", 2019; He et al., 2016).

    MONAI's defaults keep full resolution in the stem (``conv1_t_size=7``, ``conv1_t_stride=1``)
    followed by a 2x max-pool; for small 2-D images (e.g. 28x28 MedMNIST) use
    ``conv1_t_size=3, no_max_pool=True``. Grad-CAM target: ``layer4``.
    """


def _register_resnet(depth: int) -> None:
    def factory(
        *,
        num_classes: int,
        in_channels: int,
        spatial_dims: int,
        conv1_t_size: int | Sequence[int] = 7,
        conv1_t_stride: int | Sequence[int] = 1,
        no_max_pool: bool = False,
        widen_factor: float = 1.0,
        shortcut_type: str = "B",
    ) -> nn.Module:
        return _monai_resnet(
            depth,
            num_classes=num_classes,
            in_channels=in_channels,
            spatial_dims=spatial_dims,
            conv1_t_size=conv1_t_size,
            conv1_t_stride=conv1_t_stride,
            no_max_pool=no_max_pool,
            widen_factor=widen_factor,
            shortcut_type=shortcut_type,
        )

    factory.__name__ = f"_resnet{depth}"
    factory.__doc__ = _RESNET_DOC.format(depth=depth)
    MODELS.register(
        f"resnet{depth}",
        summary=f"MONAI ResNet-{depth} for 2-D/3-D classification",
        tags=("classification", "2d", "3d", "monai"),
    )(factory)


for _depth in (10, 18, 34, 50):
    _register_resnet(_depth)


@MODELS.register(
    "densenet121",
    summary="MONAI DenseNet-121 for 2-D/3-D classification (input >= 32 per spatial dim)",
    tags=("classification", "2d", "3d", "monai"),
)
def _densenet121(
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    init_features: int = 64,
    growth_rate: int = 32,
    dropout_prob: float = 0.0,
) -> nn.Module:
    """MONAI DenseNet-121 (Huang et al., 2017); Grad-CAM target ``features.norm5``.

    The network downsamples 32x, so every spatial size must be at least 32.
    """
    from monai.networks import nets

    _check_int("init_features", init_features, minimum=1)
    _check_int("growth_rate", growth_rate, minimum=1)
    _check_float("dropout_prob", dropout_prob, low=0.0, high=1.0)
    net: nn.Module = nets.DenseNet121(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        init_features=init_features,
        growth_rate=growth_rate,
        dropout_prob=float(dropout_prob),
    )
    return net


@MODELS.register(
    "unet",
    summary="MONAI residual UNet for 2-D/3-D segmentation (sizes divisible by 2**len(strides))",
    tags=("segmentation", "2d", "3d", "monai"),
)
def _unet(
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
) -> nn.Module:
    """MONAI UNet (Ronneberger et al., 2015; Kerfoot et al., 2018) returning ``(B, K, *spatial)``.

    Every spatial size must be divisible by the product of ``strides``.
    """
    from monai.networks import nets

    chans, strd = check_unet_levels(channels, strides)
    _check_int("num_res_units", num_res_units, minimum=0)
    if not isinstance(norm, str) or norm.lower() not in ("instance", "batch"):
        raise ValueError(f"norm must be 'instance' or 'batch', got {norm!r}")
    _check_float("dropout", dropout, low=0.0, high=1.0)
    net: nn.Module = nets.UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=chans,
        strides=strd,
        num_res_units=num_res_units,
        norm=norm.lower(),
        dropout=float(dropout),
    )
    return net
