"""The few ``torch.distributed`` calls medrobust makes, in one place.

medrobust runs on several processes the way the PyTorch ecosystem does: ``torchrun`` starts one
process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/
``MASTER_PORT``; :func:`init_from_env` joins the process group (``gloo`` on CPU, ``nccl`` on
GPUs). Without a process group every function here is the single-process identity, so the same
code runs under ``python`` and under ``torchrun``.

Example::

    torchrun --nproc-per-node 2 -m medrobust evaluate runs/demo/train/best.pt --out runs/ddp
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "Shard",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "current_shard",
    "init_from_env",
    "is_main",
    "main_first",
    "rank_path",
    "shard_rows",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes of a run.

    Attributes:
        rank: Index of this process, ``0 <= rank < size``.
        size: Number of processes (the world size).
    """

    rank: int = 0
    size: int = 1

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise ValueError(f"a shard needs 0 <= rank < size, got rank={self.rank} of {self.size}")

    def owns(self, index: int) -> bool:
        """Whether item ``index`` of a fixed sequence (a batch, a model) belongs to this process:
        round robin, so every process gets a share of the early and of the late items."""
        return index % self.size == self.rank

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0


def active() -> bool:
    """A process group is initialised (``torch.distributed``)."""
    return dist.is_available() and dist.is_initialized()


def current_shard() -> Shard:
    """This process's :class:`Shard` (rank 0 of 1 without a process group)."""
    if not active():
        return Shard()
    return Shard(dist.get_rank(), dist.get_world_size())


def is_main() -> bool:
    """True on rank 0 and in a single process."""
    return current_shard().main


def init_from_env(device: str | None = None, *, timeout_s: float = 1800.0) -> Shard:
    """Join the process group ``torchrun`` describes in the environment, if it describes one.

    With ``WORLD_SIZE`` unset or 1 nothing happens. Otherwise the group is initialised once:
    ``nccl`` when ``device`` names CUDA (each process then uses GPU ``LOCAL_RANK``), else
    ``gloo``; ``MEDROBUST_DIST_BACKEND`` overrides the choice.

    Args:
        device: The run's device setting (``None``, ``"cpu"``, ``"cuda"`` ...).
        timeout_s: How long a collective waits for the other processes.

    Returns:
        This process's :class:`Shard`.

    Raises:
        ValueError: If the environment is incomplete (``RANK`` missing, a bad ``WORLD_SIZE``) or
            CUDA is asked for but this process's ``LOCAL_RANK`` has no GPU.
    """
    if active():
        return current_shard()
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(raw)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {raw!r}") from None
    if size <= 1:
        return Shard()
    if "RANK" not in os.environ:
        raise ValueError(
            f"WORLD_SIZE={size} but RANK is not set: start several processes with torchrun "
            "(torchrun --nproc-per-node N -m medrobust ...), which sets both"
        )
    cuda = device is not None and str(device).startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA "
                "device(s): start at most one process per GPU (--nproc-per-node)"
            )
        torch.cuda.set_device(local)
    backend = os.environ.get("MEDROBUST_DIST_BACKEND") or ("nccl" if cuda else "gloo")
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return current_shard()


def barrier() -> None:
    """Wait for every process (nothing without a process group)."""
    if active():
        dist.barrier()


def all_gather_objects(obj: T) -> list[T]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T) -> T:
    """Rank 0's ``obj`` on every process (``obj`` itself in a single process)."""
    if not active():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``t`` over every process (a copy; ``t`` itself is untouched).

    Sums are taken in float64 on the CPU for floating tensors and int64 otherwise, so the
    result does not depend on the backend's reduction order beyond float64 rounding."""
    if not active():
        return t.clone()
    wide = t.detach().to("cpu", torch.float64 if t.is_floating_point() else torch.int64)
    if dist.get_backend() == "nccl":
        dev = torch.device("cuda", torch.cuda.current_device())
        buf = wide.to(dev)
        dist.all_reduce(buf)
        wide = buf.cpu()
    else:
        dist.all_reduce(wide)
    return wide.to(t.dtype).to(t.device)


def main_first(job: Callable[[], T]) -> T:
    """Run ``job`` on rank 0; the others wait for it and get its result, or its error.

    An exception on rank 0 reaches every process as a ``RuntimeError`` naming it, so no process
    waits forever on a collective rank 0 never reaches.
    """
    if not active():
        return job()
    outcome: tuple[bool, Any] = (True, None)
    if is_main():
        try:
            outcome = (True, job())
        except Exception as exc:
            outcome = (False, exc)
    ok, value = broadcast_object(outcome)
    if not ok:
        if is_main():
            raise value
        raise RuntimeError(f"rank 0 failed: {type(value).__name__}: {value}")
    return value


def shard_rows(t: torch.Tensor) -> torch.Tensor:
    """This process's rows of a batch that every process drew alike (rows ``r, r + n, ...``);
    ``t`` itself in a single process."""
    shard = current_shard()
    return t if shard.size == 1 else t[shard.rank :: shard.size]


def rank_path(path: Path, shard: Shard | None = None) -> Path:
    """The per-process name of a state file: ``path`` itself in a single process, else
    ``<stem>.rank<r>-of-<n><suffix>`` beside it (each process checkpoints its own share)."""
    s = shard or current_shard()
    if s.size == 1:
        return path
    return path.with_name(f"{path.stem}.rank{s.rank}-of-{s.size}{path.suffix}")
