"""The report sections of a segmentation audit: Dice against the budget, overlays of clean and
attacked masks, the tables of untargeted and targeted attacks, the worst case and the noise
baselines.

Reads the ``"segmentation"`` dictionary of :func:`medrobust.evaluation.evaluate_segmentation`
and its examples (:class:`medrobust._utils.examples.SegmentationExample`); never imports the
evaluation.

References:
    Ozbulak et al., MICCAI 2019; Paschali et al., MICCAI 2018.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medrobust._utils.examples import SegmentationExample
from medrobust._utils.format import fmt_eps
from medrobust.reporting.sections.segmentation_worst import outline_figure, worst_metrics_table

__all__ = ["dice_budget_figure", "overlay_figure", "report_sections"]


def _f(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.3f}"


_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")


def _plain(text: object) -> str:
    return str(text).replace("$", r"\$")


def dice_budget_figure(metrics: Mapping[str, Any]) -> Figure:
    """Mean Dice against the budget for every untargeted attack, starting at the clean Dice.

    Args:
        metrics: The ``"segmentation"`` entry of the metrics (``clean`` and ``untargeted``).

    Returns:
        A matplotlib figure.
    """
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    clean = (metrics.get("clean") or {}).get("mean_dice")
    rows = list(metrics.get("untargeted") or [])
    names: dict[str, None] = {}
    for r in rows:
        names.setdefault(str(r["attack"]), None)
    for i, name in enumerate(names):
        pts = sorted(
            (float(r["eps"]), float(r["mean_dice"]))
            for r in rows
            if r["attack"] == name and r.get("mean_dice") is not None
        )
        if clean is not None:
            pts = [(0.0, float(clean)), *pts]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", color=_COLOURS[i % len(_COLOURS)], label=_plain(name))
    if clean is not None:
        ax.axhline(float(clean), color="black", linestyle="--", linewidth=1, label="clean")
    budgets = sorted({float(r["eps"]) for r in rows})
    if budgets:
        ax.set_xticks([0.0, *budgets], ["0", *(fmt_eps(e) for e in budgets)])
    ax.set_xlabel("budget ε")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, color="#DDDDDD", linewidth=0.8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if names or clean is not None:
        ax.legend(loc="best", frameon=False, fontsize=9)
    return fig


def _slice_index(mask: np.ndarray) -> int:
    """The slice (last axis) of a 3-D mask with the most foreground (middle if none)."""
    fg = (mask > 0).reshape(-1, mask.shape[-1]).sum(axis=0)
    return int(fg.argmax()) if fg.any() else mask.shape[-1] // 2


def _cut(a: np.ndarray, sl: int | None) -> np.ndarray:
    return a[..., sl] if sl is not None else a


def overlay_figure(
    examples: Sequence[SegmentationExample], num_classes: int, magnify: float | None = None
) -> Figure:
    """Image, true mask, clean prediction, adversarial prediction (and the target, for targeted
    attacks) overlaid in colour, and the perturbation magnified; one example per row.

    For 3-D volumes the slice of the last axis with the most foreground in the true mask is
    shown (a representative slice), and the row says which.

    Args:
        examples: The examples.
        num_classes: Number of classes (fixes the colours).
        magnify: Magnification of the perturbation (default: the power of two that makes the
            99th percentile of ``|delta|`` fill half the grey range; larger values saturate).

    Returns:
        A matplotlib figure.

    Raises:
        ValueError: If ``examples`` is empty.
    """
    from matplotlib.colors import ListedColormap

    if not examples:
        raise ValueError("overlay_figure needs at least one example")
    cmap = ListedColormap(
        ["#000000", *(_COLOURS * (1 + num_classes // len(_COLOURS)))][: max(num_classes, 2)]
    )
    # scale by the 99th percentile of |delta|: minimal-perturbation attacks concentrate a few
    # large changes, and the bulk of the perturbation would otherwise stay invisible
    peak = max(float(np.percentile(np.abs(e.adversarial - e.image), 99)) for e in examples)
    if magnify is None:
        magnify = float(2.0 ** math.floor(math.log2(0.5 / peak))) if peak > 0 else 1.0
    has_target = any(e.target is not None for e in examples)
    cols = ["image", "true mask", "clean prediction", "adversarial prediction"]
    if has_target:
        cols.insert(2, "target mask")
    cols.append(f"perturbation ×{magnify:g}")
    fig = Figure(figsize=(2.1 * len(cols), 2.2 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), len(cols), squeeze=False)
    for r, ex in enumerate(examples):
        img, adv = ex.image[0], ex.adversarial[0]
        masks = {
            "true mask": ex.mask,
            "clean prediction": ex.clean_pred,
            "adversarial prediction": ex.adv_pred,
            "target mask": ex.target,
        }
        note = ""
        sl: int | None = None
        if img.ndim == 3:
            sl = _slice_index(ex.mask)
            note = f" (slice {sl} of {img.shape[-1]})"

        lo, hi = float(min(img.min(), adv.min())), float(max(img.max(), adv.max()))
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if col.startswith("perturbation"):
                delta = _cut(adv - img, sl)
                ax.imshow(np.clip(0.5 + magnify * delta, 0, 1), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(_cut(img, sl), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
                m = masks.get(col)
                if m is not None:
                    mm = _cut(m, sl)
                    ax.imshow(
                        np.ma.masked_where(mm == 0, mm),
                        cmap=cmap,
                        vmin=0,
                        vmax=max(num_classes - 1, 1),
                        alpha=0.5,
                        interpolation="nearest",
                    )
            if r == 0:
                ax.set_title(_plain(col), fontsize=9)
        axes[r, 0].set_ylabel(_plain(ex.title + note), fontsize=8)
    return fig


def _class_table(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in stats.get("dice") or {}:
        rows.append(
            {
                "class": name,
                "Dice": stats["dice"].get(name),
                "IoU": stats["iou"].get(name),
                "HD95": (stats.get("hd95") or {}).get(name),
                "surface Dice": (stats.get("surface_dice") or {}).get(name),
            }
        )
    rows.append(
        {
            "class": "mean",
            "Dice": stats.get("mean_dice"),
            "IoU": stats.get("mean_iou"),
            "HD95": stats.get("mean_hd95"),
            "surface Dice": stats.get("mean_surface_dice"),
        }
    )
    return rows


def report_sections(
    metrics: Mapping[str, Any], examples: Mapping[str, Sequence[SegmentationExample]]
) -> list[Any]:
    """Report sections for a segmentation audit (tables, Dice-vs-budget curve, overlays,
    noise versus adversarial at matched SSIM).

    Args:
        metrics: The metrics of :func:`evaluate_segmentation`.
        examples: ``{"untargeted": [...], "targeted": [...]}``.

    Returns:
        A list of :class:`~medrobust.reporting.ReportSection`.
    """
    from medrobust.reporting.html import ReportSection

    seg = metrics["segmentation"]
    k = int(seg["num_classes"])
    unt = seg["untargeted"]
    figures: list[Any] = []
    captions: list[str] = []
    if unt:
        figures.append(dice_budget_figure(seg))
        captions.append("Mean Dice against the budget ε; the dashed line is the clean Dice.")
    if examples.get("untargeted"):
        figures.append(overlay_figure(examples["untargeted"], k))
        captions.append(
            "Image, true mask, clean prediction, adversarial prediction (largest budget of the "
            "first untargeted attack) and the magnified perturbation; for volumes a "
            "representative slice."
        )
    if examples.get("worst"):
        figures.append(outline_figure(examples["worst"], k))
        captions.append(
            "Worst-case examples: the samples with the lowest Dice under any attack at the "
            "largest budget, worst first. Green: the true mask's outline; blue, dashed: the "
            "clean prediction; red: the prediction under that attack; for volumes the slice "
            "with the most foreground."
        )
    body = _main_body(seg)
    sections = [
        ReportSection("Segmentation under attack", body, figures, captions, key="segmentation")
    ]
    if seg["targeted"]:
        tfig = [overlay_figure(examples["targeted"], k)] if examples.get("targeted") else []
        tcap = ["Targeted attack examples: the target mask is shown beside the predictions."]
        sections.append(
            ReportSection(
                "Targeted segmentation attacks", _targeted_body(seg), tfig, tcap[: len(tfig)]
            )
        )
    if seg["noise"]:
        sections.append(
            ReportSection(
                "Noise versus adversarial perturbations at matched SSIM", _noise_body(seg)
            )
        )
    return sections


def _main_body(seg: Mapping[str, Any]) -> Any:
    """Clean metrics per class, the untargeted attacks and the worst case per sample."""
    from markupsafe import Markup

    from medrobust.reporting.html import html_table

    clean = seg["clean"]
    unit = "mm" if clean.get("distance_unit") == "mm" else "voxels"
    tol = clean.get("surface_tolerance", 1.0)
    body = Markup("<h3>Clean segmentation</h3>") + Markup(
        "<p class='note'>Dice, IoU, HD95 and surface Dice per class with MONAI's semantics: a "
        "class absent from a ground-truth mask is left out of its means; HD95 (in {}) is "
        "undefined where the prediction or the truth of a class is empty; surface Dice: the "
        "share of both outlines within {} {} of the other (Nikolov et al., 2021). Pixel "
        "accuracy {}, on {} samples.</p>"
    ).format(unit, tol, unit, _f(clean.get("pixel_accuracy")), clean.get("n"))
    body += html_table(_class_table(clean))
    unt = seg["untargeted"]
    if unt:
        body += Markup("<h3>Untargeted attacks</h3>")
        body += html_table([_untargeted_row(r) for r in unt])
        body += Markup(
            "<p class='note'>A sample is broken when its mean foreground Dice under attack falls "
            "below {} of its own clean Dice (as Daza et al. count a volume as broken). Every "
            "sample with a clean Dice above 0 is attacked, however low its clean Dice "
            "({} of {} here); a sample at clean Dice 0 has nothing to break, is not attacked and "
            "enters the means with its clean values.</p>"
        ).format(
            seg.get("broken_fraction", 0.5), unt[0].get("n_attacked", "?"), unt[0].get("n", "?")
        )
    worst = seg.get("worst_case") or []
    if worst:
        body += Markup("<h3>Worst case per sample across the attacks</h3>")
        body += html_table([_worst_row(r) for r in worst])
        body += Markup(
            "<p class='note'>Worst Dice: per sample, the lowest mean foreground Dice any attack "
            "of the list reached at that budget, averaged over all samples; broken: the share of "
            "the attacked samples whose Dice fell below the fraction of their clean Dice under "
            "some attack; robust: the share of all samples attacked and never broken, with 95% "
            "Wilson intervals. {}</p>"
        ).format(_budget_note(seg))
    per_class = worst_metrics_table(seg)
    if per_class:
        body += Markup("<h3>Worst case per class: Dice, HD95 and surface Dice</h3>")
        body += html_table(per_class)
        body += Markup(
            "<p class='note'>For each sample the metrics of the attack that reached its "
            "lowest Dice at that budget (the clean ones where no attack lowered it), then "
            "averaged as the clean metrics are. A boundary that moves shows in HD95 and the "
            "surface Dice before the volume overlap falls.</p>"
        )
    lesions = _lesion_table(seg)
    if lesions:
        body += Markup("<h3>Lesions found, by size</h3>") + html_table(lesions)
        body += Markup(
            "<p class='note'>Connected components of each foreground class of the truth (full "
            "connectivity), binned by size in voxels. Recall: the share found (at least one voxel "
            "predicted as its class); false: predicted components matching no true one, per "
            "sample. Under attack, per sample the fewest found and the most false components of "
            "any attack at that budget. Mean Dice hides a missed small lesion; this table does "
            "not (Halmosi et al., 2024).</p>"
        )
    return body


def _lesion_table(seg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of component recall per size bin: clean, then the worst case per budget."""
    clean = seg.get("clean_lesions")
    if not clean:
        return []
    rows = [("clean", clean)]
    rows += [(f"worst case ε={r['eps_display']}", r.get("lesions")) for r in seg["worst_case"]]
    out = []
    for label, les in rows:
        if not les:
            continue
        row: dict[str, Any] = {"": label}
        for name, n, rec in zip(les["bins"], les["lesions"], les["recall"], strict=True):
            row[f"recall {name} (n={n})"] = rec
        row["false components"] = les["mean_false_components"]
        out.append(row)
    return out


