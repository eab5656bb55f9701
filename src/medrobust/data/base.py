"""Shared pieces of every medrobust data set: the base class, array data sets, validation, splits.

Every data set yields dictionaries in the batch convention of :mod:`medrobust.types`::

    {"image": float32 (C, H, W) in [0, 1], "label": int64 scalar, "mask": int64 (H, W), "id": str}

(``"mask"`` only where the data set has masks) and carries the attributes ``name``, ``split``,
``class_names``, ``num_classes``, ``in_channels``, ``spatial_dims`` and ``task``.
"""

from __future__ import annotations

import abc
import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader, Dataset

from medrobust.types import Task

#: The split names every data set understands.
SPLITS: tuple[str, ...] = ("train", "val", "test")


class MedicalDataset(Dataset[dict[str, Any]], abc.ABC):
    """Base class of medrobust data sets (map-style, batch-convention dictionaries).

    Subclasses set the attributes below and implement ``__len__`` and ``__getitem__``.

    Attributes:
        name: Registered name of the data set (``"bus-phantom"``, ``"busi"``, ...).
        split: ``"train"``, ``"val"`` or ``"test"``.
        class_names: Names of the classes; label ``k`` is ``class_names[k]``.
        in_channels: Channels ``C`` of every image.
        spatial_dims: 2 for images.
        task: What the labels are for (classification; masks may also be present).
        has_masks: Whether items carry a ``"mask"``.
        modality: The imaging modality (``"ultrasound"``, ``"mri"``, ``"ct"``, ...), or
            ``"any"`` when unknown; it selects which natural corruptions apply.
        spacing: Voxel (pixel) size in mm of the items' spatial dims, in their order (e.g.
            ``(x, y, z)`` for RAS volumes, ``(row, column)`` for slices), or None when unknown
            or not the same for every item (volume data sets then have ``spacings`` and
            ``item_spacing(i)``). HD95 and surface distances use it to report millimetres.
    """

    name: str = ""
    split: str = "train"
    class_names: list[str]
    in_channels: int = 1
    spatial_dims: int = 2
    task: Task = Task.CLASSIFICATION
    has_masks: bool = False
    modality: str = "any"
    spacing: tuple[float, ...] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.class_names)

    @property
    @abc.abstractmethod
    def targets(self) -> npt.NDArray[np.int64]:
        """All labels of the split, int64 ``(N,)`` (read without decoding any image)."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of items in the split."""

    @abc.abstractmethod
    def __getitem__(self, index: int) -> dict[str, Any]:
        """One item in the batch convention."""

    def _check_index(self, index: int) -> int:
        n = len(self)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {index} is out of range for {self.name!r} ({n} items)")
        return i

    def __repr__(self) -> str:
        try:
            n: int | str = len(self)
        except AttributeError:  # not fully constructed
            n = "?"
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={n}, "
            f"classes={getattr(self, 'class_names', None)!r}, in_channels={self.in_channels})"
        )


def check_split(split: object) -> str:
    """Validate a split name.

    Args:
        split: The split requested.

    Returns:
        The split name (``"train"``, ``"val"`` or ``"test"``).

    Raises:
        ValueError: For any other value; the message lists the valid names and close matches.
    """
    if isinstance(split, str) and split in SPLITS:
        return split
    hint = ""
    if isinstance(split, str):
        key = split.strip().lower()
        if key in {"valid", "validation", "dev"}:
            hint = " (did you mean 'val'?)"
        else:
            close = difflib.get_close_matches(key, SPLITS, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown split {split!r}{hint}; expected one of {', '.join(repr(s) for s in SPLITS)}"
    )


def check_class_names(class_names: Sequence[str], source: str) -> list[str]:
    """Validate a list of class names (non-empty, unique strings).

    Raises:
        ValueError: If the list is empty or has duplicates or non-string entries.
    """
    names = list(class_names)
    if not names:
        raise ValueError(f"{source}: the class list is empty; expected at least one class name")
    if not all(isinstance(c, str) and c for c in names):
        raise ValueError(f"{source}: class names must be non-empty strings, got {names!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{source}: class names must be unique, got {names!r}")
    return names


