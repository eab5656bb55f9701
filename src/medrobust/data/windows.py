"""Intensity windows: how raw scanner values (16-bit counts, Hounsfield units, MR signal,
floating-point maps) are mapped into the model's input bounds ``[0, 1]``.

An attack budget ``eps`` is measured in ``[0, 1]``, so it only means something once the window
is known: ``4/255`` on a CT slice windowed to ``[-160, 240]`` HU is 6.3 HU; on a 16-bit export
divided by 65535 it is 1028 raw counts. Every data set that reads raw values takes a
``window`` and records the resolved one (``intensity`` attribute), which goes into the model
card and the metrics.

Window specifications (:func:`parse_window`):

* ``"-160,240"`` or ``(-160, 240)``: a fixed window ``[low, high]`` in the data's units;
* ``"p0.5,p99.5"``: per-image (per-volume) percentiles;
* a preset name such as ``"ct-abdomen"`` (see :data:`PRESETS`, CT windows in HU as
  ``level +- width / 2``);
* ``"dtype"``: the full range of the stored integer type (``/255``, ``/65535``);
* ``"header"``: the window stored in the file (DICOM ``WindowCenter``/``WindowWidth``).

References:
    DICOM PS3.3 C.11.2 (VOI LUT: window center and width); Hoang & Harris, "CT windows", in
    Radiopaedia; MONAI ``ScaleIntensityRange`` / ``ScaleIntensityRangePercentiles``.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = [
    "COVERAGE_WARNING",
    "PRESETS",
    "Window",
    "apply_window",
    "coverage",
    "parse_window",
    "warn_coverage",
]

#: CT windows in Hounsfield units as ``(level, width)``: the window is ``level +- width / 2``.
PRESETS: dict[str, tuple[float, float]] = {
    "ct-brain": (40.0, 80.0),
    "ct-subdural": (75.0, 215.0),
    "ct-stroke": (40.0, 40.0),
    "ct-bone": (400.0, 1800.0),
    "ct-lung": (-600.0, 1500.0),
    "ct-mediastinum": (50.0, 350.0),
    "ct-abdomen": (40.0, 400.0),
    "ct-liver": (30.0, 150.0),
}

#: Below this share of ``[0, 1]`` (0.5th to 99.5th percentile) the data get a warning.
COVERAGE_WARNING = 0.25


@dataclass(frozen=True)
class Window:
    """A resolved window specification.

    Attributes:
        kind: ``"fixed"``, ``"percentile"``, ``"preset"``, ``"dtype"`` or ``"header"``.
        low: Lower edge (data units, or a percentile in ``[0, 100]`` for ``"percentile"``);
            NaN for ``"dtype"`` and ``"header"``, resolved per file.
        high: Upper edge, as ``low``.
        name: The preset name, for ``"preset"``.
    """

    kind: str
    low: float = math.nan
    high: float = math.nan
    name: str | None = None

    def spec(self) -> str:
        """The specification string that :func:`parse_window` reads back into this window."""
        if self.kind == "preset" and self.name:
            return self.name
        if self.kind == "percentile":
            return f"p{self.low:g},p{self.high:g}"
        if self.kind == "fixed":
            return f"{self.low:g},{self.high:g}"
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description (``spec`` reads back with :func:`parse_window`)."""
        out: dict[str, Any] = {"kind": self.kind, "spec": self.spec()}
        if self.kind in ("fixed", "preset", "percentile"):
            out["low"], out["high"] = self.low, self.high
        return out


def _number(text: str, spec: object) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(
            f"window {spec!r}: {text.strip()!r} is not a number; expected 'low,high' "
            "(e.g. '-160,240'), 'p0.5,p99.5', a preset "
            f"({', '.join(PRESETS)}), 'dtype' or 'header'"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"window {spec!r}: {text.strip()!r} is not finite")
    return value


