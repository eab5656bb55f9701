"""Temporarily smooth a ReLU network so that second-order gradients exist.

A ReLU network is piecewise linear: its input Hessian is zero almost everywhere, so gradients of
gradient-based explanations (Grad-CAM weights through a non-linear head, saliency maps) carry no
useful signal. Dombrowski et al. replace ReLU by ``softplus_β(x) = log(1 + exp(βx)) / β`` during
an explanation attack, which converges to ReLU as ``β → ∞``, and evaluate on the ReLU network.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["softplus_relu"]

logger = logging.getLogger(__name__)


@contextmanager
def softplus_relu(model: nn.Module, beta: float = 10.0) -> Iterator[nn.Module]:
    """Replace every ``nn.ReLU`` module of ``model`` by ``nn.Softplus(beta)`` inside the block.

    The model is modified in place and yielded; on exit, normal or by exception, every original
    ReLU module object is put back where it was, so the model computes exactly what it computed
    before. A ReLU instance registered under several names (or called several times, as MONAI's
    ResNet blocks do with their ``act``) is replaced everywhere by one shared Softplus.

    Limitations:
        * Only ``nn.ReLU`` *modules* (and subclasses) are swapped. Functional calls inside a
          ``forward`` (``F.relu``, ``torch.relu``, ``x.clamp(min=0)``) cannot be reached without
          patching global functions, which this function deliberately does not do; such networks
          stay partly piecewise linear. MONAI's ResNet, DenseNet and UNet use ``nn.ReLU`` modules.
        * ``nn.ReLU(inplace=True)`` is replaced by the out-of-place Softplus. This is exact for
          code that uses the returned value (``x = self.act(x)``, the universal idiom); code that
          relied on the in-place side effect alone would see unactivated values.
        * Other activations (``LeakyReLU``, ``ReLU6``, ``PReLU``, ``GELU``) are left as they are.

    Args:
        model: The network (or a ``ModelAdapter``, whose wrapped network is reached through it).
        beta: Softplus sharpness ``β > 0``; larger is closer to ReLU (Dombrowski et al. use 10 and
            grow it towards 100 during the attack).

    Yields:
        The same ``model`` object, with the Softplus activations in place.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
        ValueError: If ``beta`` is not a positive finite number.

    References:
        Dombrowski, Alber, Anders, Ackermann, Müller, Kessel, "Explanations can be manipulated and
        geometry is to blame", NeurIPS 2019.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise ValueError(f"beta must be a positive finite number, got {beta!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive finite number, got {beta!r}")

    # (parent, child name, original module); collected before any change.
    sites: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in model.modules():
        # ``_modules`` rather than ``named_children()``: the latter skips a module registered a
        # second time under another name in the same parent.
        for child_name, child in list(parent._modules.items()):
            if isinstance(child, nn.ReLU):
                sites.append((parent, child_name, child))
    if isinstance(model, nn.ReLU):
        logger.warning("softplus_relu: the model itself is an nn.ReLU and cannot be swapped")
    if not sites:
        logger.warning(
            "softplus_relu: %s has no nn.ReLU modules; functional relu calls are not replaced",
            type(model).__name__,
        )

    replacements: dict[int, nn.Module] = {}
    try:
        for parent, child_name, child in sites:
            new = replacements.get(id(child))
            if new is None:
                new = nn.Softplus(beta=float(beta))
                new.train(child.training)
                replacements[id(child)] = new
            setattr(parent, child_name, new)
        logger.debug(
            "softplus_relu: replaced %d nn.ReLU module(s) at %d site(s) with Softplus(beta=%g)",
            len(replacements),
            len(sites),
            beta,
        )
        yield model
    finally:
        for parent, child_name, child in sites:
            setattr(parent, child_name, child)
