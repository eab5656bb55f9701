"""The defence study's answer: retrain, detect or both, and the cheapest option that reaches a
target risk; Tramer's plausibility check across the study's models; the study document.

For every labelled fraction, at the target budget (the largest by default), every way the study
can defend the classifier is an *option*:

* **nothing**: standard training alone;
* **retrain**: a robust training recipe alone (PGD-AT, fast AT, SSAT, FGSM-AT, GCE ...);
* **detect**: standard training with a detector in front;
* **both**: a robust recipe with a detector in front.

Every option is scored by its *pair risk* under the strongest attack measured: the share of
test samples that are misclassified or flagged while clean, or that an attack within the budget
gets past classifier and detector both (per sample, the worst case of the audit's suite and of
every adaptive attack, which know the detector). A false alarm counts as a failure, so a
detector cannot buy a low risk by flagging everything; without a detector the pair risk is the
classifier-only risk (one minus the worst-case robust accuracy), so all options share one scale.
The cost of an option is its training wall time plus, with a detector, the detector's fitting
wall time. The answer names, per fraction, the cheapest option whose risk is at most the target,
or says that none reaches it and which comes closest. A detector whose claim fails Tramer's
check (MR202) is named with that warning: its risk is then probably underestimated.

References:
    Li, Pan & Zhu, "Defending against adversarial attacks on medical imaging AI system,
    classification or detection?", arXiv:2006.13555, 2020; Tramer, "Detecting Adversarial
    Examples Is (Nearly) As Hard As Classifying Them", ICML 2022.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust._version import __version__
from medrobust.evaluation.plausibility import (
    ReferenceClassifier,
    plausibility,
    plausibility_check,
)

if TYPE_CHECKING:
    from medrobust.pipelines.study import StudyConfig

__all__ = [
    "answer_sentences",
    "cost_ratios",
    "study_document",
    "study_options",
    "study_plausibility",
]

_KIND = {"none": "nothing", "retrain": "retrain", "detect": "detect", "both": "both"}


def _pct(f: float) -> str:
    return f"{100 * f:g}%"


def _references(
    rows: Sequence[Mapping[str, Any]], eps: Sequence[float]
) -> list[ReferenceClassifier]:
    """Every model of the study as a reference classifier (its audit's robust accuracy)."""
    return [
        ReferenceClassifier(
            str(r["model"]),
            float(r["clean_accuracy"]),
            {float(e): float(r["robust_accuracy"][fmt_eps(float(e))]) for e in eps},
        )
        for r in rows
    ]


def study_plausibility(
    rows: Sequence[Mapping[str, Any]], risk: Sequence[Mapping[str, Any]], eps: Sequence[float]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tramer's check of every model + detector pair against the best model of the study.

    Args:
        rows: The study's ``defenses`` rows (``model``, ``clean_accuracy``,
            ``robust_accuracy`` keyed by the budgets' display form).
        risk: The study's risk rows, each naming its ``model`` and ``detector``.
        eps: The study's budgets.

    Returns:
        The plausibility rows (each with ``model`` and ``detector``) and one MR202 check row
        per pair.
    """
    refs = _references(rows, eps)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in risk:
        groups.setdefault((str(r["model"]), str(r["detector"])), []).append(r)
    out: list[dict[str, Any]] = []
    checks = []
    for (model, detector), group in groups.items():
        claims = plausibility(group, refs)
        out += [{"model": model, "detector": detector, **c} for c in claims]
        checks.append(plausibility_check(claims, f"{model} + {detector}"))
    return out, checks


def _strongest(r: Mapping[str, Any]) -> str:
    """The adaptive attack with the highest system risk of a risk row, or the suite."""
    by = r.get("system_risk_by_attack") or {}
    if r.get("pair_risk_adaptive") is None or not by:
        return "the audit's suite (no adaptive attack)"
    return str(max(by, key=lambda k: by[k]))


def study_options(
    rows: Sequence[Mapping[str, Any]],
    risk: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    fit_s: Mapping[str, Mapping[str, float]],
    eps: float,
) -> list[dict[str, Any]]:
    """Every option of the study at budget ``eps`` (see the module text), sorted by labelled
    fraction, then cost.

    Args:
        rows: The ``defenses`` rows (``model``, ``recipe``, ``labelled_fraction``,
            ``wall_time_s``, ``robust_accuracy``).
        risk: The risk rows (``model``, ``detector``, ``eps``, ``pair_risk``,
            ``pair_risk_adaptive``, ``system_risk``, ``system_risk_adaptive``,
            ``false_alarm_rate``, ``system_risk_by_attack``).
        claims: The plausibility rows of :func:`study_plausibility`.
        fit_s: Detector fitting wall time per model and detector.
        eps: The budget of the answer.

    Returns:
        One dict per option: ``labelled_fraction``, ``kind`` (none, retrain, detect, both),
        ``option``, ``model``, ``detector``, ``risk`` (the pair risk), ``system_risk``,
        ``false_alarm_rate``, ``attack`` (the strongest one), ``cost_s``, ``implausible``.

    Raises:
        KeyError: If ``eps`` is not a budget of the rows.
    """
    out = []
    for r in rows:
        standard = r["recipe"] == "standard"
        base = {"labelled_fraction": r["labelled_fraction"], "model": r["model"]}
        clf_risk = 1.0 - float(r["robust_accuracy"][fmt_eps(eps)])
        out.append(
            {
                **base,
                "kind": "none" if standard else "retrain",
                "option": str(r["recipe"]),
                "detector": None,
                "risk": clf_risk,
                "system_risk": clf_risk,
                "false_alarm_rate": 0.0,
                "attack": "the audit's suite",
                "cost_s": float(r["wall_time_s"]),
                "implausible": None,
            }
        )
        for k in (x for x in risk if x["model"] == r["model"] and math.isclose(x["eps"], eps)):
            det = str(k["detector"])
            adaptive = k.get("pair_risk_adaptive") is not None
            claim = next(
                c for c in claims if c["model"] == r["model"] and c["detector"] == det
                and math.isclose(c["eps"], eps)
            )  # fmt: skip
            out.append(
                {
                    **base,
                    "kind": "detect" if standard else "both",
                    "option": f"{r['recipe']} + {det}",
                    "detector": det,
                    "risk": float(k["pair_risk_adaptive"] if adaptive else k["pair_risk"]),
                    "system_risk": float(
                        k["system_risk_adaptive"] if adaptive else k["system_risk"]
                    ),
                    "false_alarm_rate": float(k["false_alarm_rate"]),
                    "attack": _strongest(k),
                    "cost_s": float(r["wall_time_s"]) + float(fit_s[r["model"]][det]),
                    "implausible": bool(claim["implausible"]),
                }
            )
    return sorted(out, key=lambda o: (o["labelled_fraction"], o["cost_s"], o["risk"]))


def _describe(o: Mapping[str, Any]) -> str:
    what = f"{_KIND[o['kind']]} ({o['option']})"
    text = f"{what} at risk {o['risk']:.3f}"
    if o["detector"] is not None:
        text += (
            f" under its strongest attack {o['attack']} with "
            f"{100 * o['false_alarm_rate']:.1f}% clean false alarms counted"
        )
    text += f", {o['cost_s']:.1f} s to build"
    if o["implausible"]:
        text += (
            "; but its claim fails Tramer's plausibility check (MR202), so its risk is "
            "probably underestimated"
        )
    return text


def answer_sentences(
    options: Sequence[Mapping[str, Any]],
    fractions: Sequence[float],
    target_risk: float,
    eps: float,
) -> list[str]:
    """One sentence per labelled fraction naming the cheapest option whose risk is at most
    ``target_risk`` at ``eps``, or saying honestly that none is and which comes closest.

    Args:
        options: The output of :func:`study_options`.
        fractions: The study's labelled fractions, in order.
        target_risk: The largest acceptable risk, in ``[0, 1]``.
        eps: The budget of the options.

    Returns:
        The sentences (a fraction without options is left out).
    """
    out = []
    for f in fractions:
        mine = [o for o in options if o["labelled_fraction"] == f]
        if not mine:
            continue
        head = f"With {_pct(f)} of the labels at eps={fmt_eps(eps)}"
        good = [o for o in mine if o["risk"] <= target_risk + 1e-12]
        if good:
            best = min(good, key=lambda o: (o["cost_s"], o["risk"]))
            out.append(
                f"{head}, the cheapest option with risk at most {target_risk:g} is "
                f"{_describe(best)}."
            )
        else:
            best = min(mine, key=lambda o: (o["risk"], o["cost_s"]))
            out.append(
                f"{head}, no option reaches risk {target_risk:g}: the lowest is {_describe(best)}."
            )
    return out


def cost_ratios(rows: list[dict[str, Any]]) -> None:
    """Add ``cost_ratio`` to every row: its wall time over standard training's at the same
    labelled fraction (None without a standard model there)."""
    base = {r["labelled_fraction"]: r for r in rows if r["recipe"] == "standard"}
    for r in rows:
        ref = base.get(r["labelled_fraction"])
        r["cost_ratio"] = (
            r["wall_time_s"] / ref["wall_time_s"]
            if ref is not None and ref["wall_time_s"] > 0
            else None
        )


def study_document(
    cfg: StudyConfig,
    rows: list[dict[str, Any]],
    per_model: Mapping[str, Mapping[str, Any]],
    skipped: Mapping[str, str],
    total_s: float,
) -> dict[str, Any]:
    """The study document (``study.json``): every model's rows, each detector's detection and
    risk rows (named by ``model`` and ``detector``), Tramer's check against the best model of
    the study (it replaces each audit's own MR202, made against the model alone), the answer."""
    eps = list(cfg.eps)
    risk: list[dict[str, Any]] = []
    detection: list[dict[str, Any]] = []
    fit_s: dict[str, dict[str, float]] = {}
    for key, m in per_model.items():
        for name, d in m["detectors"].items():
            fit_s.setdefault(key, {})[name] = float(d["fit_s"])
            risk += [{"model": key, "detector": name, **r} for r in d["risk"]]
            detection += [{"model": key, "detector": name, **r} for r in d["detection"]["results"]]
    claims, plausible = study_plausibility(rows, risk, eps)
    options = study_options(rows, risk, claims, fit_s, cfg.answer_eps)
    sentences = answer_sentences(options, cfg.fractions, cfg.target_risk, cfg.answer_eps)
    return {
        "schema_version": 1,
        "medrobust_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "title": "Defence study: classification or detection?",
        "task": "study",
        "data": {
            "name": cfg.data,
            "params": dict(cfg.data_params),
            "split_sizes": dict(cfg.split_sizes or {}),
        },
        "threat_model": {"norm": cfg.norm, "eps": eps, "eps_display": [fmt_eps(e) for e in eps]},
        "study": {
            "config": cfg.to_dict(),
            "suite_skipped": dict(skipped),
            "detectors": {
                k: {n: d["detection"]["detector"] for n, d in m["detectors"].items()}
                for k, m in per_model.items()
            },
            "summary": sentences,
            "answer": {
                "target_risk": cfg.target_risk,
                "eps": cfg.answer_eps,
                "eps_display": fmt_eps(cfg.answer_eps),
                "sentences": sentences,
                "options": options,
            },
        },
        "defenses": rows,
        "detection": detection,
        "risk": risk,
        "plausibility": claims,
        "checks": [
            *(c for m in per_model.values() for c in m["checks"] if c["code"] != "MR202"),
            *plausible,
        ],
        "timing": {"total_s": total_s, "torch_threads": torch.get_num_threads()},
    }
