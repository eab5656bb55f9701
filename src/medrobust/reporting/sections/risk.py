"""Report sections and figures of a detector-guarded model: detection, system risk, defence.

Everything here reads the plain rows that ``RiskAssessment.to_metrics()``
(:mod:`medrobust.evaluation.risk`) writes into ``metrics.json`` (``"detection"`` and ``"risk"``)
and the training records of the ``"defense"`` entry, so a report can be rebuilt from the JSON
alone.

References:
    Li, Pan & Zhu, arXiv:2006.13555, 2020 (system risk of classification vs detection).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from medrobust._utils.format import fmt_eps
from medrobust.reporting.html import ReportSection, html_table

__all__ = [
    "defense_section",
    "detection_figure",
    "plausibility_section",
    "risk_figure",
    "risk_sections",
]

_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")

_DETECTION_TEXT = (
    "Detector {name!r} (threshold {threshold} at a clean false-positive rate of {fpr:g}% on "
    "{n_cal} calibration images; fitted on {n_fit} clean images). Positives are the successful "
    "adversarial examples of each attack; negatives all clean test images. Rows marked adaptive "
    "come from an attack that knows the detector."
)
_RISK_TEXT = (
    "System risk is the probability that an input is misclassified and not flagged by "
    "the detector. The non-adaptive column uses the audit's worst-case examples, which "
    "ignore the detector; the adaptive column is the per-sample worst case of those and "
    "of the adaptive attacks, which fool the classifier while keeping the detector score "
    "under its threshold. The false-alarm rate is the share of clean test images flagged "
    "(measured, with its Wilson 95% interval, beside the nominal rate of the threshold); "
    "every risk is at the measured rate. The pair risk also counts every clean input that is "
    "misclassified or flagged (a false alarm is an input the system does not classify), under "
    "the strongest attack measured: for a classifier alone it is the classifier-only risk."
)


def _round(v: Any, digits: int = 3) -> Any:
    if isinstance(v, float) and math.isfinite(v):
        return round(v, digits)
    return v


def _style(ax: Any) -> None:
    ax.grid(True, color="#DDDDDD", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _eps_ticks(ax: Any, pairs: Sequence[tuple[float, str]]) -> None:
    ticks = sorted(set(pairs))
    ax.set_xticks([t for t, _ in ticks])
    ax.set_xticklabels([label.replace("$", r"\$") for _, label in ticks])


def _eps_pairs(rows: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
    return [(float(r["eps"]), str(r.get("eps_display", fmt_eps(float(r["eps"]))))) for r in rows]


def risk_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Classifier-only risk, system risk (non-adaptive and adaptive) and the clean false-alarm
    rate against the budget (matplotlib object API, no pyplot).

    Args:
        rows: The ``"risk"`` rows of the metrics (``eps``, ``classifier_risk``,
            ``system_risk``, ``system_risk_adaptive``, ``false_alarm_rate``, optional
            ``eps_display``).
        title: Optional title.

    Returns:
        The figure.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("no risk rows to plot")
    pts = sorted(rows, key=lambda r: float(r["eps"]))
    xs = [float(r["eps"]) for r in pts]
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.add_subplot()
    series = (
        ("classifier_risk", "classifier only"),
        ("system_risk", "classifier + detector (non-adaptive attacks)"),
        ("system_risk_adaptive", "classifier + detector (adaptive attack)"),
    )
    for k, (key, label) in enumerate(series):
        ys = [r.get(key) for r in pts]
        if all(y is None for y in ys):
            continue
        ax.plot(
            xs,
            [math.nan if y is None else float(y) for y in ys],
            marker=_MARKERS[k],
            color=_COLOURS[k],
            linewidth=1.8,
            markersize=5,
            label=label,
        )
    far = [float(r["false_alarm_rate"]) for r in pts if r.get("false_alarm_rate") is not None]
    if far:
        ax.axhline(
            far[0],
            color="#444444",
            linestyle="--",
            linewidth=1.2,
            label=f"clean false-alarm rate ({100 * far[0]:.1f}%)",
        )
    _eps_ticks(ax, _eps_pairs(pts))
    ax.set_xlabel("budget ε")
    ax.set_ylabel("risk: P(wrong and undetected)")
    ax.set_ylim(-0.02, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    _style(ax)
    if title:
        ax.set_title(title.replace("$", r"\$"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def detection_figure(rows: Sequence[Mapping[str, Any]], fpr: float = 0.05) -> Figure:
    """Detection AUROC and TPR at ``fpr`` against the budget, one line per attack.

    Args:
        rows: The detection rows of the metrics (``attack``, ``eps``, ``auroc``,
            ``tpr_at_fpr``, optional ``eps_display``).
        fpr: The FPR of the TPR panel (for the axis label).

    Returns:
        The figure.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("no detection rows to plot")
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    names: dict[str, None] = {}
    for r in rows:
        names.setdefault(str(r["attack"]), None)
    for ax, key, label in (
        (axes[0], "auroc", "detection AUROC"),
        (axes[1], "tpr_at_fpr", f"TPR at {100 * fpr:g}% FPR"),
    ):
        for k, name in enumerate(names):
            pts = sorted((float(r["eps"]), r.get(key)) for r in rows if str(r["attack"]) == name)
            ys = [math.nan if v is None else float(v) for _, v in pts]
            ax.plot(
                [p[0] for p in pts],
                ys,
                marker=_MARKERS[k % len(_MARKERS)],
                color=_COLOURS[k % len(_COLOURS)],
                linewidth=1.6,
                markersize=5,
                label=name.replace("$", r"\$"),
            )
        _eps_ticks(ax, _eps_pairs(rows))
        ax.set_xlabel("budget ε")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        if key == "auroc":
            ax.axhline(0.5, color="#999999", linestyle=":", linewidth=1.0)
        _style(ax)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def _detection_section(detection: Mapping[str, Any]) -> ReportSection:
    d = detection.get("detector") or {}
    fpr = float(detection.get("fpr", 0.05))
    results = list(detection.get("results") or [])
    pct = f"{100 * fpr:g}%"
    rows = [
        {
            "attack": r["attack"] + (" (adaptive)" if r.get("adaptive") else ""),
            "eps": r["eps_display"],
            "AUROC": _round(r["auroc"]),
            f"TPR at {pct} FPR": _round(r["tpr_at_fpr"]),
            "detection rate": _round(r["detection_rate"]),
            "adversarial examples": r["n_adversarial"],
        }
        for r in results
    ]
    intro = _DETECTION_TEXT.format(
        name=d.get("name"),
        threshold=_round(d.get("threshold")),
        fpr=100 * float(d.get("fpr", fpr)),
        n_cal=d.get("n_calibration", "?"),
        n_fit=d.get("n_fit", "?"),
    )
    alarms = _false_alarm_text(detection.get("false_alarms") or {})
    return ReportSection(
        title="Detection",
        body=Markup("<p>{} {}</p>").format(escape(intro), escape(alarms)) + html_table(rows),
        figures=[detection_figure(results, fpr=fpr)],
        captions=[f"Detection AUROC and TPR at {pct} FPR against the budget, per attack."],
        key="detection",
    )


