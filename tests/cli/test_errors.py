"""The error boundary of ``medrobust``: exit 2 for usage errors and bad input, 130 for Ctrl-C,
1 for a bug (with a log holding the traceback), each with one line and no traceback; driven
through real processes, a real SIGINT and the ``MEDROBUST_FAULT_INJECT`` test hook."""

from __future__ import annotations

import errno
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medrobust.cli import _errors
from medrobust.cli._errors import error_line, expected, run_app, started

CLI = [sys.executable, "-m", "medrobust.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDROBUST_FAULT_INJECT"}
    return {**env, "COLUMNS": "200", "XDG_STATE_HOME": str(tmp_path / "state"), **extra}


def _run(args: list[str], tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=_env(tmp_path, **extra),
        cwd=tmp_path,
        timeout=300,
        check=False,
    )


def _one_line(res: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a failed run, after checking its status and cleanliness."""
    assert res.returncode == code, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr and "click" not in res.stderr.lower()
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "No such command"),
        (["train", "--epochs", "abc"], "Invalid value for '--epochs'"),
        (["explain"], "Missing argument"),
        (["demo", "--bogus"], "No such option: --bogus"),
    ],
)
def test_usage_errors_exit_2_with_the_usage(args: list[str], message: str, tmp_path: Path) -> None:
    res = _run(args, tmp_path)
    assert res.returncode == 2, res.stderr
    assert "Usage: medrobust" in res.stderr and message in res.stderr
    assert "Traceback" not in res.stderr and "click" not in res.stderr.lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "{tmp}", "--out", "run"], "is a folder, not a file"),
        (["explain", "x.pt", "--eps", "-1", "--out", "run"], "every eps must be"),
        (["list", "atacks"], "did you mean 'attacks'"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    res = _run([a.format(tmp=tmp_path) for a in args], tmp_path)
    line = _one_line(res, 2)
    assert line.startswith("error: ") and message in line


def test_read_only_output_folder_exits_2_naming_it(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        try:
            (ro / "probe").touch()
        except PermissionError:
            pass
        else:
            (ro / "probe").unlink()
            why = "as root" if os.geteuid() == 0 else "here"
            pytest.skip(f"chmod 0o555 does not stop writes {why}")
        line = _one_line(_run(["train", "--out", str(ro / "run")], tmp_path), 2)
    finally:
        ro.chmod(0o755)
    assert "permission denied" in line and str(ro) in line


def test_a_full_disk_exits_2_naming_the_folder(tmp_path: Path) -> None:
    res = _run(["train", "--out", "run"], tmp_path, MEDROBUST_FAULT_INJECT="disk-full")
    line = _one_line(res, 2)
    assert "the disk is full" in line and "run" in line


@pytest.mark.parametrize("folder_exists", [False, True])
def test_a_crash_exits_1_with_the_log_of_its_traceback(folder_exists: bool, tmp_path: Path) -> None:
    run = tmp_path / "run"
    if folder_exists:
        run.mkdir()
    res = _run(["train", "--out", str(run)], tmp_path, MEDROBUST_FAULT_INJECT="crash")
    line = _one_line(res, 1)
    assert "unexpected RuntimeError" in line and "the traceback is in" in line
    log = Path(line.rsplit("the traceback is in ", 1)[1])
    assert log.parent == (run if folder_exists else tmp_path / "state" / "medrobust")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "MEDROBUST_FAULT_INJECT" in text
    assert "medrobust train --out" in text


class _Lines:
    """The stderr lines of a running process, read by a thread (so waiting can time out)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stderr is not None
        threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True).start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 240) -> None:
        end = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            self.seen.append(self.lines.get(timeout=max(0.1, end - time.monotonic())))

    def rest(self) -> list[str]:
        time.sleep(0.2)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


def _interrupt(args: list[str], tmp_path: Path, after: str) -> tuple[int, list[str]]:
    """Start ``medrobust ARGS``, send SIGINT once stderr shows ``after``; (status, lines)."""
    proc = subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    try:
        lines = _Lines(proc)
        lines.wait_for(after)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    return code, [line.rstrip("\n") for line in lines.rest()]


