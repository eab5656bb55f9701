"""Fixtures of the data tests: an isolated cache folder and shared phantom arrays."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrobust.data import PhantomArrays, generate_bus_phantom


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default cache at a temporary folder so no test writes to the real cache."""
    cache = tmp_path / "medrobust-cache"
    monkeypatch.setenv("MEDROBUST_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def phantom_200() -> PhantomArrays:
    """200 phantom images at 128 x 128 (balanced classes), shared by the statistical tests."""
    return generate_bus_phantom(200, size=128, seed=11)
