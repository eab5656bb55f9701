"""Fault injection: ``medrobust compare`` killed while training its second model, run again,
writes the comparison an uninterrupted run writes (wall-clock fields aside)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.evaluation.interrupt import numbers

pytestmark = pytest.mark.slow

SECOND = "small-cnn-width-6-seed-0"


def _command(out: Path) -> list[str]:
    return [
        sys.executable, "-m", "medrobust.cli", "compare",
        "--model", "small-cnn:width=4", "--model", "small-cnn:width=6",
        "--data-param", "size=32", "--n-train", "160", "--n-val", "16", "--n-test", "24",
        "--epochs", "4", "--attacks", "fgsm,pgd", "--eps", "2/255,8/255",
        "--adv-samples", "16", "--corruptions", "gaussian,blur", "--corrupt-samples", "12",
        "--threads", "1", "--out", str(out),
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _comparable(folder: Path) -> object:
    m = json.loads((folder / "metrics.json").read_text())
    for doc in m["compare"]["models"]:
        for key in ("train_time_s", "resumed"):
            doc["facts"].pop(key, None)
    for row in m["comparison"]["table"]:
        row.pop("train_time_s")
    return numbers(m)


def test_killed_comparison_resumes_to_the_same_result(tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(_command(whole), env=_env(), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(
        _command(cut), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = cut / "models" / SECOND / "train" / "last.pt"
    deadline = time.monotonic() + 400
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the comparison ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (cut / "metrics.json").exists()
    assert not (cut / "models" / SECOND / "result.json").exists()
    first = cut / "models" / "small-cnn-width-4-seed-0" / "result.json"
    stamp = first.stat().st_mtime_ns
    done = subprocess.run(_command(cut), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "reusing" in done.stderr  # the first model was not trained or measured again
    assert first.stat().st_mtime_ns == stamp
    assert _comparable(cut) == _comparable(whole)
