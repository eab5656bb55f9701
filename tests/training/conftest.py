"""Shared fixtures of these tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Run on one intra-op thread: on a shared, oversubscribed CPU OpenMP spin-waiting makes
    multi-threaded convolutions of tiny tensors up to 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ToyImages(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A learnable toy task in the batch convention: class 1 images have a bright square.

    Args:
        n: Number of samples.
        seed: Generator seed.
        size: Spatial size per dim.
        spatial_dims: 2 or 3.
        channels: Input channels.
        num_classes: Classes; class ``k`` brightens a square by ``k / (num_classes - 1)``.
        with_mask: Also yield the square as a segmentation mask.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        size: int = 16,
        spatial_dims: int = 2,
        channels: int = 1,
        num_classes: int = 2,
        with_mask: bool = False,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % num_classes
        self.labels = self.labels[torch.randperm(n, generator=g)]
        shape = (n, channels, *([size] * spatial_dims))
        images = torch.rand(shape, generator=g) * 0.5
        lo, hi = size // 4, 3 * size // 4
        region = (slice(None), slice(None), *([slice(lo, hi)] * spatial_dims))
        boost = (self.labels.float() / max(num_classes - 1, 1)).reshape(
            -1, *[1] * (1 + spatial_dims)
        )
        square = torch.zeros(shape)
        square[region] = 1.0
        self.images = (images + 0.5 * boost * square).clamp(0, 1)
        self.masks = (square[:, 0] * (self.labels > 0).reshape(-1, *[1] * spatial_dims)).long()
        self.with_mask = with_mask

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, object]:
        item: dict[str, object] = {"image": self.images[i], "label": self.labels[i], "id": f"s{i}"}
        if self.with_mask:
            item["mask"] = self.masks[i]
        return item


@pytest.fixture()
def toy() -> type[ToyImages]:
    """The toy data set class."""
    return ToyImages
