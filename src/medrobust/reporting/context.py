"""The template context of the HTML report, built from the ``metrics.json`` dictionary.

Pure functions over dictionaries: what the report's tables show (attack tables, the worst case,
the checks with their explanations, the examples' rows) and how budgets are written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "RESERVED_ANCHORS",
    "attack_context",
    "check_context",
    "class_name",
    "eps_display_table",
    "eps_text",
    "example_rows",
    "headline",
    "slug",
    "worst_case_context",
]

#: Anchors of the report's own sections (extra sections get others).
RESERVED_ANCHORS: tuple[str, ...] = (
    "summary",
    "model",
    "data",
    "threat-model",
    "clean",
    "curves",
    "attacks",
    "worst-case",
    "examples",
    "checks",
    "checks-explained",
    "timing",
    "other",
)


def _fmt_scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        return f"{value:.4g}"
    return str(value)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "section"


def eps_display_table(metrics: Mapping[str, Any]) -> list[tuple[float, str]]:
    tm = metrics.get("threat_model") or {}
    eps = list(tm.get("eps") or [])
    disp = list(tm.get("eps_display") or [])
    if disp:  # lengths are checked by _validate
        return [(float(e), str(d)) for e, d in zip(eps, disp, strict=True)]
    return [(float(e), f"{float(e):.4g}") for e in eps]


def eps_text(value: Any, table: Sequence[tuple[float, str]]) -> str:
    if not _is_num(value):
        return _fmt_scalar(value)
    for eps, label in table:
        if math.isclose(eps, float(value), rel_tol=1e-9, abs_tol=1e-12):
            return label
    return f"{float(value):.4g}"


def class_name(names: Sequence[str], index: Any) -> str:
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(names):
        return f"{names[index]} ({index})"
    return _fmt_scalar(index)


def attack_context(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``attack_tables`` (one per attack with results, rows sorted by budget) and
    ``listed_only`` (attacks named in the suite without result rows)."""
    by_attack: dict[str, list[Mapping[str, Any]]] = {}
    for rec in metrics.get("results") or []:
        by_attack.setdefault(str(rec.get("attack", "?")), []).append(rec)
    params = {str(a.get("name", "?")): a.get("params") or {} for a in metrics.get("attacks") or []}
    tables = [
        {
            "name": name,
            "anchor": f"attack-{slug(name)}",
            "params": params.get(name, {}),
            "rows": sorted(recs, key=lambda r: float(r["eps"])),
        }
        for name, recs in by_attack.items()
    ]
    listed = [{"name": n, "params": p} for n, p in params.items() if n not in by_attack]
    carried = (metrics.get("threat_model") or {}).get("per_attack") == "carried"
    rows_note = (
        "Each row carries over the samples this attack broke at a smaller budget (their "
        "adversarial examples lie inside the larger ball), so a row mixes budgets."
        if carried
        else "Each row is this attack's own result at that budget: every eligible sample was "
        "attacked again at every budget."
    )
    return {"attack_tables": tables, "listed_only": listed, "rows_note": rows_note}


def worst_case_context(metrics: Mapping[str, Any]) -> tuple[list[Any], list[str]]:
    """The worst-case rows sorted by budget and the attacks that broke samples, in order."""
    worst = sorted(metrics.get("worst_case") or [], key=lambda r: float(r["eps"]))
    breakers: dict[str, None] = {}
    for rec in worst:
        for name in rec.get("broken_by") or {}:
            breakers.setdefault(str(name), None)
    return worst, list(breakers)


def check_context(
    metrics: Mapping[str, Any], check_docs: Mapping[str, str] | None, statuses: Iterable[str]
) -> dict[str, Any]:
    """``checks`` (rows with anchors), ``counts`` per status and ``explained`` (what each code
    means: ``check_docs``, else the check's own ``help``)."""
    checks = list(metrics.get("checks") or [])
    docs = dict(check_docs or {})
    explained: dict[str, dict[str, str]] = {}
    rows = []
    for c in checks:
        code = str(c.get("code", "?"))
        anchor = f"check-{slug(code)}"
        rows.append({**c, "code": code, "anchor": anchor})
        if code not in explained:
            text = docs.get(code) or c.get("help") or ""
            explained[code] = {
                "title": str(c.get("title", "")),
                "text": str(text),
                "anchor": anchor,
            }
    counts = {s: sum(1 for c in checks if c.get("status") == s) for s in statuses}
    return {"checks": rows, "counts": counts, "explained": explained}


