"""Tiny models shared by the attack tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from medrobust.models import ModelAdapter


def tiny_cnn(
    spatial_dims: int = 2, num_classes: int = 2, in_channels: int = 1, seed: int = 0
) -> ModelAdapter:
    """A small conv net with a steep head, so that small budgets already flip predictions."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        conv(in_channels, 6, 3, padding=1),
        nn.ReLU(),
        conv(6, 8, 3, padding=1),
        nn.ReLU(),
        pool(2),
        nn.Flatten(),
        nn.Linear(8 * 2**spatial_dims, num_classes),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return ModelAdapter(
        net, num_classes=num_classes, spatial_dims=spatial_dims, in_channels=in_channels
    ).eval()


class SigmoidHead(nn.Module):
    """A binary model with one sigmoid logit (B, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(64, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.linspace(-1, 1, 64)[None] * 3)
            self.lin.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


class LinearModel(nn.Module):
    """logits = W x + b on flattened inputs: the closed-form test model."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.lin.weight.copy_(w)
            self.lin.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def batch(
    spatial_dims: int = 2, n: int = 6, size: int = 8, channels: int = 1, seed: int = 1
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, channels) + (size,) * spatial_dims, generator=g) * 0.8 + 0.1


@contextlib.contextmanager
def frozen(attack: Any) -> Iterator[None]:
    """Refuse any attribute assignment on the attack and on its objective while the block runs:
    an attack keeps no per-call state on the instance (even state it resets before returning).
    """
    watched = (attack, attack.objective)
    classes = {type(attack), type(attack.objective)}
    saved = {c: c.__dict__.get("__setattr__") for c in classes}

    def refuse(self: object, name: str, value: object) -> None:
        if any(self is w for w in watched):
            raise AssertionError(f"{type(self).__name__}.{name} was set during a call")
        object.__setattr__(self, name, value)  # another instance (built during the call)

    for c in classes:
        c.__setattr__ = refuse  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        for c, old in saved.items():
            if old is None:
                del c.__setattr__
            else:
                c.__setattr__ = old  # type: ignore[method-assign]


def small_cnn(spatial_dims: int = 2, seed: int = 0) -> ModelAdapter:
    """The zoo's small CNN (Grad-CAM layer ``features.layer4``), narrow and in eval mode."""
    from medrobust.models import create_model

    return create_model(
        "small-cnn", num_classes=2, width=4, spatial_dims=spatial_dims, seed=seed
    ).eval()
