"""Turn per-sample records into the ``metrics.json`` document and pick report examples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust.evaluation.records import Records, wilson_interval
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm

if TYPE_CHECKING:
    from medrobust.evaluation.suite import AttackSpec
    from medrobust.reporting.io import ExampleImages

SCHEMA_VERSION = 1


def _nanmean(t: torch.Tensor) -> float | None:
    t = t[torch.isfinite(t)]
    return float(t.mean()) if t.numel() else None


def _version() -> str:
    from medrobust._version import __version__

    return __version__


def build_metrics(
    adapter: ModelAdapter,
    records: Records,
    specs: Sequence[AttackSpec],
    budgets: Sequence[float],
    norm: Norm,
    mode: str,
    checks: list[dict[str, Any]],
    examples: Sequence[ExampleImages],
    *,
    model_info: Mapping[str, Any] | None,
    data_info: Mapping[str, Any] | None,
    title: str | None,
    total_s: float,
) -> dict[str, Any]:
    """Assemble every number of the audit (schema version 1; see ``docs/metrics-schema.md``)."""
    from medrobust.metrics import ClassificationStats

    n = records.n
    correct = records.correct
    stats = ClassificationStats(num_classes=adapter.num_classes)
    stats.update(records.logits, records.labels)
    clean = {k: v for k, v in stats.compute().items()}
    clean["n"] = n
    clean["n_correct"] = int(correct.sum())
    for key in ("sensitivity", "specificity", "auc", "balanced_accuracy"):
        v = clean.get(key)
        clean[key] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
    from medrobust.evaluation.suite import attack_scopes

    scopes = attack_scopes(specs, mode)  # type: ignore[arg-type]
    results = []
    for a_i, spec in enumerate(specs):
        for e_i, e in enumerate(budgets):
            cell = records.cells[a_i][e_i]
            if scopes[a_i] == "unbroken":  # cumulative: this attack and every one before it
                by = records.worst_broken_by[e_i]
                robust = correct & ~((by >= 0) & (by <= a_i))
            else:
                robust = correct & ~cell.broken
            n_att = int((cell.attacked & correct).sum())
            n_broken = int((cell.broken & correct).sum())
            lo, hi = wilson_interval(int(robust.sum()), n)
            results.append(
                {
                    "attack": spec.name,
                    "scope": scopes[a_i],
                    "eps": e,
                    "eps_display": fmt_eps(e),
                    "robust_accuracy": float(robust.float().mean()),
                    "ci95": [lo, hi],
                    "attack_success_rate": n_broken / n_att if n_att else None,
                    "n": n,
                    "n_attacked": n_att,
                    "n_broken": n_broken,
                    "mean_linf": _nanmean(cell.linf),
                    "mean_l2": _nanmean(cell.l2),
                    "mean_ssim": _nanmean(cell.ssim),
                    "mean_psnr": _nanmean(cell.psnr),
                    "time_s": cell.time_s,
                }
            )
    worst = []
    for e_i, e in enumerate(budgets):
        by = records.worst_broken_by[e_i]
        robust = correct & (by < 0)
        lo, hi = wilson_interval(int(robust.sum()), n)
        worst.append(
            {
                "eps": e,
                "eps_display": fmt_eps(e),
                "robust_accuracy": float(robust.float().mean()),
                "ci95": [lo, hi],
                "broken_by": {spec.name: int((by == a_i).sum()) for a_i, spec in enumerate(specs)},
            }
        )
    card = dict(model_info or {})
    data = {
        "n": n,
        "class_names": adapter.class_names or [str(i) for i in range(adapter.num_classes)],
    }
    data.update(dict(data_info or {}))
    return {
        "schema_version": SCHEMA_VERSION,
        "medrobust_version": _version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "title": title or f"Robustness audit: {card.get('architecture', 'model')}",
        "model": {
            "name": str(card.get("architecture", "model")),
            "card": card,
            "input": adapter.describe(),
        },
        "data": data,
        "threat_model": {
            "norm": norm.value,
            "bounds": [adapter.bounds.low, adapter.bounds.high],
            "eps": list(budgets),
            "eps_display": [fmt_eps(e) for e in budgets],
            "mode": mode,
        },
        "clean": clean,
        "attacks": [{"name": s.name, "params": dict(s.params)} for s in specs],
        "results": results,
        "worst_case": worst,
        "checks": checks,
        "examples": [
            {
                "index": i,
                "id": ex.id,
                "label": ex.label,
                "clean_pred": ex.clean_pred,
                "adv_pred": ex.adv_pred,
                "attack": ex.attack,
                "eps": ex.eps,
                "file": None,
            }
            for i, ex in enumerate(examples)
        ],
        "timing": {
            "total_s": total_s,
            "attack_s": sum(r["time_s"] for r in results),
        },
    }


def select_examples(
    pool: list[dict[str, Any]],
    records: Records,
    specs: Sequence[AttackSpec],
    budgets: Sequence[float],
    n_examples: int,
    adapter: ModelAdapter,
) -> list[ExampleImages]:
    """Pick up to ``n_examples`` distinct broken samples, preferring the smallest budget at
    which each broke and alternating true classes, so the grid shows varied, hard cases."""
    from medrobust.reporting.io import ExampleImages

    if n_examples <= 0 or not pool:
        return []
    first: dict[int, dict[str, Any]] = {}
    for item in pool:
        cur = first.get(item["index"])
        if cur is None or item["eps_index"] < cur["eps_index"]:
            first[item["index"]] = item
    by_class: dict[int, list[dict[str, Any]]] = {}
    for item in sorted(first.values(), key=lambda it: (it["eps_index"], it["index"])):
        by_class.setdefault(item["label"], []).append(item)
    chosen: list[dict[str, Any]] = []
    while len(chosen) < n_examples and any(by_class.values()):
        for cls in sorted(by_class):
            if by_class[cls] and len(chosen) < n_examples:
                chosen.append(by_class[cls].pop(0))
    names = adapter.class_names or [str(i) for i in range(adapter.num_classes)]
    return [
        ExampleImages(
            clean=it["clean"].numpy(),
            adversarial=it["adversarial"].numpy(),
            label=it["label"],
            clean_pred=it["clean_pred"],
            adv_pred=it["adv_pred"],
            attack=specs[it["attack_index"]].name,
            eps=budgets[it["eps_index"]],
            id=str(it["id"]),
            class_names=list(names),
            eps_display=fmt_eps(budgets[it["eps_index"]]),
        )
        for it in chosen
    ]