def _budget_note(seg: Mapping[str, Any]) -> str:
    """What the attack list may spend: scheduling and iterations per sample and budget."""
    it = seg.get("iterations") or {}
    per = it.get("per_attack") or {}
    if not per:
        return ""
    parts = ", ".join(f"{k} {v if v is not None else '?'}" for k, v in per.items())
    sched = (
        "each attack ran only on the samples the earlier ones left unbroken (SEA-style scheduling)"
        if seg.get("scheduling") == "cascade"
        else "every attack ran on every attacked sample"
    )
    total = it.get("per_sample_and_budget")
    return (
        f"Iteration budget per sample and budget (steps x restarts, or queries): {parts}; at "
        f"most {total if total is not None else '?'} in all; {sched}."
    )


def _untargeted_row(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "attack": r["attack"],
        "ε": r["eps_display"],
        "mean Dice": r["mean_dice"],
        "mean IoU": r["mean_iou"],
        "mean HD95": r["mean_hd95"],
        "mean surface Dice": r.get("mean_surface_dice"),
        "pixel accuracy": r["pixel_accuracy"],
        "attacked": r.get("n_attacked"),
        "success rate": r["success_rate"],
        "mean steps": r.get("mean_steps"),
        "mean L∞": r["mean_linf"],
        "mean L2": r["mean_l2"],
        "mean L0": r.get("mean_l0"),
        "mean SSIM": r["mean_ssim"],
        "time (s)": r["time_s"],
    }


