"""Validation of detector settings (private): each returns the checked value or raises."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["check_budget", "check_fitted_shape", "check_int", "check_layers"]


def check_layers(layers: Sequence[str] | None) -> list[str] | None:
    """A non-empty list of layer names, or None.

    Raises:
        TypeError: If ``layers`` is a string or holds a non-string.
        ValueError: If it is empty.
    """
    if layers is None:
        return None
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise TypeError(f"layers must be a list of layer names, got {layers!r}")
    if not layers:
        raise ValueError("layers is empty; name at least one layer or pass None")
    return list(layers)


def check_int(name: str, value: Any, minimum: int, what: str) -> int:
    """An integer ``>= minimum`` (``what`` describes it in the error, e.g. ``"an integer >= 1"``).

    Raises:
        ValueError: If ``value`` is not an int (bools are not) or is too small.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_budget(name: str, value: Any) -> float:
    """A finite number ``> 0``.

    Raises:
        ValueError: Otherwise.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_fitted_shape(name: str, fitted: Sequence[int], images: Any) -> None:
    """Refuse inputs of another shape than the detector was fitted on (its feature statistics
    and threshold hold for that shape only).

    Raises:
        ValueError: Naming the detector, the fitted shape and the shape that came.
    """
    got = list(getattr(images, "shape", ())[1:])
    if fitted and got != list(fitted):
        raise ValueError(
            f"detector {name!r} was fitted on inputs of shape {tuple(fitted)} (C, *spatial), got "
            f"{tuple(got)}: its statistics and threshold do not apply; fit it on inputs of this "
            "shape"
        )
