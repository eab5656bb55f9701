"""Tests of the cached catalogue behind ``medrobust list``: its key and its cache file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from medrobust.pipelines import catalogue
from medrobust.pipelines.catalogue import KINDS, cache_path, catalogue_key, load_catalogue


def _package(root: Path) -> Path:
    (root / "attacks").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "attacks" / "pgd.py").write_text("x = 1\n")
    (root / "README.txt").write_text("not python")
    return root


def test_key_follows_every_python_file(tmp_path: Path) -> None:
    root = _package(tmp_path / "pkg")
    key = catalogue_key(root)
    assert catalogue_key(root) == key
    (root / "README.txt").write_text("other text, same key")
    assert catalogue_key(root) == key
    pgd = root / "attacks" / "pgd.py"
    st = pgd.stat()
    os.utime(pgd, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = catalogue_key(root)
    assert touched != key
    (root / "attacks" / "square.py").write_text("y = 2\n")  # a new attack file
    added = catalogue_key(root)
    assert added not in (key, touched)
    (root / "attacks" / "square.py").unlink()
    assert catalogue_key(root) == touched


def test_key_of_the_installed_package_is_stable() -> None:
    assert catalogue_key() == catalogue_key()
    assert len(catalogue_key()) == 20


def test_cache_path_uses_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_path("abc") == tmp_path / "medrobust" / "catalogue-abc.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_path("abc") == tmp_path / "home" / ".cache" / "medrobust" / "catalogue-abc.json"


def test_load_builds_once_then_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls: list[int] = []

    def fake_build() -> dict[str, list[dict[str, Any]]]:
        calls.append(1)
        return {k: [{"name": f"{k}-{len(calls)}", "summary": "s", "tags": []}] for k in KINDS}

    monkeypatch.setattr(catalogue, "build_catalogue", fake_build)
    first = load_catalogue()
    assert first["attacks"][0]["name"] == "attacks-1" and len(calls) == 1
    assert load_catalogue() == first and len(calls) == 1
    path = cache_path(catalogue_key())
    assert path.is_file()
    path.write_text('{"key": "other", "kinds": {}}')  # a cache of another key is not trusted
    assert load_catalogue()["attacks"][0]["name"] == "attacks-2"
    path.write_bytes(b"\xff\xfe not utf-8")
    assert load_catalogue()["attacks"][0]["name"] == "attacks-3"
    assert load_catalogue(refresh=True)["attacks"][0]["name"] == "attacks-4"
    assert len(calls) == 4


def test_an_unwritable_cache_still_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    monkeypatch.setattr(catalogue, "build_catalogue", lambda: {k: [] for k in KINDS})
    assert load_catalogue() == {k: [] for k in KINDS}
