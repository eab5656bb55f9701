"""One run per folder: an OS file lock held for a run's life, and cleanup of stale staging.

Two medrobust processes writing into the same run folder would interleave their checkpoints,
evaluation state and results. :class:`RunLock` prevents it with an advisory ``fcntl.flock`` on
``<folder>/.medrobust.lock``: the first process takes it and writes its PID and start time into
the file; any other process (or a second :class:`RunLock` in the same process) fails at once with
a :class:`RunLockedError` that names the folder and the holder's PID. The kernel releases the
lock when the holder exits, however it exits (``kill -9`` and power loss included), so a run
that died leaves no stale lock: the next run simply takes it over. The PID in the file is only
informational (it is what the error message reports); the lock itself is the ``flock``.

How a pipeline uses it: take the lock before the first byte is written into the run folder and
keep it until the last file is in place, around training, resume and the final write::

    from medrobust._utils.lock import RunLock, RunLockedError

    with RunLock(run_dir):                   # raises RunLockedError if another run holds it
        train(..., run_dir=run_dir / "train")
        result = audit(..., state=run_dir / ".evaluation-state.pt")
        write_run_folder(result, run_dir)    # cleans stale staging folders first

The CLI turns :class:`RunLockedError` (a ``ValueError``) into a one-line error. The lock file is
left in the folder after the run (empty once released); deleting a lock file in use would let a
second process lock a new file while the first still writes, so it is never removed.

:func:`remove_stale_staging` deletes the ``.staging-<pid>`` folders that an interrupted writer
left behind, keeping those whose process is still alive.

Limits: ``flock`` needs a POSIX system (Linux, macOS); on network file systems its guarantees
are those of the file system. Child processes created with ``fork`` (e.g. data-loader workers)
share the lock while they live.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from types import TracebackType

__all__ = [
    "LOCK_NAME",
    "STAGING_PREFIX",
    "RunLock",
    "RunLockedError",
    "pid_alive",
    "remove_stale_staging",
]

logger = logging.getLogger(__name__)

LOCK_NAME = ".medrobust.lock"
"""Name of the lock file inside a run folder."""

STAGING_PREFIX = ".staging-"
"""Prefix of the staging folders of the run-folder writer (followed by the writer's PID)."""


class RunLockedError(ValueError):
    """The run folder is locked by another live run."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (``os.kill(pid, 0)``; conservative on doubt).

    Args:
        pid: A process id; values below 1 are never alive.

    Returns:
        False only when no such process exists; True when it exists, also when it belongs to
        another user.
    """
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists but is not ours; anything else: keep it
        return True
    return True


def _holder(path: Path) -> str:
    """The holder's PID and start time as read from the lock file, for messages."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        pid, started = int(info["pid"]), str(info.get("started", "?"))
    except (OSError, ValueError, KeyError, TypeError):
        return "PID unknown (its lock file holds no readable PID)"
    mine = ", this process" if pid == os.getpid() else ""
    return f"PID {pid}{mine}, started {started}"


class RunLock:
    """An exclusive, non-blocking lock on a run folder, held while the context is open.

    Args:
        folder: The run folder (created if missing).

    Raises:
        RunLockedError: On entering, if another process (or another ``RunLock`` of this process)
            holds the folder; the message names the folder and the holder's PID.

    Example:
        >>> with RunLock(run_dir):  # doctest: +SKIP
        ...     run_the_job(run_dir)
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or fail at once (see the class docstring); returns ``self``."""
        if self._fd is not None:
            raise RuntimeError(f"the run lock of {self.folder} is already held by this RunLock")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunLockedError(
                f"the run folder {self.folder} is in use by another medrobust run "
                f"({_holder(self.path)}); wait for it to finish, stop it, or choose another "
                "output folder"
            ) from None
        try:
            started = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
            info = json.dumps({"pid": os.getpid(), "started": started}) + "\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        except BaseException:
            os.close(fd)  # closing releases the lock
            raise
        self._fd = fd
        logger.debug("locked run folder %s", self.folder)
        return self

    def release(self) -> None:
        """Release the lock (the file is emptied, never removed); a no-op when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:  # e.g. a read-only or full disk: the lock is released all the same
            pass
        finally:
            os.close(fd)
        logger.debug("released run folder %s", self.folder)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock is released with its object
        if getattr(self, "_fd", None) is not None:
            self.release()


def remove_stale_staging(
    folder: str | os.PathLike[str], prefix: str = STAGING_PREFIX
) -> list[Path]:
    """Delete the ``<prefix><pid>`` folders in ``folder`` whose process no longer exists.

    Folders of live processes (this one included) are kept: their writer may still be working.
    A PID reused by an unrelated live process keeps its folder, which is harmless.

    Args:
        folder: The run folder; a missing folder holds nothing to clean.
        prefix: The staging-folder prefix, followed by the writer's PID.

    Returns:
        The folders removed.
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    for entry in sorted(root.iterdir()):
        suffix = entry.name[len(prefix) :]
        if not (entry.name.startswith(prefix) and suffix.isascii() and suffix.isdigit()):
            continue
        if entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(suffix)
        if pid == os.getpid() or pid_alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            removed.append(entry)
            logger.info("removed the staging folder %s left by dead process %d", entry, pid)
    return removed
