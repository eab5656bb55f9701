"""Label-scarce data: a stratified, seeded labelled/unlabelled split and an unlabelled stream.

``labelled_split(train, 0.1, seed=0)`` keeps 10% of the training images with their labels and
returns the rest as an :class:`UnlabelledView` that yields only the images, so a semi-supervised
recipe can never read a label it was not given. :class:`UnlabelledStream` draws seeded random
batches from an unlabelled data set (a fresh random batch every step, as the SSAT reference code
does), reproducibly and resumably when the generator is the recipe's own.

References:
    Li, Pan & Zhu, "Defending against adversarial attacks on medical imaging AI system,
    classification or detection?", arXiv:2006.13555, 2020 (labelled and unlabelled streams).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

__all__ = [
    "UnlabelledStream",
    "UnlabelledView",
    "check_labelled_fraction",
    "dataset_labels",
    "labelled_split",
]


def check_labelled_fraction(fraction: Any) -> float:
    """Validate a labelled fraction.

    Args:
        fraction: The fraction of training images that keep their label.

    Returns:
        The fraction as a float in ``(0, 1]``.

    Raises:
        TypeError: If it is not a number.
        ValueError: If it is outside ``(0, 1]`` or not finite.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(
            f"labelled_fraction must be a number in (0, 1], got {type(fraction).__name__} "
            f"{fraction!r}"
        )
    value = float(fraction)
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise ValueError(
            f"labelled_fraction must be in (0, 1] (e.g. 0.1 for 10% labelled), got {fraction!r}"
        )
    return value


def dataset_labels(dataset: Dataset[Any]) -> np.ndarray:
    """The class label of every item of a map-style data set.

    Uses ``dataset.targets`` when the data set provides it (no image is decoded), follows
    :class:`~torch.utils.data.Subset` indices, and otherwise reads ``item["label"]``.

    Args:
        dataset: A data set in the batch convention (dict items with ``"label"``).

    Returns:
        int64 array ``(N,)``.

    Raises:
        TypeError: If the data set has no length or its items are not dicts with ``"label"``.
    """
    if isinstance(dataset, Subset):
        parent = dataset_labels(dataset.dataset)
        return parent[np.asarray(list(dataset.indices), dtype=np.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        arr = np.asarray(targets.numpy() if isinstance(targets, torch.Tensor) else targets)
        return arr.astype(np.int64).reshape(-1)
    if not hasattr(dataset, "__len__"):
        raise TypeError(
            f"a labelled split needs a map-style data set with a length, got "
            f"{type(dataset).__name__}"
        )
    out = []
    for i in range(len(dataset)):
        item = dataset[i]
        if not isinstance(item, Mapping) or "label" not in item:
            raise TypeError(
                f"item {i} of the data set is not a dict with a 'label' (got "
                f"{type(item).__name__}); see the batch convention in medrobust.types"
            )
        out.append(int(item["label"]))
    return np.asarray(out, dtype=np.int64)


def labelled_split(
    dataset: Dataset[Any], fraction: float, seed: int = 0
) -> tuple[Dataset[Any], UnlabelledView | None]:
    """Split a training set into a labelled part and an unlabelled remainder, per class.

    Within each class the items are permuted by a generator seeded from ``(seed, class)`` and the
    first ``max(1, round(fraction * n_class))`` keep their labels, so every class is represented
    and the split depends only on the labels, the fraction and the seed.

    Args:
        dataset: Map-style data set in the batch convention.
        fraction: Fraction in ``(0, 1]`` of each class that keeps its labels.
        seed: Non-negative seed.

    Returns:
        ``(labelled, unlabelled)``: a :class:`~torch.utils.data.Subset` of the labelled items
        (in their original order) and an :class:`UnlabelledView` of the others, or ``None`` when
        nothing is left (``fraction == 1``).

    Raises:
        ValueError: If ``fraction`` is outside ``(0, 1]``, the seed is negative or the data set
            is empty.
        TypeError: If the labels cannot be read.
    """
    frac = check_labelled_fraction(fraction)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    labels = dataset_labels(dataset)
    if labels.size == 0:
        raise ValueError("cannot split an empty data set into labelled and unlabelled parts")
    keep: list[int] = []
    for k, cls in enumerate(np.unique(labels)):
        idx = np.flatnonzero(labels == cls)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, int(k)])))
        idx = idx[rng.permutation(idx.size)]
        n_keep = min(idx.size, max(1, math.floor(frac * idx.size + 0.5)))
        keep += idx[:n_keep].tolist()
    kept = sorted(keep)
    rest = sorted(set(range(labels.size)) - set(kept))
    labelled: Dataset[Any] = Subset(dataset, kept)
    return labelled, (UnlabelledView(dataset, rest) if rest else None)


