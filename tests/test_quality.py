"""The code stays ruff-clean and mypy-clean (the project's style and typing standard)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_ruff_lint_and_format() -> None:
    pytest.importorskip("ruff", reason="ruff is a test extra: pip install -e .[test]")
    lint = _run("ruff", "check", "src", "tests", "benchmarks")
    assert lint.returncode == 0, lint.stdout[-3000:]
    fmt = _run("ruff", "format", "--check", "src", "tests", "benchmarks")
    assert fmt.returncode == 0, fmt.stdout[-3000:]


@pytest.mark.slow
def test_mypy_on_the_package() -> None:
    pytest.importorskip("mypy", reason="mypy is a test extra: pip install -e .[test]")
    res = _run("mypy")
    assert res.returncode == 0, res.stdout[-3000:]
