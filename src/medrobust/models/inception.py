"""A small Inception-style classifier (GoogLeNet family) for 2-D images and 3-D volumes.

Paschali et al. compared Inception variants on generalizability against robustness; this is a
compact member of that family whose width and depth are parameters, so ``medrobust compare`` can
train several sizes of it on small data in minutes.

Layout (inside the bare network, i.e. ``adapter.net``):

* ``features.stem``: ``conv3 -> BN -> ReLU -> conv3 -> BN -> ReLU -> max-pool 2x`` with
  ``width`` and ``2 * width`` channels;
* ``features.stage1`` ... ``features.stageN`` (``N = len(blocks)``): ``blocks[i]``
  :class:`InceptionBlock` s each; every stage after the first starts with a 2x max-pool. The
  blocks of stage ``i`` have the unit width ``u = width * 2**i`` and output ``4u`` channels;
* ``pool`` (global average), ``dropout``, ``classifier`` (linear).

The Grad-CAM target is ``features``, whose output is the last stage's feature map, at 1/8 of
the input resolution with the default three stages (``1 / 2**len(blocks)`` in general).

References:
    Szegedy et al., "Going deeper with convolutions", CVPR 2015 (Inception-v1 / GoogLeNet);
    Ioffe & Szegedy, "Batch normalization", ICML 2015 (BN after every convolution);
    Szegedy et al., "Rethinking the Inception architecture for computer vision", CVPR 2016
    (a 5x5 convolution factorised as two 3x3);
    Paschali et al., "Generalizability vs. Robustness: Adversarial Examples for Medical
    Imaging", MICCAI 2018.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from medrobust.models.zoo import (
    MODELS,
    PooledClassifier,
    _batchnorm,
    _check_float,
    _check_int,
    _check_int_list,
    _conv,
    _maxpool,
)

__all__ = ["InceptionBlock", "InceptionNet"]

#: Most stages allowed: each halves the resolution, and 6 already need 128-voxel inputs.
MAX_STAGES = 6


def _conv_bn_relu(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int
) -> nn.Sequential:
    conv, bn = _conv(spatial_dims), _batchnorm(spatial_dims)
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        bn(out_channels),
        nn.ReLU(),
    )


class InceptionBlock(nn.Module):
    """One Inception module: four parallel branches concatenated along the channels.

    With unit width ``u`` (GoogLeNet's block 3a has ``u = 64``):

    * ``branch1``: ``1x1`` conv to ``u``;
    * ``branch3``: ``1x1`` reduction to ``3u/2``, then ``3x3`` to ``2u``;
    * ``branch5``: ``1x1`` reduction to ``u/4``, then two ``3x3`` to ``u/2`` (the receptive
      field of a ``5x5``, Szegedy et al. 2016);
    * ``branch_pool``: ``3x3`` max-pool (stride 1), then ``1x1`` projection to ``u/2``.

    Every convolution is followed by BatchNorm and ReLU. Halved widths are at least 1.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: Input channels.
        unit: The unit width ``u``.

    Shape:
        - Input: ``(B, in_channels, *spatial)``.
        - Output: ``(B, out_channels, *spatial)`` with ``out_channels = 3u + 2 max(u // 2, 1)``
          (``4u`` for even ``u``); see :attr:`out_channels`.
    """

    def __init__(self, spatial_dims: int, in_channels: int, unit: int) -> None:
        super().__init__()
        half, quarter = max(unit // 2, 1), max(unit // 4, 1)
        reduce3 = max(3 * unit // 2, 1)
        self.branch1 = _conv_bn_relu(spatial_dims, in_channels, unit, 1)
        self.branch3 = nn.Sequential(
            _conv_bn_relu(spatial_dims, in_channels, reduce3, 1),
            _conv_bn_relu(spatial_dims, reduce3, 2 * unit, 3),
        )
        self.branch5 = nn.Sequential(
            _conv_bn_relu(spatial_dims, in_channels, quarter, 1),
            _conv_bn_relu(spatial_dims, quarter, half, 3),
            _conv_bn_relu(spatial_dims, half, half, 3),
        )
        self.branch_pool = nn.Sequential(
            _maxpool(spatial_dims)(kernel_size=3, stride=1, padding=1),
            _conv_bn_relu(spatial_dims, in_channels, half, 1),
        )
        self.out_channels = unit + 2 * unit + half + half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The four branches of ``x`` ``(B, C, *spatial)`` concatenated on the channels."""
        branches = (self.branch1, self.branch3, self.branch5, self.branch_pool)
        return torch.cat([b(x) for b in branches], dim=1)


class InceptionNet(PooledClassifier):
    """A compact Inception-v1-style classifier; see the module docstring for the layout.

    Args:
        num_classes: Number of output logits ``K``.
        in_channels: Number of input channels ``C``.
        spatial_dims: 1, 2 or 3.
        width: Channels of the first stem convolution; the unit width of stage ``i`` is
            ``width * 2**i``.
        blocks: Inception blocks per stage; ``len(blocks)`` stages (the depth).
        dropout: Dropout probability before the head.

    Shape:
        - Input: ``(B, C, *spatial)``; every spatial size at least ``2**len(blocks)`` is
          recommended (smaller sizes work: the pooling rounds up and floors at 1).
        - Output: ``(B, K)``.

    References:
        Szegedy et al., CVPR 2015; Szegedy et al., CVPR 2016.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        spatial_dims: int = 2,
        width: int = 16,
        blocks: Sequence[int] = (1, 2, 1),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        pool = _maxpool(spatial_dims)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(
            _conv_bn_relu(spatial_dims, in_channels, width, 3),
            _conv_bn_relu(spatial_dims, width, 2 * width, 3),
            pool(kernel_size=2, ceil_mode=True),
        )
        channels = 2 * width
        for i, count in enumerate(blocks):
            stage: list[nn.Module] = [pool(kernel_size=2, ceil_mode=True)] if i > 0 else []
            for _ in range(count):
                block = InceptionBlock(spatial_dims, channels, width * 2**i)
                stage.append(block)
                channels = block.out_channels
            layers[f"stage{i + 1}"] = nn.Sequential(*stage)
        self.features = nn.Sequential(layers)
        self._init_head(spatial_dims, channels, num_classes, dropout)


@MODELS.register(
    "inception",
    summary="Compact Inception-v1-style CNN (1x1/3x3/5x5/pool branches); width and blocks set size",
    tags=("classification", "2d", "3d"),
)
def _inception(
    *,
    num_classes: int,
    in_channels: int,
    spatial_dims: int,
    width: int = 16,
    blocks: Sequence[int] = (1, 2, 1),
    dropout: float = 0.0,
) -> nn.Module:
    """Compact Inception-style CNN; see :class:`InceptionNet`. Grad-CAM target: ``features``."""
    _check_int("width", width, minimum=1)
    counts = _check_int_list("blocks", blocks)
    if not 1 <= len(counts) <= MAX_STAGES:
        raise ValueError(
            f"blocks must list 1 to {MAX_STAGES} stages (blocks per stage), got {list(blocks)}"
        )
    _check_float("dropout", dropout, low=0.0, high=1.0)
    return InceptionNet(
        num_classes=num_classes,
        in_channels=in_channels,
        spatial_dims=spatial_dims,
        width=width,
        blocks=tuple(counts),
        dropout=float(dropout),
    )
