"""The classification task of the audit loop: labels, robust accuracy, worst case per sample.

A sample is eligible when it is correctly classified; an attack breaks it when the predicted
label changes (untargeted). Its score is 1 while the label is kept and 0 once it changed, so the
worst case across the attack list is "any attack changed the label".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from medrobust._utils.examples import ExampleImages
from medrobust._utils.format import fmt_eps
from medrobust.attacks.engine import Attack
from medrobust.attacks.presets import create_attack
from medrobust.attacks.result import AttackResult
from medrobust.evaluation.records import Records, finite_mean, wilson_interval
from medrobust.evaluation.tasks.base import (
    AttackOutcome,
    AuditTask,
    Batch,
    CleanOutcome,
    as_index_tensor,
    check_finite_outputs,
    read_pair,
)
from medrobust.metrics import ClassificationStats
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AttackSpec, AuditContext

__all__ = ["ClassificationTask", "select_examples"]

logger = logging.getLogger(__name__)


class ClassificationTask(AuditTask):
    """Untargeted attacks on a classifier's label (see the module docstring)."""

    name = "classification"
    attack_task = "classification"
    eligible_noun = "correctly classified samples"
    per_attack = "own"

    def read_batch(self, batch: Any) -> Batch:
        x, y, ids = read_pair(batch, "label")
        return Batch(x, as_index_tensor(y, "labels").reshape(-1), ids)

    def check(self, adapter: ModelAdapter, batch: Batch) -> None:
        adapter.check_input(batch.x)
        adapter.check_labels(batch.target, len(batch))

    def clean(self, adapter: ModelAdapter, batch: Batch) -> CleanOutcome:
        with torch.no_grad():
            logits = adapter(batch.x)
        check_finite_outputs(adapter, logits)
        pred = logits.argmax(dim=1)
        correct = pred == batch.target
        return CleanOutcome(
            eligible=correct,
            score=correct.double(),
            record={"label": batch.target, "logits": logits.float()},
            pred=pred,
        )

    def outcome(self, adapter: ModelAdapter, batch: Batch, result: AttackResult) -> AttackOutcome:
        broken = result.success
        return AttackOutcome((~broken).double(), broken)

    def noise_broken(
        self, adapter: ModelAdapter, batch: Batch, x_noisy: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            return adapter(x_noisy).argmax(dim=1) != batch.target

    def gradient_loss(self, adapter: ModelAdapter, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(adapter(x), batch.target, reduction="sum")

    def probe_attack(self, eps: float, norm: Norm, seed: int) -> Attack:
        return create_attack("pgd", eps=eps, norm=norm.value, steps=50, restarts=2, seed=seed)

    def extra_checks(self, ctx: AuditContext, records: Records) -> list[dict[str, Any]]:
        """MR107: clean accuracy above the majority-class rate, and more than one class
        predicted (when the labels hold several)."""
        from medrobust.evaluation.checks import check_row
        from medrobust.models.diagnostics import single_class_warning

        one_class = single_class_warning(
            records.logits.argmax(dim=1),
            records.labels,
            where="clean samples (eval mode)",
            class_names=ctx.adapter.class_names,
        )
        if one_class is not None:
            logger.warning("%s", one_class)
            return [check_row("MR107", "warn", one_class)]
        correct = records.correct
        acc = float(correct.float().mean())
        counts = torch.bincount(records.labels, minlength=ctx.adapter.num_classes).float()
        chance = float(counts.max() / counts.sum())
        if acc <= chance + 0.02:
            msg = f"clean accuracy {acc:.3f} is not above the majority-class rate {chance:.3f}"
            return [check_row("MR107", "warn", msg)]
        msg = f"clean accuracy {acc:.3f} vs majority-class rate {chance:.3f}"
        return [check_row("MR107", "pass", msg)]

    def summarise(self, ctx: AuditContext, records: Records) -> dict[str, Any]:
        """``clean``, ``results`` (per attack and budget) and ``worst_case`` of
        ``metrics.json`` (schema version 1)."""
        stats = ClassificationStats(num_classes=ctx.adapter.num_classes)
        stats.update(records.logits, records.labels)
        correct = records.correct
        clean = dict(stats.compute())
        clean["n"] = records.n
        clean["n_correct"] = int(correct.sum())
        for key in ("sensitivity", "specificity", "auc", "balanced_accuracy"):
            v = clean.get(key)
            clean[key] = None if v is None or (isinstance(v, float) and math.isnan(v)) else v
        return {
            "clean": clean,
            "results": _result_rows(ctx, records, correct),
            "worst_case": _worst_rows(ctx, records, correct),
        }


def _result_rows(ctx: AuditContext, records: Records, correct: torch.Tensor) -> list[Any]:
    from medrobust.evaluation.audit import attack_scopes

    scopes = attack_scopes(ctx.specs, ctx.mode)
    n = records.n
    rows = []
    for a_i, spec in enumerate(ctx.specs):
        for e_i, e in enumerate(ctx.budgets):
            cell = records.cells[a_i][e_i]
            if scopes[a_i] == "unbroken":  # cumulative: this attack and every one before it
                by = records.worst_broken_by[e_i]
                robust = correct & ~((by >= 0) & (by <= a_i))
            else:
                robust = correct & ~cell.broken
            n_att = int((cell.attacked & correct).sum())
            n_broken = int((cell.broken & correct).sum())
            lo, hi = wilson_interval(int(robust.sum()), n)
            rows.append(
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
                    "mean_linf": finite_mean(cell.linf),
                    "mean_l2": finite_mean(cell.l2),
                    "mean_l0": finite_mean(cell.l0),
                    "mean_ssim": finite_mean(cell.ssim),
                    "mean_psnr": finite_mean(cell.psnr),
                    "time_s": cell.time_s,
                }
            )
    return rows


def _worst_rows(ctx: AuditContext, records: Records, correct: torch.Tensor) -> list[Any]:
    rows = []
    for e_i, e in enumerate(ctx.budgets):
        by = records.worst_broken_by[e_i]
        robust = correct & (by < 0)
        lo, hi = wilson_interval(int(robust.sum()), records.n)
        rows.append(
            {
                "eps": e,
                "eps_display": fmt_eps(e),
                "robust_accuracy": float(robust.float().mean()),
                "ci95": [lo, hi],
                "broken_by": {s.name: int((by == a_i).sum()) for a_i, s in enumerate(ctx.specs)},
            }
        )
    return rows


def select_examples(
    pool: list[dict[str, Any]],
    specs: Sequence[AttackSpec],
    budgets: Sequence[float],
    n_examples: int,
    adapter: ModelAdapter,
) -> list[ExampleImages]:
    """Pick up to ``n_examples`` distinct broken samples, preferring the smallest budget at
    which each broke and alternating true classes, so the grid shows varied, hard cases."""
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
