"""Training on several processes with :class:`~torch.nn.parallel.DistributedDataParallel`.

Under ``torchrun`` (a process group initialised, see :mod:`medrobust._utils.dist`) :func:`fit`
trains every recipe the same way:

* **Batches.** ``batch_size`` stays the *global* batch: every epoch all processes draw the same
  seeded permutation of the training set (padded by repeating its first samples to a multiple of
  the process count, as ``DistributedSampler`` does), cut it into global batches, and process
  ``r`` takes every ``n``-th sample of each (:class:`ShardedBatches`). Gradients are averaged
  over the processes, so a step sees the same global batch and the learning rate means the same
  on 1 or 8 processes; only batch-norm statistics are per process (``sync_batchnorm=True`` makes
  them global on GPUs). The shuffle's generator is checkpointed, so a run resumes on any number
  of processes with the same global batches.
* **The step.** The recipe's whole loss (clean forward, attack generation, adversarial forward,
  unlabelled stream) runs inside one DDP forward (:class:`RecipeStep`), so the attack's input
  gradients never trigger a gradient reduction and only the final ``backward`` does, for any
  recipe. Parameters and buffers start from rank 0's.
* **Recipe streams.** The recipe's generator is the same on every process; a recipe that draws
  a batch of its own (SSAT's unlabelled stream) draws the global batch and takes its share
  (:func:`medrobust._utils.dist.shard_rows`): both streams are sharded alike.
* **Files.** Rank 0 writes ``best.pt``, ``last.pt`` and the history; the others wait for it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler

from medrobust._utils.dist import Shard, active, all_reduce_sum, current_shard
from medrobust.data.base import rebatched_loader

__all__ = ["RecipeStep", "ShardedBatches", "reduce_sums", "shard_loader", "wrap_step"]


class ShardedBatches(Sampler[list[int]]):
    """This process's share of seeded global batches (see the module docstring).

    Args:
        n: Size of the data set.
        batch_size: The global batch size (a multiple of the process count).
        generator: The shuffle's generator; the same state on every process.
        shard: This process's rank and the process count.
        shuffle: Draw a new permutation every epoch (else the data set's order).

    Raises:
        ValueError: If ``batch_size`` is not a multiple of the process count.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator | None,
        shard: Shard,
        *,
        shuffle: bool = True,
    ) -> None:
        if batch_size % shard.size:
            fit = shard.size * max(1, batch_size // shard.size)
            raise ValueError(
                f"batch_size={batch_size} is the global batch and must be a multiple of the "
                f"{shard.size} processes; use e.g. batch_size={fit}"
            )
        self.n, self.batch_size, self.generator, self.shard = n, batch_size, generator, shard
        self.shuffle = shuffle

    def __len__(self) -> int:
        return math.ceil(self._padded() / self.batch_size)

    def _padded(self) -> int:
        return math.ceil(self.n / self.shard.size) * self.shard.size

    def __iter__(self) -> Iterator[list[int]]:
        # the same draws as one process's RandomSampler, so the global batches are the same
        sampler = RandomSampler(range(self.n), generator=self.generator) if self.shuffle else None
        order = torch.tensor(list(sampler)) if sampler is not None else torch.arange(self.n)
        pad = self._padded() - self.n
        if pad:
            order = torch.cat([order, order.repeat(math.ceil(pad / self.n))[:pad]])
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            yield batch[self.shard.rank :: self.shard.size].tolist()


def shard_loader(loader: DataLoader[Any], generator: torch.Generator | None) -> DataLoader[Any]:
    """The training loader of this process: ``loader``'s data set in :class:`ShardedBatches` of
    the same global batch size (``loader`` itself in a single process).

    Raises:
        ValueError: For a loader without a batch size or a data set without a length (an
            iterable data set cannot be sharded by medrobust; shard it yourself).
    """
    shard = current_shard()
    if shard.size == 1:
        return loader
    dataset = loader.dataset
    if loader.batch_size is None or not hasattr(dataset, "__len__"):
        raise ValueError(
            "training on several processes needs a map-style data set and a loader with a "
            "batch size; got a loader without them (shard an iterable data set yourself)"
        )
    gen = generator
    sampler_gen = getattr(loader.sampler, "generator", None)
    if isinstance(sampler_gen, torch.Generator):
        gen = sampler_gen
    shuffle = not isinstance(loader.sampler, torch.utils.data.SequentialSampler)
    batches = ShardedBatches(len(dataset), int(loader.batch_size), gen, shard, shuffle=shuffle)
    # each epoch's iterator draws its worker seed from ``gen`` first, as before
    return rebatched_loader(loader, batches, generator=gen)


class RecipeStep(nn.Module):
    """One training step's loss as a module, so DDP wraps the recipe's whole computation.

    Args:
        model: The model adapter being trained (a submodule: DDP reduces its gradients).
        recipe: The training recipe.
    """

    def __init__(self, model: nn.Module, recipe: Any) -> None:
        super().__init__()
        self.model = model
        self.recipe = recipe

    def forward(
        self, batch: dict[str, Any], step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The recipe's ``(loss, stats)`` of ``batch``."""
        loss, stats = self.recipe.loss(self.model, batch, step=step, epoch=epoch)
        return loss, stats


def wrap_step(model: nn.Module, recipe: Any, *, sync_batchnorm: bool = False) -> nn.Module:
    """The module whose call gives a step's ``(loss, stats)``: :class:`RecipeStep` itself in a
    single process, inside :class:`~torch.nn.parallel.DistributedDataParallel` under a process
    group.

    Args:
        model: The model adapter (already on its device).
        recipe: The set-up recipe.
        sync_batchnorm: Convert batch-norm layers to :class:`torch.nn.SyncBatchNorm` (CUDA
            only: statistics over the global batch).

    Raises:
        ValueError: For ``sync_batchnorm`` on a model that is not on a GPU.
    """
    step = RecipeStep(model, recipe)
    if sync_batchnorm:
        device = next(model.parameters()).device
        if device.type != "cuda":
            raise ValueError(
                f"sync_batchnorm needs the model on a GPU (SyncBatchNorm runs on CUDA only); it "
                f"is on {device}: leave it off on the CPU"
            )
        if active():
            nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not active() or current_shard().size == 1:
        return step
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=True)


def reduce_sums(sums: dict[str, float], n: int) -> tuple[dict[str, float], int]:
    """Per-key sums and a sample count added up over the processes (themselves in one process;
    every process must hold the same keys)."""
    if not active():
        return sums, n
    keys = sorted(sums)
    total = all_reduce_sum(torch.tensor([*(sums[k] for k in keys), float(n)], dtype=torch.float64))
    return {k: float(v) for k, v in zip(keys, total[:-1].tolist(), strict=True)}, int(total[-1])
