"""Tests of the cache helpers: default folder and atomic writes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import medrobust.data.cache as cache_module
from medrobust.data import BusPhantom, default_cache_dir
from medrobust.data.cache import atomic_save_npz, atomic_write_bytes


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDROBUST_CACHE", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("MEDROBUST_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "medrobust"


def test_atomic_save_npz_round_trip_and_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = atomic_save_npz(tmp_path / "sub" / "a.npz", {"x": np.arange(3)})
    with np.load(dest) as data:
        np.testing.assert_array_equal(data["x"], np.arange(3))

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_npz(dest, {"x": np.arange(5)})
    monkeypatch.undo()
    with np.load(dest) as data:  # the old file is untouched
        np.testing.assert_array_equal(data["x"], np.arange(3))
    assert [p.name for p in dest.parent.iterdir()] == ["a.npz"]


def test_atomic_write_bytes_check_can_veto(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"

    def veto() -> None:
        raise ValueError("bad checksum")

    with pytest.raises(ValueError, match="bad checksum"):
        atomic_write_bytes(dest, [b"abc"], check=veto)
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    atomic_write_bytes(dest, [b"ab", b"c"])
    assert dest.read_bytes() == b"abc"
    with pytest.raises(TypeError, match="expected bytes chunks, got str"):
        atomic_write_bytes(dest, ["text"])  # type: ignore[list-item]
    assert dest.read_bytes() == b"abc"


def test_unwritable_cache_only_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="medrobust.data.bus_phantom"):
        ds = BusPhantom("test", n=2, size=32, cache_dir=blocker)
    assert len(ds) == 2
    assert any("could not write the bus-phantom cache" in r.getMessage() for r in caplog.records)
