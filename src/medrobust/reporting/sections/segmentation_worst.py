"""What the clinician sees of a segmentation audit's worst case: the lesion outlines of the
worst-case examples and the per-class Dice, HD95 and surface Dice of each sample's worst attack.

Reads the ``"segmentation"`` dictionary of the metrics and the worst-case examples
(:class:`medrobust._utils.examples.SegmentationExample`); never imports the evaluation.

References:
    Nikolov et al., J. Med. Internet Res. 2021 (surface Dice); Halmosi et al., ECCV 2024
    (per-object robustness hidden by mean metrics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from medrobust._utils.examples import SegmentationExample
from medrobust.data.volume_io import display_slice

__all__ = ["outline_figure", "worst_metrics_table"]

_TRUTH, _CLEAN, _ATTACKED = "#00C853", "#2979FF", "#FF1744"


def _slice_of(mask: np.ndarray) -> int:
    """The slice (last axis) of a 3-D mask with the most foreground (middle if none)."""
    fg = (mask > 0).reshape(-1, mask.shape[-1]).sum(axis=0)
    return int(fg.argmax()) if fg.any() else mask.shape[-1] // 2


def _outline(ax: Any, mask: np.ndarray, num_classes: int, colour: str, style: str) -> None:
    """Draw the boundary of every foreground class of ``mask`` (2-D) as contour lines."""
    for c in range(1, max(num_classes, 2)):
        region = (mask == c).astype(float)
        if region.any() and not region.all():
            ax.contour(region, levels=[0.5], colors=[colour], linewidths=1.2, linestyles=style)


def outline_figure(examples: Sequence[SegmentationExample], num_classes: int) -> Figure:
    """The worst-case examples with the lesion outlines, one example per row.

    Left: the clean image with the outline of the true mask (green) and of the clean
    prediction (blue, dashed). Right: the attacked image with the true outline and the
    outline of the prediction under attack (red). For 3-D volumes the axial slice (last axis)
    with the most foreground in the true mask is shown and named, in radiological orientation
    (:func:`medrobust.data.volume_io.display_slice`: anterior up, the patient's right on the
    left).

    Args:
        examples: The examples (at least one), worst first.
        num_classes: Number of classes ``K`` (each foreground class is outlined).

    Returns:
        A matplotlib figure.

    Raises:
        ValueError: If ``examples`` is empty.
    """
    if not examples:
        raise ValueError("outline_figure needs at least one example")
    fig = Figure(figsize=(5.6, 2.6 * len(examples) + 0.5), layout="constrained")
    axes = fig.subplots(len(examples), 2, squeeze=False)
    for r, ex in enumerate(examples):
        img, adv = ex.image[0], ex.adversarial[0]
        masks: tuple[np.ndarray, ...] = (ex.mask, ex.clean_pred, ex.adv_pred)
        note = ""
        if img.ndim == 3:  # volumes are RAS (medrobust's readers): radiological display
            sl = _slice_of(ex.mask)
            img, adv = display_slice(img, 2, sl), display_slice(adv, 2, sl)
            masks = tuple(display_slice(m, 2, sl) for m in masks)
            note = f" (axial slice {sl} of {ex.image.shape[-1]})"
        truth, clean, attacked = masks
        lo, hi = float(min(img.min(), adv.min())), float(max(img.max(), adv.max()))
        hi = hi if hi > lo else lo + 1
        for c, (picture, pred, colour) in enumerate(
            ((img, clean, _CLEAN), (adv, attacked, _ATTACKED))
        ):
            ax = axes[r, c]
            ax.imshow(picture, cmap="gray", vmin=lo, vmax=hi)
            _outline(ax, truth, num_classes, _TRUTH, "solid")
            _outline(ax, pred, num_classes, colour, "dashed" if c == 0 else "solid")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else "under attack", fontsize=9)
        axes[r, 0].set_ylabel(str(ex.title + note).replace("$", r"\$"), fontsize=8)
    handles = [
        Line2D([0], [0], color=_TRUTH, label="true mask"),
        Line2D([0], [0], color=_CLEAN, linestyle="dashed", label="clean prediction"),
        Line2D([0], [0], color=_ATTACKED, label="prediction under attack"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False, fontsize=8)
    return fig


def worst_metrics_table(seg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows of the worst case's metrics per budget and class: Dice, IoU, HD95 and surface
    Dice of each sample's worst attack (``worst_case[i]["metrics"]``), beside the clean ones.

    Args:
        seg: The ``"segmentation"`` entry of the metrics.

    Returns:
        Table rows (empty when the metrics hold no per-class worst case).
    """
    clean = seg.get("clean") or {}
    unit = "mm" if clean.get("distance_unit") == "mm" else "voxels"
    tol = clean.get("surface_tolerance")
    nsd = f"surface Dice (τ={tol:g} {unit})" if isinstance(tol, (int, float)) else "surface Dice"
    labelled = [("clean", clean)]
    labelled += [
        (f"worst case ε={r['eps_display']}", r["metrics"])
        for r in seg.get("worst_case") or []
        if r.get("metrics")
    ]
    if len(labelled) == 1:
        return []
    rows = []
    for label, st in labelled:
        for name in [*(st.get("dice") or {}), "mean"]:
            mean = name == "mean"
            rows.append(
                {
                    "": label,
                    "class": name,
                    "Dice": st.get("mean_dice") if mean else st["dice"].get(name),
                    "IoU": st.get("mean_iou") if mean else (st.get("iou") or {}).get(name),
                    f"HD95 ({unit})": st.get("mean_hd95")
                    if mean
                    else (st.get("hd95") or {}).get(name),
                    nsd: st.get("mean_surface_dice")
                    if mean
                    else (st.get("surface_dice") or {}).get(name),
                }
            )
    return rows
