"""The ``"explanations"`` part of ``metrics.json``, built from the per-sample records.

Schema::

    {"layer": str, "method": "gradcam", "k": 0.05, "norm": "linf", "eps": [..],
     "eps_display": [..], "steps": int, "seed": int, "n_samples": int, "n_correct": int,
     "n_attacked": int, "n_undefined_map": int, "has_masks": bool,
     "lesion_hit_clean": float | null,
     "thresholds": {"topk_threshold": 0.5, "min_shift_px": float},
     "attacks": [{"name": str, "label": "kept" | "changed", "params": {...}}],
     "results": [{"attack", "eps", "eps_display", "n", "success_rate", "label_kept_rate",
                  "map_moved_rate", "topk_intersection", "spearman", "pearson", "map_ssim",
                  "com_shift_px", "lesion_hit_clean", "lesion_hit_adv", "linf", "l2"}],
     "worst_case": [{"eps", "eps_display", "n", "broken_rate", "ci95",
                     "worst_topk_intersection", "broken_by"}],
     "noise":   [{"eps", "eps_display", "n", "label_kept_rate", "map_moved_rate",
                  "topk_intersection", "spearman", "pearson", "map_ssim", "com_shift_px",
                  "lesion_hit_adv"}]}

Rates and means are over the attacked samples (correctly classified, with a defined clean map);
averages skip undefined (NaN) values, e.g. the lesion-hit ratio of a map that vanished.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust.evaluation.records import CellRecord, Records, finite_mean, wilson_interval

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AuditContext
    from medrobust.evaluation.tasks.explanation import ExplanationTask

__all__ = ["summarise_explanations"]

_ROW_KEYS = {
    "label_kept_rate": "label_kept",
    "map_moved_rate": "moved",
    "topk_intersection": "topk_intersection",
    "spearman": "spearman",
    "pearson": "pearson",
    "map_ssim": "map_ssim",
    "com_shift_px": "com_shift_px",
}


def summarise_explanations(
    task: ExplanationTask, ctx: AuditContext, records: Records
) -> dict[str, Any]:
    """``{"explanations": {...}}`` (see the module docstring)."""
    eligible = records.eligible
    correct = records.correct
    hit = records.clean.get("lesion_hit_clean")
    probe = task.probe
    rules = task.rules(ctx.specs, ctx.built)
    doc: dict[str, Any] = {
        "layer": probe.layer or "(not resolved: no correctly classified sample)",
        "method": task.settings.method,
        "k": task.settings.k,
        "norm": ctx.norm.value,
        "eps": list(ctx.budgets),
        "eps_display": [fmt_eps(e) for e in ctx.budgets],
        "steps": task.settings.steps,
        "seed": ctx.seed,
        "n_samples": records.n,
        "n_correct": int(correct.sum()),
        "n_attacked": int(eligible.sum()),
        "n_undefined_map": int((correct & ~eligible).sum()),
        "has_masks": task.has_masks,
        "lesion_hit_clean": finite_mean(hit, eligible),
        "thresholds": {
            "topk_threshold": probe.topk_threshold,
            "min_shift_px": probe.shift_threshold(task.spatial) if task.spatial else None,
        },
        "attacks": [
            {
                "name": s.name,
                "label": rules[i],
                "params": {k: v for k, v in ctx.built[i][0].config().items() if k != "eps"},
            }
            for i, s in enumerate(ctx.specs)
        ],
        "results": [
            _row(ctx, records, records.cells[a_i][e_i], a_i, e_i, hit)
            for a_i in range(len(ctx.specs))
            for e_i in range(len(ctx.budgets))
        ],
        "worst_case": [_worst(ctx, records, e_i) for e_i in range(len(ctx.budgets))],
        "noise": _noise_rows(ctx, records),
    }
    return {"explanations": doc}


def _row(
    ctx: AuditContext,
    records: Records,
    cell: CellRecord,
    a_i: int,
    e_i: int,
    hit: torch.Tensor | None,
) -> dict[str, Any]:
    keep = cell.attacked & records.eligible
    x = cell.extra
    row: dict[str, Any] = {
        "attack": ctx.specs[a_i].name,
        "eps": ctx.budgets[e_i],
        "eps_display": fmt_eps(ctx.budgets[e_i]),
        "n": int(keep.sum()),
        "success_rate": finite_mean(x.get("success"), keep),
    }
    row.update({key: finite_mean(x.get(name), keep) for key, name in _ROW_KEYS.items()})
    with_mask = "lesion_hit_adv" in x
    row["lesion_hit_clean"] = finite_mean(hit, keep) if with_mask else None
    row["lesion_hit_adv"] = finite_mean(x.get("lesion_hit_adv"), keep)
    row["linf"] = finite_mean(x.get("linf_all"), keep)
    row["l2"] = finite_mean(x.get("l2_all"), keep)
    row["l0"] = finite_mean(x.get("l0_all"), keep)
    return row


def _worst(ctx: AuditContext, records: Records, e_i: int) -> dict[str, Any]:
    """The worst case per sample across the attack list: broken by any attack, and the
    lowest top-k intersection reached with the label kept."""
    eligible = records.eligible
    broken = records.broken_any(e_i)
    n = int(eligible.sum())
    hits = int((broken & eligible).sum())
    lo, hi = wilson_interval(hits, n)
    by = records.worst_broken_by[e_i]
    return {
        "eps": ctx.budgets[e_i],
        "eps_display": fmt_eps(ctx.budgets[e_i]),
        "n": n,
        "broken_rate": hits / n if n else None,
        "ci95": [lo, hi],
        "worst_topk_intersection": finite_mean(records.worst_score[e_i], eligible),
        "broken_by": {s.name: int((by == a_i).sum()) for a_i, s in enumerate(ctx.specs)},
    }


def _noise_rows(ctx: AuditContext, records: Records) -> list[dict[str, Any]]:
    out = []
    for j, e in enumerate(ctx.budgets):
        key = f"noise/{j}/"
        rows = {k[len(key) :]: v for k, v in records.extra.items() if k.startswith(key)}
        moved = rows.get("moved")
        keep = torch.isfinite(moved) if moved is not None else records.eligible & False
        row: dict[str, Any] = {"eps": e, "eps_display": fmt_eps(e), "n": int(keep.sum())}
        row.update({k: finite_mean(rows.get(name), keep) for k, name in _ROW_KEYS.items()})
        row["lesion_hit_adv"] = finite_mean(rows.get("lesion_hit_adv"), keep)
        out.append(row)
    return out
