"""Multi-task networks: a ResNet encoder with a classification head and a lesion decoder.

The network of Rasaee & Rivaz (2021), reconstructed: a MONAI ResNet trunk whose global-average-
pooled ``layer4`` features feed a linear classifier (benign / malignant), and a U-Net-style decoder
on the stem and ``layer1`` ... ``layer4`` features that predicts a one-channel lesion mask (one
logit per pixel, sigmoid). Both heads are trained jointly with the ``"multitask"`` recipe
(:mod:`medrobust.defenses.multitask`): ``CE + λ · (Dice + BCE)``.

Output convention: ``forward`` returns a :class:`MultitaskOutput` named tuple
``(classification, segmentation)``. Because it is a tuple whose first entry holds the class
logits, a :class:`~medrobust.models.ModelAdapter` with the default ``output_index=0`` returns the
classification logits ``(B, K)`` from ``forward`` (so every classification attack, metric and
Grad-CAM works unchanged), while ``adapter.raw_forward(x)`` returns both heads.
:func:`split_multitask_output` reads both heads from this tuple, from any ``(cls, seg)`` pair, or
from a dict with the keys ``"classification"`` and ``"segmentation"``.

Registered architectures (layer names inside the bare network, i.e. ``adapter.net``):

==============  ==============================================================================
name            layers
==============  ==============================================================================
mtl-resnet18    ``encoder.conv1`` ... ``encoder.layer4`` (Grad-CAM target), ``encoder.fc``,
                ``decoder.up1`` ... ``decoder.up4``, ``decoder.head``
mtl-resnet50    the same names, with a ResNet-50 (bottleneck) encoder
==============  ==============================================================================

:data:`MULTITASK_GRADCAM_LAYERS` lists the Grad-CAM target of each.

References:
    Rasaee & Rivaz, "Explainable AI and susceptibility to adversarial attacks: a case study in
    classification of breast ultrasound images", IEEE IUS 2021; Ronneberger et al., "U-Net",
    MICCAI 2015; He et al., "Deep residual learning", CVPR 2016.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.models.zoo import MODELS

__all__ = [
    "MULTITASK_GRADCAM_LAYERS",
    "MultitaskOutput",
    "MultitaskResNet",
    "split_multitask_output",
]

#: Grad-CAM target layer of each registered multi-task network (relative to ``adapter.net``).
MULTITASK_GRADCAM_LAYERS: dict[str, str] = {
    "mtl-resnet18": "encoder.layer4",
    "mtl-resnet50": "encoder.layer4",
}

_DEFAULT_DECODER = {18: (128, 64, 32, 16), 50: (256, 128, 64, 32)}


class MultitaskOutput(NamedTuple):
    """The two heads of a multi-task network.

    Attributes:
        classification: Class logits ``(B, K)``.
        segmentation: Lesion logits ``(B, 1, *spatial)`` (apply a sigmoid for probabilities).
    """

    classification: torch.Tensor
    segmentation: torch.Tensor


def split_multitask_output(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the classification and segmentation logits from a multi-task network's output.

    Accepted: a :class:`MultitaskOutput`, any tuple or list ``(classification, segmentation)``,
    or a dict with the keys ``"classification"`` and ``"segmentation"``.

    Args:
        out: The raw network output (``ModelAdapter.raw_forward``).

    Returns:
        ``(class_logits, segmentation_logits)``.

    Raises:
        TypeError: If ``out`` is none of the accepted forms or holds non-tensors.
        ValueError: If the shapes are not ``(B, K)`` and ``(B, C, *spatial)`` with the same ``B``.

    Shape:
        - class logits: ``(B, K)``; segmentation logits: ``(B, C, *spatial)``.
    """
    if isinstance(out, Mapping):
        missing = [k for k in ("classification", "segmentation") if k not in out]
        if missing:
            raise TypeError(
                f"a multi-task output dict needs the keys 'classification' and 'segmentation', "
                f"got keys {sorted(map(str, out))}"
            )
        cls, seg = out["classification"], out["segmentation"]
    elif isinstance(out, (tuple, list)):
        if len(out) < 2:
            raise TypeError(
                f"a multi-task network must return (classification, segmentation), got a "
                f"{len(out)}-element {type(out).__name__}"
            )
        cls, seg = out[0], out[1]
    else:
        raise TypeError(
            "a multi-task network must return (classification, segmentation) logits as a tuple "
            f"or a dict, got {type(out).__name__}; is this a single-task model?"
        )
    if not isinstance(cls, torch.Tensor) or not isinstance(seg, torch.Tensor):
        raise TypeError(
            f"multi-task outputs must be tensors, got {type(cls).__name__} and {type(seg).__name__}"
        )
    if cls.ndim != 2:
        raise ValueError(f"classification logits must have shape (B, K), got {tuple(cls.shape)}")
    if seg.ndim < 3 or seg.shape[0] != cls.shape[0]:
        raise ValueError(
            f"segmentation logits must have shape ({cls.shape[0]}, C, *spatial), got "
            f"{tuple(seg.shape)}"
        )
    return cls, seg