def parse_names(names: str | Sequence[str]) -> list[str]:
    """Class names from a list or a comma-separated string (``"bg,liver,tumour"``), checked.

    Raises:
        ValueError: If the list is empty or has duplicates or empty names.
    """
    items = [t.strip() for t in names.split(",")] if isinstance(names, str) else list(names)
    return check_class_names(items, "class_names")


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> npt.NDArray[np.int64]:
    """Validate integer class labels against the class list.

    Args:
        labels: Labels ``(N,)`` or ``(N, 1)``.
        num_classes: Number of classes ``K``; labels must lie in ``[0, K)``.
        source: What the labels come from, for messages.

    Returns:
        The labels as int64 ``(N,)``.

    Raises:
        ValueError: For multi-label arrays ``(N, L)`` with ``L > 1``, non-integer values, NaN,
            or values outside ``[0, K)``.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        if arr.ndim == 2:
            raise ValueError(
                f"{source}: labels have shape {arr.shape}, i.e. {arr.shape[1]} labels per image "
                "(multi-label); only single-label classification (N,) or (N, 1) is supported"
            )
        raise ValueError(f"{source}: labels must have shape (N,) or (N, 1), got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            bad = int(np.sum(~np.isfinite(arr)))
            raise ValueError(f"{source}: labels contain {bad} NaN or infinite value(s)")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{source}: labels must be whole numbers, got non-integer values")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{source}: labels must be integers, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= num_classes):
        bad_values = sorted({int(v) for v in out[(out < 0) | (out >= num_classes)]})[:10]
        raise ValueError(
            f"{source}: label value(s) {bad_values} are outside the class list "
            f"(expected 0..{num_classes - 1} for {num_classes} classes)"
        )
    return out


def check_image_array(images: np.ndarray, source: str) -> None:
    """Validate an image array: uint8, or floating point that is finite and inside ``[0, 1]``.

    Raises:
        ValueError: For NaN/infinite values, floats outside ``[0, 1]``, other dtypes or an empty
            array.
    """
    if images.shape[0] == 0:
        raise ValueError(f"{source}: the data set is empty (0 images)")
    if images.dtype == np.uint8:
        return
    if images.dtype.kind != "f":
        raise ValueError(
            f"{source}: images must be uint8 (0-255) or float in [0, 1], got dtype {images.dtype}"
        )
    finite = np.isfinite(images)
    if not finite.all():
        bad = int(images.size - np.count_nonzero(finite))
        raise ValueError(f"{source}: images contain {bad} NaN or infinite value(s)")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{source}: float images must lie in [0, 1], found values in [{lo:.4g}, {hi:.4g}]"
        )


class ArrayDataset(MedicalDataset):
    """A data set held in memory as arrays (the base of MedMNIST; useful for custom arrays).

    Args:
        images: ``(N, H, W)`` (one channel) or ``(N, C, H, W)``; with ``spatial_dims=3``
            ``(N, D, H, W)`` or ``(N, C, D, H, W)``; uint8 (scaled by 1/255) or float in
            ``[0, 1]``. Converted to float32 one item at a time.
        labels: Integer labels ``(N,)`` or ``(N, 1)`` in ``[0, len(class_names))``.
        class_names: Names of the classes.
        masks: Optional integer masks ``(N, H, W)``.
        name: Name used in ids and messages.
        split: The split these arrays are.
        ids: Optional item ids (default ``"{name}/{split}/{index:05d}"``).
        spatial_dims: 2 (images) or 3 (volumes).

    Raises:
        ValueError: For empty or inconsistent arrays, NaN values, values out of range or labels
            outside the class list.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        class_names: Sequence[str],
        *,
        masks: np.ndarray | None = None,
        name: str = "arrays",
        split: str = "train",
        ids: Sequence[str] | None = None,
        spatial_dims: int = 2,
    ) -> None:
        self.name = name
        self.split = check_split(split)
        source = f"{name} ({split})"
        self.class_names = check_class_names(class_names, source)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = int(spatial_dims)
        images = np.asarray(images)
        if images.ndim == spatial_dims + 1:
            images = images[:, None]
        if images.ndim != spatial_dims + 2:
            layout = "(N, H, W) or (N, C, H, W)" if spatial_dims == 2 else "(N, [C,] D, H, W)"
            raise ValueError(f"{source}: images must have shape {layout}, got {images.shape}")
        check_image_array(images, source)
        self._labels = check_labels(labels, self.num_classes, source)
        if self._labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{source}: {images.shape[0]} images but {self._labels.shape[0]} labels"
            )
        if masks is not None:
            masks = np.asarray(masks)
            expected = (images.shape[0], *images.shape[2:])
            if masks.shape != expected:
                raise ValueError(f"{source}: masks have shape {masks.shape}, expected {expected}")
            if masks.dtype.kind not in "iub":
                raise ValueError(f"{source}: masks must be integers, got dtype {masks.dtype}")
        if ids is not None and len(ids) != images.shape[0]:
            raise ValueError(f"{source}: {len(ids)} ids for {images.shape[0]} images")
        self._images = images
        self._masks = masks
        self._ids = list(ids) if ids is not None else None
        self.in_channels = int(images.shape[1])
        self.has_masks = masks is not None

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        """All labels, int64 ``(N,)``."""
        return self._labels.copy()

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def _image(self, i: int) -> torch.Tensor:
        arr = np.ascontiguousarray(self._images[i])
        if arr.dtype == np.uint8:
            return torch.from_numpy(arr).to(torch.float32).div_(255.0)
        return torch.from_numpy(arr.astype(np.float32, copy=True))

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        item: dict[str, Any] = {
            "image": self._image(i),
            "label": torch.tensor(int(self._labels[i]), dtype=torch.int64),
            "id": self._ids[i] if self._ids is not None else f"{self.name}/{self.split}/{i:05d}",
        }
        if self._masks is not None:
            item["mask"] = torch.from_numpy(self._masks[i].astype(np.int64))
        return item


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fractions: Sequence[float],
    seed: int,
) -> dict[str, npt.NDArray[np.int64]]:
    """Deterministic stratified train/val/test split of item indices.

    Within each class the items (in the given order) are shuffled with a generator seeded by
    ``seed`` and cut by ``fractions``; the result depends only on the labels, the fractions and
    the seed.

    Args:
        labels: Class label of every item.
        fractions: ``(train, val, test)`` fractions, non-negative and summing to 1.
        seed: Non-negative integer seed.

    Returns:
        Sorted index arrays for ``"train"``, ``"val"`` and ``"test"``.

    Raises:
        ValueError: If the fractions are not three non-negative numbers summing to 1.
    """
    fr = check_fractions(fractions)
    y = np.asarray(labels, dtype=np.int64)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for k, cls in enumerate(np.unique(y)):
        idx = np.flatnonzero(y == cls)
        rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(int(k),)))
        )
        idx = idx[rng.permutation(idx.size)]
        n_train, n_val, _ = _allocate(idx.size, fr)
        out["train"] += idx[:n_train].tolist()
        out["val"] += idx[n_train : n_train + n_val].tolist()
        out["test"] += idx[n_train + n_val :].tolist()
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in out.items()}


