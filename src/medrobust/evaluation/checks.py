"""Sanity checks against gradient masking and other ways an evaluation can mislead.

Every check has a stable code (``MR1xx``), documented in ``docs/checks.md``. A check returns
``"pass"``, ``"warn"`` (the numbers may overstate robustness: look closer) or ``"fail"`` (the
numbers are not trustworthy as they stand).

References:
    Carlini et al., "On Evaluating Adversarial Robustness", arXiv:1902.06705, 2019;
    Athalye et al., "Obfuscated Gradients Give a False Sense of Security", ICML 2018;
    Croce & Hein, ICML 2020.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust.attacks.engine import eval_mode
from medrobust.attacks.presets import ATTACKS
from medrobust.evaluation.records import Records
from medrobust.types import Norm

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AuditContext

#: code -> (title, explanation); the single source for the report and the docs.
CHECKS: dict[str, tuple[str, str]] = {
    "MR101": (
        "Unbounded attack reaches 0% accuracy",
        "PGD with a budget as large as the input range must break every sample; if some survive, "
        "the gradients are masked or the attack is misconfigured.",
    ),
    "MR102": (
        "Iterative attacks at least as strong as single-step",
        "An iterative attack (BIM, PGD, APGD) must break at least the samples FGSM breaks at the "
        "same budget; otherwise the loss surface is likely masked.",
    ),
    "MR103": (
        "Black-box attack no stronger than white-box",
        "If the gradient-free Square attack breaks samples that every gradient attack missed, the "
        "gradients are misleading (gradient masking).",
    ),
    "MR104": (
        "Attacks stronger than random noise",
        "Random noise of the same budget must not break samples that the attacks could not.",
    ),
    "MR105": (
        "Input gradients are informative",
        "Samples whose loss gradient with respect to the input is zero or not finite cannot be "
        "attacked by gradient methods (shattered or vanishing gradients).",
    ),
    "MR106": (
        "Enough samples",
        "With fewer than 100 samples the robust accuracy has a wide confidence interval (see the "
        "95% intervals in the tables).",
    ),
    "MR107": (
        "Clean accuracy above chance",
        "Robust accuracy of a model that is near chance on clean data says little.",
    ),
    "MR201": (
        "Measured false-alarm rate agrees with the nominal one",
        "A detector's threshold is set for a nominal clean false-alarm rate on calibration "
        "images; on the clean test images the measured rate must agree with it, or every "
        "detection number rests on a threshold that does not hold on new data.",
    ),
    "MR202": (
        "Detector robustness is plausible (Tramer's reduction)",
        "A classifier + detector pair robust at eps yields a classifier robust at eps/2 with at "
        "least the same accuracy (Tramer, ICML 2022); a detector whose measured risk implies a "
        "classifier more robust than the best one measured for the task was most likely "
        "attacked too weakly.",
    ),
    "MR301": (
        "More iterations do not raise the Dice",
        "A segmentation attack run five times longer must reach at least as low a Dice; if the "
        "longer run ends higher, the attack has not converged or its gradients mislead.",
    ),
    "MR302": (
        "Dice does not rise with the budget",
        "A larger budget contains every smaller one, so an attack's mean Dice must not rise "
        "with it; if it does, the attack is too weak for the larger budgets.",
    ),
    "MR303": (
        "Black-box segmentation attack no stronger than the gradient attacks",
        "If the gradient-free random search finds a lower Dice than every gradient attack on "
        "a sample, the gradients mislead (gradient masking).",
    ),
    "MR304": (
        "Unbounded attack drives the Dice to about 0",
        "With a budget spanning the whole input range an attack can produce any image, so "
        "the Dice must fall to about 0; if it stays well above, the gradients are masked or "
        "the attack is misconfigured.",
    ),
}


def attacks_tagged(ctx: AuditContext, tag: str) -> list[int]:
    """Indices of the attacks of the list whose registry entry carries ``tag``."""
    return [i for i, s in enumerate(ctx.specs) if tag in ATTACKS.get(s.name).tags]


def check_row(code: str, status: str, message: str) -> dict[str, Any]:
    """One result row of a check: ``code``, ``title``, ``status``, ``message``."""
    return {"code": code, "title": CHECKS[code][0], "status": status, "message": message}


def run_checks(ctx: AuditContext, records: Records, loader: Iterable[Any]) -> list[dict[str, Any]]:
    """Run every applicable check on the records of an audit.

    Checks that compare attacks are chosen by the attacks' tags (``single-step``,
    ``iterative``, ``black-box``), never by their names, so a new attack with a tag is covered.

    Returns:
        One dict per check: ``code``, ``title``, ``status`` (pass/warn/fail), ``message``.
    """
    out = [_probe_unbounded(ctx, loader)]
    out += _compare(ctx, records, "MR102", attacks_tagged(ctx, "single-step"),
                    attacks_tagged(ctx, "iterative"))  # fmt: skip
    black = attacks_tagged(ctx, "black-box")
    white = [i for i in range(len(ctx.specs)) if i not in black]
    out += _compare(ctx, records, "MR103", black, white)
    out.append(_noise_check(ctx, records))
    out.append(_gradient_check(ctx, records))
    n = records.n
    out.append(
        check_row("MR106", "warn", f"only {n} samples: robust accuracies carry wide confidence "
                  "intervals") if n < 100 else check_row("MR106", "pass", f"{n} samples evaluated")
    )  # fmt: skip
    out += ctx.task.extra_checks(ctx, records)
    return out


_COMPARE = {
    "MR102": (
        "{name} broke samples no iterative attack broke: ",
        "every sample {name} broke was also broken by an iterative attack",
    ),
    "MR103": (
        "the black-box {name} attack broke samples every gradient attack missed: ",
        "the black-box attack found nothing the gradient attacks missed",
    ),
}


def _compare(
    ctx: AuditContext, records: Records, code: str, weak: list[int], strong: list[int]
) -> list[dict[str, Any]]:
    """Warn where an attack expected to be weaker broke samples the stronger ones missed."""
    if not weak or not strong:
        return []
    bad = []
    eligible = records.eligible
    for e_i, e in enumerate(ctx.budgets):
        strong_broken = torch.zeros_like(eligible)
        for a_i in strong:
            strong_broken |= records.cells[a_i][e_i].broken
        for a_i in weak:
            extra = int((records.cells[a_i][e_i].broken & ~strong_broken & eligible).sum())
            if extra:
                bad.append((ctx.specs[a_i].name, f"{extra} at eps={fmt_eps(e)}"))
    names = _display(ctx, code, [i for i in weak])
    if not bad:
        return [check_row(code, "pass", _COMPARE[code][1].format(name=names))]
    names = _display(ctx, code, [ctx.names.index(n) for n in dict.fromkeys(n for n, _ in bad)])
    return [check_row(code, "warn", _COMPARE[code][0].format(name=names)
                      + ", ".join(b for _, b in bad))]  # fmt: skip


def _display(ctx: AuditContext, code: str, idx: list[int]) -> str:
    """Attack names as the check messages print them (``FGSM``, ``Square``)."""
    names = [ctx.specs[i].name for i in idx]
    return ", ".join(n.upper() if code == "MR102" else n.capitalize() for n in names)


def _noise_check(ctx: AuditContext, records: Records) -> dict[str, Any]:
    """MR104: random noise must not break what every attack missed."""
    bad = []
    for e_i, e in enumerate(ctx.budgets):
        missed = ~records.broken_any(e_i) & records.eligible
        extra = int((records.noise_broken[e_i] & missed).sum())
        if extra:
            bad.append(f"{extra} at eps={fmt_eps(e)}")
    if bad:
        msg = "random noise broke samples that every attack missed: " + ", ".join(bad)
        return check_row("MR104", "fail", msg)
    msg = "no sample was broken by random noise but missed by the attacks"
    return check_row("MR104", "pass", msg)


def _gradient_check(ctx: AuditContext, records: Records) -> dict[str, Any]:
    """MR105: every eligible sample has a usable input gradient."""
    zg = int((records.zero_grad & records.eligible).sum())
    n_e = int(records.eligible.sum())
    if zg:
        msg = f"{zg} of {n_e} {ctx.task.eligible_noun} have a zero or non-finite input gradient"
        return check_row("MR105", "warn", msg)
    one = ctx.task.eligible_noun.replace("samples", "sample")
    return check_row("MR105", "pass", f"every {one} has a usable input gradient")


def _probe_unbounded(ctx: AuditContext, loader: Iterable[Any]) -> dict[str, Any]:
    """MR101: the task's strongest attack with a budget spanning the input range, on a few
    eligible samples, must break all of them."""
    probe = ctx.probe_samples
    if probe <= 0:
        return check_row("MR101", "pass", "skipped (probe_samples=0)")
    parts = []
    have = 0
    with eval_mode(ctx.adapter):
        for raw in loader:
            batch = ctx.task.read_batch(raw).to(ctx.device)
            ok = ctx.task.clean(ctx.adapter, batch).eligible
            parts.append(batch.select(ok.nonzero().flatten()))
            have += int(ok.sum())
            if have >= probe:
                break
    if have == 0:
        return check_row("MR101", "pass", "skipped: no eligible sample to probe")
    batch = _concat(parts).take(probe)
    width = ctx.adapter.bounds.width
    eps = width if ctx.norm is Norm.LINF else width * math.sqrt(batch.x[0].numel())
    attack = ctx.task.probe_attack(eps, ctx.norm, ctx.seed)
    res = ctx.task.run_attack(attack, ctx.adapter, batch)
    survived = int((~ctx.task.probe_broken(ctx.adapter, batch, res)).sum())
    n = len(batch)
    if survived:
        return check_row("MR101", "fail", f"{survived} of {n} samples survived "
                         f"{ctx.task.probe_name} with a budget "
                         "spanning the whole input range")  # fmt: skip
    probe_short = ctx.task.probe_name.split("-")[0]
    msg = f"{probe_short} with an unbounded budget broke all {n} probed samples"
    return check_row("MR101", "pass", msg)


def _concat(parts: list[Any]) -> Any:
    from medrobust.evaluation.tasks.base import Batch

    keys = parts[0].aux.keys()
    return Batch(
        torch.cat([p.x for p in parts]),
        torch.cat([p.target for p in parts]),
        None,
        {k: torch.cat([p.aux[k] for p in parts]) for k in keys},
    )
