"""End-to-end check that bus-phantom labels are learnable, but only from the lesion.

A tiny CNN trained on 600 phantom images (64 x 64) must be well above chance and below perfect on
the 200 test images; the same CNN trained on images whose lesion and posterior region were
replaced by lesion-free tissue from the same generator must stay near chance, which shows the
label leaks through no other part of the image (global brightness, noise level, position ...).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medrobust.data import BusPhantom, generate_bus_phantom
from medrobust.data.bus_phantom import SPLIT_STREAMS

from .helpers import posterior_region

SIZE = 64


def _tiny_cnn() -> nn.Module:
    def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        ]
        return [*layers, nn.MaxPool2d(2)] if pool else layers

    return nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2, padding=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        *block(8, 16, pool=True),
        *block(16, 32, pool=True),
        *block(32, 32, pool=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


def _train_and_test(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    epochs: int = 10,
    batch: int = 32,
) -> float:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = _tiny_cnn()
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    steps = epochs * ((len(x_train) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for start in range(0, len(x_train), batch):
            idx = order[start : start + batch]
            xb = x_train[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # lateral flips are anatomical
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = nn.functional.cross_entropy(model(xb), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def _stack(ds: BusPhantom) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])
    labels = torch.stack([it["label"] for it in items])
    masks = torch.stack([it["mask"] for it in items]).numpy()
    return images, labels, masks


def _without_lesion(images: torch.Tensor, masks: np.ndarray, split: str, seed: int) -> torch.Tensor:
    """Replace the lesion and posterior region by lesion-free tissue of the same images."""
    background = generate_bus_phantom(
        len(images), size=SIZE, seed=seed, stream=SPLIT_STREAMS[split], lesion=False
    )
    region = torch.from_numpy(posterior_region(masks, pad=int(0.08 * SIZE)))[:, None]
    return torch.where(region, torch.from_numpy(background.images), images)


@pytest.mark.slow
def test_tiny_cnn_learns_from_the_lesion_only() -> None:
    seed = 0
    train = BusPhantom("train", size=SIZE, seed=seed, cache=False)
    test = BusPhantom("test", size=SIZE, seed=seed, cache=False)
    assert (len(train), len(test)) == (600, 200)
    x_train, y_train, m_train = _stack(train)
    x_test, y_test, m_test = _stack(test)

    accuracy = _train_and_test(x_train, y_train, x_test, y_test)
    assert 0.70 < accuracy < 0.98, f"test accuracy {accuracy:.3f}"

    c_train = _without_lesion(x_train, m_train, "train", seed)
    c_test = _without_lesion(x_test, m_test, "test", seed)
    control = _train_and_test(c_train, y_train, c_test, y_test)
    assert control < 0.65, f"control accuracy {control:.3f}: the label leaks outside the lesion"