def _out_channels(module: nn.Module) -> int:
    convs = [m for m in module.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not convs:  # pragma: no cover - every ResNet stage has convolutions
        raise ValueError(f"{type(module).__name__} has no convolution")
    return int(convs[-1].out_channels)


class _UpBlock(nn.Module):
    """Upsample to the skip's size, concatenate, then two ``conv3 → BN → ReLU``."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, spatial_dims: int) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]
        self.block = nn.Sequential(
            conv(in_ch + skip_ch, out_ch, kernel_size=3, padding=1, bias=False),
            bn(out_ch),
            nn.ReLU(),
            conv(out_ch, out_ch, kernel_size=3, padding=1, bias=False),
            bn(out_ch),
            nn.ReLU(),
        )
        self.mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Decode ``x`` at the resolution of ``skip``."""
        x = F.interpolate(x, size=tuple(skip.shape[2:]), mode=self.mode, align_corners=False)
        out: torch.Tensor = self.block(torch.cat([x, skip], dim=1))
        return out


class _Decoder(nn.Module):
    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        spatial_dims: int,
    ) -> None:
        super().__init__()
        stem, c1, c2, c3, c4 = encoder_channels
        d1, d2, d3, d4 = decoder_channels
        self.up1 = _UpBlock(c4, c3, d1, spatial_dims)
        self.up2 = _UpBlock(d1, c2, d2, spatial_dims)
        self.up3 = _UpBlock(d2, c1, d3, spatial_dims)
        self.up4 = _UpBlock(d3, stem, d4, spatial_dims)
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
        self.head = conv(d4, 1, kernel_size=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        stem, f1, f2, f3, f4 = feats
        x = self.up1(f4, f3)
        x = self.up2(x, f2)
        x = self.up3(x, f1)
        x = self.up4(x, stem)
        out: torch.Tensor = self.head(x)
        return out


class MultitaskResNet(nn.Module):
    """ResNet encoder + classification head + U-Net-style lesion decoder.

    ``encoder`` is a MONAI ResNet (its ``avgpool`` + ``fc`` form the classification head, so
    Grad-CAM at ``encoder.layer4`` equals ``ReLU(CAM) / Z`` exactly as for the single-task
    ResNet). The decoder upsamples ``layer4`` step by step, concatenating ``layer3``, ``layer2``,
    ``layer1`` and the stem output (after ``conv1 → bn1 → act``), and ends in a 1x1 convolution
    with one output channel; the mask logits are finally resized to the input size.

    Args:
        depth: ResNet depth, 10, 18, 34 or 50.
        num_classes: Number of class logits ``K``.
        in_channels: Input channels ``C``.
        spatial_dims: 1, 2 or 3.
        conv1_t_size: Stem kernel size (MONAI default 7).
        conv1_t_stride: Stem stride (MONAI default 1; 2 quarters the cost of large inputs).
        no_max_pool: Skip the stem's max-pool.
        widen_factor: Width multiplier of the ResNet stages.
        decoder_channels: Widths of the four decoder stages (deepest first).

    Shape:
        - Input: ``(B, C, *spatial)``.
        - Output: :class:`MultitaskOutput` with ``(B, K)`` and ``(B, 1, *spatial)``.

    References:
        Rasaee & Rivaz, IEEE IUS 2021 (MTL network for BUS); Ronneberger et al., MICCAI 2015.
    """

    def __init__(
        self,
        *,
        depth: int,
        num_classes: int,
        in_channels: int,
        spatial_dims: int = 2,
        conv1_t_size: int | Sequence[int] = 7,
        conv1_t_stride: int | Sequence[int] = 1,
        no_max_pool: bool = False,
        widen_factor: float = 1.0,
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        from monai.networks import nets  # lazy: MONAI is heavy to import

        builders = {10: nets.resnet10, 18: nets.resnet18, 34: nets.resnet34, 50: nets.resnet50}
        if depth not in builders:
            raise ValueError(f"depth must be one of {sorted(builders)}, got {depth}")
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        dec = list(decoder_channels) if decoder_channels is not None else None
        if dec is None:
            dec = list(_DEFAULT_DECODER[50 if depth == 50 else 18])
        if len(dec) != 4 or any(isinstance(c, bool) or not isinstance(c, int) for c in dec):
            raise ValueError(f"decoder_channels must be 4 positive ints, got {decoder_channels!r}")
        if any(c < 1 for c in dec):
            raise ValueError(f"decoder_channels must be 4 positive ints, got {decoder_channels!r}")
        self.encoder: nn.Module = builders[depth](
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            num_classes=num_classes,
            conv1_t_size=conv1_t_size,
            conv1_t_stride=conv1_t_stride,
            no_max_pool=no_max_pool,
            widen_factor=float(widen_factor),
            shortcut_type="B",
        )
        enc: Any = self.encoder
        stem_ch = int(enc.conv1.out_channels)
        chans = [stem_ch] + [_out_channels(getattr(enc, f"layer{i}")) for i in range(1, 5)]
        self.decoder = _Decoder(chans, dec, spatial_dims)
        self.no_max_pool = bool(no_max_pool)
        self._mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial_dims]

    def forward(self, x: torch.Tensor) -> MultitaskOutput:
        """Class logits and lesion logits of a batch ``(B, C, *spatial)``."""
        enc: Any = self.encoder
        stem = enc.act(enc.bn1(enc.conv1(x)))
        h = stem if self.no_max_pool else enc.maxpool(stem)
        f1 = enc.layer1(h)
        f2 = enc.layer2(f1)
        f3 = enc.layer3(f2)
        f4 = enc.layer4(f3)
        logits = enc.fc(enc.avgpool(f4).flatten(1))
        seg = self.decoder((stem, f1, f2, f3, f4))
        if tuple(seg.shape[2:]) != tuple(x.shape[2:]):
            seg = F.interpolate(seg, size=tuple(x.shape[2:]), mode=self._mode, align_corners=False)
        return MultitaskOutput(logits, seg)


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _register(depth: int) -> None:
    def factory(
        *,
        num_classes: int,
        in_channels: int,
        spatial_dims: int,
        conv1_t_size: int | Sequence[int] = 7,
        conv1_t_stride: int | Sequence[int] = 1,
        no_max_pool: bool = False,
        widen_factor: float = 1.0,
        decoder_channels: Sequence[int] | None = None,
    ) -> nn.Module:
        from medrobust.models.zoo import _check_float, _check_size

        _check_bool("no_max_pool", no_max_pool)
        _check_float("widen_factor", widen_factor, low=1e-3, high=64.0)
        if decoder_channels is not None and (
            isinstance(decoder_channels, str) or not isinstance(decoder_channels, Sequence)
        ):
            raise TypeError(
                f"decoder_channels must be a sequence of 4 ints, got "
                f"{type(decoder_channels).__name__}"
            )
        return MultitaskResNet(
            depth=depth,
            num_classes=num_classes,
            in_channels=in_channels,
            spatial_dims=spatial_dims,
            conv1_t_size=_check_size("conv1_t_size", conv1_t_size, spatial_dims),
            conv1_t_stride=_check_size("conv1_t_stride", conv1_t_stride, spatial_dims),
            no_max_pool=no_max_pool,
            widen_factor=widen_factor,
            decoder_channels=None if decoder_channels is None else list(decoder_channels),
        )

    factory.__name__ = f"_mtl_resnet{depth}"
    factory.__doc__ = (
        f"Multi-task MONAI ResNet-{depth}: class logits and a lesion mask; see "
        ":class:`MultitaskResNet`. Grad-CAM target: ``encoder.layer4``."
    )
    MODELS.register(
        f"mtl-resnet{depth}",
        summary=(
            f"Multi-task ResNet-{depth}: classification head + U-Net lesion decoder "
            "(train with recipe 'multitask')"
        ),
        tags=("multitask", "2d", "3d", "monai"),
    )(factory)


for _depth in (18, 50):
    _register(_depth)
