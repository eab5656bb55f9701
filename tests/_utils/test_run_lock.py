"""Tests of the run-folder lock and of stale staging cleanup, with real processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medrobust._utils.lock import LOCK_NAME, RunLock, RunLockedError, remove_stale_staging

HOLD = """
import os, sys, time
from medrobust._utils.lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", os.getpid(), flush=True)
time.sleep(120)
"""

TRY = """
import sys
from medrobust._utils.lock import RunLock, RunLockedError
try:
    with RunLock(sys.argv[1]):
        print("acquired")
except RunLockedError as exc:
    print("refused:", exc)
"""


def _holder(folder: Path) -> subprocess.Popen[str]:
    """Start a process that takes the lock of ``folder`` and sleeps; return once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.split() == ["locked", str(proc.pid)], line
    return proc


def _try_lock(folder: Path) -> str:
    """Try the lock from a fresh process; return what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", TRY, str(folder)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def kill_later() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_second_process_is_refused_with_the_holders_pid(
    tmp_path: Path, kill_later: list[subprocess.Popen[str]]
) -> None:
    folder = tmp_path / "run"
    holder = _holder(folder)
    kill_later.append(holder)
    out = _try_lock(folder)
    assert out.startswith("refused:") and f"PID {holder.pid}," in out and str(folder) in out
    with pytest.raises(
        RunLockedError, match=rf"{re.escape(str(folder))} is in use .*PID {holder.pid}"
    ):
        RunLock(folder).acquire()
    info = json.loads((folder / LOCK_NAME).read_text())
    assert info["pid"] == holder.pid and info["started"].startswith("20")
    assert holder.poll() is None  # the refusal did not disturb the holder


def test_lock_of_a_killed_process_is_taken_over(
    tmp_path: Path, kill_later: list[subprocess.Popen[str]]
) -> None:
    folder = tmp_path / "run"
    first = _holder(folder)
    kill_later.append(first)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    # The kernel released the flock; the stale PID in the file does not block anyone.
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == first.pid
    second = _holder(folder)
    kill_later.append(second)
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == second.pid
    assert f"PID {second.pid}," in _try_lock(folder)
    second.terminate()
    second.wait(timeout=30)
    assert _try_lock(folder) == "acquired"


def test_lock_in_one_process(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "run"
    with RunLock(folder) as lock:
        assert lock.held and folder.is_dir()
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=rf"PID {os.getpid()}, this process"):
            RunLock(folder).acquire()
        with pytest.raises(RuntimeError, match="already held by this RunLock"):
            lock.acquire()
    assert not lock.held
    assert (folder / LOCK_NAME).read_text() == ""  # emptied, never removed
    lock.release()  # releasing twice is a no-op
    with RunLock(folder):  # free again
        pass
    assert issubclass(RunLockedError, ValueError)


def test_unreadable_holder_is_still_refused(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        (tmp_path / LOCK_NAME).write_text("garbage")
        with pytest.raises(RunLockedError, match="PID unknown"):
            RunLock(tmp_path).acquire()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    return proc.pid


def test_remove_stale_staging_keeps_live_writers(tmp_path: Path) -> None:
    dead, live = _dead_pid(), os.getppid()
    for name in (f".staging-{dead}", f".staging-{live}", f".staging-{os.getpid()}", ".staging-x"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.html").write_text("partial")
    (tmp_path / ".staging-1234567").write_text("a file, not a staging folder")
    assert remove_stale_staging(tmp_path) == [tmp_path / f".staging-{dead}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".staging-{live}", f".staging-{os.getpid()}", ".staging-x", ".staging-1234567"]
    )
    assert remove_stale_staging(tmp_path / "missing") == []
