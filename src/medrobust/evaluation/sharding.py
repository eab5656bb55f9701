"""Audits on several processes: which batches each process runs, and one result from all.

Under ``torchrun`` every process builds the same loader; :func:`plan_batches` gives process
``r`` of ``n`` the batches ``r, r + n, r + 2n, ...`` of the loader's fixed order (a deterministic
sampler), each with its position and the data-set index of its first sample. A batch is the
same batch whatever the number of processes, and everything random in the audit is seeded from
the run seed and the samples' data-set indices, so each sample gets the same attacks, the same
random starts and the same noise draws on 1, 2 or 4 processes. :func:`gather_audit` then joins
the per-sample records, the kept adversarial examples and the report's examples of every process
into what one process running every batch would have produced: ``metrics.json`` is identical
apart from ``world_size`` and the timings.

With a :class:`torch.utils.data.DataLoader` in sequential order each process loads only its own
batches (the loader is rebuilt on a sharded batch list); any other iterable is read whole by
every process and the batches of the others are skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, SequentialSampler

from medrobust._utils.dist import Shard, all_gather_objects
from medrobust.data.base import rebatched_loader
from medrobust.evaluation.records import Records
from medrobust.evaluation.tasks.base import Batch

__all__ = ["Planned", "gather_audit", "plan_batches"]

Kept = dict[int, dict[str, list[torch.Tensor]]]


@dataclass
class Planned:
    """One batch this process runs.

    Attributes:
        position: The batch's position in the loader.
        offset: The data-set index of its first sample.
        batch: The batch, cut to ``max_samples`` where that ends inside it.
        total: The number of batches this process runs (None if unknown).
    """

    position: int
    offset: int
    batch: Batch
    total: int | None


def plan_batches(
    loader: Iterable[Any],
    read: Callable[[Any], Batch],
    shard: Shard,
    max_samples: int | None = None,
    skip: Sequence[int] = (),
) -> Iterator[Planned]:
    """The batches of ``loader`` that ``shard`` runs, in order, skipping the positions ``skip``
    (already done by this process before an interruption).

    Args:
        loader: Batches in a fixed order.
        read: The task's batch reader (``AuditTask.read_batch``).
        shard: This process's rank and the number of processes.
        max_samples: Stop after this many samples of the whole data set.
        skip: Batch positions already done.

    Raises:
        ValueError: For a DataLoader that shuffles while several processes share it.
    """
    done = set(skip)
    fast = _sharded_loader(loader, shard, max_samples, done)
    if fast is not None:
        positions, offsets, rank_loader = fast
        for pos, off, raw in zip(positions, offsets, rank_loader, strict=True):
            yield Planned(pos, off, _cut(read(raw), off, max_samples), len(positions))
        return
    total = _owned_count(loader, shard, done)
    offset = 0
    for pos, raw in enumerate(loader):
        if max_samples is not None and offset >= max_samples:
            return
        batch = read(raw)
        if shard.owns(pos) and pos not in done:
            yield Planned(pos, offset, _cut(batch, offset, max_samples), total)
        offset += len(batch)


def _cut(batch: Batch, offset: int, max_samples: int | None) -> Batch:
    return batch if max_samples is None else batch.take(max_samples - offset)


def _owned_count(loader: Iterable[Any], shard: Shard, done: set[int]) -> int | None:
    if not hasattr(loader, "__len__"):
        return None
    n = len(loader)  # type: ignore[arg-type]
    return sum(1 for p in range(n) if shard.owns(p) and p not in done)


def _sharded_loader(
    loader: Iterable[Any], shard: Shard, max_samples: int | None, done: set[int]
) -> tuple[list[int], list[int], DataLoader[Any]] | None:
    """This process's batches of a map-style DataLoader as a DataLoader of their own, with their
    positions and offsets; None where the loader cannot be cut so (iterable data sets, custom
    samplers without a length) or nothing would be saved (one process, nothing done yet)."""
    if not isinstance(loader, DataLoader) or loader.batch_sampler is None:
        return None
    if not isinstance(loader.sampler, SequentialSampler):
        if shard.size > 1:
            raise ValueError(
                "a sharded audit needs the loader in a fixed order (shuffle=False, no random "
                f"sampler); got a DataLoader with a {type(loader.sampler).__name__}"
            )
        return None
    if shard.size == 1 and not done:
        return None
    lists = [list(b) for b in loader.batch_sampler]
    offsets = [0, *itertools.accumulate(len(b) for b in lists)][:-1]
    keep = [
        p
        for p in range(len(lists))
        if shard.owns(p) and p not in done and (max_samples is None or offsets[p] < max_samples)
    ]
    rank_loader = rebatched_loader(loader, [lists[p] for p in keep])
    return keep, [offsets[p] for p in keep], rank_loader


def gather_audit(
    records: Records,
    kept: Kept,
    pool: list[dict[str, Any]],
    artifacts: dict[str, Any],
    *,
    keep_adversarial: int,
    pool_limit: int,
) -> tuple[Records, Kept, list[dict[str, Any]], list[dict[str, Any]]]:
    """Every process's share of an audit, joined in data-set order on every process.

    Args:
        records, kept, pool, artifacts: This process's records, kept worst-case examples per
            budget, report example pool and task artifacts.
        keep_adversarial: The audit's limit of kept examples per budget.
        pool_limit: The audit's limit of the example pool.

    Returns:
        ``(records, kept, pool, artifact_states)``: the joined records, kept examples and
        pool (what one process running every batch keeps), and every process's task artifacts
        in rank order (the task joins them).
    """
    parts = all_gather_objects((records, kept, pool, artifacts))
    merged = Records.merge([p[0] for p in parts])
    return (
        merged,
        _merge_kept([p[1] for p in parts], keep_adversarial),
        _merge_pool([p[2] for p in parts], pool_limit),
        [p[3] for p in parts],
    )


def _merge_kept(parts: list[Kept], limit: int) -> Kept:
    """The first ``limit`` kept examples per budget in data-set order (each process kept the
    first ``limit`` of its own share, so the first ``limit`` overall are among them)."""
    out: Kept = {}
    for e_i in parts[0]:
        lists = [p[e_i] for p in parts]
        keys = list(lists[0])
        if not any(s["index"] for s in lists):
            out[e_i] = {k: [] for k in keys}
            continue
        joined = {k: torch.cat([t for s in lists for t in s[k]]) for k in keys}
        order = torch.argsort(joined["index"], stable=True)[:limit]
        out[e_i] = {k: [v[order]] for k, v in joined.items()}
    return out


def _merge_pool(parts: list[list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """The example pool one process would have built: groups (batch, budget) in order, each
    added whole while the pool holds fewer than ``limit`` examples."""
    entries = sorted(
        (e for p in parts for e in p), key=lambda e: (e["batch"], e["eps_index"], e["index"])
    )
    out: list[dict[str, Any]] = []
    for _, group in itertools.groupby(entries, key=lambda e: (e["batch"], e["eps_index"])):
        if len(out) >= limit:
            break
        out.extend(group)
    return out
