"""The on-disk cache of medrobust data: where it lives and how files are written atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Environment variable that overrides the cache folder.
CACHE_ENV = "MEDROBUST_CACHE"


def default_cache_dir() -> Path:
    """The cache folder: ``$MEDROBUST_CACHE`` if set, else ``~/.cache/medrobust``.

    Returns:
        The folder (not created).
    """
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "medrobust"


def atomic_save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write arrays to an uncompressed ``.npz`` atomically.

    The data go to a temporary file in the destination folder, which is then renamed over
    ``path`` with :func:`os.replace`; a reader never sees a half-written file.

    Args:
        path: Destination file (its folder is created if needed).
        arrays: Name -> array (no object arrays).

    Returns:
        The destination path.

    Raises:
        OSError: If the folder cannot be created or the file cannot be written.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            named: dict[str, Any] = dict(arrays)
            np.savez(fh, **named)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest


def atomic_write_bytes(
    path: str | os.PathLike[str],
    chunks: Iterable[bytes],
    check: Callable[[], None] | None = None,
) -> Path:
    """Write an iterable of byte chunks to ``path`` atomically (temporary file + rename).

    Args:
        path: Destination file (its folder is created if needed).
        chunks: Iterable of ``bytes``.
        check: Called after all bytes are written and before the rename; an exception it raises
            removes the temporary file and leaves ``path`` untouched.

    Returns:
        The destination path.

    Raises:
        OSError: If the file cannot be written.
        TypeError: If ``chunks`` is not an iterable of bytes.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                if not isinstance(chunk, (bytes, bytearray)):
                    raise TypeError(f"expected bytes chunks, got {type(chunk).__name__}")
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check()
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return dest
