"""The error boundary of the ``medrobust`` command: one exit status and one line per outcome.

======  ==============================================================================
status  meaning
======  ==============================================================================
0       success
1       an unexpected failure (a bug): one line naming a log file with the traceback
2       a usage error (typer's usage message) or bad input or environment (a missing or
        unreadable file, a read-only or full disk, out of memory): one line
130     interrupted (Ctrl-C): one line saying what was kept and how to continue
======  ==============================================================================

The application runs in typer's standalone mode, so typer prints its own usage errors (exit 2)
whatever its version (click-based or with click vendored); this module never imports click.
A command announces its run folder with :func:`started` (what it keeps when interrupted, how to
continue); the boundary uses it for the interrupt line and for the crash log.

Test hook: the environment variable ``MEDROBUST_FAULT_INJECT`` is read only by :func:`started`
(``crash`` raises a ``RuntimeError``, ``disk-full`` an ``OSError`` ENOSPC on the run folder), so
the tests can drive both paths through a real process.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CRASH",
    "EXIT_INTERRUPTED",
    "CliError",
    "error_line",
    "expected",
    "join_processes",
    "run_app",
    "secondary_rank",
    "started",
    "write_crash_log",
]

EXIT_CRASH = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

#: Errors of the input or the environment, shown as one line with :data:`EXIT_BAD_INPUT`
#: (the project's own errors, ``CheckpointError``, ``UnknownNameError``, ``NotFittedError``,
#: derive from ``ValueError``; unknown keyword arguments of a registry raise ``TypeError``).
KNOWN_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    KeyError,
    OSError,
    MemoryError,
    FloatingPointError,
)

_ERRNO_TEXT = {
    errno.ENOSPC: "the disk is full: could not write {path}; free some space or choose another "
    "output folder (--out)",
    errno.EROFS: "{path} is on a read-only file system; choose another output folder (--out)",
    errno.EACCES: "permission denied: {path}; check its permissions or choose another folder",
    errno.EPERM: "permission denied: {path}; check its permissions or choose another folder",
}

_console = Console(stderr=True)


class CliError(Exception):
    """An error to show as one line and exit with :data:`EXIT_BAD_INPUT`."""


@dataclass
class _Run:
    """What the running command announced (see :func:`started`)."""

    argv: list[str] = field(default_factory=list)
    folder: Path | None = None
    saved: str = ""
    resume: str | None = None
    marker: str = ""


_RUN = _Run()


def started(folder: Path, *, saved: str = "", resume: str | None = None, marker: str = "") -> Path:
    """Announce the run folder of the running command, and check it can be written.

    Args:
        folder: The run folder.
        saved: What the command keeps in ``folder`` to continue from after an interrupt.
        resume: How to continue: a flag to add to the same command (``"--resume"``), ``""`` when
            the same command continues by itself, or None when the command starts over.
        marker: A glob (relative to ``folder``) of the file that must exist for ``resume`` to
            work, e.g. ``"train/last.pt"``; until it exists, the command starts over.

    Returns:
        ``folder``.

    Raises:
        PermissionError: If ``folder`` (or the nearest folder above it that exists) cannot be
            written.
        OSError: EROFS if it is on a read-only file system; ENOSPC with
            ``MEDROBUST_FAULT_INJECT=disk-full`` (test hook).
        RuntimeError: With ``MEDROBUST_FAULT_INJECT=crash`` (test hook).
    """
    _RUN.folder, _RUN.saved, _RUN.resume, _RUN.marker = Path(folder), saved, resume, marker
    _check_writable(Path(folder))
    fault = os.environ.get("MEDROBUST_FAULT_INJECT", "")
    if fault == "crash":
        raise RuntimeError("fault injected by MEDROBUST_FAULT_INJECT=crash")
    if fault == "disk-full":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    return Path(folder)


def _check_writable(folder: Path) -> None:
    """Raise the ``OSError`` a write into ``folder`` would raise, before any work is done.

    Raises:
        OSError: EROFS on a read-only file system, EACCES if the nearest existing folder at or
            above ``folder`` cannot be written.
    """
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if hasattr(os, "statvfs") and os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(existing))
    if not os.access(existing, os.W_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))


def run_app(app: Callable[..., Any], argv: list[str] | None) -> NoReturn:
    """Run the typer application and exit with the status of its outcome (module docstring).

    Args:
        app: The typer application.
        argv: The arguments (None: ``sys.argv[1:]``).

    Raises:
        SystemExit: Always, with the exit status.
    """
    global _RUN
    _RUN = _Run(argv=list(sys.argv[1:] if argv is None else argv))
    try:
        join_processes(_RUN.argv)
        app(args=_RUN.argv, prog_name="medrobust", standalone_mode=True)
    except SystemExit as exc:
        if exc.code == EXIT_INTERRUPTED or _interrupted(exc):
            _fail(EXIT_INTERRUPTED, interrupt_line())
        raise
    except KeyboardInterrupt:
        _fail(EXIT_INTERRUPTED, interrupt_line())
    except Exception as exc:
        if not expected(exc):
            _crash(exc)
        _fail(EXIT_BAD_INPUT, error_line(exc, _RUN.folder))
    sys.exit(0)


def secondary_rank() -> bool:
    """This process is rank 1 or higher of a ``torchrun`` launch (it prints no progress or
    results: rank 0 does); read from the environment, so it holds before any torch import."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ["RANK"]) > 0
    except (KeyError, ValueError):
        return False


