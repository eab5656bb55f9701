"""The audit entry points: :func:`audit` (any task) and :func:`evaluate` (dispatches on the
model's task), their result, and the one ``metrics.json`` header every task shares."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn

from medrobust._utils.dist import current_shard, main_first
from medrobust._utils.examples import ExampleImages
from medrobust._utils.format import fmt_eps
from medrobust._version import __version__
from medrobust.evaluation.audit import (
    EMPTY_LOADER,
    AttackSpec,
    AuditContext,
    ProgressEvent,
    make_context,
    pool_limit,
    run_audit,
)
from medrobust.evaluation.checks import run_checks
from medrobust.evaluation.records import Records
from medrobust.evaluation.sharding import Kept, gather_audit
from medrobust.evaluation.tasks.base import AuditTask
from medrobust.evaluation.tasks.classification import ClassificationTask, select_examples
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.types import Norm

__all__ = ["SCHEMA_VERSION", "EvaluationResult", "audit", "metrics_header"]

SCHEMA_VERSION = 1


@dataclass
class EvaluationResult:
    """The outcome of an audit.

    Attributes:
        metrics: Every number of the audit, in the ``metrics.json`` schema (version 1).
        examples: Example images (clean, adversarial) for the report.
        adversarial: Per budget, the worst-case adversarial examples kept (``x_adv``, ``index``,
            ``label``, ``adv_pred``, ``attack``), as tensors.
        config: The resolved audit configuration.
        records: The per-sample records.
    """

    metrics: dict[str, Any]
    examples: list[Any]
    adversarial: dict[str, dict[str, torch.Tensor]]
    config: dict[str, Any]
    records: Records

    def robust_accuracy(self, attack: str | None = None, eps: float | None = None) -> float:
        """Robust accuracy of one attack (or the worst case when ``attack`` is None) at ``eps``
        (default: the largest budget).

        Raises:
            KeyError: If the attack or budget was not evaluated.
        """
        budgets = self.metrics["threat_model"]["eps"]
        e = budgets[-1] if eps is None else eps
        rows = self.metrics["worst_case"] if attack is None else self.metrics["results"]
        for row in rows:
            if (attack is None or row["attack"] == attack) and math.isclose(
                row["eps"], e, rel_tol=1e-9
            ):
                return float(row["robust_accuracy"])
        raise KeyError(f"no result for attack={attack!r}, eps={e!r}; budgets: {budgets}")

    def summary(self) -> str:
        """A short plain-text summary (clean accuracy and worst-case robust accuracy)."""
        m = self.metrics
        lines = [f"clean accuracy: {m['clean']['accuracy']:.3f} (n={m['clean']['n']})"]
        for row in m["worst_case"]:
            lines.append(
                f"worst-case robust accuracy at eps={fmt_eps(row['eps'])}: "
                f"{row['robust_accuracy']:.3f}"
            )
        warn = [c["code"] for c in m["checks"] if c["status"] != "pass"]
        lines.append(
            f"sanity checks: {len(warn)} flagged" + (f" ({', '.join(warn)})" if warn else "")
        )
        return "\n".join(lines)


def metrics_header(
    ctx: AuditContext,
    records: Records,
    *,
    model_info: Mapping[str, Any] | None,
    data_info: Mapping[str, Any] | None,
    title: str | None,
) -> dict[str, Any]:
    """The part of ``metrics.json`` every task shares (schema version 1): version, time,
    title, model, data, threat model and the attack list."""
    adapter = ctx.adapter
    card = dict(model_info or {})
    data: dict[str, Any] = {
        "n": records.n,
        "class_names": adapter.class_names or [str(i) for i in range(adapter.num_classes)],
    }
    data.update(dict(data_info or {}))
    return {
        "schema_version": SCHEMA_VERSION,
        "medrobust_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "title": title or f"Robustness audit: {card.get('architecture', 'model')}",
        "task": ctx.task.name,
        "model": {
            "name": str(card.get("architecture", "model")),
            "card": card,
            "input": adapter.describe(),
        },
        "data": data,
        "threat_model": {
            "norm": ctx.norm.value,
            "bounds": [adapter.bounds.low, adapter.bounds.high],
            "eps": list(ctx.budgets),
            "eps_display": [fmt_eps(e) for e in ctx.budgets],
            "mode": ctx.mode,
            "per_attack": ctx.per_attack,
        },
    }


def audit(
    task: AuditTask,
    model: nn.Module,
    loader: Iterable[Any],
    attacks: Sequence[str | Mapping[str, Any] | AttackSpec],
    eps: Any,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    **options: Any,
) -> EvaluationResult:
    """Audit ``model`` on ``loader`` with the task plug-in ``task``: per-sample records, the
    worst case per sample across ``attacks`` at each budget of ``eps``, the sanity checks and
    one ``metrics.json`` document (header + the task's section + checks + examples + timing).

    Args:
        task: The task plug-in (:mod:`medrobust.evaluation.tasks`).
        model: A :class:`ModelAdapter`, or a bare module with inputs in ``[0, 1]``.
        loader: Batches, in a fixed order if ``checkpoint`` is used.
        attacks: Attack names or specs of the task's attacks, in list order.
        eps: Budgets (numbers or fractions such as ``"2/255"``).
        checkpoint: A file where records are saved after each batch; an existing checkpoint of
            the same configuration is resumed.
        progress: Callback receiving :class:`ProgressEvent` updates.
        **options: ``norm`` (``"linf"``), ``mode`` (``"individual"``), ``seed`` (0),
            ``device``, ``max_samples``, ``n_examples`` (6), ``keep_adversarial`` (256),
            ``checks`` (True), ``probe_samples`` (16), ``noise_draws`` (4), ``per_attack``
            (the task's default: ``"own"`` rows for classification, see
            :mod:`medrobust.evaluation.audit`), and for the header
            ``model_info``, ``data_info``, ``title``.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError: For bad settings (before any compute), an empty loader or a batch that does
            not fit the model.
    """
    t_start = time.perf_counter()
    adapter = model if isinstance(model, ModelAdapter) else as_adapter(model)
    header = {k: options.pop(k, None) for k in ("model_info", "data_info", "title")}
    settings = {"norm": Norm.LINF, "mode": "individual", "seed": 0, "device": None,
                "max_samples": None, **options}  # fmt: skip
    ctx = make_context(task, adapter, attacks, eps, progress=progress, **settings)
    shard = current_shard()
    records, kept, pool = run_audit(ctx, loader, checkpoint, shard=shard)
    if shard.size > 1:
        records, kept, pool = _join_processes(ctx, records, kept, pool)
    checks = main_first(lambda: run_checks(ctx, records, loader)) if ctx.checks else []
    if progress:
        progress(ProgressEvent("checks", records.batches_done, None, records.n))
    examples = (
        select_examples(pool, ctx.specs, ctx.budgets, ctx.n_examples, adapter)
        if isinstance(task, ClassificationTask)
        else []
    )
    metrics = metrics_header(ctx, records, **header)
    if task.name == "classification":
        del metrics["task"]  # schema version 1 of a classification audit has no task key
    section = task.summarise(ctx, records)
    if "clean" in section:
        metrics["clean"] = section.pop("clean")
    metrics["attacks"] = [{"name": s.name, "params": dict(s.params)} for s in ctx.specs]
    metrics.update(section)
    metrics["checks"] = checks
    metrics["examples"] = _example_rows(examples)
    metrics["timing"] = {
        "total_s": time.perf_counter() - t_start,
        "attack_s": sum(c.time_s for row in records.cells for c in row),
    }
    metrics["world_size"] = shard.size
    adversarial = {
        fmt_eps(ctx.budgets[i]): {
            k: (torch.cat(v) if v else torch.empty(0)) for k, v in kept[i].items()
        }
        for i in range(len(ctx.budgets))
    }
    return EvaluationResult(metrics, examples, adversarial, ctx.config, records)


def _join_processes(
    ctx: AuditContext, records: Records, kept: Kept, pool: list[dict[str, Any]]
) -> tuple[Records, Kept, list[dict[str, Any]]]:
    """Every process's share of the audit, joined on every process (see
    :mod:`medrobust.evaluation.sharding`)."""
    records, kept, pool, artifacts = gather_audit(
        records, kept, pool, ctx.task.artifacts(),
        keep_adversarial=ctx.keep_adversarial, pool_limit=pool_limit(ctx),
    )  # fmt: skip
    if records.n == 0:
        raise ValueError(EMPTY_LOADER)
    ctx.task.merge_artifacts(artifacts)
    return records, kept, pool


def _example_rows(examples: Sequence[ExampleImages]) -> list[dict[str, Any]]:
    return [
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
    ]
