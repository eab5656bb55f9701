"""The ``"segmentation"`` part of ``metrics.json``, built from the per-sample records.

Every figure is recomputed from per-sample rows (Dice, IoU, HD95 and surface Dice per class,
pixel counts), so a resumed audit reports exactly what an uninterrupted one does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust.evaluation.records import CellRecord, Records, finite_mean, rate_with_ci
from medrobust.metrics.lesions import LESION_SIZE_EDGES, size_bin_names

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AuditContext
    from medrobust.evaluation.tasks.segmentation import SegmentationTask

_STAT_KEYS = ("dice", "iou", "hd95", "surface_dice", "correct", "pixels", "hd95_undefined")

__all__ = ["summarise_segmentation"]


def summarise_segmentation(
    task: SegmentationTask, ctx: AuditContext, records: Records
) -> dict[str, Any]:
    """``{"segmentation": {...}}``: clean metrics, untargeted rows per attack and budget, the
    worst case per budget, targeted rows per attack and target kind, and noise baselines."""
    s = task.settings
    everyone = torch.ones(records.n, dtype=torch.bool)
    seg = {
        "num_classes": task.k,
        "class_names": task.class_names,
        "include_background": s.include_background,
        "broken_fraction": task.broken_fraction,
        "clean": stats_of(task, records.clean, everyone),
        "clean_lesions": lesion_summary(records.clean),
        "n_eligible": int(records.eligible.sum()),
        "untargeted": [
            _untargeted_row(task, ctx, records, a_i, e_i)
            for a_i in range(len(ctx.specs))
            for e_i in range(len(ctx.budgets))
        ],
        "worst_case": [_worst_row(task, ctx, records, e_i) for e_i in range(len(ctx.budgets))],
        "scheduling": ctx.mode,
        "iterations": iteration_budget(ctx),
        "targeted": [
            row
            for spec in s.targeted
            for kind in s.targets
            if (row := _targeted_row(task, records, spec.name, kind, spec.to_dict())) is not None
        ],
        "noise": _noise_rows(task, ctx, records),
    }
    return {"segmentation": seg}


def _merged_rows(records: Records, cell: CellRecord) -> dict[str, torch.Tensor]:
    """Per-sample rows under attack: the attacked samples' rows, the clean rows elsewhere."""
    out = {}
    attacked = cell.attacked
    for key, clean in records.clean.items():
        adv = cell.extra.get(key)
        if adv is None or clean.shape != adv.shape:  # nothing attacked: the clean rows
            out[key] = clean
            continue
        mask = attacked.view(-1, *([1] * (clean.ndim - 1)))
        out[key] = torch.where(mask, adv.to(clean.dtype), clean)
    return out


def _untargeted_row(
    task: SegmentationTask, ctx: AuditContext, records: Records, a_i: int, e_i: int
) -> dict[str, Any]:
    spec, e = ctx.specs[a_i], ctx.budgets[e_i]
    cell = records.cells[a_i][e_i]
    everyone = torch.ones(records.n, dtype=torch.bool)
    merged = _merged_rows(records, cell)
    st = stats_of(task, merged, everyone)
    n_broken = int((cell.broken & records.eligible).sum())
    n_att = int(cell.attacked.sum())
    success, _ = rate_with_ci(n_broken, n_att)
    return {
        "attack": spec.name,
        "params": dict(spec.params),
        "eps": e,
        "eps_display": fmt_eps(e),
        "n": records.n,
        "n_attacked": n_att,
        "n_broken": n_broken,
        "success_rate": success,
        "mean_steps": finite_mean(cell.extra.get("steps_all")),
        "mean_dice": st["mean_dice"],
        "dice": st["dice"],
        "mean_iou": st["mean_iou"],
        "iou": st["iou"],
        "mean_hd95": st.get("mean_hd95"),
        "mean_surface_dice": st.get("mean_surface_dice"),
        "pixel_accuracy": st["pixel_accuracy"],
        "mean_linf": finite_mean(cell.extra.get("linf_all")),
        "mean_l2": finite_mean(cell.extra.get("l2_all")),
        "mean_l0": finite_mean(cell.extra.get("l0_all")),
        "mean_ssim": finite_mean(cell.extra.get("ssim_all")),
        "lesions": lesion_summary(merged),
        "time_s": cell.time_s,
    }