def _allocate(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Split ``n`` items by ``fractions`` with the largest-remainder method (sums to ``n``)."""
    exact = [f * n for f in fractions]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(3), key=lambda k: -(exact[k] - counts[k]))  # stable: ties by split
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    return counts[0], counts[1], counts[2]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate ``(train, val, test)`` split fractions.

    Raises:
        ValueError: Unless three finite non-negative numbers summing to 1 (within 1e-6).
    """
    try:
        fr = tuple(float(f) for f in fractions)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"fractions must be three numbers (train, val, test), got {fractions!r}"
        ) from err
    if len(fr) != 3 or not all(math.isfinite(f) and f >= 0 for f in fr):
        raise ValueError(
            f"fractions must be three non-negative numbers (train, val, test), got {fractions!r}"
        )
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {sum(fr):.6g})")
    return fr[0], fr[1], fr[2]


def rebatched_loader(
    loader: DataLoader[Any],
    batch_sampler: Iterable[list[int]],
    *,
    generator: torch.Generator | None = None,
) -> DataLoader[Any]:
    """A :class:`~torch.utils.data.DataLoader` over ``loader``'s data set with the given
    batches and ``loader``'s loading settings (workers, collate function, pinned memory, worker
    initialisation, persistent workers).

    For the loaders of one process's share of a sharded run.

    Args:
        loader: The loader whose data set and settings are kept.
        batch_sampler: The batches, lists of data-set indices (a list or a batch sampler).
        generator: The new loader's generator (worker seeds are drawn from it); None keeps
            PyTorch's default.

    Returns:
        The new loader.
    """
    return DataLoader(
        loader.dataset,
        batch_sampler=batch_sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers and loader.num_workers > 0,
        generator=generator,
    )


def make_loader(
    dataset: Dataset[Any],
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    *,
    drop_last: bool = False,
) -> DataLoader[Any]:
    """A reproducible :class:`~torch.utils.data.DataLoader` over a data set.

    Shuffling uses its own seeded :class:`torch.Generator` (never the global RNG) and loading
    happens in the main process (``num_workers=0``), so the batch order is the same on every run.

    Args:
        dataset: The data set (batch-convention dictionaries are stacked per key; ids become a
            list of strings).
        batch_size: Items per batch (>= 1).
        shuffle: Reshuffle every epoch.
        seed: Seed of the shuffling generator.
        drop_last: Drop the last incomplete batch.

    Returns:
        The data loader.

    Raises:
        ValueError: If ``batch_size`` < 1.
        TypeError: If ``batch_size`` or ``seed`` is not an integer.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an integer, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=shuffle,
        generator=generator,
        num_workers=0,
        drop_last=drop_last,
    )
