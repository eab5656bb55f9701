"""The report section of an explanation audit: overlays of clean and attacked Grad-CAM maps,
metric curves per budget and the result tables.

Reads the ``"explanations"`` dictionary of :func:`medrobust.evaluation.evaluate_explanations`
and its examples (any objects with ``image``, ``mask``, ``label``, ``clean_pred``, ``id``,
``clean_map`` and ``attacked``); never imports the evaluation.

References:
    Rasaee & Rivaz, "Explainable AI and susceptibility to adversarial attacks: a case study in
    classification of breast ultrasound images", IEEE IUS 2021.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medrobust._utils.format import fmt_eps

__all__ = ["explanation_section", "metric_curves", "overlay_figure"]


def _plain(text: object) -> str:
    return str(text).replace("$", r"\$")


def _class(names: Sequence[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


def _show_image(image: np.ndarray) -> np.ndarray:
    """A displayable view, min-max scaled to [0, 1] (inputs may have any bounds)."""
    arr = image.astype(np.float64)
    if arr.ndim == 4:  # 3-D volume (C, H, W, D): middle slice
        arr = arr[..., arr.shape[-1] // 2]
    arr = np.transpose(arr, (1, 2, 0)) if arr.shape[0] == 3 else arr[0]
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _show_map(m: np.ndarray) -> np.ndarray:
    arr = m[..., m.shape[-1] // 2] if m.ndim == 3 else m
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def overlay_figure(
    examples: Sequence[Any],
    class_names: Sequence[str] = (),
    eps: float | None = None,
) -> Figure:
    """Clean and attacked Grad-CAM maps over the image, with the lesion outline.

    One row per example: the image with the lesion outline (green), the clean map, then one
    column per attack at budget ``eps`` (default: the largest budget of the examples). Maps are
    min-max scaled for display; titles give the predicted class and the top-k intersection with
    the clean map.

    Args:
        examples: From :attr:`ExplanationResult.examples`.
        class_names: Names of the classes.
        eps: The budget to show.

    Returns:
        The figure (matplotlib object API, no pyplot).

    Raises:
        ValueError: If ``examples`` is empty or has no attacked map at ``eps``.
    """
    if not examples:
        raise ValueError("no examples to draw: evaluate_explanations kept none (n_examples=0?)")
    budgets = sorted({float(a["eps"]) for ex in examples for a in ex.attacked})
    if not budgets:
        raise ValueError("the examples hold no attacked maps")
    show_eps = budgets[-1] if eps is None else float(eps)
    attacks: list[str] = []
    for ex in examples:
        for a in ex.attacked:
            if math.isclose(a["eps"], show_eps) and a["attack"] not in attacks:
                attacks.append(a["attack"])
    if not attacks:
        raise ValueError(f"no attacked maps at eps={show_eps}; budgets present: {budgets}")
    ncols = 2 + len(attacks)
    fig = Figure(figsize=(2.3 * ncols, 2.45 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), ncols, squeeze=False)
    for r, ex in enumerate(examples):
        img = _show_image(ex.image)
        cmap = None if img.ndim == 3 else "gray"
        panels: list[tuple[str, np.ndarray | None]] = [
            (f"{_plain(ex.id)}\ntrue {_plain(_class(class_names, ex.label))}", None),
            (f"clean: {_plain(_class(class_names, ex.clean_pred))}", ex.clean_map),
        ]
        for name in attacks:
            rec = next(
                (
                    a
                    for a in ex.attacked
                    if a["attack"] == name and math.isclose(a["eps"], show_eps)
                ),
                None,
            )
            if rec is None:
                panels.append((f"{_plain(name)}: —", None))
                continue
            kept = "kept" if rec["adv_pred"] == ex.clean_pred else "changed"
            verdict = "attack succeeded" if rec["success"] else "attack failed"
            panels.append(
                (
                    f"{_plain(name)} {fmt_eps(show_eps)}: {verdict}\n"
                    f"{_plain(_class(class_names, rec['adv_pred']))} (label {kept}), top-k "
                    f"{rec['topk_intersection']:.2f}",
                    rec["map"],
                )
            )
        for c, (title, heat) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(img, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            if heat is not None:
                ax.imshow(_show_map(heat), cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
            if ex.mask is not None:
                m = ex.mask[..., ex.mask.shape[-1] // 2] if ex.mask.ndim == 3 else ex.mask
                if m.max() > 0 and m.min() < 1:
                    ax.contour(m.astype(float), levels=[0.5], colors="#00E000", linewidths=1.0)
            ax.set_title(title, fontsize=7.5)
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def metric_curves(metrics: Mapping[str, Any]) -> Figure:
    """Success rate, top-k intersection and lesion-hit ratio against the budget.

    One line per attack plus the random-noise baseline (dashed).

    Args:
        metrics: The ``"explanations"`` dict.

    Returns:
        The figure.

    Raises:
        ValueError: If the dict has no results.
    """
    results = list(metrics.get("results") or [])
    if not results:
        raise ValueError("metrics has no explanation results to plot")
    noise = list(metrics.get("noise") or [])
    panels = [
        ("success_rate", "attack success rate"),
        ("topk_intersection", "top-k intersection with clean map"),
        ("lesion_hit_adv", "Grad-CAM mass inside the lesion"),
    ]
    if not metrics.get("has_masks"):
        panels = panels[:2]
    fig = Figure(figsize=(4.0 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    colours = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")
    names = list(dict.fromkeys(str(r["attack"]) for r in results))
    eps_all = sorted({float(r["eps"]) for r in results})
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, name in enumerate(names):
            rows = sorted((r for r in results if r["attack"] == name), key=lambda r: r["eps"])
            xs = [float(r["eps"]) for r in rows if r.get(key) is not None]
            ys = [float(r[key]) for r in rows if r.get(key) is not None]
            ax.plot(xs, ys, marker="o", color=colours[i % len(colours)], label=_plain(name))
        if key != "success_rate" and noise:
            rows = sorted(noise, key=lambda r: r["eps"])
            xs = [float(r["eps"]) for r in rows if r.get(key) is not None]
            ys = [float(r[key]) for r in rows if r.get(key) is not None]
            ax.plot(xs, ys, marker="s", linestyle="--", color="#555555", label="random noise")
        if key == "lesion_hit_adv" and metrics.get("lesion_hit_clean") is not None:
            ax.axhline(
                float(metrics["lesion_hit_clean"]), color="#999999", linestyle=":", label="clean"
            )
        ax.set_xticks(eps_all)
        ax.set_xticklabels([fmt_eps(e) for e in eps_all], fontsize=8)
        ax.set_xlabel(f"budget ε ({metrics.get('norm', '')})")
        ax.set_title(label, fontsize=9)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, color="#DDDDDD", linewidth=0.8)
        ax.legend(fontsize=7, frameon=False)
    return fig


def _pct(v: Any) -> Any:
    return None if v is None else round(100.0 * float(v), 1)


def _round(v: Any, digits: int = 3) -> Any:
    return None if v is None else round(float(v), digits)


def explanation_section(
    metrics: Mapping[str, Any],
    examples: Sequence[Any] = (),
    class_names: Sequence[str] = (),
    *,
    title: str = "Explanations under attack",
) -> Any:
    """The report section of an explanation evaluation.

    Args:
        metrics: The ``"explanations"`` dict of :func:`evaluate_explanations`.
        examples: Examples for the overlay figure (none: no overlay).
        class_names: Names of the classes.
        title: Section heading.

    Returns:
        A :class:`medrobust.reporting.ReportSection` with ``key="explanations"`` (so the raw
        dict is not repeated under "Other results").

    Raises:
        ValueError: If ``metrics`` has no results.
    """
    from markupsafe import Markup, escape

    from medrobust.reporting.html import html_table

    results = list(metrics.get("results") or [])
    if not results:
        raise ValueError("metrics has no explanation results")
    noise_rows = _noise_rows(metrics)
    worst_rows = _worst_rows(metrics)
    body = Markup("").join(
        [
            _intro(metrics),
            Markup("<h3>Attacks per budget</h3>"),
            html_table(_attack_rows(results)),
            Markup("<h3>Worst case per sample across the attacks</h3>") if worst_rows else "",
            html_table(worst_rows) if worst_rows else Markup(""),
            Markup("<h3>Random noise of the same budget</h3>") if noise_rows else Markup(""),
            html_table(noise_rows) if noise_rows else Markup(""),
            Markup('<p class="note">{}</p>').format(escape(_NOTE)),
        ]
    )
    figures: list[Figure] = [metric_curves(metrics)]
    captions = ["Attack success and map metrics against the budget (dashed: random noise)."]
    if examples:
        figures.append(overlay_figure(examples, class_names))
        largest = fmt_eps(max(float(e) for e in metrics.get("eps") or [0.0]))
        captions.append(
            f"Clean and attacked Grad-CAM maps at ε = {largest} over the image; green: lesion."
        )
    from medrobust.reporting.html import ReportSection

    return ReportSection(
        title=title,
        body=body,
        figures=figures,
        captions=captions,
        key="explanations",
        anchor="explanations",
    )


_NOTE = (
    "top-k ∩: share of the clean map's top-k pixels still in the attacked map's top-k "
    "(1 = unchanged); Spearman: rank correlation of the maps; SSIM: structural similarity of the "
    "min-max scaled maps; CoM shift: distance between the maps' centres of mass; lesion hit: "
    "share of the map's mass inside the lesion mask; worst case: a sample counts as broken when "
    "any attack of the list reached its goal at that budget, and the worst top-k ∩ is the lowest "
    "any attack reached with the label kept."
)


def _intro(metrics: Mapping[str, Any]) -> Any:
    from markupsafe import Markup

    attacks = {a["name"]: a.get("label") for a in metrics.get("attacks") or []}
    thr = metrics.get("thresholds") or {}
    return Markup(
        "<p>Grad-CAM maps at layer <code>{layer}</code> of {n} correctly classified samples "
        "(of {total}; {undef} with an all-zero clean map were skipped) were attacked. "
        "<b>Label-kept</b> attacks ({kept}) succeed when the map moved (top-k intersection "
        "with the clean map, k = {k}, below {thr}) while the predicted class stayed the same: "
        "the case a reader cannot notice. <b>Label-changing</b> attacks ({changed}) succeed when "
        "the class changed and the map moved. A sample broken at a smaller budget is carried to "
        "the larger ones, not attacked again. Random noise of the same budget is the baseline. "
        "Green outlines show the lesion.</p>"
    ).format(
        layer=metrics.get("layer"),
        n=metrics.get("n_attacked"),
        total=metrics.get("n_samples"),
        undef=metrics.get("n_undefined_map"),
        kept=", ".join(n for n, lab in attacks.items() if lab == "kept") or "none",
        changed=", ".join(n for n, lab in attacks.items() if lab == "changed") or "none",
        k=metrics.get("k"),
        thr=thr.get("topk_threshold"),
    )


def _attack_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "attack": r["attack"],
            "ε": r["eps_display"],
            "n": r["n"],
            "success %": _pct(r["success_rate"]),
            "label kept %": _pct(r["label_kept_rate"]),
            "map moved %": _pct(r["map_moved_rate"]),
            "top-k ∩": _round(r["topk_intersection"]),
            "Spearman": _round(r["spearman"]),
            "SSIM": _round(r["map_ssim"]),
            "CoM shift px": _round(r["com_shift_px"], 2),
            "lesion hit clean": _round(r["lesion_hit_clean"]),
            "lesion hit adv": _round(r["lesion_hit_adv"]),
        }
        for r in sorted(results, key=lambda r: (r["attack"], r["eps"]))
    ]


def _worst_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "ε": r["eps_display"],
            "n": r["n"],
            "broken %": _pct(r["broken_rate"]),
            "95% CI": f"{_pct(r['ci95'][0])}–{_pct(r['ci95'][1])}",
            "worst top-k ∩ (label kept)": _round(r["worst_topk_intersection"]),
            "broken by": ", ".join(f"{k}: {v}" for k, v in (r.get("broken_by") or {}).items()),
        }
        for r in metrics.get("worst_case") or []
    ]


def _noise_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "ε": r["eps_display"],
            "n": r["n"],
            "label kept %": _pct(r["label_kept_rate"]),
            "map moved %": _pct(r["map_moved_rate"]),
            "top-k ∩": _round(r["topk_intersection"]),
            "Spearman": _round(r["spearman"]),
            "SSIM": _round(r["map_ssim"]),
            "CoM shift px": _round(r["com_shift_px"], 2),
            "lesion hit": _round(r["lesion_hit_adv"]),
        }
        for r in metrics.get("noise") or []
    ]
