"""One run per folder for every job: the entry points of the pipelines hold the run-folder lock
(:class:`medrobust._utils.lock.RunLock`) for their whole life.

A job that calls another job on the same folder (``run_audit`` trains, then evaluates) holds the
lock once: the inner call sees that this process already holds it and goes on.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from medrobust._utils.lock import RunLock

__all__ = ["holds_run_lock", "run_folder_lock"]

F = TypeVar("F", bound=Callable[..., Any])

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


def holds_run_lock(parameter: str) -> Callable[[F], F]:
    """Decorate a job whose run folder is its argument ``parameter``: the job runs holding
    that folder's lock (see :func:`run_folder_lock`)."""

    def decorate(job: F) -> F:
        signature = inspect.signature(job)

        @functools.wraps(job)
        def locked(*args: Any, **kwargs: Any) -> Any:
            folder = signature.bind(*args, **kwargs).arguments.get(parameter)
            if folder is None:
                return job(*args, **kwargs)
            with run_folder_lock(folder):
                return job(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate
