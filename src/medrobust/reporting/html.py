"""A self-contained HTML report of a robustness audit.

The report is one HTML file: its CSS is inlined, its figures are embedded as base64 PNG ``data:``
URIs, and it references no script, font, style sheet or image on the network, so it opens in any
browser offline and prints cleanly. It is rendered with jinja2 with autoescaping on: every string
that comes from the metrics (model card, class names, attack names, check messages) is escaped.

Sections, in order: header, summary, model card, data, threat model, clean metrics, robustness
curves, one table per attack, worst case, examples, any extra sections, sanity checks (with "What
the checks mean"), timing, and "Other results".

Extending the report:

* Unknown top-level keys of the metrics dictionary (e.g. ``"explanations"``, ``"defenses"``) are
  shown under "Other results" as readable, escaped tables: nested dicts become nested key/value
  tables, lists of flat dicts become tables with one column per key.
* A dedicated section with tables and figures is added with ``extra_sections``: a list of
  :class:`ReportSection`. Build its body with :func:`html_table` and :func:`render_value` (which
  escape everything) or pass plain text; a :class:`markupsafe.Markup` body is inserted verbatim,
  so only pass markup that escapes user data itself. A section whose ``key`` names a top-level
  metrics key replaces that key's generic "Other results" table.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import functools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape
from matplotlib.figure import Figure

from medrobust.reporting.context import (
    RESERVED_ANCHORS,
    _fmt_scalar,
    _is_num,
    attack_context,
    check_context,
    eps_display_table,
    eps_text,
    example_rows,
    headline,
    slug,
    worst_case_context,
)
from medrobust.reporting.figures import example_grid, robustness_curves, to_base64_png
from medrobust.reporting.io import ExampleImages, write_text_atomic

__all__ = [
    "KNOWN_SECTIONS",
    "SCHEMA_VERSION",
    "ReportSection",
    "html_table",
    "render_report",
    "render_value",
    "write_report",
]

SCHEMA_VERSION = 1

#: Top-level keys of the metrics dictionary that have a dedicated section (or are metadata).
KNOWN_SECTIONS: tuple[str, ...] = (
    "schema_version",
    "medrobust_version",
    "created",
    "title",
    "task",
    "model",
    "data",
    "threat_model",
    "clean",
    "attacks",
    "results",
    "worst_case",
    "checks",
    "examples",
    "timing",
    "world_size",
)

_STATUS = ("pass", "warn", "fail")


def _timing(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The timing table; a run on several processes says how many (attack seconds are then
    summed over the processes)."""
    timing = dict(metrics.get("timing") or {})
    if int(metrics.get("world_size") or 1) > 1:
        timing["processes (attack time summed over them)"] = int(metrics["world_size"])
    return timing or None


_MAX_DEPTH = 6
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class ReportSection:
    """An additional section of the report (e.g. explanations, segmentation, defences).

    Attributes:
        title: Heading of the section (escaped).
        body: Content above the figures. A plain ``str`` is escaped and shown as a paragraph; a
            :class:`markupsafe.Markup` (e.g. from :func:`html_table`) is inserted as is.
        figures: matplotlib figures (rendered to PNG) or base64 PNG strings (as returned by
            :func:`~medrobust.reporting.figures.to_base64_png`).
        captions: Optional captions, one per figure (escaped).
        key: The top-level metrics key this section presents; that key is then left out of
            "Other results".
        anchor: The HTML id of the section; derived from the title when ``None``.
    """

    title: str
    body: str | Markup = ""
    figures: Sequence[Figure | str] = ()
    captions: Sequence[str] = ()
    key: str | None = None
    anchor: str | None = None


# --------------------------------------------------------------------------------------------
# escaped value rendering
# --------------------------------------------------------------------------------------------
def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_flat_record_list(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) > 0
        and all(isinstance(v, Mapping) and all(_is_scalar(x) for x in v.values()) for v in value)
    )


def render_value(value: Any, depth: int = 0) -> Markup:
    """Escaped HTML for any JSON-like value.

    Scalars are formatted (floats with 4 significant digits, ``None``/NaN as "—"), dicts become
    key/value tables (nested), lists of flat dicts become tables, lists of scalars become a
    comma-separated line, other lists become an ordered list. Beyond a nesting depth of 6 the
    value is shown as escaped text.

    Args:
        value: The value.
        depth: Current nesting depth (callers pass 0).

    Returns:
        Safe markup.
    """
    if _is_scalar(value):
        return escape(_fmt_scalar(value))
    if depth >= _MAX_DEPTH:
        return escape(repr(value)[:500])
    if isinstance(value, Mapping):
        if not value:
            return Markup('<span class="muted">(empty)</span>')
        rows = [
            Markup('<tr><th scope="row">{}</th><td>{}</td></tr>').format(
                str(k), render_value(v, depth + 1)
            )
            for k, v in value.items()
        ]
        return Markup('<table class="kv">{}</table>').format(Markup("").join(rows))
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if not value:
            return Markup('<span class="muted">(none)</span>')
        if _is_flat_record_list(value):
            return html_table(value)
        if all(_is_scalar(v) for v in value):
            return escape(", ".join(_fmt_scalar(v) for v in value))
        items = [Markup("<li>{}</li>").format(render_value(v, depth + 1)) for v in value]
        return Markup("<ol>{}</ol>").format(Markup("").join(items))
    return escape(str(value))


def html_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Markup:
    """An escaped HTML table with one row per record.

    Args:
        rows: The records.
        columns: Keys to show, in order; by default every key in order of first appearance.
        headers: Optional display names for the columns.

    Returns:
        Safe markup of a ``<table>``; numeric cells are right-aligned.

    Raises:
        TypeError: If a row is not a mapping.
    """
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            for key in row:
                seen.setdefault(str(key), None)
        columns = list(seen)
    names = headers or {}
    head = Markup("").join(
        Markup('<th scope="col">{}</th>').format(names.get(c, c)) for c in columns
    )
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            cls = Markup(' class="num"') if numeric else Markup("")
            cells.append(Markup("<td{}>{}</td>").format(cls, render_value(v, 1)))
        body.append(Markup("<tr>{}</tr>").format(Markup("").join(cells)))
    return Markup('<table class="data"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>').format(
        head, Markup("").join(body)
    )


# --------------------------------------------------------------------------------------------
# formatting filters used by the template
# --------------------------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _pct(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if _is_num(value) else "—"


def _num(value: Any, digits: int = 4) -> str:
    return f"{float(value):.{digits}g}" if _is_num(value) else "—"


def _fixed(value: Any, decimals: int = 2) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{float(value):.{decimals}f}" if _is_num(value) else "—"


def _seconds(value: Any) -> str:
    if not _is_num(value):
        return "—"
    s = float(value)
    if s < 60:
        return f"{s:.2f} s"
    minutes, sec = divmod(s, 60)
    if minutes < 60:
        return f"{int(minutes)} min {sec:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def _format_created(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return "—"
    try:
        when = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    if when.tzinfo is not None:
        offset = when.utcoffset()
        text += " UTC" if offset == _dt.timedelta(0) else when.strftime(" UTC%z")
    return text


