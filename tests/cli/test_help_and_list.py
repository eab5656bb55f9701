"""``medrobust --help`` and ``medrobust list`` answer without importing torch (``list`` from
the cached catalogue), and a warm listing prints what a cold one prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medrobust.cli import main

_NO_TORCH = """
import sys
from medrobust.cli import main
from medrobust.pipelines import catalogue
if {pin!r}:  # other work editing the source tree would change the real key between runs
    catalogue.catalogue_key = lambda root=None: {pin!r}
try:
    main({args!r})
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH-LOADED" if loaded else "TORCH-FREE", file=sys.stderr)
sys.exit(code)
"""


def _run(args: list[str], cache: Path, pin: str = "") -> subprocess.CompletedProcess[str]:
    """Run ``medrobust ARGS`` in a fresh interpreter with its cache in ``cache`` (and, with
    ``pin``, a fixed catalogue key); stderr ends with TORCH-LOADED or TORCH-FREE."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-c", _NO_TORCH.format(args=args, pin=pin)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "args", [["--help"], ["evaluate", "--help"], ["detect", "--help"], ["defend", "--help"]]
)
def test_help_imports_no_torch(args: list[str], tmp_path: Path) -> None:
    res = _run(args, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "TORCH-FREE" in res.stderr
    assert "Usage" in res.stdout


def test_import_of_the_app_imports_no_torch() -> None:
    code = "import sys; from medrobust.cli import app; print('torch' in sys.modules)"
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert res.stdout.strip() == "False"


def test_warm_listing_equals_cold_and_imports_no_torch(tmp_path: Path) -> None:
    cold = _run(["list"], tmp_path, pin="pinned")
    assert cold.returncode == 0, cold.stderr
    assert "TORCH-LOADED" in cold.stderr  # the cold listing imports the registries
    files = list((tmp_path / "medrobust").glob("catalogue-*.json"))
    assert [f.name for f in files] == ["catalogue-pinned.json"]
    warm = _run(["list"], tmp_path, pin="pinned")
    assert warm.returncode == 0, warm.stderr
    assert "TORCH-FREE" in warm.stderr
    assert warm.stdout == cold.stdout
    for name in ("pgd", "apgd-ce", "square", "small-cnn", "resnet18", "bus-phantom", "MR101"):
        assert name in warm.stdout
    for kind in ("attacks", "models", "datasets", "suites", "checks", "defenses", "detectors"):
        assert kind in warm.stdout
    one = _run(["list", "detectors"], tmp_path, pin="pinned")
    assert "TORCH-FREE" in one.stderr and "uad" in one.stdout and "small-cnn" not in one.stdout
    # an unreadable cache is rebuilt
    files[0].write_text("{not json")
    again = _run(["list"], tmp_path, pin="pinned")
    assert again.returncode == 0 and again.stdout == cold.stdout
    assert "TORCH-LOADED" in again.stderr
    assert json.loads(files[0].read_text())["kinds"]["detectors"][0]["name"]


def test_unknown_kind_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["list", "atacks"])
    assert exc.value.code == 2
    assert "did you mean 'attacks'" in capsys.readouterr().err.replace("\n", " ")
