"""Figures and report sections of the defence study ("classification or detection?").

Everything here reads the study document that :func:`medrobust.pipelines.study.run_study` writes
as ``study.json``: the settings under ``metrics["study"]["config"]`` (``recipes``,
``fractions``, ``eps``, ``detector``, ``adaptive`` ...) and the ``"defenses"``, ``"detection"``
and ``"risk"`` rows, so the report can be rebuilt from the JSON alone.

References:
    Li, Pan & Zhu, "Defending against adversarial attacks on medical imaging AI system,
    classification or detection?", arXiv:2006.13555, 2020.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from medrobust._utils.format import fmt_eps
from medrobust.reporting.html import ReportSection, html_table, render_value

__all__ = [
    "detection_comparison_figure",
    "risk_comparison_figure",
    "robustness_figure",
    "study_sections",
]

_COLOURS = ("#7F7F7F", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _pct(f: float) -> str:
    return f"{100 * f:g}%"


def _grid(config: Mapping[str, Any], ylabel: str) -> tuple[Figure, list[Any]]:
    fractions = list(config["fractions"])
    n = len(fractions)
    fig = Figure(figsize=(3.6 * n + 2.2, 3.6), layout="constrained")
    axes = list(fig.subplots(1, n, squeeze=False)[0])
    for ax, f in zip(axes, fractions, strict=True):
        ax.set_title(f"{_pct(f)} labelled")
        ax.set_xlabel("budget ε")
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.grid(True, color="#DDDDDD", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_ylabel(ylabel)
    return fig, axes


def _eps_axis(ax: Any, config: Mapping[str, Any], with_zero: bool) -> None:
    ticks = ([0.0] if with_zero else []) + sorted(float(e) for e in config["eps"])
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0" if t == 0 else fmt_eps(t) for t in ticks], fontsize=8)


def _model_of(rows: Sequence[Mapping[str, Any]], recipe: str, fraction: float) -> Any:
    return next(
        (x for x in rows if x["recipe"] == recipe and x["labelled_fraction"] == fraction), None
    )


def robustness_figure(config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Worst-case robust accuracy against the budget, one panel per labelled fraction.

    Args:
        config: The study settings (``recipes``, ``fractions``, ``eps``).
        rows: The study's ``defenses`` rows.

    Returns:
        The figure (matplotlib object API, no pyplot); clean accuracy is drawn at ``eps = 0``.
    """
    fig, axes = _grid(config, "worst-case robust accuracy")
    budgets = sorted(float(e) for e in config["eps"])
    for ax, f in zip(axes, config["fractions"], strict=True):
        for k, recipe in enumerate(config["recipes"]):
            r = _model_of(rows, recipe, f)
            if r is None:
                continue
            ys = [r["clean_accuracy"], *[r["robust_accuracy"][fmt_eps(e)] for e in budgets]]
            ax.plot(
                [0.0, *budgets], ys, marker=_MARKERS[k % 7], color=_COLOURS[k % 7], label=recipe
            )
        _eps_axis(ax, config, True)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def risk_comparison_figure(
    config: Mapping[str, Any],
    risk: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
) -> Figure:
    """Classifier-only risk (solid) and system risk (dashed) per recipe and fraction.

    Args:
        config: The study settings (``recipes``, ``fractions``, ``eps``, ``adaptive``,
            ``detector``).
        risk: The study's ``risk`` rows.
        rows: The study's ``defenses`` rows.

    Returns:
        The figure; the dashed lines use the adaptive system risk when the study ran the
        adaptive attack.
    """
    fig, axes = _grid(config, "risk: P(wrong and undetected)")
    col = "system_risk_adaptive" if config["adaptive"] else "system_risk"
    for ax, f in zip(axes, config["fractions"], strict=True):
        for k, recipe in enumerate(config["recipes"]):
            model = _model_of(rows, recipe, f)
            key = None if model is None else model["model"]
            pts = sorted((r for r in risk if r["model"] == key), key=lambda r: r["eps"])
            if not pts:
                continue
            xs = [r["eps"] for r in pts]
            style = {"color": _COLOURS[k % 7], "marker": _MARKERS[k % 7]}
            ax.plot(xs, [r["classifier_risk"] for r in pts], label=f"{recipe}", **style)
            ax.plot(
                xs,
                [float(r[col]) for r in pts],
                linestyle="--",
                label=f"{recipe} + {config['detector']}",
                **style,
            )
        _eps_axis(ax, config, False)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def detection_comparison_figure(
    config: Mapping[str, Any],
    detection: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
) -> Figure:
    """Detection AUROC of the worst-case (solid) and adaptive (dashed) examples per model.

    Args:
        config: The study settings (``recipes``, ``fractions``, ``eps``, ``detector``).
        detection: The study's ``detection`` rows.
        rows: The study's ``defenses`` rows.

    Returns:
        The figure.
    """
    fig, axes = _grid(config, f"{config['detector']} detection AUROC")
    for ax, f in zip(axes, config["fractions"], strict=True):
        for k, recipe in enumerate(config["recipes"]):
            model = _model_of(rows, recipe, f)
            key = None if model is None else model["model"]
            for attack, style in (("worst-case", "-"), ("pgd-adaptive", "--")):
                pts = sorted(
                    (d for d in detection if d["model"] == key and d["attack"] == attack),
                    key=lambda d: d["eps"],
                )
                if not pts:
                    continue
                ax.plot(
                    [d["eps"] for d in pts],
                    [math.nan if d["auroc"] is None else d["auroc"] for d in pts],
                    color=_COLOURS[k % 7],
                    marker=_MARKERS[k % 7],
                    linestyle=style,
                    label=f"{recipe} ({'adaptive' if attack == 'pgd-adaptive' else 'suite'})",
                )
        ax.axhline(0.5, color="#999999", linestyle=":", linewidth=1.0)
        _eps_axis(ax, config, False)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def _defenses_section(
    config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> ReportSection:
    eps_keys = [fmt_eps(e) for e in sorted(float(e) for e in config["eps"])]
    table = []
    for r in rows:
        rec: dict[str, Any] = {
            "model": r["model"],
            "labels": f"{_pct(r['labelled_fraction'])} ({r['n_labelled']})",
            "unlabelled": r["n_unlabelled"],
            "epochs": r["epochs"],
            "train time (s)": round(r["wall_time_s"], 1),
            "cost vs standard": None if r["cost_ratio"] is None else round(r["cost_ratio"], 2),
            "clean acc.": round(r["clean_accuracy"], 3),
        }
        for k in eps_keys:
            rec[f"robust acc. {k}"] = round(r["robust_accuracy"][k], 3)
        rec["checks flagged"] = ", ".join(r["checks_flagged"]) or "none"
        table.append(rec)
    suite = "explicit attacks" if config["attacks"] else repr(config["suite"])
    intro = (
        f"Every model is a {config['model']} trained with the same loop and audited with the "
        f"same worst-case suite ({suite}, {config['norm']}). Adversarial recipes train at "
        f"eps={fmt_eps(config['train_eps'])}. "
        "Training cost is wall time on this machine; the ratio is to standard training at the "
        "same labelled fraction."
    )
    return ReportSection(
        title="Defences",
        body=Markup("<p>{}</p>").format(escape(intro)) + html_table(table),
        figures=[robustness_figure(config, rows)],
        captions=["Clean accuracy (eps = 0) and worst-case robust accuracy per budget."],
        key="defenses",
    )


def _round(v: Any) -> Any:
    return None if v is None else round(v, 3)


def _detection_section(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> ReportSection:
    rows = [
        {
            "model": d["model"],
            "attack": d["attack"],
            "eps": d["eps_display"],
            "AUROC": _round(d["auroc"]),
            "TPR at 5% FPR": _round(d["tpr_at_fpr"]),
            "detection rate": _round(d["detection_rate"]),
            "n adv.": d["n_adversarial"],
        }
        for d in metrics["detection"]
        if d["attack"] in ("worst-case", "pgd-adaptive")
    ]
    text = (
        f"Detector {config['detector']!r}, fitted on each model's clean training images without "
        f"labels and thresholded at {100 * config['fpr']:g}% clean false positives on the "
        "validation split. Rows: the audit's worst-case examples and the adaptive "
        "attack's misclassified examples (each model's audit report holds the rest)."
    )
    return ReportSection(
        title="Detection",
        body=Markup("<p>{}</p>").format(escape(text)) + html_table(rows),
        figures=[detection_comparison_figure(config, metrics["detection"], metrics["defenses"])],
        captions=["Detection AUROC against the budget (solid: suite; dashed: adaptive attack)."],
        key="detection",
    )


def _risk_section(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> ReportSection:
    rows = [
        {
            "model": r["model"],
            "eps": r["eps_display"],
            "classifier-only risk": round(r["classifier_risk"], 3),
            "system risk (non-adaptive)": round(r["system_risk"], 3),
            "system risk (adaptive)": _round(r["system_risk_adaptive"]),
            "clean false-alarm rate": round(r["false_alarm_rate"], 3),
        }
        for r in metrics["risk"]
    ]
    text = (
        "Risk is P(misclassified and not flagged). Classifier-only risk is one minus the "
        "audit's worst-case robust accuracy; the system columns put the detector in front."
    )
    summary = Markup("<ul>{}</ul>").format(
        Markup("").join(Markup("<li>{}</li>").format(s) for s in metrics["study"]["summary"])
    )
    return ReportSection(
        title="System risk",
        body=Markup("<p>{}</p>").format(escape(text)) + summary + html_table(rows),
        figures=[risk_comparison_figure(config, metrics["risk"], metrics["defenses"])],
        captions=[
            "Solid: classifier alone; dashed: classifier + detector under the adaptive attack."
        ],
        key="risk",
    )


def study_sections(metrics: Mapping[str, Any]) -> list[ReportSection]:
    """The "Defences", "Detection", "System risk" and "Study settings" sections of the study.

    Args:
        metrics: The study document (``study.json``): ``study.config``, ``study.summary``,
            ``defenses``, ``detection`` and ``risk``.

    Returns:
        The four sections, keyed ``"defenses"``, ``"detection"``, ``"risk"`` and ``"study"``.

    Raises:
        KeyError: If the document lacks one of those entries.
    """
    config = metrics["study"]["config"]
    settings = ReportSection(title="Study settings", body=render_value(config), key="study")
    return [
        _defenses_section(config, metrics["defenses"]),
        _detection_section(config, metrics),
        _risk_section(config, metrics),
        settings,
    ]
