"""Fault injection: an audit killed (SIGKILL or Ctrl-C) in the attack phase and run again writes
the run folder an uninterrupted run writes (timestamps aside)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medrobust.models import save_checkpoint
from medrobust.models.card import DataInfo, ModelCard
from tests.evaluation.interrupt import numbers
from tests.explain.conftest import Trained

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(trained_cnn: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN trained on the 32x32 phantom (so the attacks have samples to break)."""
    model = trained_cnn.model
    card = ModelCard.from_model(model, data=DataInfo(name="bus-phantom", image_size=[32, 32]))
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", model, card)


def _command(ckpt: Path, out: Path, n: int = 64) -> list[str]:
    return [
        sys.executable, "-m", "medrobust.cli", "evaluate", str(ckpt),
        "--data-param", f"n={n}", "--data-param", "cache=false",
        "--attacks", "fgsm,pgd", "--eps", "1/255,4/255", "--batch-size", "4",
        "--out", str(out),
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _interrupted(ckpt: Path, out: Path, sig: int) -> int:
    """Start the audit, send ``sig`` once its per-batch state exists, return its exit code."""
    proc = subprocess.Popen(
        _command(ckpt, out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    state = out / ".evaluation-state.pt"
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the audit ended before it could be interrupted"
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert not (out / "metrics.json").exists()  # an interrupted run never looks complete
    return proc.returncode


def _same_run(a: Path, b: Path) -> None:
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    ma["model"]["card"], mb["model"]["card"] = {}, {}
    assert numbers(ma) == numbers(mb)
    files_a = sorted(p.name for p in (a / "adversarial").iterdir())
    assert files_a  # the attacks broke samples, so there is something to compare
    assert files_a == sorted(p.name for p in (b / "adversarial").iterdir())
    for name in files_a:
        with np.load(a / "adversarial" / name) as za, np.load(b / "adversarial" / name) as zb:
            assert set(za.files) == set(zb.files)
            for key in za.files:
                assert np.array_equal(za[key], zb[key]), (name, key)
    assert not [p for p in b.iterdir() if p.name.startswith(".staging-")]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_audit_resumes_to_the_same_run_folder(
    checkpoint: Path, tmp_path: Path, sig: int
) -> None:
    whole = tmp_path / "whole"
    done = subprocess.run(_command(checkpoint, whole), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    code = _interrupted(checkpoint, cut, sig)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    again = subprocess.run(_command(checkpoint, cut), env=_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    _same_run(whole, cut)


def test_two_concurrent_audits_into_one_folder(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    long = _command(checkpoint, out, n=512)  # long enough to be running when the second starts
    first = subprocess.Popen(long, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / ".evaluation-state.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    second = subprocess.run(_command(checkpoint, out), env=_env(), capture_output=True, text=True)
    assert first.poll() is None, "the first audit ended before the second one started"
    assert second.returncode == 2
    assert str(first.pid) in second.stderr.replace("\n", " ")
    assert first.wait(timeout=300) == 0
    assert (out / "metrics.json").exists()


def test_demo_killed_in_the_explanation_phase_resumes_to_the_same_run(tmp_path: Path) -> None:
    demo = [sys.executable, "-m", "medrobust.cli", "demo", "--quick"]
    whole = tmp_path / "whole"
    done = subprocess.run([*demo, "--out", str(whole)], env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        [*demo, "--out", str(cut)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    state = cut / ".explanation-state.pt"
    deadline = time.monotonic() + 300
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the demo ended before its explanation phase could be killed"
    proc.kill()
    proc.wait(timeout=60)
    assert not (cut / "metrics.json").exists()
    again = subprocess.run(
        [*demo, "--out", str(cut), "--resume"], env=_env(), capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    for m in (a, b):
        m["model"]["card"] = {}
    assert numbers(a) == numbers(b)
    assert not list(cut.glob(".*-state.pt"))  # states are removed once the run is complete
