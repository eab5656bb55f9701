"""Fault injection: a full disk. A run whose output folder lies on a tiny tmpfs must end with
exit 2 and one line naming the folder, and never leave a complete-looking run behind.

Needs root and permission to mount (CI runs as root); elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    """Mount a tmpfs with ``options`` at ``where`` for the test, or skip with the reason."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _tmpfs(tmp_path / "tiny", "size=64k")


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _tmpfs(tmp_path / "ro", "size=1m,ro")


def test_a_full_disk_is_one_line_and_exit_2(tiny_disk: Path) -> None:
    out = tiny_disk / "run"
    done = subprocess.run(
        [sys.executable, "-m", "medrobust.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
        timeout=600,
    )
    assert done.returncode == 2, done.stderr
    err = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(tiny_disk) in err[0], done.stderr
    assert "no space" in err[0].lower() or "full" in err[0].lower(), err[0]
    assert "Traceback" not in done.stderr
    assert not (out / "metrics.json").exists()


def test_a_read_only_folder_is_refused_before_any_work(read_only_disk: Path) -> None:
    """Root ignores chmod, but not a read-only file system: the real case, tested as root."""
    out = read_only_disk / "run"
    done = subprocess.run(
        [sys.executable, "-m", "medrobust.cli", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    err = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and str(read_only_disk) in err[0], done.stderr
    assert "read-only" in err[0].lower(), err[0]
    assert "training" not in done.stdout.lower()  # refused before training started