def _worst_row(
    task: SegmentationTask, ctx: AuditContext, records: Records, e_i: int
) -> dict[str, Any]:
    """The worst case per sample across the attack list at one budget: the mean of each
    sample's lowest Dice, the share of the attacked samples broken (Dice below the fraction of
    their clean Dice), the share of all samples attacked and still unbroken, and under
    ``"metrics"`` the per-class Dice, IoU, HD95 and surface Dice of each sample's worst
    attack (the one that reached its lowest Dice)."""
    by = records.worst_broken_by[e_i]
    broken = records.eligible & records.broken_any(e_i)
    robust = records.eligible & ~records.broken_any(e_i)
    robust_rate, ci = rate_with_ci(int(robust.sum()), records.n)
    n_att = int(records.eligible.sum())
    broken_rate, broken_ci = rate_with_ci(int(broken.sum()), n_att)
    return {
        "eps": ctx.budgets[e_i],
        "eps_display": fmt_eps(ctx.budgets[e_i]),
        "mean_worst_dice": finite_mean(records.worst_score[e_i]),
        "n_attacked": n_att,
        "n_broken": int(broken.sum()),
        "broken_rate": broken_rate,
        "broken_ci95": broken_ci,
        "robust_rate": robust_rate,
        "ci95": ci,
        "lowered_by": {s.name: int((by == a_i).sum()) for a_i, s in enumerate(ctx.specs)},
        "metrics": stats_of(
            task, worst_metric_rows(records, e_i), torch.ones_like(records.eligible)
        ),
        "lesions": lesion_summary(_worst_lesion_rows(records, e_i)),
    }


def worst_metric_rows(records: Records, e_i: int) -> dict[str, torch.Tensor]:
    """Per-sample metric rows (Dice, IoU, HD95, surface Dice, pixel counts) of each sample's
    worst attack at budget ``e_i`` (``records.worst_broken_by``); the clean rows where no
    attack lowered the Dice."""
    by = records.worst_broken_by[e_i]
    out = {k: v.clone() for k, v in records.clean.items() if k in _STAT_KEYS}
    for a_i, row in enumerate(records.cells):
        pick = by == a_i
        if not bool(pick.any()):
            continue
        merged = _merged_rows(records, row[e_i])
        for key, value in out.items():
            mask = pick.view(-1, *([1] * (value.ndim - 1)))
            out[key] = torch.where(mask, merged[key].to(value.dtype), value)
    return out


def _worst_lesion_rows(records: Records, e_i: int) -> dict[str, torch.Tensor]:
    """Per sample and size bin, the fewest lesions found by any attack at budget ``e_i`` (the
    clean count where no attack ran), and the most false components."""
    if "lesions_found" not in records.clean:
        return {}
    found = records.clean["lesions_found"].clone()
    false = records.clean["false_components"].clone()
    for row in records.cells:
        merged = _merged_rows(records, row[e_i])
        found = torch.minimum(found, merged["lesions_found"].to(found.dtype))
        false = torch.maximum(false, merged["false_components"].to(false.dtype))
    return {"lesions": records.clean["lesions"], "lesions_found": found, "false_components": false}


