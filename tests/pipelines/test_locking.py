"""One run per folder: every job holds its run folder's lock for its whole life."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrobust._utils.lock import RunLockedError
from medrobust.pipelines.locking import holds_run_lock, run_folder_lock

_HOLDER = """
import sys, time
from medrobust.pipelines.locking import run_folder_lock
with run_folder_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def _hold(folder: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_job_into_a_busy_folder_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    from medrobust.pipelines.audit import run_audit
    from medrobust.pipelines.config import RunConfig

    out = tmp_path / "run"
    holder = _hold(out)
    try:
        t0 = time.perf_counter()
        with pytest.raises(RunLockedError, match=str(holder.pid)):
            run_audit(RunConfig(), out)
        assert time.perf_counter() - t0 < 10  # refused before any training
        assert not (out / "train").exists()
    finally:
        holder.kill()
        holder.wait()
    with run_folder_lock(out):  # the dead holder's lock is taken over
        pass


def test_nested_jobs_on_one_folder_hold_the_lock_once(tmp_path: Path) -> None:
    calls = []

    @holds_run_lock("out")
    def inner(out: Path) -> None:
        calls.append("inner")

    @holds_run_lock("out")
    def outer(out: Path) -> None:
        inner(out)
        calls.append("outer")

    outer(tmp_path / "run")
    assert calls == ["inner", "outer"]


def test_a_file_is_not_a_run_folder(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"), run_folder_lock(f):
        pass


def _old_run(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"old": true}')
    (folder / "report.html").write_text("old")
    (folder / "train").mkdir()
    (folder / "train" / "best.pt").write_text("weights")


def test_overwrite_moves_the_old_results_aside_and_drops_them_on_success(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _old_run(out)
    seen = {}

    @holds_run_lock("out")
    def job(out: Path, overwrite: bool = False) -> None:
        seen["complete"] = (out / "metrics.json").exists()
        seen["train"] = (out / "train" / "best.pt").exists()  # inputs stay in place
        (out / "metrics.json").write_text('{"new": true}')

    job(out, overwrite=True)
    assert seen == {"complete": False, "train": True}
    assert (out / "metrics.json").read_text() == '{"new": true}'
    assert not (out / "report.html").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".replaced-")]


def test_a_failed_overwrite_puts_the_old_run_back(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _old_run(out)

    @holds_run_lock("out")
    def job(out: Path, overwrite: bool = False) -> None:
        (out / "metrics.json").write_text("half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        job(out, overwrite=True)
    assert (out / "metrics.json").read_text() == '{"old": true}'
    assert (out / "report.html").read_text() == "old"


_KILLED = """
import os, signal, sys
from pathlib import Path
from medrobust.pipelines.locking import holds_run_lock

@holds_run_lock("out")
def job(out, overwrite=False):
    (Path(out) / "train").mkdir(exist_ok=True)
    os.kill(os.getpid(), signal.SIGKILL)

job(sys.argv[1], overwrite=True)
"""


def test_a_killed_overwrite_never_leaves_a_complete_looking_mix(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _old_run(out)
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(out)], check=False)
    assert proc.returncode < 0  # killed
    assert not (out / "metrics.json").exists() and not (out / "report.html").exists()
    aside = [p for p in out.iterdir() if p.name.startswith(".replaced-")]
    assert len(aside) == 1 and (aside[0] / "metrics.json").exists()

    @holds_run_lock("out")
    def job(out: Path, overwrite: bool = False) -> None:
        (out / "metrics.json").write_text("{}")

    job(out, overwrite=True)  # the next overwrite drops the dead run's leftovers
    assert not [p for p in out.iterdir() if p.name.startswith(".replaced-")]