def join_processes(argv: list[str]) -> None:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the process group before the command runs
    (``nccl`` with ``--device cuda``, else ``gloo``; see :mod:`medrobust._utils.dist`)."""
    if os.environ.get("WORLD_SIZE", "1") in ("", "1"):
        return
    from medrobust._utils.dist import init_from_env

    device = None
    for i, arg in enumerate(argv):
        if arg == "--device" and i + 1 < len(argv):
            device = argv[i + 1]
        elif arg.startswith("--device="):
            device = arg.split("=", 1)[1]
    init_from_env(device)
    import atexit

    import torch.distributed as dist

    atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)


def expected(exc: BaseException) -> bool:
    """Whether ``exc`` is bad input or a failing environment (exit 2) rather than a bug (exit 1).

    Expected are :class:`CliError`, :data:`KNOWN_ERRORS` (a ``TypeError`` or ``KeyError`` only
    when a ``raise`` statement made it) and memory exhaustion.
    """
    if isinstance(exc, CliError) or _is_out_of_memory(exc) or _disk_error(exc) is not None:
        return True
    return isinstance(exc, KNOWN_ERRORS) and not _is_bug_like(exc)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and all(cur is not seen for seen in out):
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _interrupted(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in the chain of ``exc``."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(exc))


def _disk_error(exc: BaseException) -> OSError | None:
    """The full-disk, read-only or permission ``OSError`` behind ``exc`` (a writer such as
    ``torch.save`` may wrap it in a ``RuntimeError``), or None."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in _ERRNO_TEXT:
            return e
    if isinstance(exc, RuntimeError) and os.strerror(errno.ENOSPC) in str(exc):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def _is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` reports exhausted memory (``MemoryError``, torch's ``OutOfMemoryError``,
    or a CPU allocator failure), recognised without importing torch."""
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text
    )


def _is_bug_like(exc: BaseException) -> bool:
    """Whether a known error type still looks like a bug: a ``TypeError`` or ``KeyError`` raised
    by an operation (``None + 1``, ``d["missing"]``) rather than by a ``raise`` statement that
    names what was expected."""
    if not isinstance(exc, TypeError | KeyError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return not frames or not (frames[-1].line or "").lstrip().startswith("raise")


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(str(text).split())


def error_line(exc: BaseException, folder: Path | None = None) -> str:
    """The one line shown for an expected error: what was expected and what came.

    ``PermissionError``, a full disk (ENOSPC) and a read-only file system (EROFS) become a
    sentence naming the path; memory exhaustion suggests a smaller batch.

    Args:
        exc: The error.
        folder: The run folder, named when the error carries no path.

    Returns:
        The line, without markup.
    """
    if _is_out_of_memory(exc):
        detail = one_line(str(exc)) or type(exc).__name__
        return f"out of memory ({detail}); try a smaller --batch-size or fewer samples"
    disk = _disk_error(exc)
    if disk is not None and disk.errno is not None:
        return _ERRNO_TEXT[disk.errno].format(path=disk.filename or folder or "the output folder")
    if isinstance(exc, OSError) and exc.errno is not None:
        path = exc.filename or folder or "the output folder"
        if exc.strerror:
            return one_line(f"{exc.strerror}: {path}")
    if isinstance(exc, KeyError) and exc.args:
        return one_line(str(exc.args[0]))
    return one_line(str(exc)) or type(exc).__name__


def interrupt_line() -> str:
    """The one line shown after Ctrl-C: what the command kept and how to continue.

    It offers to continue only when the file the command resumes from exists; otherwise it
    says that nothing was saved and how to start over (``--overwrite`` when the run folder
    already holds files, hidden ones such as the run lock aside).
    """
    run = _RUN
    if run.folder is None:
        return "interrupted; nothing was saved"
    folder, argv = run.folder, list(run.argv)
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(folder)]
    resumable = run.resume is not None and (not run.marker or any(folder.glob(run.marker)))
    if resumable and run.resume is not None:
        if run.resume and run.resume not in argv:
            argv.append(run.resume)
        kept = f"kept in {folder}: {run.saved}" if run.saved else f"the run is in {folder}"
        return f"interrupted; {kept}; continue with: {_command(argv)}"
    argv = [a for a in argv if a != "--resume"]
    if not _holds_files(folder):
        return f"interrupted before anything was saved; start again with: {_command(argv)}"
    if "--overwrite" not in argv:
        argv.append("--overwrite")
    return (
        f"interrupted; nothing to continue from was saved in {folder}; "
        f"start over with: {_command(argv)}"
    )


def _holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds a file outside hidden entries (a lock, a staging folder)."""
    if not folder.is_dir():
        return False
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if path.is_file() and not hidden:
            return True
    return False


def _command(argv: list[str]) -> str:
    """The shell command line ``medrobust ARGV``."""
    return shlex.join(["medrobust", *argv])


def write_crash_log(exc: BaseException, folder: Path | None) -> Path | None:
    """Write the traceback of ``exc`` atomically to a log file and return its path.

    The log goes into the run folder when it exists, else into ``$XDG_STATE_HOME/medrobust``
    (``~/.local/state/medrobust``), else into the temporary folder.

    Args:
        exc: The exception.
        folder: The run folder (None: not known).

    Returns:
        The path of the log, or None if no folder could be written.
    """
    from medrobust._utils.io import write_text_atomic
    from medrobust._version import __version__

    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"medrobust-crash-{stamp}-{os.getpid()}.log"
    text = (
        f"medrobust {__version__} crashed at {datetime.now().isoformat(timespec='seconds')}\n"
        f"command: {_command(_RUN.argv)}\n"
        f"python {sys.version.split()[0]} on {sys.platform}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    places = [folder] if folder is not None and folder.is_dir() else []
    places += [Path(state) / "medrobust", Path(tempfile.gettempdir())]
    for place in places:
        try:
            return write_text_atomic(place / name, text)
        except OSError:
            continue
    return None


def _crash(exc: BaseException) -> NoReturn:
    """Report an unexpected exception: one line with the log path, exit :data:`EXIT_CRASH`."""
    log = write_crash_log(exc, _RUN.folder)
    where = f"the traceback is in {log}" if log else "no log could be written"
    detail = one_line(str(exc))
    _fail(
        EXIT_CRASH,
        f"unexpected {type(exc).__name__}{': ' + detail if detail else ''} (a bug); {where}",
    )


def _fail(code: int, line: str) -> NoReturn:
    """Print ``line`` as one line on stderr and exit with ``code``."""
    if code == EXIT_INTERRUPTED:
        text = f"[yellow]interrupted[/yellow]{escape(line.removeprefix('interrupted'))}"
    else:
        text = f"[red]error:[/red] {escape(line)}"
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        text = f"rank {os.environ.get('RANK', '?')}: {text}"
    _console.print(text, soft_wrap=True, highlight=False)
    sys.exit(code)