class UnlabelledView(Dataset[dict[str, Any]]):
    """Items of a data set with every annotation removed: only ``"image"`` (and ``"id"``).

    Args:
        dataset: The underlying map-style data set.
        indices: Which of its items to expose (default all).

    Raises:
        ValueError: If an index is out of range.
    """

    def __init__(self, dataset: Dataset[Any], indices: Sequence[int] | None = None) -> None:
        if not hasattr(dataset, "__len__"):
            raise TypeError(
                f"the unlabelled data set must be map-style with a length, got "
                f"{type(dataset).__name__}"
            )
        n = len(dataset)
        self.dataset = dataset
        self.indices = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < n]
        if bad:
            raise ValueError(f"indices {bad[:5]} are out of range for a data set of {n} items")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[self.indices[index]]
        if isinstance(item, Mapping):
            out = {"image": item["image"]}
            if "id" in item:
                out["id"] = item["id"]
            return out
        if isinstance(item, (tuple, list)) and item:
            return {"image": item[0]}
        if isinstance(item, torch.Tensor):
            return {"image": item}
        raise TypeError(
            f"unlabelled item {index} is a {type(item).__name__}; expected a dict with 'image', "
            "a tuple (image, ...) or an image tensor"
        )


class UnlabelledStream:
    """Seeded random batches of images from an unlabelled data set.

    Every call draws a fresh random batch without replacement (a new shuffle each step, as in
    the SSAT reference code), so the order depends only on the generator's state, which a
    recipe checkpoints; resuming a run therefore continues the same sequence.

    Args:
        dataset: Map-style data set whose items are dicts with ``"image"`` (labels, if any, are
            ignored), tuples ``(image, ...)`` or image tensors.

    Raises:
        TypeError: If the data set has no length.
        ValueError: If it is empty.
    """

    def __init__(self, dataset: Dataset[Any]) -> None:
        if not hasattr(dataset, "__len__"):
            raise TypeError(
                f"the unlabelled data set must be map-style with a length, got "
                f"{type(dataset).__name__}"
            )
        if len(dataset) == 0:
            raise ValueError(
                "the unlabelled data set is empty; semi-supervised training needs unlabelled "
                "images (lower the labelled fraction or pass unlabelled data)"
            )
        self.view = dataset if isinstance(dataset, UnlabelledView) else UnlabelledView(dataset)

    def __len__(self) -> int:
        return len(self.view)

    def sample(
        self, batch_size: int, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """A random batch of images.

        Args:
            batch_size: Number of images (capped at the data set size).
            generator: The generator to draw the indices from (on any device).
            device: Where to put the batch.

        Returns:
            The stacked images ``(B, C, *spatial)`` as float tensors.

        Raises:
            ValueError: If ``batch_size < 1`` or the images do not share a shape.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self.view)
        perm = torch.randperm(n, generator=generator, device=generator.device)
        idx = perm[: min(batch_size, n)].cpu().tolist()
        images = [torch.as_tensor(self.view[i]["image"]) for i in idx]
        shapes = {tuple(t.shape) for t in images}
        if len(shapes) != 1:
            raise ValueError(
                f"unlabelled images must share one shape to be batched, got {sorted(shapes)}"
            )
        return torch.stack(images).to(device=device, dtype=torch.float32)