def _worst_row(r: Mapping[str, Any]) -> dict[str, Any]:
    lo, hi = r["ci95"]
    return {
        "ε": r["eps_display"],
        "worst Dice": r["mean_worst_dice"],
        "broken": r.get("broken_rate"),
        "robust": r["robust_rate"],
        "95% CI": f"{_f(lo)}–{_f(hi)}",
        "lowest Dice reached by": ", ".join(f"{k}: {v}" for k, v in r["lowered_by"].items()),
    }


def _targeted_body(seg: Mapping[str, Any]) -> Any:
    from markupsafe import Markup

    from medrobust.reporting.html import html_table

    tbody = html_table(
        [
            {
                "attack": r["attack"],
                "target": r["target"],
                "success rate": r["success_rate"],
                "target IoU": r["mean_target_iou"],
                "pixel accuracy vs target": r["mean_target_pixel_accuracy"],
                "pixel success": r.get("mean_pixel_success"),
                "Dice vs truth": r["mean_dice"],
                "mean L∞": r["mean_linf"],
                "mean L2": r["mean_l2"],
                "mean SSIM": r["mean_ssim"],
                "mean steps": r["mean_steps"],
                "time (s)": r["time_s"],
            }
            for r in seg["targeted"]
        ]
    )
    return tbody + Markup(
        "<p class='note'>Targeted attacks push the prediction toward a target mask: "
        "<code>background</code> erases every structure, <code>other</code> is another "
        "image's mask. Success: at most 1% of the pixels that had to change still disagree "
        "with the target. ASMA and DAG are minimal-perturbation attacks: their L2 and L∞ "
        "are results, not budgets.</p>"
    )


def _noise_body(seg: Mapping[str, Any]) -> Any:
    from markupsafe import Markup

    from medrobust.reporting.html import html_table

    noise_rows = seg["noise"]
    kinds = [c[5:] for c in noise_rows[0] if c.startswith("dice_") and c != "dice_adversarial"]
    table = []
    for r in noise_rows:
        row = {
            "attack": r["attack"],
            "ε": r["eps_display"],
            "SSIM": r["mean_ssim_adversarial"],
            "Dice adversarial": r["dice_adversarial"],
        }
        for kind in kinds:
            row[f"Dice {kind}"] = r[f"dice_{kind}"]
            row[f"SSIM {kind}"] = r[f"ssim_{kind}"]
        table.append(row)
    return html_table(table) + Markup(
        "<p class='note'>Each noise kind (Gaussian, Rician for MRI, speckle for ultrasound) is "
        "scaled per sample by bisection until its SSIM to the clean image matches that of the "
        "sample's adversarial example: at equal perceptibility, noise barely moves the Dice "
        "while the adversarial perturbation does (Paschali et al., 2018).</p>"
    )
