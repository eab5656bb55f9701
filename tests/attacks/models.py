"""Tiny models shared by the attack tests."""

from __future__ import annotations

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