@pytest.mark.slow
def test_sigint_before_anything_is_saved_exits_130_with_one_line(tmp_path: Path) -> None:
    code, lines = _interrupt(["demo", "--quick", "--out", "run"], tmp_path, "preparing data set")
    assert code == 130, lines
    said = [line for line in lines if "interrupted" in line]
    assert said == [lines[-1]], lines
    assert said[0] == (
        "interrupted before anything was saved; start again with: medrobust demo --quick --out run"
    )
    assert not any("Traceback" in line for line in lines)


@pytest.mark.slow
def test_sigint_after_training_says_what_was_kept_and_resumes(tmp_path: Path) -> None:
    code, lines = _interrupt(["demo", "--quick"], tmp_path, "trained in")
    assert code == 130, lines
    said = [line for line in lines if "interrupted" in line]
    assert said == [lines[-1]], lines
    assert "kept in runs/demo-" in said[0] and "train/last.pt" in said[0]
    command = shlex.split(said[0].split("continue with: ", 1)[1])
    assert command[0] == "medrobust" and command[-1] == "--resume"
    res = _run(command[1:], tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / command[command.index("--out") + 1] / "metrics.json").is_file()


def _app(action: Callable[[], Any]) -> Callable[..., Any]:
    def app(args: list[str], prog_name: str, standalone_mode: bool) -> None:
        action()

    return app


def _exit(app: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        run_app(app, ["demo", "--quick"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return int(exc.value.code or 0), err.strip()


def test_interrupt_line_offers_resume_only_when_its_file_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted() -> None:
        started(tmp_path / "run", saved="the checkpoint", resume="--resume", marker="last.pt")
        raise KeyboardInterrupt

    code, err = _exit(_app(interrupted), capsys)
    assert code == 130 and "before anything was saved" in err and "--resume" not in err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "partial.txt").write_text("x")
    code, err = _exit(_app(interrupted), capsys)
    assert "nothing to continue from" in err and err.endswith("--overwrite")
    (tmp_path / "run" / "last.pt").write_text("x")
    code, err = _exit(_app(interrupted), capsys)
    assert f"kept in {tmp_path / 'run'}: the checkpoint" in err and err.endswith("--resume")


def test_out_of_memory_and_bugs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom() -> None:
        raise MemoryError

    code, err = _exit(_app(oom), capsys)
    assert code == 2 and "out of memory" in err and "--batch-size" in err

    def bug() -> None:
        table: dict[str, int] = {}
        table["missing"] += 1

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    code, err = _exit(_app(bug), capsys)
    assert code == 1 and "unexpected KeyError" in err and str(tmp_path) in err
    log = Path(err.rsplit("the traceback is in ", 1)[1])
    assert 'table["missing"] += 1' in log.read_text()


def test_error_lines_name_the_path() -> None:
    assert error_line(OSError(errno.ENOSPC, "No space left", "/data/run/x.pt")) == (
        "the disk is full: could not write /data/run/x.pt; free some space or choose another "
        "output folder (--out)"
    )
    assert "/mnt/ro is on a read-only file system" in error_line(
        OSError(errno.EROFS, "Read-only file system", "/mnt/ro")
    )
    assert error_line(PermissionError(errno.EACCES, "denied"), Path("runs/a")).startswith(
        "permission denied: runs/a"
    )
    assert error_line(ValueError("--eps must be > 0,\n got -1")) == "--eps must be > 0, got -1"
    try:  # a writer that wraps the OSError (torch.save) still names the full disk
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/run/last.pt")
        except OSError as exc:
            raise RuntimeError("file write failed") from exc
    except RuntimeError as wrapped:
        assert expected(wrapped)
        assert error_line(wrapped).startswith("the disk is full: could not write /data/run/last.pt")
    assert "[bold]" in error_line(ValueError("a [bold] name"))  # markup is printed as is


def test_raised_type_errors_are_bad_input_but_accidental_ones_are_bugs() -> None:
    def raised() -> None:
        raise TypeError("model 'x' got unexpected parameter(s) 'widht'")

    def accidental() -> None:
        _ = None + 1  # type: ignore[operator]

    for fn, want in ((raised, True), (accidental, False)):
        try:
            fn()
        except TypeError as exc:
            assert expected(exc) is want
    assert _errors.EXIT_INTERRUPTED == 130
