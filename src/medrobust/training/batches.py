"""The data side of the training loop: loaders with a seeded shuffle, the labelled split for
label-scarce training, and the checks every batch passes before a recipe sees it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler

from medrobust.defenses.data import labelled_split
from medrobust.defenses.recipes import Recipe
from medrobust.models.adapter import ModelAdapter
from medrobust.training.config import TrainConfig
from medrobust.types import Task

__all__ = [
    "LoaderSetup",
    "check_mask",
    "data_spacing",
    "length",
    "prepare_batch",
    "split_labelled",
]

logger = logging.getLogger(__name__)


def length(loader: DataLoader[Any]) -> int:
    """Batches per epoch, or 0 when the loader has no length."""
    try:
        return len(loader)
    except TypeError:
        return 0


def data_spacing(data: Any) -> list[float] | None:
    """The voxel spacing in mm a training set records (its ``spacing`` attribute, looked up
    through ``DataLoader.dataset`` and ``Subset.dataset``), or None.

    Args:
        data: A data set or a loader.

    Returns:
        One value per spatial dim, or None when the data set records none.
    """
    for _ in range(8):  # loaders and subsets wrap data sets a few levels deep at most
        spacing = getattr(data, "spacing", None)
        if spacing is not None:
            return [float(s) for s in spacing]
        if not hasattr(data, "dataset"):
            return None
        data = data.dataset
    return None


class LoaderSetup:
    """Builds the loaders of one run around a seeded data generator, and undoes what it changed.

    A training ``DataLoader`` whose ``RandomSampler`` has no generator is given ``data_gen`` for
    the duration of the run (:meth:`restore` gives it back); the other generators of a given
    training loader are collected in ``loader_generators`` so their states can be checkpointed.

    Args:
        config: The run's settings (``batch_size``, ``num_workers``).
        data_gen: The seeded generator of the shuffle.
    """

    def __init__(self, config: TrainConfig, data_gen: torch.Generator) -> None:
        self.config = config
        self.data_gen = data_gen
        self.loader_generators: list[torch.Generator] = []
        self._restore: list[tuple[RandomSampler, torch.Generator | None]] = []

    def _adopt(self, loader: DataLoader[Any]) -> None:
        sampler = loader.sampler
        if isinstance(sampler, RandomSampler) and sampler.generator is None:
            self._restore.append((sampler, None))
            sampler.generator = self.data_gen
        seen: list[torch.Generator] = []
        for gen in (loader.generator, getattr(sampler, "generator", None)):
            if (
                isinstance(gen, torch.Generator)
                and gen is not self.data_gen
                and all(gen is not g for g in seen)
            ):
                seen.append(gen)
        self.loader_generators = seen

    def build(self, data: DataLoader[Any] | Dataset[Any], *, train: bool) -> DataLoader[Any]:
        """The loader of a data set (seeded shuffle for training), or a given loader, checked.

        Raises:
            TypeError: If ``data`` is neither a DataLoader nor a Dataset.
            ValueError: If it is empty, or a training loader's batch size differs from the
                config's.
        """
        cfg = self.config
        role = "train" if train else "val"
        if isinstance(data, DataLoader):
            loader = data
            if train and loader.batch_size is not None and loader.batch_size != cfg.batch_size:
                raise ValueError(
                    f"the {role} loader has batch_size {loader.batch_size} but config.batch_size "
                    f"is {cfg.batch_size}; make them equal (or pass the data set and let fit "
                    "build the loader)"
                )
            if train:
                self._adopt(loader)
        elif isinstance(data, Dataset):
            if hasattr(data, "__len__") and len(data) == 0:
                raise ValueError(f"the {role} loader is empty (0 batches); the data set is empty")
            loader = DataLoader(
                data,
                batch_size=cfg.batch_size,
                shuffle=train,
                generator=self.data_gen if train else None,
                num_workers=cfg.num_workers,
            )
        else:
            raise TypeError(
                f"{role}_loader must be a torch DataLoader or Dataset, got {type(data).__name__}"
            )
        try:
            n_batches = len(loader)
        except TypeError:
            n_batches = -1
        if n_batches == 0:
            raise ValueError(f"the {role} loader is empty (0 batches); give it some samples")
        return loader

    def restore(self) -> None:
        """Give the samplers back the generators they had before :meth:`build`."""
        for sampler, gen in self._restore:
            sampler.generator = gen
        self._restore = []


def split_labelled(
    train: DataLoader[Any] | Dataset[Any],
    unlabelled: Dataset[Any] | None,
    config: TrainConfig,
    recipe: Recipe,
    seed: int,
) -> tuple[DataLoader[Any] | Dataset[Any], Dataset[Any] | None]:
    """Apply ``config.labelled_fraction``: the labelled part to train on, and the unlabelled
    images the recipe receives (the rest of the split joins ``unlabelled`` for recipes that use
    unlabelled data, and is left out otherwise).

    Args:
        train: The training data.
        unlabelled: Unlabelled images given to ``fit``, or None.
        config: The run's settings.
        recipe: The run's recipe.
        seed: Seed of the stratified split.

    Returns:
        ``(train, unlabelled)``.

    Raises:
        TypeError: If a split is asked for but ``train`` is a DataLoader.
    """
    if config.labelled_fraction < 1.0:
        if isinstance(train, DataLoader) or not isinstance(train, Dataset):
            raise TypeError(
                f"labelled_fraction={config.labelled_fraction} needs the training set as a "
                f"map-style Dataset (fit splits it), got {type(train).__name__}"
            )
        train, rest = labelled_split(train, config.labelled_fraction, seed)
        if rest is not None and recipe.uses_unlabelled:
            unlabelled = rest if unlabelled is None else ConcatDataset([rest, unlabelled])
        elif rest is not None:
            logger.info(
                "labelled_fraction=%s: %d images left out (recipe %r uses no unlabelled data)",
                config.labelled_fraction,
                len(rest),
                config.recipe,
            )
    return train, unlabelled


def prepare_batch(
    batch: Any, model: ModelAdapter, device: torch.device, where: str
) -> dict[str, Any]:
    """Check a batch against the model and move its tensors to ``device``.

    Args:
        batch: What the loader yielded.
        model: The model being trained.
        device: The training device.
        where: The batch's place in the run, for error messages (``"train batch 3 of epoch 1"``).

    Returns:
        The batch dictionary on ``device``.

    Raises:
        TypeError: If the batch is not a dict.
        ValueError: If keys are missing, or images, labels or masks do not match the model.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"{where} is a {type(batch).__name__}; data sets must yield dicts with 'image' "
            "and 'label' (and 'mask' for segmentation), see medrobust.types"
        )
    seg = model.task is Task.SEGMENTATION
    need = ("image", "mask") if seg else ("image", "label")
    missing = [k for k in need if k not in batch]
    if missing:
        raise ValueError(f"{where} lacks key(s) {missing}; it has {sorted(map(str, batch))}")
    out = {
        k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
        for k, v in batch.items()
    }
    images = out["image"]
    model.check_input(images, f"images of the {where}")
    if seg:
        check_mask(out["mask"], images, model.num_classes, where)
    else:
        model.check_labels(out["label"], images.shape[0], f"labels of the {where}")
    return out


def check_mask(mask: Any, images: torch.Tensor, num_classes: int, where: str) -> None:
    """Check a segmentation mask: integer class indices of shape ``(B, *spatial)`` in range.

    Raises:
        ValueError: Otherwise (the message names the batch).
    """
    if not isinstance(mask, torch.Tensor) or mask.is_floating_point() or (mask.dtype == torch.bool):
        raise ValueError(
            f"masks of the {where} must be integer class-index tensors, got "
            f"{getattr(mask, 'dtype', type(mask).__name__)}"
        )
    want = (images.shape[0], *images.shape[2:])
    if tuple(mask.shape) != want:
        raise ValueError(f"masks of the {where} must have shape {want}, got {tuple(mask.shape)}")
    k = num_classes
    lo, hi = int(mask.min()), int(mask.max())
    if lo < 0 or hi >= k:
        raise ValueError(
            f"masks of the {where} must be in [0, {k - 1}] for a {k}-class model, got "
            f"values in [{lo}, {hi}]"
        )
