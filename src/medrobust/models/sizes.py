"""The input sizes an encoder-decoder segmenter can take, checked before the network runs.

A U-Net halves its input at every down-sampling level and concatenates the up-sampled decoder
features with the skip connection of the same level, so every spatial side must be a multiple
of the product of its strides; instance normalisation also needs more than one voxel at the
coarsest level. Fed another size, the MONAI networks fail deep inside with a tensor-size or
normalisation error that names neither the input size nor the cure. :func:`size_rule` reads the
rule off the network (MONAI ``UNet``, ``BasicUNet``, ``AttentionUnet``, ``SegResNet``, whichever
factory built them), and :class:`~medrobust.models.ModelAdapter` checks every input against it
with a message that names the size, the allowed multiple and the nearest size that works.

==============  ===========================================  ==============================
network         multiple of every side                       minimum side
==============  ===========================================  ==============================
UNet            product of ``strides``                       2x the multiple with instance
                                                             normalisation, else the multiple
BasicUNet       16 (four 2x poolings)                        32 with instance normalisation
AttentionUnet   product of ``strides``                       the multiple
SegResNet       ``2 ** (len(blocks_down) - 1)``              the multiple
==============  ===========================================  ==============================

References:
    Ronneberger et al., "U-Net", MICCAI 2015; Cardoso et al., "MONAI", 2022.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

__all__ = ["SizeRule", "size_rule"]


@dataclass(frozen=True)
class SizeRule:
    """The spatial sizes a network accepts: every side a multiple of ``multiple[d]`` and at
    least ``minimum[d]``.

    Attributes:
        network: The network's class name, for messages.
        multiple: The down-sampling factor per spatial dim (one entry applies to every dim).
        minimum: The smallest side per spatial dim (one entry applies to every dim).
        reason: Why the minimum exceeds the multiple, or ``""``.
    """

    network: str
    multiple: tuple[int, ...]
    minimum: tuple[int, ...]
    reason: str = ""

    def _per_dim(self, values: tuple[int, ...], dims: int) -> tuple[int, ...]:
        return values * dims if len(values) == 1 else values

    def nearest(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """The smallest accepted size at least as large as ``spatial`` in every dim."""
        dims = len(spatial)
        mult, low = self._per_dim(self.multiple, dims), self._per_dim(self.minimum, dims)
        return tuple(
            max(lo, m * math.ceil(s / m)) for s, m, lo in zip(spatial, mult, low, strict=True)
        )

    def check(self, spatial: Sequence[int], name: str = "inputs") -> None:
        """Refuse a spatial size the network cannot take.

        Args:
            spatial: The spatial size, e.g. ``(30, 30)``.
            name: What is checked, for the message (e.g. ``"images of the train batch 1"``).

        Raises:
            ValueError: Naming the size, the allowed multiple and minimum, and the nearest
                accepted size.
        """
        spatial = tuple(int(s) for s in spatial)
        fit = self.nearest(spatial)
        if fit == spatial:
            return
        fmt = "x".join
        mult = self._per_dim(self.multiple, len(spatial))
        low = self._per_dim(self.minimum, len(spatial))
        sides = f"a multiple of {mult[0]}" if len(set(mult)) == 1 else f"multiples of {list(mult)}"
        floor = f"{low[0]}" if len(set(low)) == 1 else f"{list(low)}"
        why = f" ({self.reason})" if self.reason else ""
        raise ValueError(
            f"{name} have spatial size {fmt(map(str, spatial))}, but {self.network} needs every "
            f"side {sides} and at least {floor}{why}; resize, crop or pad the data to "
            f"{fmt(map(str, fit))} (e.g. --data-param size={max(fit)} for a data set that takes "
            "a size), or train on patches of such a size and run larger volumes by sliding "
            "windows (--roi-size)"
        )


def _strides(strides: Sequence[int | Sequence[int]]) -> tuple[int, ...]:
    """The product of MONAI strides (ints, or one sequence per level with a stride per dim)."""
    per_dim = [tuple(s) if isinstance(s, Sequence) else (int(s),) for s in strides]
    dims = max((len(s) for s in per_dim), default=1)
    out = [1] * dims
    for s in per_dim:
        for d in range(dims):
            out[d] *= int(s[d] if len(s) > 1 else s[0])
    return tuple(out)


def _has_instance_norm(net: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.instancenorm._InstanceNorm) for m in net.modules())


def size_rule(net: nn.Module) -> SizeRule | None:
    """The size rule of a MONAI encoder-decoder network (see the module docstring).

    Args:
        net: A bare network (not an adapter).

    Returns:
        The rule, or None for networks without one (classifiers, sliding-window wrappers,
        networks of other libraries).
    """
    if not type(net).__module__.startswith("monai."):
        return None
    from monai.networks import nets

    instance = "instance normalisation needs more than one voxel at the coarsest level"
    if isinstance(net, nets.BasicUNet):
        inorm = _has_instance_norm(net)
        return SizeRule("MONAI BasicUNet", (16,), (32 if inorm else 16,), instance if inorm else "")
    if isinstance(net, nets.AttentionUnet):
        mult = _strides(net.strides)
        return SizeRule("MONAI AttentionUnet", mult, mult)
    if isinstance(net, nets.UNet):
        mult = _strides(net.strides)
        if _has_instance_norm(net):
            return SizeRule("MONAI UNet", mult, tuple(2 * m for m in mult), instance)
        return SizeRule("MONAI UNet", mult, mult)
    if isinstance(net, nets.SegResNet):
        mult = (2 ** (len(net.blocks_down) - 1),)
        return SizeRule("MONAI SegResNet", mult, mult)
    return None
