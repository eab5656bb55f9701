"""One run per folder for every job: the entry points of the pipelines hold the run-folder lock
(:class:`medrobust._utils.lock.RunLock`) for their whole life.

A job that calls another job on the same folder (``run_audit`` trains, then evaluates) holds the
lock once: the inner call sees that this process already holds it and goes on.

``overwrite=True`` never mixes two runs: before the job writes anything, the old run's results
(:data:`RESULT_FILES`: ``metrics.json``, the report, ``config.yaml``, the adversarial examples,
maps) are moved aside into ``<folder>/.replaced-<pid>/``, so a folder killed midway never looks
complete. Inputs the job may read (``train/``, checkpoints) stay in place. When the
job finishes they are deleted; when it fails with an exception they are put back; when the
process is killed they stay aside, hidden, and the next overwrite of that folder deletes them.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from medrobust._utils.lock import RunLock, remove_stale_staging

__all__ = [
    "EVALUATION_STATE",
    "EXPLANATION_STATE",
    "REPLACED_PREFIX",
    "RESULT_FILES",
    "holds_run_lock",
    "replacing",
    "run_folder_lock",
]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)

REPLACED_PREFIX = ".replaced-"

#: The per-batch state of an audit in its run folder (removed once the run is complete).
EVALUATION_STATE = ".evaluation-state.pt"
#: The per-batch state of the demo's explanation audit.
EXPLANATION_STATE = ".explanation-state.pt"

#: The results of a finished run, moved aside by an overwrite (their presence marks a run done).
RESULT_FILES = (
    "metrics.json",
    "study.json",
    "report.html",
    "config.yaml",
    "adversarial",
    "explanations",
    "maps.npz",
)

_HELD: set[Path] = set()


@contextmanager
def run_folder_lock(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of ``folder`` (created if needed) unless this process already holds it.

    Raises:
        RunLockedError: If another process runs in ``folder`` (its PID is named).
        ValueError: If ``folder`` exists and is not a folder.
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"the output folder {path} exists and is not a folder")
    key = path.resolve()
    if key in _HELD:
        yield
        return
    path.mkdir(parents=True, exist_ok=True)
    with RunLock(path):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def _old_run(folder: Path) -> list[Path]:
    """The results of a previous run in ``folder`` (see :data:`RESULT_FILES`)."""
    return [folder / name for name in RESULT_FILES if (folder / name).exists()]


@contextmanager
def replacing(folder: Path) -> Iterator[None]:
    """Move the old run in ``folder`` aside for the life of the block (see the module
    docstring); the caller holds the folder's lock."""
    remove_stale_staging(folder, REPLACED_PREFIX)
    old = _old_run(folder)
    if not old:
        yield
        return
    aside = folder / f"{REPLACED_PREFIX}{os.getpid()}"
    aside.mkdir()
    for entry in old:
        entry.rename(aside / entry.name)
    try:
        yield
    except BaseException as exc:
        if isinstance(exc, Exception):  # a failure, not a kill or Ctrl-C: put the old run back
            for entry in _old_run(folder):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            for entry in aside.iterdir():
                entry.rename(folder / entry.name)
            aside.rmdir()
        else:
            logger.warning("the replaced run is kept in %s until the next overwrite", aside)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def holds_run_lock(parameter: str) -> Callable[[F], F]:
    """Decorate a job whose run folder is its argument ``parameter``: the job runs holding
    that folder's lock (see :func:`run_folder_lock`); with ``overwrite=True`` the old run is
    moved aside first (see :func:`replacing`)."""

    def decorate(job: F) -> F:
        signature = inspect.signature(job)

        @functools.wraps(job)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs).arguments
            folder = bound.get(parameter)
            if folder is None:
                return job(*args, **kwargs)
            outermost = Path(folder).resolve() not in _HELD
            from medrobust._utils.dist import current_shard  # torch: only once a job runs

            if outermost and current_shard().size > 1:
                replace = bool(bound.get("overwrite") and not bound.get("resume"))
                return _held_by_rank0(Path(folder), replace, lambda: job(*args, **kwargs))
            with run_folder_lock(folder):
                if outermost and bound.get("overwrite") and not bound.get("resume"):
                    with replacing(Path(folder)):
                        return job(*args, **kwargs)
                return job(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate


def _held_by_rank0(folder: Path, replace: bool, job: Callable[[], Any]) -> Any:
    """Run ``job`` on every process of a sharded run while rank 0 holds ``folder``'s lock (and
    has moved an old run aside when ``replace``); the other processes wait until it does, and
    fail with rank 0's reason when it cannot.

    Every process marks the folder held for the job's life, so a job it calls on the same
    folder takes nothing again (on any rank)."""
    from medrobust._utils.dist import broadcast_object, current_shard

    key = folder.resolve()
    stack = ExitStack()
    with stack:
        if current_shard().main:
            try:
                stack.enter_context(run_folder_lock(folder))
                if replace:
                    stack.enter_context(replacing(folder))
            except Exception as exc:
                broadcast_object((False, f"{type(exc).__name__}: {exc}"))
                raise
            broadcast_object((True, ""))
        else:
            ok, why = broadcast_object((False, "rank 0 did not answer"))
            if not ok:
                raise RuntimeError(f"rank 0 could not take the run folder {folder}: {why}")
        _HELD.add(key)
        try:
            return job()
        finally:
            _HELD.discard(key)
