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
    rows: Sequence[Mapping[str, Any]],
    y_of: Any,
    y_ci_of: Any,
    labels: tuple[str, str, str],
) -> Figure:
    """The clean score (x, with its 95% interval) against another axis (y, with its interval
    where it has one), one marker per model; ``labels`` are the x metric, y label and title."""
    xlabel, ylabel, title = labels
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(rows):
        x = float(r["clean"])
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
    ax.set_xlabel(f"clean {xlabel} (95% interval)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if xlabel == "accuracy":
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    if "accuracy" in ylabel or "error" in ylabel:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.grid(True, color="#DDDDDD", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, loc="best")
    return fig


def _score(metric: str, v: Any) -> str:
    return _pct(v) if metric == "accuracy" else _num(v)


def _ranking_table(cmp: Mapping[str, Any]) -> Markup:
    rows = cmp["table"]
    metric = cmp.get("metric", "accuracy")
    corr = cmp.get("corruption_metric", "error")
    e = fmt_eps(cmp["headline_eps"])
    ranks = cmp["rankings"]
    out = []
    for r in rows:
        k = r["key"]
        rob = r["robust"][e]
        cells: dict[str, Any] = {
            "model": r["label"],
            "parameters": r["parameters"],
            "FLOPs": r["flops"],
            "train (s)": _num(r["train_time_s"]),
            f"clean {metric} [95% CI]": f"{_score(metric, r['clean'])} "
            + (_ci(r["clean_ci95"]) if metric == "accuracy" else _ci_num(r["clean_ci95"])),
            "rank clean": ranks[f"clean {metric}"][k],
            f"shifted {metric}": _score(metric, r["shifted"]),
            f"corruption {corr}": _score(metric, r["corruption"])
            if corr != "balanced error"
            else _pct(r["corruption"]),
            "relative to reference": _num(r["corruption_relative"]),
            f"robust {metric} @ {e}": _score(metric, rob["score"]),
            "rank robust": ranks.get(f"robust {metric} @ {e}", {}).get(k),
        }
        if metric == "accuracy":
            cells["median L2 to flip"] = _num(r["deepfool_l2_median"])
            cells["median L0 share"] = (
                _pct(r["jsma_l0_share_median"])
                if r["jsma_l0_share_median"] != "inf"
                else "not flipped"
            )
        out.append(cells)
    return html_table(out)


def _ci_num(ci: Any) -> str:
    if not ci or any(c is None for c in ci):
        return "–"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _pairs_table(cmp: Mapping[str, Any]) -> Markup:
    e = fmt_eps(cmp["headline_eps"])
    metric = cmp.get("metric", "accuracy")
    test = "McNemar" if metric == "accuracy" else "bootstrap"
    labels = {r["key"]: r["label"] for r in cmp["table"]}
    rob = {r["key"]: r["robust"][e]["score"] for r in cmp["table"]}

    def diff(v: float) -> str:
        return f"{100 * v:+.1f} pt" if metric == "accuracy" else f"{v:+.3f}"

    rows = []
    for p in cmp["pairs"]:
        t = p["robust_tests"][e]
        rows.append(
            {
                "model A": labels[p["a"]],
                "model B": labels[p["b"]],
                "clean A − B": diff(p["clean_difference"]),
                "clean intervals overlap": "yes" if p["comparable"] else "no",
                f"clean {test} p": _num(p["clean_test"]["p_value"]),
                f"robust A − B @ {e}": diff(rob[p["a"]] - rob[p["b"]]),
                f"robust {test} p": _num(t["p_value"]),
                "Holm p": _num(t["p_holm"]),
                "n": t["n"],
            }
        )
    return html_table(rows)


def _attack_table(metrics: Mapping[str, Any]) -> Markup:
    rows = []
    for doc in metrics["compare"]["models"]:
        metric = doc.get("metric", "accuracy")
        key = "robust_accuracy" if metric == "accuracy" else "mean_dice"
        cells: dict[str, Any] = {"model": doc["label"]}
        for r in doc["adversarial"]["results"]:
            cells[f"{r['attack']} @ {fmt_eps(r['eps'])}"] = _score(metric, r.get(key))
        for w in doc["robust"]:
            cells[f"worst @ {fmt_eps(w['eps'])}"] = _score(metric, w["score"])
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
            score = doc["corruptions"][key]["score"]
            cells[doc["label"]] = _pct(score) if doc["metric"] == "accuracy" else _num(score)
        rows.append(cells)
    return html_table(rows)


def _spearman_table(cmp: Mapping[str, Any]) -> Markup:
    metric = cmp.get("metric", "accuracy")
    return html_table(
        [
            {"axis": axis, f"Spearman rho with clean {metric}": _num(rho)}
            for axis, rho in cmp["spearman"].items()
        ]
    )


def _note(table: Markup, text: str) -> Markup:
    return Markup("{}<p class='note'>{}</p>").format(table, text)


def _finding_section(cmp: Mapping[str, Any]) -> ReportSection:
    e = fmt_eps(cmp["headline_eps"])
    metric = cmp.get("metric", "accuracy")
    how = (
        "the 95% Wilson intervals of their clean accuracy overlap. Robustness is compared with "
        "the exact McNemar test on the same attacked samples (robust when no attack broke it)"
        if metric == "accuracy"
        else "the 95% bootstrap intervals of their mean clean Dice overlap. Robustness is "
        "compared with the paired bootstrap of the per-sample worst-case Dice on the same "
        "attacked samples"
    )
    return ReportSection(
        title="Finding",
        body=Markup("<p><strong>{}</strong></p><p class='note'>{}</p>").format(
            cmp["finding"],
            f"Two models are of comparable generalizability when {how}, Holm-corrected over all "
            f"pairs, at the headline budget {e} (the middle budget of the list, fixed before "
            f"the run). A significant robust gap counts as a difference in robustness only when it "
            "is at least twice the pair's clean gap; a smaller one is robustness following the "
            f"clean score. Spearman's rho compares the ranking by clean {metric} with the ranking "
            f"by robust {metric}: near +1 when the best models on clean data are also the "
            "robust ones, near 0 or below when the clean score says nothing about robustness.",
        ),
        key="comparison",
    )


def _ranking_text(metric: str, corr: str) -> str:
    text = (
        f"Rank 1 is best. Shifted {metric}: the test split under another acquisition (for the "
        f"phantom, another scanner). Corruption {corr}: averaged over every corruption and its "
        "five SSIM-calibrated severities; 'relative to reference' divides it by the reference "
        "model's."
    )
    if metric == "accuracy":
        text += (
            " Median L2 to flip (DeepFool, unbounded) and median L0 share (JSMA, share of input "
            "values changed) are budget-free: larger means more robust; 'not flipped' means the "
            "attack flipped fewer than half of the samples."
        )
    return text


def _ranking_section(metrics: Mapping[str, Any]) -> ReportSection:
    cmp = metrics["comparison"]
    e = fmt_eps(cmp["headline_eps"])
    metric = cmp.get("metric", "accuracy")
    corr = cmp.get("corruption_metric", "error")
    rows = cmp["table"]
    skipped = metrics["compare"].get("corruptions_skipped") or {}
    skipped_note = (
        Markup("<p class='note'>Corruptions skipped: {}</p>").format(
            "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
        if skipped
        else Markup("")
    )
    figures = [
        scatter_figure(
            rows,
            lambda r: r["robust"][e]["score"],
            lambda r: r["robust"][e]["ci95"],
            (metric, f"robust {metric} at {e} (worst case)", "Generalizability vs robustness"),
        ),
        scatter_figure(
            rows,
            lambda r: r["corruption"],
            lambda r: None,
            (metric, f"mean {corr} under corruptions", "Generalizability vs corruptions"),
        ),
    ]
    return ReportSection(
        title="Ranking on every axis",
        body=Markup("{}{}{}").format(
            _note(_ranking_table(cmp), _ranking_text(metric, corr)),
            _spearman_table(cmp),
            skipped_note,
        ),
        figures=figures,
        captions=[
            f"Clean {metric} against worst-case robust {metric} at {e}, with 95% intervals.",
            f"Clean {metric} against the mean {corr} under natural corruptions.",
        ],
    )


def compare_sections(metrics: Mapping[str, Any]) -> list[ReportSection]:
    """The sections of a comparison report, the finding first."""
    cmp = metrics["comparison"]
    metric = cmp.get("metric", "accuracy")
    unit = "correctness" if metric == "accuracy" else "Dice"
    pairs = _note(
        _pairs_table(cmp),
        f"Each pair is tested on the same samples: clean {unit} on the whole test split, "
        f"robust {unit} on the attacked samples. p-values below 0.05 after Holm's correction "
        "mark a significant difference.",
    )
    attacks = _note(
        _attack_table(metrics),
        f"Each attack's own {metric} at each budget; 'worst' is the per-sample worst case over "
        "the attacks, cumulative over budgets.",
    )
    what = (
        "Balanced error (one minus the mean per-class recall)"
        if metric == "accuracy"
        else "Mean foreground Dice"
    )
    corruptions = _note(
        _corruption_table(metrics),
        f"{what} of each model on each corruption and severity; each severity's strength was "
        "calibrated once so that the mean SSIM to the clean images is the listed value, and "
        "every model saw the same corrupted images.",
    )
    return [
        _finding_section(cmp),
        _ranking_section(metrics),
        ReportSection(title="Paired tests", body=pairs),
        ReportSection(title=f"Robust {metric} per attack and budget", body=attacks),
        ReportSection(title="Natural corruptions", body=corruptions),
    ]
