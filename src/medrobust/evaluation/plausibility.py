"""Tramer's plausibility check of a detector's robustness claim (check MR202).

Tramer (ICML 2022) showed that detecting adversarial examples is nearly as hard as classifying
them: a classifier ``f`` with a detector ``D`` that is robust at budget ``eps`` yields an
(inefficient) classifier that is robust at ``eps / 2`` with at least the same accuracy. The
reduction needs only the triangle inequality, so it holds for every norm. Its robust error is at
most the *pair risk* of ``(f, D)`` at ``eps``:

    pair risk(eps) = P[ f(x) != y  or  D(x) = 1  or  exists x' in B(x, eps): f(x') != y and
    D(x') = 0 ],

the share of test samples that are misclassified or flagged while clean (a false alarm is an
error: that input is not classified) or that some perturbation within ``eps`` gets past both. So
a claim "the pair has pair risk ``r`` at ``eps``" implies "some classifier has robust accuracy
at least ``1 - r`` at ``eps / 2``". When that exceeds what the best classifier measured for the
task reaches at ``eps / 2``, the claim is implausible: far likelier, the attacks on the detector
were too weak than the detector a better robust classifier than any known. Tramer found this
for 12 of 14 published detectors.

What is compared, per budget ``eps`` of a detector's risk rows:

* **implied**: ``1 - pair risk(eps)`` under the strongest attack measured (the per-sample worst
  case of the adaptive attacks and the audit's suite; the suite alone when no adaptive attack
  ran, said in ``adaptive``), with its Wilson 95% interval over the ``n`` test samples;
* **reference**: the highest robust accuracy at ``eps / 2`` over the reference classifiers
  (e.g. every model of a study, PGD-AT included; the guarded classifier itself when nothing
  else is known). A classifier measured at budgets that miss ``eps / 2`` counts with its robust
  accuracy at the largest measured budget *below* ``eps / 2`` (its clean accuracy when there is
  none): robust accuracy never grows with the budget, so that value bounds the one at
  ``eps / 2`` from above and the reference is never understated;
* **implausible** when the *lower* end of the implied accuracy's Wilson interval exceeds the
  reference, so sampling noise on a small test set does not raise the flag;
* the pair's own robust accuracy at ``eps / 2`` (``1 - pair risk(eps / 2)``) is reported beside
  it when ``eps / 2`` is one of the budgets, for reading, not for the flag.

References:
    Tramer, "Detecting Adversarial Examples Is (Nearly) As Hard As Classifying Them",
    ICML 2022; Wilson, JASA 1927 (score interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medrobust._utils.format import fmt_eps
from medrobust.evaluation.checks import check_row
from medrobust.evaluation.records import rate_with_ci

__all__ = ["CODE", "ReferenceClassifier", "plausibility", "plausibility_check"]

CODE = "MR202"


def _unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__}")
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ReferenceClassifier:
    """A classifier whose measured robustness a detector's claim is compared with.

    Attributes:
        name: How the report names it (e.g. ``"pgd-at-100pct"``).
        clean_accuracy: Its clean accuracy on the test samples.
        robust_accuracy: Its worst-case robust accuracy per budget ``{eps: accuracy}``.
    """

    name: str
    clean_accuracy: float
    robust_accuracy: Mapping[float, float]

    def __post_init__(self) -> None:
        _unit(f"{self.name}: clean_accuracy", self.clean_accuracy)
        for eps, acc in self.robust_accuracy.items():
            if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
                raise ValueError(f"{self.name}: budgets must be positive numbers, got {eps!r}")
            _unit(f"{self.name}: robust accuracy at eps={eps}", acc)

    @classmethod
    def from_metrics(cls, name: str, metrics: Mapping[str, Any]) -> ReferenceClassifier:
        """The reference of an audit's ``metrics`` (``clean.accuracy`` and the ``worst_case``
        rows' ``eps`` and ``robust_accuracy``).

        Raises:
            KeyError: If the metrics lack those entries.
        """
        robust = {float(r["eps"]): float(r["robust_accuracy"]) for r in metrics["worst_case"]}
        return cls(name, float(metrics["clean"]["accuracy"]), robust)

    def bound_at(self, eps: float) -> tuple[float, float]:
        """An upper bound on the robust accuracy at ``eps`` and the budget it was measured at:
        the accuracy at the largest measured budget not above ``eps`` (``0.0``: the clean
        accuracy when every measured budget is larger)."""
        below = [e for e in self.robust_accuracy if e <= eps or math.isclose(e, eps, rel_tol=1e-9)]
        if not below:
            return self.clean_accuracy, 0.0
        at = max(below)
        return float(self.robust_accuracy[at]), at


def _claim(row: Mapping[str, Any]) -> tuple[float, bool]:
    """The pair risk of a risk row under its strongest attack, and whether that was adaptive."""
    adaptive = row.get("pair_risk_adaptive")
    if adaptive is not None:
        return _unit("pair_risk_adaptive", adaptive), True
    return _unit("pair_risk", row["pair_risk"]), False


def plausibility(
    risk: Sequence[Mapping[str, Any]], references: Sequence[ReferenceClassifier]
) -> list[dict[str, Any]]:
    """Tramer's comparison at every budget of a detector's risk rows (see the module text).

    Args:
        risk: The risk rows of one classifier + detector pair (``eps``, ``n``, ``pair_risk``
            and ``pair_risk_adaptive``, as :func:`~medrobust.evaluation.risk.assess_detector`
            writes them).
        references: The classifiers to compare with (at least one).

    Returns:
        One row per budget: ``eps``, ``eps_display``, ``half_eps``, ``half_eps_display``,
        ``adaptive`` (whether the claim is under adaptive attacks), ``implied_accuracy``
        (``1 - pair risk`` at ``eps``), ``implied_ci95``, ``pair_accuracy_half`` (the pair at
        ``eps / 2``, None when not a budget), ``reference_accuracy``, ``reference`` (its
        name), ``reference_eps`` (the budget it was measured at, 0 for clean) and
        ``implausible``.

    Raises:
        ValueError: If ``references`` is empty or a row holds a risk outside ``[0, 1]`` or
            ``n`` below 1.

    References:
        Tramer, ICML 2022 (the reduction: robust detection at eps gives an inefficient
        classifier robust at eps / 2).
    """
    if not references:
        raise ValueError("plausibility needs at least one reference classifier")
    by_eps = {float(r["eps"]): r for r in risk}
    out = []
    for row in risk:
        eps = float(row["eps"])
        n = int(row["n"])
        if n < 1:
            raise ValueError(f"risk row at eps={fmt_eps(eps)} has n={n}: no samples")
        pair_risk, adaptive = _claim(row)
        implied = 1.0 - pair_risk
        _, ci = rate_with_ci(round(implied * n), n)
        half = eps / 2
        bounds = [(*ref.bound_at(half), ref.name) for ref in references]
        ref_acc, ref_eps, ref_name = max(bounds, key=lambda b: b[0])
        twin = next((r for e, r in by_eps.items() if math.isclose(e, half, rel_tol=1e-9)), None)
        out.append(
            {
                "eps": eps,
                "eps_display": fmt_eps(eps),
                "half_eps": half,
                "half_eps_display": fmt_eps(half),
                "adaptive": adaptive,
                "implied_accuracy": implied,
                "implied_ci95": ci,
                "pair_accuracy_half": None if twin is None else 1.0 - _claim(twin)[0],
                "reference_accuracy": ref_acc,
                "reference": ref_name,
                "reference_eps": ref_eps,
                "implausible": bool(ci[0] > ref_acc),
                "n": n,
            }
        )
    return out


def plausibility_check(rows: Sequence[Mapping[str, Any]], who: str) -> dict[str, Any]:
    """Check MR202 on the rows of :func:`plausibility`.

    Args:
        rows: The output of :func:`plausibility`.
        who: What is checked, for the message (e.g. ``"detector 'uad' on standard-100pct"``).

    Returns:
        A check row: ``warn`` naming every budget whose claim is implausible, else ``pass``
        (also when there are no rows).
    """
    bad = [r for r in rows if r["implausible"]]
    if not bad:
        if not rows:
            return check_row(CODE, "pass", f"{who}: no robustness claim to check")
        worst = max(rows, key=lambda r: r["implied_accuracy"] - r["reference_accuracy"])
        return check_row(
            CODE,
            "pass",
            f"{who}: no claim implies a classifier more robust than the best measured one "
            f"(closest: eps={worst['eps_display']}, implied {worst['implied_accuracy']:.3f} at "
            f"eps/2 against {worst['reference_accuracy']:.3f} of {worst['reference']})",
        )
    parts = [
        f"at eps={r['eps_display']} its pair risk implies a classifier with robust accuracy "
        f">= {r['implied_accuracy']:.3f} (95% lower bound {r['implied_ci95'][0]:.3f}) at "
        f"eps={r['half_eps_display']}, but the best measured classifier ({r['reference']}) "
        f"reaches {r['reference_accuracy']:.3f} there"
        + ("" if r["adaptive"] else " (claim under non-adaptive attacks only)")
        for r in bad
    ]
    return check_row(
        CODE,
        "warn",
        f"{who}: " + "; ".join(parts) + ". By Tramer's reduction the detector's robustness "
        "is implausible: the attacks on it were likely too weak (try stronger adaptive "
        "attacks, more steps) unless a classifier that robust is known for this task",
    )