def example_rows(
    metrics: Mapping[str, Any], class_names: Sequence[str], table: Sequence[tuple[float, str]]
) -> list[dict[str, Any]]:
    """The rows of the examples table, with class names and budgets as the report writes them."""
    return [
        {
            "index": rec.get("index"),
            "id": rec.get("id"),
            "label": class_name(class_names, rec.get("label")),
            "clean_pred": class_name(class_names, rec.get("clean_pred")),
            "adv_pred": class_name(class_names, rec.get("adv_pred")),
            "changed": rec.get("adv_pred") != rec.get("label"),
            "attack": rec.get("attack"),
            "eps": eps_text(rec.get("eps"), table),
            "file": rec.get("file"),
        }
        for rec in (metrics.get("examples") or [])
    ]


def _percent(value: Any) -> str:
    return f"{100 * float(value):.1f}%" if _is_num(value) else "—"


def _task_headline(metrics: Mapping[str, Any]) -> tuple[str, Any, Any, str, str, list[Any]]:
    """``(clean title, clean value, n, worst title, worst key, worst rows)`` by task."""
    task = str(metrics.get("task") or "classification")
    if task == "segmentation" and isinstance(metrics.get("segmentation"), Mapping):
        seg = metrics["segmentation"]
        clean = seg.get("clean") or {}
        rows = seg.get("worst_case") or []
        return ("Clean mean Dice", clean.get("mean_dice"), clean.get("n"),
                "Worst-case mean Dice", "mean_worst_dice", rows)  # fmt: skip
    if task == "explanation" and isinstance(metrics.get("explanations"), Mapping):
        ex = metrics["explanations"]
        n_att, n = ex.get("n_attacked"), ex.get("n_samples")
        share = n_att / n if _is_num(n_att) and _is_num(n) and n else None
        worst = ex.get("worst_case") or []
        return ("Samples with an attacked map", share, n,
                "Explanations broken (worst case)", "broken_rate", worst)  # fmt: skip
    if task == "study" or isinstance(metrics.get("defenses"), list):
        return _study_headline(metrics)
    clean = metrics.get("clean") or {}
    if task == "detection":
        return ("Clean accuracy", clean.get("accuracy"), clean.get("n"),
                "System risk (wrong and undetected)", "system_risk",
                metrics.get("system_risk") or [])  # fmt: skip
    worst = metrics.get("worst_case") or []
    return ("Clean accuracy", clean.get("accuracy"), clean.get("n"),
            "Worst-case robust accuracy", "robust_accuracy", worst)  # fmt: skip


def _study_headline(metrics: Mapping[str, Any]) -> tuple[str, Any, Any, str, str, list[Any]]:
    """The defence study: the best clean accuracy of its models and, per budget, the lowest
    system risk (adaptive where measured) any model + detector reached."""
    models = [r for r in metrics.get("defenses") or [] if isinstance(r, Mapping)]
    accs = [r["clean_accuracy"] for r in models if _is_num(r.get("clean_accuracy"))]
    lowest: dict[float, float] = {}
    for r in metrics.get("risk") or []:
        value = r.get("system_risk_adaptive")
        value = value if _is_num(value) else r.get("system_risk")
        if _is_num(r.get("eps")) and _is_num(value):
            e = float(r["eps"])
            lowest[e] = min(lowest.get(e, float(value)), float(value))
    rows = [{"eps": e, "risk": v} for e, v in sorted(lowest.items())]
    return ("Best clean accuracy", max(accs) if accs else None, len(models) or None,
            "Lowest system risk", "risk", rows)  # fmt: skip


def headline(metrics: Mapping[str, Any], table: Sequence[tuple[float, str]]) -> dict[str, Any]:
    """The two headline cards of the summary, filled for the audit's task: the clean figure
    and the worst case per budget (robust accuracy, worst Dice, broken explanations or system
    risk)."""
    clean_title, clean_value, n, worst_title, key, rows = _task_headline(metrics)
    ordered = sorted(
        (r for r in rows if isinstance(r, Mapping) and _is_num(r.get("eps"))),
        key=lambda r: float(r["eps"]),
    )
    return {
        "clean_title": clean_title,
        "clean_value": _percent(clean_value),
        "clean_n": n,
        "clean_note": f"of {n} models" if clean_title.startswith("Best") else f"on {n} samples",
        "worst_title": worst_title,
        "worst_rows": [(eps_text(r["eps"], table), _percent(r.get(key))) for r in ordered],
    }
