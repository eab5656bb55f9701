"""The run-folder writer removes staging folders left by dead writers and keeps live ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medrobust.reporting.run_folder import METRICS, commit_run_folder


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The PID of a process that stays alive during the test (another writer, say)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait(timeout=30)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def test_commit_removes_dead_staging_and_keeps_live(tmp_path: Path, live_pid: int) -> None:
    dead = _dead_pid()
    for pid in (dead, live_pid, os.getpid()):
        staging = tmp_path / f".staging-{pid}"
        (staging / "adversarial").mkdir(parents=True)
        (staging / "report.html").write_text("half-written")
        (staging / "adversarial" / "x.npz").write_bytes(b"partial")
    commit_run_folder(
        tmp_path,
        metrics={"ok": True},
        report_html="<html></html>",
        config={"seed": 0},
        files={"extra/a.txt": b"a"},
    )
    assert not (tmp_path / f".staging-{dead}").exists()
    assert not (tmp_path / f".staging-{os.getpid()}").exists()  # its own, used and removed
    live = tmp_path / f".staging-{live_pid}"
    assert (live / "report.html").read_text() == "half-written"  # a live writer's, untouched
    assert json.loads((tmp_path / METRICS).read_text()) == {"ok": True}
    assert (tmp_path / "report.html").read_text() == "<html></html>"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".staging-{live_pid}", "config.yaml", "extra", METRICS, "report.html"]
    )
