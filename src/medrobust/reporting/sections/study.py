"""Figures and report sections of the defence study ("classification or detection?").

Everything here reads the study document that :func:`medrobust.pipelines.study.run_study` writes
as ``study.json``: the settings under ``metrics["study"]["config"]`` (``recipes``,
``fractions``, ``eps``, ``detectors``, ``adaptive`` ...), the answer under
``metrics["study"]["answer"]`` and the ``"defenses"``, ``"detection"``, ``"risk"`` and
``"plausibility"`` rows (risk, detection and plausibility rows name their ``model`` and
``detector``), so the report can be rebuilt from the JSON alone.

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
from medrobust.reporting.sections.risk import plausibility_section

__all__ = [
    "answer_section",
    "detection_comparison_figure",
    "risk_comparison_figure",
    "robustness_figure",
    "study_sections",
]

_COLOURS = ("#7F7F7F", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _pct(f: float) -> str:
    return f"{100 * f:g}%"


def _grid(
    config: Mapping[str, Any], ylabel: str, detectors: Sequence[str] = ("",)
) -> tuple[Figure, list[list[Any]]]:
    """One row of panels per detector (one row when none), one column per fraction."""
    fractions = list(config["fractions"])
    n, rows = len(fractions), len(detectors)
    fig = Figure(figsize=(3.6 * n + 2.2, 3.4 * rows + 0.2), layout="constrained")
    grid = [list(r) for r in fig.subplots(rows, n, squeeze=False)]
    for ax, (f, det) in zip(
        [a for r in grid for a in r], [(f, d) for d in detectors for f in fractions], strict=True
    ):
        ax.set_title(f"{_pct(f)} labelled" + (f", {det}" if det else ""))
        ax.set_xlabel("budget ε")
        ax.set_ylim(-0.02, 1.02)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.grid(True, color="#DDDDDD", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    for r in grid:
        r[0].set_ylabel(ylabel)
    return fig, grid


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
    fig, grid = _grid(config, "worst-case robust accuracy")
    axes = grid[0]
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
    """Classifier-only risk (solid) and system risk (dashed) per recipe, one row of panels per
    detector and one column per labelled fraction.

    Args:
        config: The study settings (``recipes``, ``fractions``, ``eps``, ``adaptive``,
            ``detectors``).
        risk: The study's ``risk`` rows (``model``, ``detector``, ``eps`` ...).
        rows: The study's ``defenses`` rows.

    Returns:
        The figure; the dashed lines use the adaptive system risk when the study ran the
        adaptive attacks.
    """
    detectors = list(config["detectors"])
    fig, grid = _grid(config, "risk: P(wrong and undetected)", detectors)
    col = "system_risk_adaptive" if config["adaptive"] else "system_risk"
    for axes, det in zip(grid, detectors, strict=True):
        for ax, f in zip(axes, config["fractions"], strict=True):
            for k, recipe in enumerate(config["recipes"]):
                model = _model_of(rows, recipe, f)
                key = None if model is None else model["model"]
                pts = sorted(
                    (r for r in risk if r["model"] == key and r["detector"] == det),
                    key=lambda r: r["eps"],
                )
                if not pts:
                    continue
                xs = [r["eps"] for r in pts]
                style = {"color": _COLOURS[k % 7], "marker": _MARKERS[k % 7]}
                ax.plot(xs, [r["classifier_risk"] for r in pts], label=f"{recipe}", **style)
                ax.plot(
                    xs,
                    [float(r[col]) for r in pts],
                    linestyle="--",
                    label=f"{recipe} + {det}",
                    **style,
                )
            _eps_axis(ax, config, False)
        axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return fig


def _strongest_auroc(
    detection: Sequence[Mapping[str, Any]], key: Any, det: str
) -> list[tuple[float, float]]:
    """Per budget, the lowest AUROC over the adaptive attacks of one model and detector."""
    by_eps: dict[float, float] = {}
    for d in detection:
        if d["model"] == key and d["detector"] == det and d.get("adaptive"):
            v = math.nan if d["auroc"] is None else float(d["auroc"])
            old = by_eps.get(float(d["eps"]))
            by_eps[float(d["eps"])] = v if old is None or math.isnan(old) else min(old, v)
    return sorted(by_eps.items())


def detection_comparison_figure(
    config: Mapping[str, Any],
    detection: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
) -> Figure:
    """Detection AUROC of the audit's worst-case examples (solid) and under the strongest
    adaptive attack (dashed: the lowest AUROC of the adaptive attacks at each budget), per
    recipe; one row of panels per detector, one column per labelled fraction.

    Args:
        config: The study settings (``recipes``, ``fractions``, ``eps``, ``detectors``).
        detection: The study's ``detection`` rows (``model``, ``detector``, ``attack``,
            ``adaptive``, ``eps``, ``auroc``).
        rows: The study's ``defenses`` rows.

    Returns:
        The figure.
    """
    detectors = list(config["detectors"])
    fig, grid = _grid(config, "detection AUROC", detectors)
    for axes, det in zip(grid, detectors, strict=True):
        for ax, f in zip(axes, config["fractions"], strict=True):
            for k, recipe in enumerate(config["recipes"]):
                model = _model_of(rows, recipe, f)
                key = None if model is None else model["model"]
                suite = sorted(
                    (float(d["eps"]), math.nan if d["auroc"] is None else float(d["auroc"]))
                    for d in detection
                    if d["model"] == key and d["detector"] == det and d["attack"] == "worst-case"
                )
                style = {"color": _COLOURS[k % 7], "marker": _MARKERS[k % 7]}
                for pts, line, what in (
                    (suite, "-", "suite"),
                    (_strongest_auroc(detection, key, det), "--", "adaptive"),
                ):
                    if pts:
                        ax.plot(
                            [p[0] for p in pts],
                            [p[1] for p in pts],
                            linestyle=line,
                            label=f"{recipe} ({what})",
                            **style,
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
            "detector": d["detector"],
            "attack": d["attack"] + (" (adaptive)" if d.get("adaptive") else ""),
            "eps": d["eps_display"],
            "AUROC": _round(d["auroc"]),
            "TPR at 5% FPR": _round(d["tpr_at_fpr"]),
            "detection rate": _round(d["detection_rate"]),
            "n adv.": d["n_adversarial"],
        }
        for d in metrics["detection"]
        if d["attack"] == "worst-case" or d.get("adaptive")
    ]
    names = ", ".join(repr(d) for d in config["detectors"])
    text = (
        f"Detectors {names}, each fitted on each model's clean training images without labels "
        f"and thresholded at {100 * config['fpr']:g}% clean false positives on the validation "
        "split. Rows: the audit's worst-case examples, which ignore the detector (non-adaptive), "
        "and the misclassified examples of every adaptive attack, which knows it (each model's "
        "audit report holds the rest)."
    )
    return ReportSection(
        title="Detection",
        body=Markup("<p>{}</p>").format(escape(text)) + html_table(rows),
        figures=[detection_comparison_figure(config, metrics["detection"], metrics["defenses"])],
        captions=[
            "Detection AUROC against the budget (solid: the suite's worst case; dashed: the "
            "strongest adaptive attack, i.e. the lowest AUROC over them)."
        ],
        key="detection",
    )


def _pair(r: Mapping[str, Any]) -> Any:
    adaptive = r.get("pair_risk_adaptive")
    return _round(r.get("pair_risk") if adaptive is None else adaptive)


def _risk_section(config: Mapping[str, Any], metrics: Mapping[str, Any]) -> ReportSection:
    rows = [
        {
            "model": r["model"],
            "detector": r["detector"],
            "eps": r["eps_display"],
            "classifier-only risk": round(r["classifier_risk"], 3),
            "system risk (non-adaptive)": round(r["system_risk"], 3),
            "system risk (adaptive)": _round(r["system_risk_adaptive"]),
            "pair risk": _pair(r),
            "clean false-alarm rate": round(r["false_alarm_rate"], 3),
        }
        for r in metrics["risk"]
    ]
    text = (
        "System risk is P(misclassified and not flagged). Classifier-only risk is one minus the "
        "audit's worst-case robust accuracy; the system columns put the detector in front. The "
        "pair risk also counts every clean test image that is misclassified or flagged (a false "
        "alarm at the measured rate), under the strongest attack measured."
    )
    return ReportSection(
        title="System risk",
        body=Markup("<p>{}</p>").format(escape(text)) + html_table(rows),
        figures=[risk_comparison_figure(config, metrics["risk"], metrics["defenses"])],
        captions=[
            "Solid: classifier alone; dashed: classifier + detector under the adaptive attacks."
        ],
        key="risk",
    )


_ANSWER_TEXT = (
    "Every way to defend the classifier at each labelled fraction, at eps={eps}: nothing "
    "(standard training), retrain (a robust recipe), detect (standard training with a "
    "detector) or both. Risk is the pair risk: the share of test images misclassified or "
    "flagged while clean (false alarms at the measured rate count as failures), or carried "
    "past classifier and detector by the strongest attack measured (per image the worst case "
    "of the suite and every adaptive attack); without a detector it is the classifier-only "
    "risk. Cost is the training wall time plus the detector's fitting time on this machine. "
    "Target risk: {target:g}."
)


def answer_section(metrics: Mapping[str, Any]) -> ReportSection:
    """The study's answer: one sentence per labelled fraction naming the cheapest option that
    reaches the target risk (or saying none does), and every option's risk and cost.

    Args:
        metrics: The study document; reads ``study.answer`` (``sentences``, ``options``,
            ``target_risk``, ``eps_display``).

    Returns:
        A section titled "Answer: retrain, detect or both?".

    Raises:
        KeyError: If the document has no answer.
    """
    answer = metrics["study"]["answer"]
    rows = [
        {
            "labels": _pct(o["labelled_fraction"]),
            "kind": o["kind"],
            "option": o["option"],
            "risk": round(o["risk"], 3),
            "reaches target": "yes" if o["risk"] <= answer["target_risk"] + 1e-12 else "no",
            "system risk": round(o["system_risk"], 3),
            "false alarms": round(o["false_alarm_rate"], 3),
            "strongest attack": o["attack"],
            "cost (s)": round(o["cost_s"], 1),
            "plausible (MR202)": "-" if o["implausible"] is None else
            ("no" if o["implausible"] else "yes"),
        }
        for o in answer["options"]
    ]  # fmt: skip
    sentences = Markup("").join(
        Markup("<p><strong>{}</strong></p>").format(s) for s in answer["sentences"]
    )
    text = _ANSWER_TEXT.format(eps=answer["eps_display"], target=answer["target_risk"])
    return ReportSection(
        title="Answer: retrain, detect or both?",
        body=sentences + Markup("<p>{}</p>").format(escape(text)) + html_table(rows),
    )


def study_sections(metrics: Mapping[str, Any]) -> list[ReportSection]:
    """The "Answer", "Defences", "Detection", "System risk", "Plausibility" and "Study
    settings" sections of the study.

    Args:
        metrics: The study document (``study.json``): ``study.config``, ``study.answer``,
            ``defenses``, ``detection``, ``risk`` and ``plausibility``.

    Returns:
        The six sections; all but the answer are keyed (``"defenses"``, ``"detection"``,
        ``"risk"``, ``"plausibility"``, ``"study"``).

    Raises:
        KeyError: If the document lacks one of those entries.
    """
    config = metrics["study"]["config"]
    settings = ReportSection(title="Study settings", body=render_value(config), key="study")
    return [
        answer_section(metrics),
        _defenses_section(config, metrics["defenses"]),
        _detection_section(config, metrics),
        _risk_section(config, metrics),
        plausibility_section(
            metrics["plausibility"], title="Plausibility of the detectors (Tramer)"
        ),
        settings,
    ]
