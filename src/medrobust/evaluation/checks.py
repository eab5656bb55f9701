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
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust.attacks.engine import eval_mode
from medrobust.attacks.presets import create_attack
from medrobust.evaluation.records import Records
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm

if TYPE_CHECKING:
    from medrobust.evaluation.suite import AttackSpec

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
}

_ITERATIVE = ("bim", "pgd", "apgd-ce", "apgd-dlr")


def _row(code: str, status: str, message: str) -> dict[str, Any]:
    return {"code": code, "title": CHECKS[code][0], "status": status, "message": message}


def run_checks(
    adapter: ModelAdapter,
    records: Records,
    specs: Sequence[AttackSpec],
    budgets: Sequence[float],
    norm: Norm,
    loader: Iterable[Any],
    seed: int,
    probe_samples: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Run every check on the records of an evaluation.

    Returns:
        One dict per check: ``code``, ``title``, ``status`` (pass/warn/fail), ``message``.
    """
    names = [s.name for s in specs]
    correct = records.correct
    out = [_probe_unbounded(adapter, loader, norm, seed, probe_samples, device)]
    # MR102: FGSM vs iterative attacks
    if "fgsm" in names and any(n in names for n in _ITERATIVE):
        f = names.index("fgsm")
        bad = []
        for e_i, e in enumerate(budgets):
            it_broken = torch.zeros_like(correct)
            for it_name in _ITERATIVE:
                if it_name in names:
                    it_broken |= records.cells[names.index(it_name)][e_i].broken
            extra = int((records.cells[f][e_i].broken & ~it_broken & correct).sum())
            if extra:
                bad.append(f"{extra} at eps={fmt_eps(e)}")
        out.append(
            _row("MR102", "warn", "FGSM broke samples no iterative attack broke: " + ", ".join(bad))
            if bad
            else _row(
                "MR102", "pass", "every sample FGSM broke was also broken by an iterative attack"
            )
        )
    # MR103: square vs gradient attacks
    if "square" in names and len(names) > 1:
        s = names.index("square")
        bad = []
        for e_i, e in enumerate(budgets):
            grad_broken = torch.zeros_like(correct)
            for a_i, other in enumerate(names):
                if other != "square":
                    grad_broken |= records.cells[a_i][e_i].broken
            extra = int((records.cells[s][e_i].broken & ~grad_broken & correct).sum())
            if extra:
                bad.append(f"{extra} at eps={fmt_eps(e)}")
        out.append(
            _row(
                "MR103",
                "warn",
                "the black-box Square attack broke samples every gradient attack "
                "missed: " + ", ".join(bad),
            )
            if bad
            else _row(
                "MR103", "pass", "the black-box attack found nothing the gradient attacks missed"
            )
        )
    # MR104: random noise vs attacks
    bad = []
    for e_i, e in enumerate(budgets):
        extra = int(
            (records.noise_broken[e_i] & (records.worst_broken_by[e_i] < 0) & correct).sum()
        )
        if extra:
            bad.append(f"{extra} at eps={fmt_eps(e)}")
    out.append(
        _row(
            "MR104",
            "fail",
            "random noise broke samples that every attack missed: " + ", ".join(bad),
        )
        if bad
        else _row("MR104", "pass", "no sample was broken by random noise but missed by the attacks")
    )
    # MR105: zero gradients
    zg = int((records.zero_grad & correct).sum())
    n_c = int(correct.sum())
    out.append(
        _row(
            "MR105",
            "warn",
            f"{zg} of {n_c} correctly classified samples have a zero or non-finite input gradient",
        )
        if zg
        else _row("MR105", "pass", "every correctly classified sample has a usable input gradient")
    )
    # MR106: sample size
    n_samples = records.n
    out.append(
        _row(
            "MR106",
            "warn",
            f"only {n_samples} samples: robust accuracies carry wide confidence intervals",
        )
        if n_samples < 100
        else _row("MR106", "pass", f"{n_samples} samples evaluated")
    )
    # MR107: clean accuracy vs chance
    acc = float(correct.float().mean())
    counts = torch.bincount(records.labels, minlength=adapter.num_classes).float()
    chance = float(counts.max() / counts.sum())
    out.append(
        _row(
            "MR107",
            "warn",
            f"clean accuracy {acc:.3f} is not above the majority-class rate {chance:.3f}",
        )
        if acc <= chance + 0.02
        else _row("MR107", "pass", f"clean accuracy {acc:.3f} vs majority-class rate {chance:.3f}")
    )
    return out


def _probe_unbounded(
    adapter: ModelAdapter,
    loader: Iterable[Any],
    norm: Norm,
    seed: int,
    probe_samples: int,
    device: torch.device,
) -> dict[str, Any]:
    """MR101: PGD with a budget spanning the input range on a few correctly classified samples."""
    from medrobust.evaluation.suite import _unpack

    if probe_samples <= 0:
        return _row("MR101", "pass", "skipped (probe_samples=0)")
    xs, ys = [], []
    have = 0
    with eval_mode(adapter), torch.no_grad():
        for batch in loader:
            x, y, _ = _unpack(batch)
            x, y = x.to(device).float(), y.to(device).long().reshape(-1)
            ok = adapter(x).argmax(dim=1) == y
            xs.append(x[ok])
            ys.append(y[ok])
            have += int(ok.sum())
            if have >= probe_samples:
                break
    if have == 0:
        return _row("MR101", "pass", "skipped: no correctly classified sample to probe")
    x = torch.cat(xs)[:probe_samples]
    y = torch.cat(ys)[:probe_samples]
    width = adapter.bounds.width
    eps = width if norm is Norm.LINF else width * math.sqrt(x[0].numel())
    attack = create_attack("pgd", eps=eps, norm=norm.value, steps=50, restarts=2, seed=seed)
    res = attack(adapter, x, y)
    survived = int((~res.success).sum())
    if survived:
        return _row(
            "MR101",
            "fail",
            f"{survived} of {x.shape[0]} samples survived PGD-50 with a budget spanning the whole "
            "input range",
        )
    return _row(
        "MR101", "pass", f"PGD with an unbounded budget broke all {x.shape[0]} probed samples"
    )
