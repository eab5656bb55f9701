"""The documented check codes and the implemented ones are the same set."""

from __future__ import annotations

import re
from pathlib import Path

from medrobust.evaluation.checks import CHECKS

DOC = Path(__file__).resolve().parents[2] / "docs" / "checks.md"


def test_every_check_is_documented_and_every_documented_code_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^## (MR\d{3}):", text, flags=re.M))
    assert documented == set(CHECKS)
    for code, (title, _) in CHECKS.items():
        assert f"## {code}: {title}" in text
