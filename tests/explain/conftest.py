"""Fixtures of the explanation tests: a small CNN trained on the 32x32 breast-ultrasound phantom."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from medrobust.data.phantom import generate_bus_phantom
from medrobust.models import ModelAdapter, create_model


@dataclass
class Trained:
    """A trained classifier and test samples it classifies correctly."""

    model: ModelAdapter
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    accuracy: float


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread also for module-scoped fixtures (the shared CPU is oversubscribed)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_cnn() -> Trained:
    """small-cnn (width 8) trained for a few seconds on 256 phantom images of 32x32."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = generate_bus_phantom(256, 32, seed=0, stream=1)
        test = generate_bus_phantom(64, 32, seed=0, stream=3)
        model = create_model("small-cnn", num_classes=2, width=8, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        x, y = torch.from_numpy(train.images), torch.from_numpy(train.labels)
        gen = torch.Generator().manual_seed(0)
        model.train()
        for _ in range(8):
            order = torch.randperm(len(y), generator=gen)
            for i in range(0, len(y), 32):
                idx = order[i : i + 32]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        for p in model.parameters():
            p.grad = None
        xt, yt = torch.from_numpy(test.images), torch.from_numpy(test.labels)
        mt = torch.from_numpy(test.masks.astype("int64"))
        with torch.no_grad():
            pred = model(xt).argmax(dim=1)
        ok = pred == yt
        return Trained(model, xt[ok], yt[ok], mt[ok], float(ok.float().mean()))
    finally:
        torch.set_num_threads(before)