# --------------------------------------------------------------------------------------------
# validation and preparation
# --------------------------------------------------------------------------------------------
def _validate(metrics: Any) -> None:
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
    version = metrics.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"unsupported metrics schema_version {version!r}: this renderer reads version "
            f"{SCHEMA_VERSION}"
        )
    for key in ("model", "data", "threat_model", "clean", "timing"):
        if metrics.get(key) is not None and not isinstance(metrics[key], Mapping):
            raise ValueError(f"metrics[{key!r}] must be a dict, got {type(metrics[key]).__name__}")
    for key in ("attacks", "results", "worst_case", "checks", "examples"):
        value = metrics.get(key)
        if value is None:
            continue
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ValueError(f"metrics[{key!r}] must be a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ValueError(f"metrics[{key!r}][{i}] must be a dict, got {type(item).__name__}")
    for key in ("results", "worst_case"):
        for i, rec in enumerate(metrics.get(key) or []):
            for field_name in ("eps", "robust_accuracy"):
                if not _is_number(rec.get(field_name)):
                    raise ValueError(
                        f"metrics[{key!r}][{i}][{field_name!r}] must be a number, got "
                        f"{rec.get(field_name)!r}"
                    )
    tm = metrics.get("threat_model") or {}
    eps, disp = tm.get("eps") or [], tm.get("eps_display") or []
    if not all(_is_number(e) for e in eps):
        raise ValueError(f"metrics['threat_model']['eps'] must be a list of numbers, got {eps!r}")
    if disp and len(disp) != len(eps):
        raise ValueError(
            f"metrics['threat_model']['eps_display'] has {len(disp)} entries but 'eps' has "
            f"{len(eps)}"
        )
    for i, check in enumerate(metrics.get("checks") or []):
        if check.get("status") not in _STATUS:
            raise ValueError(
                f"metrics['checks'][{i}]['status'] must be one of {list(_STATUS)}, got "
                f"{check.get('status')!r}"
            )


def _figure_uri(fig: Figure | str, dpi: int, where: str) -> str:
    if isinstance(fig, Figure):
        return "data:image/png;base64," + to_base64_png(fig, dpi=dpi)
    if isinstance(fig, str):
        try:
            raw = base64.b64decode(fig, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError(f"{where} is not base64 text: {err}") from err
        if not raw.startswith(_PNG_SIGNATURE):
            raise ValueError(f"{where} is base64 but not a PNG image")
        return "data:image/png;base64," + fig
    raise TypeError(
        f"{where} must be a matplotlib Figure or base64 PNG text, got {type(fig).__name__}"
    )


def _prepare_sections(
    extra_sections: Sequence[ReportSection], dpi: int, used: set[str]
) -> list[dict[str, Any]]:
    out = []
    for i, sec in enumerate(extra_sections):
        if not isinstance(sec, ReportSection):
            raise TypeError(
                f"extra_sections[{i}] must be a ReportSection, got {type(sec).__name__}"
            )
        if sec.captions and len(sec.captions) != len(sec.figures):
            raise ValueError(
                f"extra section {sec.title!r} has {len(sec.figures)} figures but "
                f"{len(sec.captions)} captions"
            )
        anchor = slug(sec.anchor or sec.title)
        base, n = anchor, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        uris = [
            _figure_uri(f, dpi, f"extra section {sec.title!r} figure {j}")
            for j, f in enumerate(sec.figures)
        ]
        captions = list(sec.captions) or [""] * len(uris)
        out.append(
            {
                "title": sec.title,
                "anchor": anchor,
                "body": sec.body,
                "is_markup": isinstance(sec.body, Markup),
                "figures": list(zip(uris, captions, strict=True)),
            }
        )
    return out


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("medrobust.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(pct=_pct, num=_num, fixed=_fixed, seconds=_seconds, value=render_value)
    return env


# --------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------
def render_report(
    metrics: Mapping[str, Any],
    examples: Sequence[ExampleImages] = (),
    *,
    extra_sections: Sequence[ReportSection] = (),
    check_docs: Mapping[str, str] | None = None,
    magnify: float | None = None,
    dpi: int = 110,
) -> str:
    """Render the HTML report of a robustness audit.

    Args:
        metrics: The content of ``metrics.json`` (schema version 1; see the package docstring).
            Sections whose keys are missing are left out; unknown keys go to "Other results".
        examples: Clean/adversarial pairs for the example grid (may be empty).
        extra_sections: Additional sections, shown after the examples (see :class:`ReportSection`).
        check_docs: Optional explanation per check code for "What the checks mean"; a check's own
            ``"help"`` entry is used otherwise, and its title as a last resort.
        magnify: Magnification of the perturbation column; ``None`` picks one automatically.
        dpi: Resolution of the embedded figures.

    Returns:
        The HTML document as a string.

    Raises:
        TypeError: If ``metrics`` is not a dict or an extra section or figure has the wrong type.
        ValueError: If the schema version is not 1 or a section has the wrong structure.
    """
    _validate(metrics)
    ex_list = list(examples)
    for i, ex in enumerate(ex_list):
        if not isinstance(ex, ExampleImages):
            raise TypeError(f"examples[{i}] must be an ExampleImages, got {type(ex).__name__}")
    sections = _prepare_sections(list(extra_sections), dpi, set(RESERVED_ANCHORS))
    covered = {s.key for s in extra_sections if s.key}
    eps_table = eps_display_table(metrics)
    data = metrics.get("data") or {}
    class_names = [str(c) for c in (data.get("class_names") or [])]
    curves_uri = None
    if metrics.get("results"):
        curves_uri = "data:image/png;base64," + to_base64_png(robustness_curves(metrics), dpi=dpi)
    grid_uri, grid_note = None, ""
    if ex_list:
        grid = example_grid(ex_list, magnify=magnify)
        grid_uri = "data:image/png;base64," + to_base64_png(grid, dpi=dpi)
        if any(ex.clean.ndim == 4 for ex in ex_list):
            grid_note = "For 3-D volumes the middle slice of the last axis is shown."
    worst, breakers = worst_case_context(metrics)
    context = {
        "m": metrics,
        "title": str(metrics.get("title") or "Robustness audit"),
        "version": metrics.get("medrobust_version") or "unknown",
        "created": _format_created(metrics.get("created")),
        "created_raw": str(metrics.get("created") or ""),
        "model": metrics.get("model") or None,
        "data": metrics.get("data") or None,
        "class_names": class_names,
        "tm": metrics.get("threat_model") or None,
        "eps_rows": eps_table,
        "clean": metrics.get("clean") or None,
        "curves_uri": curves_uri,
        **attack_context(metrics),
        "worst": worst,
        "breakers": breakers,
        "headline": headline(metrics, eps_table),
        "eps_text": lambda v: eps_text(v, eps_table),
        "grid_uri": grid_uri,
        "grid_note": grid_note,
        "example_rows": example_rows(metrics, class_names, eps_table),
        "sections": sections,
        **check_context(metrics, check_docs, _STATUS),
        "timing": _timing(metrics),
        "other": {k: v for k, v in metrics.items() if k not in KNOWN_SECTIONS and k not in covered},
    }
    return _environment().get_template("report.html").render(**context)


def write_report(
    path: str | os.PathLike[str],
    metrics: Mapping[str, Any],
    examples: Sequence[ExampleImages] = (),
    **kwargs: Any,
) -> Path:
    """Render the report and write it atomically (UTF-8) to ``path``.

    Args:
        path: Destination ``.html`` file; parent folders are created.
        metrics: See :func:`render_report`.
        examples: See :func:`render_report`.
        **kwargs: Keyword arguments of :func:`render_report` (``extra_sections``, ``check_docs``,
            ``magnify``, ``dpi``).

    Returns:
        The destination as a :class:`~pathlib.Path`.

    Raises:
        TypeError, ValueError: As :func:`render_report`.
    """
    return write_text_atomic(path, render_report(metrics, examples, **kwargs))
