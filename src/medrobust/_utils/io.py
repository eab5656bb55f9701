"""Atomic file writing and JSON conversion: the one writer family every layer uses.

Every writer is atomic: it writes a temporary file in the destination folder, flushes and
fsyncs it, and moves it into place with :func:`os.replace`, so a crash never leaves a
half-written file behind (a reader sees the old file or the new one, never a mix).

JSON conversion (:func:`to_jsonable`): numpy and torch scalars become python numbers, arrays and
tensors become (nested) lists, tuples become lists, paths and enums become strings, dataclasses
become dicts, and every NaN or infinite float becomes ``null`` (JSON has no NaN; the file is
written with ``allow_nan=False`` so that no non-standard token can slip through). A reader of
``metrics.json`` must therefore treat ``null`` as "undefined" (e.g. the AUC of a one-class set).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "atomic_torch_save",
    "read_json",
    "to_jsonable",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]


@contextmanager
def _atomic_target(path: str | os.PathLike[str], mode: str) -> Iterator[IO[Any]]:
    """Yield a temporary file beside ``path``; on success move it to ``path``."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write {target}: it is a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; keep the mode of a replaced file, else use rw-r--r--.
        file_mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        os.chmod(tmp, file_mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating parent folders.

    Args:
        path: Destination file.
        text: Content.

    Returns:
        The destination as a :class:`~pathlib.Path`.

    Raises:
        TypeError: If ``text`` is not a string.
        IsADirectoryError: If ``path`` is a directory.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    with _atomic_target(path, "w") as handle:
        handle.write(text)
    return Path(path)


def _float_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def to_jsonable(obj: Any, _where: str = "$") -> Any:
    """Convert ``obj`` into plain JSON types (see the module docstring for the rules).

    Args:
        obj: Nested dicts, lists, tuples, numbers, strings, numpy/torch values, paths, enums,
            dates and dataclasses.

    Returns:
        An equivalent structure of dict/list/str/int/float/bool/None with no NaN or infinity.

    Raises:
        TypeError: For a value that has no JSON form or a dict key that is not a string or
            number; the message names where it was found (e.g. ``$['results'][2]['eps']``).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, _where)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float_or_none(float(obj))
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return _float_or_none(float(obj))
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), _where)
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch.Tensor, without importing torch
        return to_jsonable(obj.detach().cpu().tolist(), _where)
    if isinstance(obj, (os.PathLike, Path)):
        return os.fspath(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name), f"{_where}.{f.name}")
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if isinstance(key, enum.Enum):
                key = key.value
            if isinstance(key, (bool, np.bool_)) or not isinstance(
                key, (str, int, float, np.integer, np.floating)
            ):
                raise TypeError(
                    f"{_where}: dict keys must be strings or numbers, got {type(key).__name__} "
                    f"{key!r}"
                )
            skey = key if isinstance(key, str) else str(key.item() if hasattr(key, "item") else key)
            out[skey] = to_jsonable(value, f"{_where}[{skey!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj)]
    describe = getattr(obj, "describe", None)
    if callable(describe):  # components (detectors, attacks) describe themselves
        return to_jsonable(describe(), _where)
    raise TypeError(f"{_where}: cannot convert a {type(obj).__name__} to JSON ({obj!r:.80})")


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON to ``path`` atomically (NaN/inf become ``null``).

    Args:
        path: Destination file; parent folders are created.
        obj: Anything :func:`to_jsonable` accepts.
        indent: Indentation of the output.

    Returns:
        The destination as a :class:`~pathlib.Path`.

    Raises:
        TypeError: If part of ``obj`` cannot be converted (the message says where).
        IsADirectoryError: If ``path`` is a directory.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)
    return write_text_atomic(path, text + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file.

    Args:
        path: The file.

    Returns:
        The decoded content.

    Raises:
        FileNotFoundError: If the file does not exist.
        IsADirectoryError: If ``path`` is a directory.
        ValueError: If the file is not valid UTF-8 JSON; the message gives file, line and column.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"JSON file not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"expected a JSON file but {p} is a directory")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{p} is not UTF-8 text: {err}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{p} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from err


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders.

    Raises:
        TypeError: If ``data`` is not bytes.
        IsADirectoryError: If ``path`` is a directory.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    with _atomic_target(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_with_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a temporary binary file beside ``path``, then move it into
    place (for writers that take a file handle, such as ``torch.save`` or ``numpy.savez``)."""
    with _atomic_target(path, "wb") as handle:
        write(handle)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it into place.

    Args:
        obj: What to save.
        path: Destination file; missing parent folders are created.

    Returns:
        The destination path.
    """
    import torch  # torch is heavy; only writers of checkpoints pay for it

    return write_with_atomic(path, lambda fh: torch.save(obj, fh))
