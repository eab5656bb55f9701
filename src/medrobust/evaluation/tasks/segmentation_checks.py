"""Sanity checks of a segmentation audit (codes ``MR301``-``MR304``, documented in
``docs/checks.md``) beside the shared ones: more iterations must not raise the Dice, the Dice
must not rise with the budget, the black-box leg must not find lower Dice than the gradient
attacks, and an unbounded attack must drive the Dice to about 0 (the probe of MR101, or an
unbounded budget of the list).

The iterations probe runs inside the audit loop on the first attacked samples (up to
``probe_samples``), so its per-sample results are checkpointed with the records and a resumed
audit reports the same verdict.

References:
    Carlini et al., "On Evaluating Adversarial Robustness", 2019 (more iterations, larger
    budgets, black-box cross-checks); Croce, Singh & Hein, ECCV 2024 (SEA: 5 against 100 PGD
    steps on segmenters).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust.attacks.presets import create_attack
from medrobust.evaluation.checks import attacks_tagged, check_row
from medrobust.evaluation.records import Records
from medrobust.metrics import sample_dice

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AuditContext
    from medrobust.evaluation.tasks.base import Batch, CleanOutcome
    from medrobust.evaluation.tasks.segmentation import SegmentationTask

__all__ = ["NEAR_ZERO", "PROBE_STEPS", "TOLERANCE", "iterations_probe", "segmentation_checks"]

#: Steps of the short and the long run of the iterations probe (MR301).
PROBE_STEPS = (10, 50)
#: Mean Dice difference tolerated before a check warns.
TOLERANCE = 0.02
#: Mean Dice under an unbounded attack above which MR304 warns ("about 0").
NEAR_ZERO = 0.05
_SHORT, _LONG = "check/mr301/short", "check/mr301/long"


def iterations_probe(
    task: SegmentationTask, ctx: AuditContext, batch: Batch, clean: CleanOutcome, done: int
) -> dict[str, torch.Tensor]:
    """MR301's per-sample Dice after ``pgd-seg`` with 10 and with 50 steps at the largest
    budget, on the attacked samples among the first ``probe_samples`` of the data set (``done``
    samples came before ``batch``); NaN elsewhere.

    Returns:
        ``{"check/mr301/short", "check/mr301/long"}``: float64 ``(B,)``.
    """
    b = len(batch)
    out = {_SHORT: torch.full((b,), math.nan, dtype=torch.float64)}
    out[_LONG] = out[_SHORT].clone()
    room = ctx.probe_samples - done
    idx = clean.eligible.nonzero().flatten()[: max(room, 0)]
    if not ctx.checks or idx.numel() == 0:
        return out
    sub = batch.select(idx)
    for key, steps in zip((_SHORT, _LONG), PROBE_STEPS, strict=True):
        attack = create_attack(
            "pgd-seg", eps=ctx.budgets[-1], norm=ctx.norm.value, steps=steps, seed=ctx.seed,
            broken_fraction=task.broken_fraction,
        )  # fmt: skip
        attack.max_voxels = task.settings.max_voxels  # type: ignore[attr-defined]
        res = attack(ctx.adapter, sub.x, sub.target)
        out[key][idx.cpu()] = sample_dice(res.pred_adv, sub.target, task.k).double().cpu()
    return out


def _more_steps(records: Records) -> dict[str, Any]:
    short, long = records.extra.get(_SHORT), records.extra.get(_LONG)
    if short is None or long is None or not bool(torch.isfinite(short).any()):
        return check_row("MR301", "pass", "skipped: no sample was probed")
    keep = torch.isfinite(short) & torch.isfinite(long)
    s, lo = float(short[keep].mean()), float(long[keep].mean())
    n = int(keep.sum())
    msg = (
        f"mean Dice after PGD-{PROBE_STEPS[1]} {lo:.3f}, after PGD-{PROBE_STEPS[0]} {s:.3f} at "
        f"the largest budget on {n} samples"
    )
    if lo > s + TOLERANCE:
        return check_row("MR301", "warn", msg + ": more iterations raised the Dice")
    return check_row("MR301", "pass", msg)


def _budget_monotone(ctx: AuditContext, records: Records) -> dict[str, Any]:
    bad = []
    for a_i, spec in enumerate(ctx.specs):
        for e_i in range(len(ctx.budgets) - 1):
            small, large = records.cells[a_i][e_i], records.cells[a_i][e_i + 1]
            both = small.attacked & large.attacked & torch.isfinite(small.score)
            both &= torch.isfinite(large.score)
            if not bool(both.any()):
                continue
            d_small = float(small.score[both].mean())
            d_large = float(large.score[both].mean())
            if d_large > d_small + TOLERANCE:
                e0, e1 = fmt_eps(ctx.budgets[e_i]), fmt_eps(ctx.budgets[e_i + 1])
                bad.append(f"{spec.name}: {d_small:.3f} at {e0}, {d_large:.3f} at {e1}")
    if bad:
        return check_row("MR302", "warn", "mean Dice rose with the budget: " + "; ".join(bad))
    how = "by construction, carried rows" if ctx.per_attack == "carried" else "own rows"
    return check_row("MR302", "pass", f"no attack's mean Dice rose with the budget ({how})")


def _black_box(ctx: AuditContext, records: Records) -> dict[str, Any]:
    black = attacks_tagged(ctx, "black-box")
    white = [i for i in range(len(ctx.specs)) if i not in black]
    if not black or not white:
        return check_row("MR303", "pass", "skipped: needs a black-box and a gradient attack")
    bad = []
    for e_i, e in enumerate(ctx.budgets):
        lowest_white = torch.full((records.n,), math.inf, dtype=torch.float64)
        for a_i in white:
            cell = records.cells[a_i][e_i]
            score = torch.where(cell.attacked, cell.score.nan_to_num(math.inf), math.inf)
            lowest_white = torch.minimum(lowest_white, score)
        lowest_white = torch.minimum(lowest_white, records.clean_score)
        for a_i in black:
            cell = records.cells[a_i][e_i]
            ran = cell.attacked & torch.isfinite(cell.score)
            lower = ran & (cell.score < lowest_white - TOLERANCE)
            if bool(lower.any()):
                bad.append(f"{ctx.specs[a_i].name}: {int(lower.sum())} at eps={fmt_eps(e)}")
    if bad:
        msg = "the black-box attack found a lower Dice than every gradient attack: "
        return check_row("MR303", "warn", msg + ", ".join(bad))
    msg = "the black-box attack found no lower Dice than the gradient attacks"
    return check_row("MR303", "pass", msg)


def _unbounded(ctx: AuditContext, records: Records, probe: torch.Tensor | None) -> dict[str, Any]:
    """MR304: the Dice under an unbounded attack (MR101's probe; any Linf budget of the list
    that spans the input range) must be about 0."""
    width = ctx.adapter.bounds.width
    sources = []
    if probe is not None and probe.numel():
        sources.append((ctx.task.probe_name, probe.double()))
    for e_i, e in enumerate(ctx.budgets):
        # an Linf budget as wide as the input range allows any image (L2: the probe covers it)
        if ctx.norm.value == "linf" and e >= width - 1e-12 and bool(records.eligible.any()):
            name = f"the attack list at eps={fmt_eps(e)}"
            sources.append((name, records.worst_score[e_i][records.eligible].double()))
    if not sources:
        return check_row("MR304", "pass", "skipped: no unbounded probe or budget")
    bad: list[str] = []
    seen: list[str] = []
    for name, dice in sources:
        mean = float(dice.mean())
        text = f"{name}: mean Dice {mean:.3f} on {dice.numel()} samples"
        (bad if mean > NEAR_ZERO else seen).append(text)
    if bad:
        msg = "an unbounded attack left the Dice well above 0 (gradients masked or the attack "
        return check_row("MR304", "warn", msg + "misconfigured): " + "; ".join(bad))
    return check_row(
        "MR304", "pass", "unbounded attacks drove the Dice to about 0: " + "; ".join(seen)
    )


def segmentation_checks(
    ctx: AuditContext, records: Records, probe: torch.Tensor | None = None
) -> list[dict[str, Any]]:
    """Rows of MR301-MR304 (see the module docstring); ``probe`` holds the per-sample Dice
    under MR101's unbounded probe attack (None when it did not run)."""
    return [
        _more_steps(records),
        _budget_monotone(ctx, records),
        _black_box(ctx, records),
        _unbounded(ctx, records, probe),
    ]
