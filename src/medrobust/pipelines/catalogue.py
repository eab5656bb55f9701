"""The catalogue ``medrobust list`` prints: every registered component, cached on disk.

The registries are filled by the modules that define the components, and those import torch; a
listing built from them costs seconds. The catalogue is therefore built once per installed
version of the package and kept as JSON in the user cache folder
(``$XDG_CACHE_HOME/medrobust`` or ``~/.cache/medrobust``), named by a key that hashes the
relative path, size and modification time of every ``.py`` file of the package and its version.
Any edit to the package (a new attack file, a changed summary) changes the key, so the next
listing rebuilds the catalogue; a missing or unreadable cache is rebuilt the same way.

This module imports no torch; only :func:`build_catalogue` (on a cache miss) does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "KINDS",
    "build_catalogue",
    "cache_path",
    "catalogue_key",
    "load_catalogue",
]

#: What ``medrobust list`` can show, in its order.
KINDS: tuple[str, ...] = (
    "attacks",
    "models",
    "datasets",
    "objectives",
    "suites",
    "checks",
    "defenses",
    "detectors",
    "corruptions",
)

_FORMAT = 1  # bump when the layout of the cached file changes


def _package_root() -> Path:
    """The folder of the installed ``medrobust`` package (this file is in its ``pipelines``)."""
    return Path(__file__).resolve().parents[1]


def catalogue_key(root: Path | None = None) -> str:
    """The cache key of the installed package: a hash of its ``.py`` files and version.

    Args:
        root: The package folder (default: the installed ``medrobust``).

    Returns:
        A hexadecimal digest that changes whenever a ``.py`` file is added, removed, resized or
        touched, or the version changes.
    """
    from medrobust._version import __version__

    base = root or _package_root()
    files: list[tuple[str, int, int]] = []
    for folder, dirs, names in os.walk(base):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                st = os.stat(path)
                rel = Path(path).relative_to(base).as_posix()
                files.append((rel, st.st_size, st.st_mtime_ns))
    digest = hashlib.sha256(f"medrobust {__version__} format {_FORMAT}\n".encode())
    for rel, size, mtime in sorted(files):
        digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:20]


def cache_path(key: str) -> Path:
    """The cache file of a catalogue key (``$XDG_CACHE_HOME`` or ``~/.cache``, then
    ``medrobust/catalogue-<key>.json``).

    Args:
        key: A key from :func:`catalogue_key`.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medrobust" / f"catalogue-{key}.json"


def _entries(registry: Any) -> list[dict[str, Any]]:
    """The ``{"name", "summary", "tags"}`` entries of a registry, in its order."""
    return [
        {"name": e.name, "summary": e.summary, "tags": list(e.tags)} for e in registry.entries()
    ]


def build_catalogue() -> dict[str, list[dict[str, Any]]]:
    """Import the registries and list every component (this imports torch).

    Returns:
        For each of :data:`KINDS`, a list of ``{"name", "summary", "tags"}`` entries in the
        order ``medrobust list`` prints them.
    """
    from medrobust.attacks import ATTACKS, OBJECTIVES
    from medrobust.data import DATASETS
    from medrobust.defenses import RECIPES
    from medrobust.detectors import DETECTORS
    from medrobust.evaluation.checks import CHECKS
    from medrobust.evaluation.suites import _SUITES
    from medrobust.models import MODELS

    suites = [
        {
            "name": name,
            "summary": "linf: "
            + ", ".join(a["name"] for a in s["linf"])
            + " | l2: "
            + ", ".join(a["name"] for a in s["l2"]),
            "tags": [],
        }
        for name, s in sorted(_SUITES.items())
    ]
    checks = [
        {"name": code, "summary": f"{title}: {text}", "tags": []}
        for code, (title, text) in CHECKS.items()
    ]
    return {
        "attacks": _entries(ATTACKS),
        "models": _entries(MODELS),
        "datasets": _entries(DATASETS),
        "objectives": _entries(OBJECTIVES),
        "suites": suites,
        "checks": checks,
        "defenses": _entries(RECIPES),
        "detectors": _entries(DETECTORS),
        "corruptions": _corruption_entries(),
    }


def _corruption_entries() -> list[dict[str, Any]]:
    """The natural corruptions, with the modalities they apply to in the summary."""
    from medrobust.evaluation.corruptions import CORRUPTIONS

    out = []
    for entry in _entries(CORRUPTIONS):
        c = CORRUPTIONS.create(entry["name"])
        where = ", ".join(c.modalities)
        out.append({**entry, "summary": f"{c.description} (for {where}; {c.source})"})
    return out


def _read_cached(path: Path, key: str) -> dict[str, list[dict[str, Any]]] | None:
    """The cached catalogue at ``path``, or None if missing, unreadable or not for ``key``.

    Read with the standard library: :func:`medrobust._utils.io.read_json` would import numpy
    (a quarter of a second) on the path that exists to be fast.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    kinds = data.get("kinds")
    if not isinstance(kinds, dict) or set(kinds) != set(KINDS):
        return None
    for entries in kinds.values():
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries
        ):
            return None
    return kinds


def load_catalogue(*, refresh: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The catalogue of the installed package: from the cache, else built and cached.

    Args:
        refresh: Rebuild it even if the cache holds it.

    Returns:
        As :func:`build_catalogue`.
    """
    key = catalogue_key()
    path = cache_path(key)
    cached = None if refresh else _read_cached(path, key)
    if cached is not None:
        return cached
    kinds = build_catalogue()
    from medrobust._utils.io import write_json_atomic
    from medrobust._version import __version__

    with contextlib.suppress(OSError):  # a read-only cache only costs the next listing its speed
        write_json_atomic(path, {"key": key, "version": __version__, "kinds": kinds})
    return kinds