def _false_alarm_text(alarms: Mapping[str, Any]) -> str:
    """One sentence: the measured clean false-alarm rate beside the nominal one."""
    if alarms.get("measured") is None:
        return ""
    lo, hi = (100 * float(v) for v in alarms["ci95"])
    text = (
        f"Measured on {alarms['n']} clean test images, the false-alarm rate is "
        f"{100 * float(alarms['measured']):.1f}% (95% interval {lo:.1f}%-{hi:.1f}%) against a "
        f"nominal {100 * float(alarms['nominal']):g}%"
    )
    if alarms.get("consistent"):
        return text + "."
    return text + ": the threshold does not hold on new data (check MR201)."


def _ci(r: Mapping[str, Any]) -> str:
    ci = r.get("false_alarm_ci95")
    if not ci or any(v is None or not math.isfinite(float(v)) for v in ci):
        return "-"
    return f"{float(ci[0]):.3f}-{float(ci[1]):.3f}"


def _pair_risk(r: Mapping[str, Any]) -> Any:
    """The pair risk under the strongest attack measured (adaptive when it ran)."""
    adaptive = r.get("pair_risk_adaptive")
    return r.get("pair_risk") if adaptive is None else adaptive


def _risk_section(risk: Sequence[Mapping[str, Any]]) -> ReportSection:
    rows = [
        {
            "eps": r["eps_display"],
            "classifier-only risk": _round(r["classifier_risk"]),
            "system risk (non-adaptive)": _round(r["system_risk"]),
            "system risk (adaptive)": _round(r["system_risk_adaptive"]),
            "pair risk (false alarms counted)": _round(_pair_risk(r)),
            "clean false-alarm rate (measured)": _round(r["false_alarm_rate"]),
            "95% interval": _ci(r),
            "nominal": _round(r.get("nominal_false_alarm_rate")),
            **{
                f"system risk ({name})": _round(v)
                for name, v in (r.get("system_risk_by_attack") or {}).items()
            },
        }
        for r in risk
    ]
    return ReportSection(
        title="System risk",
        body=Markup("<p>{}</p>").format(escape(_RISK_TEXT)) + html_table(rows),
        figures=[risk_figure(risk)],
        captions=["Classifier-only and system risk against the budget."],
        key="risk",
    )