def lesion_summary(rows: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Lesions per size bin over all samples, the share found (component recall, None for an
    empty bin) and the mean number of false components per sample; None without lesion rows."""
    if "lesions" not in rows or "lesions_found" not in rows:
        return None
    total = rows["lesions"].double().sum(dim=0)
    found = rows["lesions_found"].double().nan_to_num(0.0).sum(dim=0)
    recall = [float(f / t) if t > 0 else None for f, t in zip(found, total, strict=True)]
    return {
        "bins": size_bin_names(LESION_SIZE_EDGES),
        "lesions": [int(t) for t in total],
        "recall": recall,
        "mean_false_components": finite_mean(rows.get("false_components")),
    }


def attack_iterations(config: Mapping[str, Any]) -> int | None:
    """The iterations an attack may spend per sample, from its resolved configuration:
    ``steps x restarts`` for gradient engines, ``n_queries`` for random search (None if the
    configuration names neither)."""
    if "n_queries" in config:
        return int(config["n_queries"])
    if "steps" in config:
        return int(config["steps"]) * int(config.get("restarts", 1) or 1)
    return None


def iteration_budget(ctx: AuditContext) -> dict[str, Any]:
    """The budget of iterations of the attack list: per attack (forward or forward-backward
    passes per sample and budget) and in total, as the report states it."""
    per = {
        s.name: attack_iterations(row[0].config())
        for s, row in zip(ctx.specs, ctx.built, strict=True)
    }
    known = [v for v in per.values() if v is not None]
    return {"per_attack": per, "per_sample_and_budget": sum(known) if known else None}


def _targeted_row(
    task: SegmentationTask, records: Records, name: str, kind: str, params: dict[str, Any]
) -> dict[str, Any] | None:
    key = f"targeted/{name}/{kind}"
    inc = records.extra.get(f"{key}/included")
    if inc is None or not bool((inc == 1).any()):
        return None
    keep = inc == 1
    rows = {k.rsplit("/", 1)[-1]: v for k, v in records.extra.items() if k.startswith(key + "/")}
    st = stats_of(task, rows, keep)
    n = int(keep.sum())
    params = {k: v for k, v in params.items() if k != "name"}
    return {
        "attack": name,
        "params": params,
        "target": kind,
        "n": n,
        "success_rate": float(rows["success"][keep].sum()) / n,
        "mean_target_iou": finite_mean(rows["target_iou"][keep]),
        "mean_target_pixel_accuracy": finite_mean(rows["target_pixel_accuracy"][keep]),
        "mean_pixel_success": finite_mean(rows["pixel_success"][keep])
        if "pixel_success" in rows
        else None,
        "mean_steps": finite_mean(rows["steps"][keep]),
        "mean_dice": st["mean_dice"],
        "dice": st["dice"],
        "mean_iou": st["mean_iou"],
        "iou": st["iou"],
        "mean_hd95": st.get("mean_hd95"),
        "mean_surface_dice": st.get("mean_surface_dice"),
        "pixel_accuracy": st["pixel_accuracy"],
        "mean_linf": finite_mean(rows["linf"][keep]),
        "mean_l2": finite_mean(rows["l2"][keep]),
        "mean_ssim": finite_mean(rows["ssim"][keep]),
        "time_s": float(rows["time_s"][keep].sum()),
    }


def _noise_rows(
    task: SegmentationTask, ctx: AuditContext, records: Records
) -> list[dict[str, Any]]:
    kinds = task.settings.noise
    if not ctx.specs or not kinds:
        return []
    out = []
    for e_i, e in enumerate(ctx.budgets):
        inc = records.extra.get(f"noise/{e_i}/included")
        if inc is None or not bool((inc == 1).any()):
            continue
        keep = inc == 1
        cell = records.cells[0][e_i]
        row: dict[str, Any] = {
            "attack": ctx.specs[0].name,
            "eps": e,
            "eps_display": fmt_eps(e),
            "n": int(keep.sum()),
            "mean_ssim_adversarial": finite_mean(cell.extra.get("ssim_all", inc)[keep]),
            "dice_adversarial": stats_of(task, cell.extra, keep)["mean_dice"],
        }
        for kind in kinds:
            key = f"noise/{e_i}/{kind}/"
            rows = {k[len(key) :]: v for k, v in records.extra.items() if k.startswith(key)}
            row[f"dice_{kind}"] = stats_of(task, rows, keep)["mean_dice"]
            row[f"ssim_{kind}"] = finite_mean(rows["ssim"][keep])
            row[f"sigma_{kind}"] = finite_mean(rows["sigma"][keep])
            row[f"matched_{kind}"] = float(rows["reached"][keep].sum()) / int(keep.sum())
        out.append(row)
    return out


def stats_of(task: SegmentationTask, rows: Mapping[str, torch.Tensor], keep: torch.Tensor) -> Any:
    """:meth:`SegmentationStats.compute` of the per-sample ``rows`` where ``keep``."""
    stats = task.new_stats()
    if bool(keep.any()):
        stats.add_rows({k: v[keep] for k, v in rows.items() if k in _STAT_KEYS})
    return stats.compute()
