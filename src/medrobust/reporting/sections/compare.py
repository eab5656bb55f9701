"""Report sections of ``medrobust compare`` (generalizability vs robustness, Paschali et al.).

Everything here reads the ``metrics.json`` document of
:func:`medrobust.pipelines.compare.run_compare`: ``metrics["comparison"]`` (the table, rankings,
rank correlations, paired tests and finding) and ``metrics["compare"]`` (the settings, the
calibrated corruptions and the per-model documents), so a report can be rebuilt from the JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from medrobust._utils.format import fmt_eps
from medrobust.reporting.html import ReportSection, html_table

__all__ = ["compare_sections", "scatter_figure"]

_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _pct(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * float(v):.1f}%"


def _ci(ci: Any) -> str:
    if not ci or any(c is None for c in ci):
        return "–"
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if v == "inf" or (isinstance(v, float) and math.isinf(v)):
        return "not flipped"
    return f"{float(v):.{digits}g}"


def scatter_figure(
    rows: Sequence[Mapping[str, Any]], y_of: Any, y_ci_of: Any, ylabel: str, title: str
) -> Figure:
    """Clean accuracy (x, with its 95% interval) against another axis (y, with its interval
    where it has one), one marker per model."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(rows):
        x = float(r["clean_accuracy"])
        y = y_of(r)
        if y is None or (isinstance(y, float) and math.isnan(y)):
            continue
        lo, hi = r["clean_ci95"]
        yci = y_ci_of(r)
        yerr = [[y - yci[0]], [yci[1] - y]] if yci and None not in yci else None
        ax.errorbar(
            x, y, xerr=[[x - lo], [hi - x]], yerr=yerr, fmt=_MARKERS[i % len(_MARKERS)],
            color=_COLOURS[i % len(_COLOURS)], capsize=3, label=r["label"], markersize=7,
        )  # fmt: skip
    ax.set_xlabel("clean accuracy (95% interval)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    if "accuracy" in ylabel:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.grid(True, color="#DDDDDD", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, loc="best")
    return fig


def _ranking_table(cmp: Mapping[str, Any]) -> Markup:
    rows = cmp["table"]
    e = fmt_eps(cmp["headline_eps"])
    ranks = cmp["rankings"]
    out = []
    for r in rows:
        k = r["key"]
        rob = r["robust"][e]
        out.append(
            {
                "model": r["label"],
                "parameters": r["parameters"],
                "FLOPs": r["flops"],
                "train (s)": _num(r["train_time_s"]),
                "clean acc [95% CI]": f"{_pct(r['clean_accuracy'])} {_ci(r['clean_ci95'])}",
                "rank clean": ranks["clean accuracy"][k],
                "shifted acc": _pct(r["shifted_accuracy"]),
                "corruption BE": _pct(r["corruption_mean_be"]),
                "relative BE": _num(r["corruption_relative_be"]),
                f"robust acc @ {e}": f"{_pct(rob['accuracy'])} {_ci(rob['ci95'])}",
                "rank robust": ranks.get(f"robust accuracy @ {e}", {}).get(k),
                "median L2 to flip": _num(r["deepfool_l2_median"]),
                "median L0 share": _pct(r["jsma_l0_share_median"])
                if r["jsma_l0_share_median"] != "inf"
                else "not flipped",
            }
        )
    return html_table(out)


def _pairs_table(cmp: Mapping[str, Any]) -> Markup:
    e = fmt_eps(cmp["headline_eps"])
    labels = {r["key"]: r["label"] for r in cmp["table"]}
    rob = {r["key"]: r["robust"][e]["accuracy"] for r in cmp["table"]}
    rows = []
    for p in cmp["pairs"]:
        t = p["robust_tests"][e]
        rows.append(
            {
                "model A": labels[p["a"]],
                "model B": labels[p["b"]],
                "clean A − B": f"{100 * p['clean_difference']:+.1f} pt",
                "clean intervals overlap": "yes" if p["comparable"] else "no",
                "clean McNemar p": _num(p["clean_test"]["p_value"]),
                f"robust A − B @ {e}": f"{100 * (rob[p['a']] - rob[p['b']]):+.1f} pt",
                "robust McNemar p": _num(t["p_value"]),
                "Holm p": _num(t["p_holm"]),
                "n": t["n"],
            }
        )
    return html_table(rows)


def _attack_table(metrics: Mapping[str, Any]) -> Markup:
    rows = []
    for doc in metrics["compare"]["models"]:
        cells: dict[str, Any] = {"model": doc["label"]}
        for r in doc["adversarial"]["results"]:
            cells[f"{r['attack']} @ {fmt_eps(r['eps'])}"] = _pct(r["robust_accuracy"])
        for w in doc["adversarial"]["worst_case"]:
            cells[f"worst @ {fmt_eps(w['eps'])}"] = _pct(w["robust_accuracy"])
        rows.append(cells)
    return html_table(rows)


def _corruption_table(metrics: Mapping[str, Any]) -> Markup:
    plans = metrics["compare"]["corruptions"]
    rows = []
    for p in plans:
        key = f"{p['name']}@{p['severity']}"
        cells: dict[str, Any] = {
            "corruption": p["name"],
            "severity": p["severity"],
            "SSIM": p["ssim"],
            "strength": _num(p["strength"]),
        }
        for doc in metrics["compare"]["models"]:
            cells[doc["label"]] = _pct(doc["corruptions"][key]["balanced_error"])
        rows.append(cells)
    return html_table(rows)


def _spearman_table(cmp: Mapping[str, Any]) -> Markup:
    return html_table(
        [
            {"axis": axis, "Spearman rho with clean accuracy": _num(rho)}
            for axis, rho in cmp["spearman"].items()
        ]
    )


def _note(table: Markup, text: str) -> Markup:
    return Markup("{}<p class='note'>{}</p>").format(table, text)


def _finding_section(cmp: Mapping[str, Any]) -> ReportSection:
    e = fmt_eps(cmp["headline_eps"])
    return ReportSection(
        title="Finding",
        body=Markup("<p><strong>{}</strong></p><p class='note'>{}</p>").format(
            cmp["finding"],
            "Two models are of comparable generalizability when the 95% Wilson intervals of "
            "their clean accuracy overlap. Robustness is compared with the exact McNemar test "
            "on the same attacked samples (per-sample worst case over the attacks), Holm-"
            f"corrected over all pairs, at the headline budget {e} (the middle budget of the "
            "list, fixed before the run). Spearman's rho compares the ranking by clean "
            "accuracy with the ranking by robust accuracy: near +1 when the accurate models "
            "are also the robust ones, near 0 or below when clean accuracy says nothing about "
            "robustness.",
        ),
        key="comparison",
    )


def _ranking_section(metrics: Mapping[str, Any]) -> ReportSection:
    cmp = metrics["comparison"]
    e = fmt_eps(cmp["headline_eps"])
    rows = cmp["table"]
    skipped = metrics["compare"].get("corruptions_skipped") or {}
    skipped_note = (
        Markup("<p class='note'>Corruptions skipped: {}</p>").format(
            "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
        if skipped
        else Markup("")
    )
    text = (
        "Rank 1 is best. Shifted accuracy: the test split under another acquisition (for the "
        "phantom, another scanner). Corruption BE: balanced error averaged over every "
        "corruption and its five SSIM-calibrated severities; relative BE divides it by the "
        "reference model's. Median L2 to flip (DeepFool, unbounded) and median L0 share (JSMA, "
        "share of input values changed) are budget-free: larger means more robust; 'not "
        "flipped' means the attack flipped fewer than half of the samples."
    )
    figures = [
        scatter_figure(
            rows,
            lambda r: r["robust"][e]["accuracy"],
            lambda r: r["robust"][e]["ci95"],
            f"robust accuracy at {e} (worst case)",
            "Generalizability vs adversarial robustness",
        ),
        scatter_figure(
            rows,
            lambda r: r["corruption_mean_be"],
            lambda r: None,
            "mean balanced error under corruptions",
            "Generalizability vs natural corruptions",
        ),
    ]
    return ReportSection(
        title="Ranking on every axis",
        body=Markup("{}{}{}").format(
            _note(_ranking_table(cmp), text), _spearman_table(cmp), skipped_note
        ),
        figures=figures,
        captions=[
            f"Clean accuracy against worst-case robust accuracy at {e}, with 95% intervals.",
            "Clean accuracy against the mean balanced error under natural corruptions.",
        ],
    )


def compare_sections(metrics: Mapping[str, Any]) -> list[ReportSection]:
    """The sections of a comparison report, the finding first."""
    cmp = metrics["comparison"]
    pairs = _note(
        _pairs_table(cmp),
        "Each pair is tested on the same samples: clean correctness on the whole test split, "
        "robust correctness on the attacked samples. p-values below 0.05 after Holm's "
        "correction mark a significant difference.",
    )
    attacks = _note(
        _attack_table(metrics),
        "Each attack's own result at each budget (every correctly classified sample attacked "
        "again at every budget); 'worst' is the per-sample worst case over the attacks, "
        "cumulative over budgets.",
    )
    corruptions = _note(
        _corruption_table(metrics),
        "Balanced error (one minus the mean per-class recall) of each model on each corruption "
        "and severity; each severity's strength was calibrated once so that the mean SSIM to "
        "the clean images is the listed value, and every model saw the same corrupted images.",
    )
    return [
        _finding_section(cmp),
        _ranking_section(metrics),
        ReportSection(title="Paired tests", body=pairs),
        ReportSection(title="Robust accuracy per attack and budget", body=attacks),
        ReportSection(title="Natural corruptions", body=corruptions),
    ]
