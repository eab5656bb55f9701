"""Figures of a robustness report, drawn with matplotlib's object API (no pyplot).

Every function returns a :class:`matplotlib.figure.Figure` built directly, without pyplot's global
state: nothing depends on the selected backend, nothing is shown, figures are never registered
with a global figure manager (so there is nothing to close and no leak), and building figures is
safe from several threads. :func:`to_base64_png` renders a figure with the Agg canvas.

User-provided text (class names, attack names) is drawn verbatim: a ``$`` is escaped so that
matplotlib never interprets it as mathematical markup.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from medrobust.reporting.io import ExampleImages

__all__ = ["default_magnification", "example_grid", "robustness_curves", "to_base64_png"]

# Okabe & Ito colour-blind-safe palette (yellow left out: too pale on white);
# black is kept for the worst case.
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_NORM_LABEL = {"linf": "L∞", "l2": "L2"}
_WRONG = "#B00020"


def _plain(text: object) -> str:
    """Text that matplotlib shows literally (no mathtext)."""
    return str(text).replace("$", r"\$")


def _eps_labels(metrics: Mapping[str, Any]) -> list[tuple[float, str]]:
    tm = metrics.get("threat_model") or {}
    eps = list(tm.get("eps") or [])
    disp = list(tm.get("eps_display") or [])
    if disp and len(disp) != len(eps):
        raise ValueError(
            f"threat_model.eps_display has {len(disp)} entries but threat_model.eps has {len(eps)}"
        )
    return [(float(e), str(disp[i]) if disp else f"{float(e):.4g}") for i, e in enumerate(eps)]


def _display_eps(value: float, table: Sequence[tuple[float, str]]) -> str:
    for eps, label in table:
        if math.isclose(eps, value, rel_tol=1e-9, abs_tol=1e-12):
            return label
    return "0" if value == 0 else f"{value:.4g}"


def _number(record: Mapping[str, Any], key: str, where: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}.{key} must be a number, got {value!r}")
    return float(value)


def robustness_curves(metrics: Mapping[str, Any]) -> Figure:
    """Robust accuracy against the budget, one line per attack plus the per-sample worst case.

    The clean accuracy is drawn as a dashed horizontal line and, when known, as the point at
    ``eps = 0`` of every curve. The x axis is linear in epsilon with a tick at every budget,
    labelled with ``threat_model.eps_display`` (e.g. ``"8/255"``).

    Args:
        metrics: A metrics dictionary (schema version 1) with ``results``; ``worst_case``,
            ``clean`` and ``threat_model`` are used when present.

    Returns:
        The figure.

    Raises:
        ValueError: If there are no results or a record lacks a numeric ``eps`` or
            ``robust_accuracy``.
    """
    results = metrics.get("results") or []
    if not isinstance(results, Sequence) or not results:
        raise ValueError("metrics has no 'results' to plot: expected a non-empty list of records")
    eps_table = _eps_labels(metrics)
    clean = (metrics.get("clean") or {}).get("accuracy")
    clean_acc = (
        float(clean) if isinstance(clean, (int, float)) and not isinstance(clean, bool) else None
    )

    curves: dict[str, list[tuple[float, float]]] = {}
    for i, rec in enumerate(results):
        if not isinstance(rec, Mapping):
            raise ValueError(f"results[{i}] must be a dict, got {type(rec).__name__}")
        name = str(rec.get("attack", "?"))
        point = (
            _number(rec, "eps", f"results[{i}]"),
            _number(rec, "robust_accuracy", f"results[{i}]"),
        )
        curves.setdefault(name, []).append(point)
    worst: list[tuple[float, float]] = []
    for i, rec in enumerate(metrics.get("worst_case") or []):
        worst.append(
            (
                _number(rec, "eps", f"worst_case[{i}]"),
                _number(rec, "robust_accuracy", f"worst_case[{i}]"),
            )
        )

    fig = Figure(figsize=(8.0, 4.2), layout="constrained")
    ax = fig.add_subplot()

    def _with_clean(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
        pts = sorted(points)
        if clean_acc is not None and pts and pts[0][0] > 0:
            pts = [(0.0, clean_acc), *pts]
        return [p[0] for p in pts], [p[1] for p in pts]

    for k, (name, points) in enumerate(curves.items()):
        xs, ys = _with_clean(points)
        ax.plot(
            xs,
            ys,
            marker=_MARKERS[k % len(_MARKERS)],
            color=_COLOURS[k % len(_COLOURS)],
            linewidth=1.6,
            markersize=5,
            label=_plain(name),
        )
    if worst:
        xs, ys = _with_clean(worst)
        ax.plot(xs, ys, marker="o", color="black", linewidth=2.8, markersize=6, label="worst case")
    if clean_acc is not None:
        ax.axhline(
            clean_acc,
            color="#444444",
            linestyle="--",
            linewidth=1.2,
            label=f"clean accuracy ({100 * clean_acc:.1f}%)",
        )

    ticks = sorted({p[0] for pts in curves.values() for p in pts} | {p[0] for p in worst})
    if clean_acc is not None and ticks and ticks[0] > 0:
        ticks = [0.0, *ticks]
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [_plain(_display_eps(t, eps_table)) for t in ticks],
        rotation=45 if len(ticks) > 7 else 0,
        ha="right" if len(ticks) > 7 else "center",
    )
    _style_axes(ax, metrics)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def _style_axes(ax: Any, metrics: Mapping[str, Any]) -> None:
    """Axis labels (norm and input range), percent y axis, grid and spines of the curves."""
    tm = metrics.get("threat_model") or {}
    raw_norm = str(tm.get("norm") or "")
    norm = _NORM_LABEL.get(raw_norm.lower(), _plain(raw_norm))
    bounds = tm.get("bounds")
    parts = [f"{norm} norm"] if norm else []
    if isinstance(bounds, Sequence) and len(bounds) == 2:
        parts.append(f"input range [{float(bounds[0]):g}, {float(bounds[1]):g}]")
    ax.set_xlabel("budget ε" + (f" ({', '.join(parts)})" if parts else ""))
    ax.set_ylabel("robust accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.grid(True, color="#DDDDDD", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _display_array(arr: np.ndarray) -> tuple[np.ndarray, str]:
    """A 2-D (grey) or HxWx3 (RGB) view of a channel-first image, and a note on what was cut."""
    notes = []
    if arr.ndim == 4:
        depth = arr.shape[-1]
        mid = depth // 2
        arr = arr[..., mid]
        notes.append(f"3-D: middle slice {mid} of {depth} (last axis)")
    channels = arr.shape[0]
    if channels == 3:
        return np.transpose(arr, (1, 2, 0)), "; ".join(notes)
    if channels != 1:
        notes.append(f"channel 0 of {channels}")
    return arr[0], "; ".join(notes)


def default_magnification(examples: Sequence[ExampleImages]) -> float:
    """The power of two that makes the largest shown perturbation fill the display range.

    A perturbation ``δ`` of an image shown over the range ``r`` (min to max of the clean and
    adversarial image) is displayed as ``0.5 + m δ / r``; the default ``m`` is the largest power
    of two with ``m max|δ| / r <= 0.5`` over all examples (1 when nothing was perturbed).

    Args:
        examples: The examples to show.

    Returns:
        The magnification ``m``.
    """
    best = math.inf
    for ex in examples:
        clean, _ = _display_array(ex.clean)
        adv, _ = _display_array(ex.adversarial)
        lo = float(min(clean.min(), adv.min()))
        hi = float(max(clean.max(), adv.max()))
        rng = hi - lo if hi > lo else 1.0
        peak = float(np.abs(adv - clean).max())
        if peak > 0:
            best = min(best, 0.5 * rng / peak)
    if not math.isfinite(best):
        return 1.0
    return float(2.0 ** math.floor(math.log2(best)))


def _format_magnification(m: float) -> str:
    return f"{m:.0f}" if m >= 1 and float(m).is_integer() else f"{m:.3g}"


def example_grid(examples: Sequence[ExampleImages], magnify: float | None = None) -> Figure:
    """Clean image, adversarial image and magnified perturbation, one example per row.

    Images are shown over the common range of their clean and adversarial versions (grey for one
    channel, RGB for three; other channel counts show channel 0 and say so). For 3-D volumes the
    middle slice of the last axis is shown and the panel says so. The perturbation column shows
    ``0.5 + magnify * δ / range`` (mid grey means no change) with the magnification in the title.
    Titles give the true class and the predictions by class name; a wrong adversarial prediction
    is written in red and marked "wrong".

    Args:
        examples: The examples (at least one).
        magnify: Magnification of the perturbation; ``None`` chooses
            :func:`default_magnification`.

    Returns:
        The figure.

    Raises:
        ValueError: If ``examples`` is empty or ``magnify`` is not a finite positive number.
        TypeError: If an element is not an :class:`~medrobust.reporting.io.ExampleImages`.
    """
    if not examples:
        raise ValueError("example_grid needs at least one example, got none")
    for i, ex in enumerate(examples):
        if not isinstance(ex, ExampleImages):
            raise TypeError(f"examples[{i}] must be an ExampleImages, got {type(ex).__name__}")
    if magnify is None:
        magnify = default_magnification(examples)
    elif (
        isinstance(magnify, bool)
        or not isinstance(magnify, (int, float))
        or not (math.isfinite(magnify) and magnify > 0)
    ):
        raise ValueError(f"magnify must be a finite positive number or None, got {magnify!r}")
    mag_text = _format_magnification(float(magnify))

    rows = len(examples)
    fig = Figure(figsize=(8.4, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    for r, ex in enumerate(examples):
        clean, note = _display_array(ex.clean)
        adv, _ = _display_array(ex.adversarial)
        lo = float(min(clean.min(), adv.min()))
        hi = float(max(clean.max(), adv.max()))
        rng = hi - lo if hi > lo else 1.0
        delta = adv - clean
        pert = np.clip(0.5 + float(magnify) * delta / rng, 0.0, 1.0)
        grey = clean.ndim == 2
        shown = [
            (clean - lo) / rng if not grey else clean,
            (adv - lo) / rng if not grey else adv,
            pert,
        ]
        for c, img in enumerate(shown):
            ax = axes[r, c]
            if grey:
                vmin, vmax = (lo, lo + rng) if c < 2 else (0.0, 1.0)
                ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            else:
                ax.imshow(np.clip(img, 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        eps_text = ex.eps_display or f"{ex.eps:.4g}"
        wrong = ex.adv_pred != ex.label
        axes[r, 0].set_title(
            _plain(
                f"clean\ntrue: {ex.class_name(ex.label)} · pred: {ex.class_name(ex.clean_pred)}"
            ),
            fontsize=9,
        )
        axes[r, 1].set_title(
            _plain(
                f"adversarial ({ex.attack}, ε={eps_text})\n"
                f"pred: {ex.class_name(ex.adv_pred)}{' (wrong)' if wrong else ''}"
            ),
            fontsize=9,
            color=_WRONG if wrong else "black",
        )
        axes[r, 2].set_title(
            _plain(f"perturbation ×{mag_text}\nmax |δ| = {float(np.abs(delta).max()):.3g}"),
            fontsize=9,
        )
        axes[r, 0].set_ylabel(_plain(ex.id or f"example {r}"), fontsize=9)
        if note:
            axes[r, 0].set_xlabel(_plain(note), fontsize=8)
    return fig


def to_base64_png(fig: Figure, dpi: int = 110) -> str:
    """Render a figure to PNG (Agg) and return the bytes as base64 ASCII text.

    Use it in HTML as ``"data:image/png;base64," + to_base64_png(fig)``.

    Args:
        fig: A matplotlib figure.
        dpi: Resolution of the PNG.

    Returns:
        Base64 text without line breaks.

    Raises:
        TypeError: If ``fig`` is not a matplotlib figure.
        ValueError: If ``dpi`` is not a positive integer.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib.figure.Figure, got {type(fig).__name__}")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi <= 0:
        raise ValueError(f"dpi must be a positive int, got {dpi!r}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return base64.b64encode(buffer.getvalue()).decode("ascii")