_PLAUSIBILITY_TEXT = (
    "Tramer's reduction (ICML 2022): a classifier + detector pair robust at eps yields a "
    "classifier robust at eps/2 with at least the same accuracy. The pair risk counts an input "
    "as lost when it is misclassified or flagged while clean (false alarms included) or when "
    "the strongest attack measured gets it past both; one minus it is the robust accuracy at "
    "eps/2 the claim implies. The reference is the best robust accuracy at eps/2 measured for "
    "a classifier (at the largest measured budget below eps/2 when eps/2 was not measured, an "
    "upper bound). A claim is implausible (check MR202) when even the lower end of its 95% "
    "interval exceeds the reference: the attacks on the detector were then most likely too "
    "weak."
)


def plausibility_section(
    rows: Sequence[Mapping[str, Any]], title: str = "Plausibility of the detector's robustness"
) -> ReportSection:
    """Tramer's plausibility comparison: per budget (and per model and detector when the rows
    name them) the implied robust accuracy at eps/2, the reference, and the flag.

    Args:
        rows: The ``"plausibility"`` rows (``eps_display``, ``half_eps_display``,
            ``implied_accuracy``, ``implied_ci95``, ``pair_accuracy_half``,
            ``reference_accuracy``, ``reference``, ``reference_eps``, ``adaptive``,
            ``implausible``; optionally ``model`` and ``detector``).
        title: Section title.

    Returns:
        A section keyed ``"plausibility"``.

    Raises:
        ValueError: If ``rows`` is empty.

    References:
        Tramer, "Detecting Adversarial Examples Is (Nearly) As Hard As Classifying Them",
        ICML 2022.
    """
    if not rows:
        raise ValueError("no plausibility rows to report")
    table = []
    for r in rows:
        lo, hi = r["implied_ci95"]
        ref_eps = float(r["reference_eps"])
        table.append(
            {
                **{k: r[k] for k in ("model", "detector") if k in r},
                "claim at eps": r["eps_display"]
                + ("" if r["adaptive"] else " (non-adaptive only)"),
                "implied robust acc. at eps/2": f"{r['implied_accuracy']:.3f} "
                f"({_round(lo)}-{_round(hi)})",
                "eps/2": r["half_eps_display"],
                "pair's own robust acc. at eps/2": _round(r["pair_accuracy_half"]),
                "reference": f"{r['reference']} (at "
                + ("clean" if ref_eps == 0 else fmt_eps(ref_eps))
                + ")",
                "reference robust acc.": _round(r["reference_accuracy"]),
                "plausible": "no (MR202)" if r["implausible"] else "yes",
            }
        )
    return ReportSection(
        title=title,
        body=Markup("<p>{}</p>").format(escape(_PLAUSIBILITY_TEXT)) + html_table(table),
        key="plausibility",
    )


def risk_sections(metrics: Mapping[str, Any]) -> list[ReportSection]:
    """The "Detection", "System risk" and (when the metrics hold its rows) "Plausibility"
    sections of a detector-guarded audit.

    Args:
        metrics: A metrics dictionary holding the ``"detection"`` entry (``detector``
            description, ``fpr``, per-attack ``results``), the ``"risk"`` rows and optionally
            the ``"plausibility"`` rows, as written by ``RiskAssessment.to_metrics()``.

    Returns:
        ``[detection, risk]`` sections, keyed ``"detection"`` and ``"risk"``, then the one keyed
        ``"plausibility"`` when there are such rows.

    Raises:
        ValueError: If either entry is missing or has no rows.
    """
    detection = metrics.get("detection")
    risk = metrics.get("risk")
    if not isinstance(detection, Mapping) or not detection.get("results"):
        raise ValueError("the metrics hold no 'detection' results to report")
    if not isinstance(risk, Sequence) or not risk:
        raise ValueError("the metrics hold no 'risk' rows to report")
    out = [_detection_section(detection), _risk_section(risk)]
    if metrics.get("plausibility"):
        out.append(plausibility_section(metrics["plausibility"]))
    return out


def defense_section(rows: Sequence[Mapping[str, Any]], title: str = "Defence") -> ReportSection:
    """A report section describing how the model(s) were trained, with the training cost.

    Args:
        rows: One record per model: ``recipe``, ``recipe_params``, ``labelled_fraction``,
            ``n_labelled``, ``n_unlabelled``, ``epochs``, ``wall_time_s`` and optionally
            ``cost_ratio`` (wall time over standard training's) and other columns.
        title: Section title.

    Returns:
        A :class:`~medrobust.reporting.html.ReportSection` keyed ``"defense"``.

    Raises:
        ValueError: If ``rows`` is empty.
    """
    if not rows:
        raise ValueError("no training records for the defence section")
    text = (
        "How each model was trained: the recipe and its parameters, the share of training "
        "labels used, and the training cost (wall time and epochs on this machine)."
    )
    return ReportSection(
        title=title,
        body=Markup("<p>{}</p>").format(escape(text)) + html_table([dict(r) for r in rows]),
        key="defense",
    )
