"""Validators every entry point shares, so the same bad input gets the same error everywhere.

Budgets are parsed, never evaluated: ``"2/255"`` is read by a regular expression.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["parse_budgets", "parse_eps", "parse_params"]

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")
_EPS_HINT = "a number or a fraction like '2/255'"


def parse_eps(value: Any) -> float:
    """Parse one budget: a number, or a string such as ``"2/255"``, ``"0.01"`` or ``"1e-3"``.

    Raises:
        ValueError: If the value is not a positive finite number or fraction.
    """
    if isinstance(value, bool):
        raise ValueError(f"eps must be {_EPS_HINT}, got {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        m = _FRACTION.match(value)
        try:
            if m:
                den = float(m.group(2))
                if den == 0:
                    raise ValueError
                out = float(m.group(1)) / den
            else:
                out = float(value)
        except ValueError:
            raise ValueError(f"eps must be {_EPS_HINT}, got {value!r}") from None
    else:
        raise ValueError(f"eps must be {_EPS_HINT}, got {value!r}")
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"every eps must be a finite number > 0, got {value!r}")
    return out


def parse_budgets(eps: Any) -> list[float]:
    """The one budget validator: every audit, recipe and command reads budgets through it.

    Args:
        eps: One budget or an iterable of budgets; each a number or a fraction string
            (``"2/255"``), or a comma-separated string (``"1/255,2/255"``).

    Returns:
        The budgets as floats, sorted from the smallest up (audits run small to large: a sample
        broken at a small budget stays broken at larger ones).

    Raises:
        ValueError: For an empty list, a value that is not a finite number > 0, or a budget
            given twice (the message lists the budgets that came).
    """
    if isinstance(eps, str):
        items: list[Any] = [p for p in eps.split(",") if p.strip()]
    elif isinstance(eps, (int, float)):
        items = [eps]
    elif isinstance(eps, Iterable):
        items = list(eps)
    else:
        raise ValueError(f"eps must be {_EPS_HINT} or a list of them, got {eps!r}")
    if not items:
        raise ValueError("eps is empty; give at least one budget")
    out = [parse_eps(e) for e in items]
    dup = sorted({e for e in out if out.count(e) > 1})
    if dup:
        raise ValueError(f"eps contains duplicates: {dup} in {out}")
    return sorted(out)


def parse_params(items: Iterable[str] | None, what: str) -> dict[str, Any]:
    """Parse ``key=value`` command-line options; values are read as YAML scalars (numbers,
    booleans, strings), never evaluated.

    Args:
        items: The ``key=value`` strings.
        what: The option name for error messages (``"--data-param"``).

    Raises:
        ValueError: For an item without ``=`` or a value YAML cannot read.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} must look like key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what} {item!r}: cannot read the value ({exc})") from exc
    return out