def parse_window(spec: object) -> Window | None:
    """Read a window specification.

    Args:
        spec: None (no window), a :class:`Window`, a ``(low, high)`` pair, or a string
            (``"-160,240"``, ``"p1,p99"``, a preset name, ``"dtype"``, ``"header"``).

    Returns:
        The window, or None.

    Raises:
        ValueError: For an unknown preset (with "did you mean"), edges that are not numbers,
            ``low >= high`` or percentiles outside ``[0, 100]``.
    """
    if spec is None or isinstance(spec, Window):
        return spec
    if isinstance(spec, dict) and "spec" in spec:
        return parse_window(spec["spec"])
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != 2:
            raise ValueError(f"window must be (low, high), got {spec!r}")
        return _fixed(_number(str(spec[0]), spec), _number(str(spec[1]), spec), spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"window must be a string such as '-160,240' or a pair, got {spec!r}")
    text = spec.strip().lower()
    if text in ("dtype", "header"):
        return Window(text)
    if "," not in text:
        if text in PRESETS:
            level, width = PRESETS[text]
            return Window("preset", level - width / 2, level + width / 2, text)
        close = difflib.get_close_matches(text, [*PRESETS, "dtype", "header"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown window {spec!r}{hint}; expected 'low,high', 'pLOW,pHIGH', a preset "
            f"({', '.join(PRESETS)}), 'dtype' or 'header'"
        )
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"window {spec!r} must have two edges 'low,high'")
    if all(p.strip().startswith("p") for p in parts):
        lo, hi = (_number(p.strip()[1:], spec) for p in parts)
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentile window {spec!r} needs 0 <= low < high <= 100")
        return Window("percentile", lo, hi)
    return _fixed(_number(parts[0], spec), _number(parts[1], spec), spec)


def _fixed(low: float, high: float, spec: object) -> Window:
    if low >= high:
        raise ValueError(f"window {spec!r} needs low < high, got [{low:g}, {high:g}]")
    return Window("fixed", low, high)


def _dtype_range(dtype: np.dtype[Any], source: str) -> tuple[float, float]:
    if dtype.kind == "b":
        return 0.0, 1.0
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    raise ValueError(
        f"{source}: the 'dtype' window needs integer data, got {dtype}; give a fixed or "
        "percentile window for floating-point data"
    )


def apply_window(
    data: npt.ArrayLike,
    window: Window,
    *,
    stored_dtype: np.dtype[Any] | None = None,
    header: tuple[float, float] | None = None,
    source: str = "image",
) -> tuple[npt.NDArray[np.float32], tuple[float, float]]:
    """Map raw values linearly so that the window becomes ``[0, 1]``, clipping outside it.

    Args:
        data: Raw values in the data's units (counts, HU, ...).
        window: The window.
        stored_dtype: The integer type the values were stored in (for ``"dtype"``; default the
            array's own).
        header: ``(low, high)`` stored in the file (for ``"header"``).
        source: The file or item named in errors.

    Returns:
        ``(float32 array in [0, 1], (low, high) used)``. A window of zero width (a constant
        image under a percentile window) gives zeros.

    Raises:
        ValueError: For NaN or infinite values, a ``"dtype"`` window on floating-point data,
            or a ``"header"`` window on a file without one.

    Shape:
        - data: any; returns the same shape.
    """
    arr = np.asarray(data, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{source} holds NaN or infinite values")
    if window.kind in ("fixed", "preset"):
        lo, hi = window.low, window.high
    elif window.kind == "percentile":
        lo, hi = (float(v) for v in np.percentile(arr, [window.low, window.high]))
    elif window.kind == "dtype":
        dtype = stored_dtype if stored_dtype is not None else np.asarray(data).dtype
        lo, hi = _dtype_range(np.dtype(dtype), source)
    elif header is not None:
        lo, hi = header
    else:
        raise ValueError(f"{source} stores no window (the 'header' window needs one)")
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32), (lo, hi)
    out = np.clip((arr - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return out, (float(lo), float(hi))


def coverage(images: Sequence[npt.ArrayLike]) -> float:
    """The share of ``[0, 1]`` the images occupy: the span between the 0.5th and 99.5th
    percentiles of all their values (1.0 for data that use the whole range)."""
    values = np.concatenate([np.asarray(im, dtype=np.float64).ravel() for im in images])
    if values.size == 0:
        return 0.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(hi - lo)


def warn_coverage(share: float, source: str, window: Window | None) -> bool:
    """Log a warning when data occupy less than :data:`COVERAGE_WARNING` of ``[0, 1]``.

    Returns:
        Whether the warning was given.
    """
    if share >= COVERAGE_WARNING:
        return False
    used = f"window {window.spec()!r}" if window is not None else "the default scaling"
    logger.warning(
        "%s: the images occupy %.1f%% of [0, 1] with %s, so an attack budget eps is %.0fx "
        "larger relative to the image contrast than it reads; give an explicit window "
        "(--window low,high in the data's units, e.g. --window 0,2200 for a 16-bit export "
        "of CT values, or --window p0.5,p99.5)",
        source,
        100 * share,
        used,
        1 / max(share, 1e-6),
    )
    return True
