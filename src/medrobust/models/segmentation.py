"""Segmentation networks of the model zoo and sliding-window inference that attacks go through.

Registered beside ``unet`` (see :mod:`medrobust.models.zoo`), all MONAI networks for 2-D and 3-D
returning logits ``(B, K, *spatial)``:

==============  =======================================================================
name            constraints
==============  =======================================================================
basicunet       MONAI BasicUNet; every spatial size divisible by 16 and >= 32
attentionunet   MONAI AttentionUnet; sizes divisible by the product of ``strides``
segresnet       MONAI SegResNet; sizes divisible by ``2 ** (len(blocks_down) - 1)``
==============  =======================================================================

Volumes larger than the training patch are segmented with :func:`sliding_window`, which wraps
the network of an adapter in a :class:`SlidingWindowSegmenter`: its ``forward`` runs
:func:`monai.inferers.sliding_window_inference`, so attacks differentiate through exactly the
inference path used for evaluation. :func:`check_volume_size` refuses, with a hint, batches that
are too large to push through a network without sliding windows.

References:
    Ronneberger et al., "U-Net", MICCAI 2015; Oktay et al., "Attention U-Net", MIDL 2018;
    Myronenko, "3D MRI brain tumor segmentation using autoencoder regularization", BrainLes
    2018 (SegResNet); Cardoso et al., "MONAI", 2022.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from medrobust.models.adapter import ModelAdapter
from medrobust.models.window_memory import (
    ActivationProbe,
    WindowMemory,
    check_window_memory,
    estimate_window_memory,
    parse_size,
    saved_activation_bytes,
)
from medrobust.models.zoo import (
    MODELS,
    _check_float,
    _check_int,
    _check_int_list,
    check_unet_levels,
)
from medrobust.types import Task

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "SlidingWindowSegmenter",
    "check_volume_size",
    "sliding_window",
    "uses_sliding_window",
]

#: Largest number of voxels (batch size times spatial size) pushed through a segmenter in one
#: piece before :func:`check_volume_size` asks for sliding windows (256^3, about 16.8 million).
DEFAULT_MAX_VOXELS = 256**3


def _check_norm(norm: str) -> str:
    if not isinstance(norm, str) or norm.lower() not in ("instance", "batch", "group"):
        raise ValueError(f"norm must be 'instance', 'batch' or 'group', got {norm!r}")
    return norm.lower()


@MODELS.register(
    "basicunet",
    summary="MONAI BasicUNet for 2-D/3-D segmentation (sizes divisible by 16)",
    tags=("segmentation", "2d", "3d", "monai"),
)
def _basicunet(
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    features: Sequence[int] = (16, 16, 32, 64, 128, 16),
    norm: str = "instance",
    dropout: float = 0.0,
    upsample: str = "deconv",
) -> nn.Module:
    """MONAI BasicUNet (a plain two-conv-per-level U-Net) returning ``(B, K, *spatial)``.

    ``features`` has six entries: the widths of the four down levels, the bottleneck and the
    last up level. Every spatial size must be divisible by 16 and at least 32 (instance
    normalisation needs more than one voxel at the 1/16 bottleneck).
    """
    from monai.networks import nets

    feats = _check_int_list("features", features)
    if len(feats) != 6:
        raise ValueError(f"features must have 6 entries, got {feats}")
    nm = _check_norm(norm)
    _check_float("dropout", dropout, low=0.0, high=1.0)
    if upsample not in ("deconv", "pixelshuffle", "nontrainable"):
        raise ValueError(
            f"upsample must be 'deconv', 'pixelshuffle' or 'nontrainable', got {upsample!r}"
        )
    norm_arg: Any = ("group", {"num_groups": min(8, feats[0])}) if nm == "group" else nm
    net: nn.Module = nets.BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        features=tuple(feats),
        norm=norm_arg,
        dropout=float(dropout),
        upsample=upsample,
    )
    return net


@MODELS.register(
    "attentionunet",
    summary="MONAI Attention U-Net for 2-D/3-D segmentation (sizes divisible by prod(strides))",
    tags=("segmentation", "2d", "3d", "monai"),
)
def _attentionunet(
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    dropout: float = 0.0,
) -> nn.Module:
    """MONAI AttentionUnet (Oktay et al., 2018) returning ``(B, K, *spatial)``.

    Every spatial size must be divisible by the product of ``strides``.
    """
    from monai.networks import nets

    chans, strd = check_unet_levels(channels, strides)
    _check_float("dropout", dropout, low=0.0, high=1.0)
    net: nn.Module = nets.AttentionUnet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        channels=chans,
        strides=strd,
        dropout=float(dropout),
    )
    return net


@MODELS.register(
    "segresnet",
    summary="MONAI SegResNet for 2-D/3-D segmentation (sizes divisible by 2**(levels-1))",
    tags=("segmentation", "2d", "3d", "monai"),
)
def _segresnet(
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    init_filters: int = 8,
    blocks_down: Sequence[int] = (1, 2, 2, 4),
    blocks_up: Sequence[int] = (1, 1, 1),
    dropout: float = 0.0,
) -> nn.Module:
    """MONAI SegResNet (Myronenko, 2018) returning ``(B, K, *spatial)``.

    Group normalisation with 8 groups, so ``init_filters`` must be a multiple of 8. Every
    spatial size must be divisible by ``2 ** (len(blocks_down) - 1)``.
    """
    from monai.networks import nets

    _check_int("init_filters", init_filters, minimum=8)
    if init_filters % 8:
        raise ValueError(f"init_filters must be a multiple of 8 (group norm), got {init_filters}")
    down = _check_int_list("blocks_down", blocks_down)
    up = _check_int_list("blocks_up", blocks_up)
    if len(up) != len(down) - 1:
        raise ValueError(
            f"blocks_up must have len(blocks_down) - 1 = {len(down) - 1} entries, got {up}"
        )
    _check_float("dropout", dropout, low=0.0, high=1.0)
    net: nn.Module = nets.SegResNet(
        spatial_dims=spatial_dims,
        init_filters=init_filters,
        in_channels=in_channels,
        out_channels=num_classes,
        dropout_prob=float(dropout) if dropout > 0 else None,
        blocks_down=tuple(down),
        blocks_up=tuple(up),
    )
    return net


class SlidingWindowSegmenter(nn.Module):
    """A segmenter evaluated by overlapping windows (MONAI ``sliding_window_inference``).

    Its ``forward`` is differentiable: gradients flow through every window back to the input,
    so an attack on the wrapped model attacks the very inference path used to evaluate it.

    Args:
        net: The segmentation network (inputs already normalised).
        roi_size: Window size, one int for all spatial dims or one per dim (usually the
            training patch size).
        sw_batch_size: Windows evaluated per network call.
        overlap: Fraction of overlap between neighbouring windows, in ``[0, 1)``.
        mode: Blending of overlapping windows, ``"constant"`` or ``"gaussian"``.
        checkpoint: Gradient checkpointing per window batch (``torch.utils.checkpoint``)
            when gradients are taken: a window batch keeps only its input and is recomputed
            in the backward pass, so an attack's memory no longer grows with every window's
            activations (one more forward pass per window in the backward). Batch-norm
            layers in training mode would see each window twice; attacks run in eval mode.
        max_memory: Bytes an attack step may need before :meth:`check_memory` refuses the
            volume, an int or a size such as ``"6GiB"`` (see
            :func:`~medrobust.models.window_memory.parse_size`; None: the device's free
            memory, see
            :func:`~medrobust.models.window_memory.available_memory`).

    Shape:
        - Input: ``(B, C, *spatial)`` of any size (padded where smaller than ``roi_size``).
        - Output: ``(B, K, *spatial)``.

    References:
        Cardoso et al., "MONAI: An open-source framework for deep learning in healthcare", 2022.
    """

    def __init__(
        self,
        net: nn.Module,
        roi_size: int | Sequence[int],
        *,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        mode: str = "gaussian",
        checkpoint: bool = False,
        max_memory: int | str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(net, ModelAdapter):
            raise TypeError("pass the bare network (adapter.net), or use sliding_window(adapter)")
        if isinstance(roi_size, bool):
            raise TypeError(f"roi_size must be an int or a sequence of ints, got {roi_size!r}")
        if isinstance(roi_size, int):
            _check_int("roi_size", roi_size, minimum=1)
            self.roi_size: int | tuple[int, ...] = roi_size
        else:
            self.roi_size = tuple(_check_int_list("roi_size", roi_size))
        _check_int("sw_batch_size", sw_batch_size, minimum=1)
        _check_float("overlap", overlap, low=0.0, high=0.99)
        if mode not in ("constant", "gaussian"):
            raise ValueError(f"mode must be 'constant' or 'gaussian', got {mode!r}")
        if not isinstance(checkpoint, bool):
            raise TypeError(f"checkpoint must be True or False, got {checkpoint!r}")
        self.net = net
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = float(overlap)
        self.mode = mode
        self.checkpoint = checkpoint
        self.max_memory = None if max_memory is None else parse_size(max_memory)
        self._per_window: dict[tuple[Any, ...], ActivationProbe] = {}

    def roi_for(self, spatial_dims: int) -> tuple[int, ...]:
        """The window size as one int per spatial dim.

        Raises:
            ValueError: If ``roi_size`` has the wrong number of entries.
        """
        if isinstance(self.roi_size, int):
            return (self.roi_size,) * spatial_dims
        if len(self.roi_size) != spatial_dims:
            raise ValueError(
                f"roi_size {self.roi_size} has {len(self.roi_size)} entries but the input has "
                f"{spatial_dims} spatial dims"
            )
        return self.roi_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the whole input, blended from the windows."""
        from monai.inferers import sliding_window_inference

        roi = self.roi_for(x.ndim - 2)
        predictor: Callable[[torch.Tensor], torch.Tensor] = self.net
        if self.checkpoint and torch.is_grad_enabled():
            predictor = self._checkpointed
        out = sliding_window_inference(
            inputs=x,
            roi_size=roi,
            sw_batch_size=self.sw_batch_size,
            predictor=predictor,
            overlap=self.overlap,
            mode=self.mode,
        )
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                "sliding-window inference needs a network returning one tensor, got "
                f"{type(out).__name__}"
            )
        return out.as_tensor() if hasattr(out, "as_tensor") else out

    def _checkpointed(self, window: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        out: torch.Tensor = checkpoint(self.net, window, use_reentrant=False)
        return out

    def memory_estimate(self, images: torch.Tensor) -> WindowMemory:
        """The memory of one attack step (forward and backward) on ``images``.

        One window's saved activations are measured by a probe forward pass the first time a
        window shape, dtype and device is seen, and cached.

        Args:
            images: The batch.

        Returns:
            The estimate (see :func:`~medrobust.models.window_memory.estimate_window_memory`).

        Shape:
            - images: ``(B, C, *spatial)``.
        """
        roi = self.roi_for(images.ndim - 2)
        key = (int(images.shape[1]), roi, images.dtype, images.device)
        if key not in self._per_window:
            zeros = torch.zeros((1, key[0], *roi), dtype=images.dtype, device=images.device)
            self._per_window[key] = saved_activation_bytes(self.net, zeros)
        probe = self._per_window[key]
        return estimate_window_memory(
            self.net, images, roi, overlap=self.overlap, sw_batch_size=self.sw_batch_size,
            num_classes=probe.out_channels, checkpoint=self.checkpoint, per_window=probe,
        )  # fmt: skip

    def check_memory(self, images: torch.Tensor) -> None:
        """Refuse ``images`` when an attack step would not fit in memory.

        Raises:
            VolumeMemoryError: A ``MemoryError`` naming the volume, the windows, the estimate
                and the option that helps (``checkpoint=True``, a smaller batch or window).

        Shape:
            - images: ``(B, C, *spatial)``.
        """
        estimate = self.memory_estimate(images)
        check_window_memory(estimate, self.max_memory, images.device)

    def extra_repr(self) -> str:
        return (
            f"roi_size={self.roi_size}, sw_batch_size={self.sw_batch_size}, "
            f"overlap={self.overlap}, mode={self.mode!r}, checkpoint={self.checkpoint}"
        )


def sliding_window(
    model: ModelAdapter,
    roi_size: int | Sequence[int],
    *,
    sw_batch_size: int = 4,
    overlap: float = 0.25,
    mode: str = "gaussian",
    checkpoint: bool = False,
    max_memory: int | str | None = None,
) -> ModelAdapter:
    """A new adapter that runs ``model``'s network by sliding windows.

    The new adapter shares the network (same parameters, no copy) and keeps the bounds, the
    in-graph normalisation, the class names and the task of ``model``.

    Args:
        model: A segmentation adapter (e.g. from :func:`~medrobust.models.create_model`).
        roi_size: Window size (usually the training patch size).
        sw_batch_size: Windows per network call.
        overlap: Overlap of neighbouring windows, in ``[0, 1)``.
        mode: ``"constant"`` or ``"gaussian"`` blending.
        checkpoint: Gradient checkpointing per window batch, so that an attack's backward
            pass does not keep every window's activations (see
            :class:`SlidingWindowSegmenter`).
        max_memory: Bytes an attack step may use, an int or a size such as ``"6GiB"`` (None:
            the device's free memory); a volume
            that needs more is refused by :func:`check_volume_size` with a
            :class:`~medrobust.models.window_memory.VolumeMemoryError`.

    Returns:
        The sliding-window adapter.

    Raises:
        TypeError: If ``model`` is not a :class:`ModelAdapter`.
        ValueError: If it is not a segmentation model or the window parameters are invalid.
    """
    if not isinstance(model, ModelAdapter):
        raise TypeError(f"model must be a ModelAdapter, got {type(model).__name__}")
    if model.task is not Task.SEGMENTATION:
        raise ValueError(
            f"sliding-window inference is for segmentation models, got task {model.task.value!r}"
        )
    net = model.net.net if isinstance(model.net, SlidingWindowSegmenter) else model.net
    wrapped = SlidingWindowSegmenter(
        net, roi_size, sw_batch_size=sw_batch_size, overlap=overlap, mode=mode,
        checkpoint=checkpoint, max_memory=max_memory,
    )  # fmt: skip
    wrapped.roi_for(model.spatial_dims)
    norm = model.normalization
    adapter = ModelAdapter(
        wrapped,
        num_classes=model.num_classes,
        task=model.task,
        spatial_dims=model.spatial_dims,
        in_channels=model.in_channels,
        bounds=model.bounds,
        mean=norm["mean"],
        std=norm["std"],
        output_key=model.output_key,
        output_index=model.output_index,
        class_names=model.class_names,
    )
    adapter.train(model.training)
    return adapter


def uses_sliding_window(model: nn.Module) -> bool:
    """Whether ``model`` (an adapter or a bare network) runs by sliding windows."""
    net = model.net if isinstance(model, ModelAdapter) else model
    return isinstance(net, SlidingWindowSegmenter)


def check_volume_size(
    model: nn.Module, images: torch.Tensor, max_voxels: int | None = DEFAULT_MAX_VOXELS
) -> None:
    """Refuse a batch too large to push through a segmenter in one piece, or, for a model
    run by sliding windows, too large for an attack step's memory.

    Args:
        model: The model (adapter or bare network).
        images: The batch.
        max_voxels: Largest ``B * prod(spatial)`` allowed without sliding windows; None turns
            the check off.

    Raises:
        ValueError: If the batch exceeds ``max_voxels`` and the model does not use sliding
            windows; the message suggests :func:`sliding_window` (``--roi-size`` on the command
            line) or a smaller batch.
        VolumeMemoryError: For a sliding-window model, if the estimated memory of a forward
            and backward pass exceeds its ``max_memory`` or the free memory (see
            :meth:`SlidingWindowSegmenter.check_memory`).

    Shape:
        - images: ``(B, C, *spatial)``.
    """
    net = model.net if isinstance(model, ModelAdapter) else model
    if isinstance(net, SlidingWindowSegmenter) and images.ndim >= 3:
        net.check_memory(images)
        return
    if max_voxels is None or uses_sliding_window(model) or images.ndim < 3:
        return
    spatial = tuple(int(s) for s in images.shape[2:])
    voxels = int(images.shape[0]) * math.prod(spatial)
    if voxels > max_voxels:
        shape = "x".join(str(s) for s in spatial)
        raise ValueError(
            f"a batch of {images.shape[0]} volume(s) of {shape} voxels ({voxels:,} voxels) is too "
            f"large to segment in one piece (limit {max_voxels:,} voxels): run the model by "
            "sliding windows, e.g. medrobust.models.segmentation.sliding_window(model, "
            "roi_size=<training patch size>) (command line: --roi-size), or use a smaller batch"
        )
