"""The answer of a model comparison: rankings per axis, rank correlations, paired tests and
one plain sentence (Paschali et al., MICCAI 2018).

:func:`summarise_comparison` reads the per-model documents of
:mod:`medrobust.pipelines.compare_models` (clean, shifted, corruption and adversarial results with
per-sample outcomes on shared samples) and returns the ``comparison`` section of
``metrics.json``:

* ``table``: one row per model with every axis;
* ``rankings``: the rank of every model on every axis (1 = best);
* ``spearman``: the rank correlation of the clean-accuracy ranking with each other axis;
* ``pairs``: for every pair of models, whether their clean-score 95% intervals overlap
  ("comparable generalizability"), and a paired test of their clean and robust outcomes on the
  same samples at every budget, with Holm's correction over the pairs: the exact McNemar test
  of 0/1 correctness for classifiers, the paired bootstrap of per-sample Dice for segmenters;
* ``finding``: one sentence saying whether models of comparable clean accuracy differed
  significantly in robustness at the headline budget (the middle one of the list, fixed in
  advance so that the sentence is not chosen after seeing the results), and whether that
  difference goes beyond their clean gap (at least :data:`BEYOND` times it) or merely carries it
  over.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from medrobust._utils.format import fmt_eps
from medrobust.evaluation.ranking import mcnemar, paired_bootstrap, rank, spearman

__all__ = ["as_number", "headline_budget", "holm", "summarise_comparison"]

#: The significance level of the paired tests (after Holm's correction).
ALPHA = 0.05
#: A comparable pair "differs in robustness" when its robust gap is significant and at least
#: this many times its clean gap; a smaller significant gap is reported as robustness following
#: the clean score (the robust difference is then mostly the clean one carried over).
BEYOND = 2.0


def headline_budget(eps: Sequence[float]) -> float:
    """The budget the finding is stated at: the middle one of the list (lower middle for an
    even count), chosen before any result is seen."""
    return float(eps[(len(eps) - 1) // 2])


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error over the given tests)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for r, i in enumerate(order):
        running = max(running, min(1.0, (m - r) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _robust(doc: Mapping[str, Any], e: float) -> dict[str, Any]:
    for row in doc["robust"]:
        if math.isclose(float(row["eps"]), e, rel_tol=1e-9):
            return dict(row)
    raise KeyError(f"model {doc['key']!r} has no robust score at eps={e:g}")


def _minimal_median(doc: Mapping[str, Any], name: str) -> float | str | None:
    """The median as stored: a number, ``"inf"`` (not flipped) or None (not measured)."""
    value = ((doc.get("minimal") or {}).get(name) or {}).get("median")
    return value if value is None or value == "inf" else float(value)


def as_number(value: float | str | None) -> float:
    """A stored median as a float: ``"inf"`` -> inf, None -> NaN."""
    if value is None:
        return math.nan
    return math.inf if value == "inf" else float(value)


def _row(doc: Mapping[str, Any], eps: Sequence[float], ref: Mapping[str, Any]) -> dict[str, Any]:
    facts = doc.get("facts") or {}
    shifted = doc.get("shifted") or {}
    corruption = doc.get("corruption") or {}
    row: dict[str, Any] = {
        "key": doc["key"],
        "label": doc["label"],
        "parameters": facts.get("parameters"),
        "depth": facts.get("depth"),
        "flops": facts.get("flops"),
        "train_time_s": facts.get("train_time_s"),
        "clean": doc["clean"]["score"],
        "clean_ci95": doc["clean"]["ci95"],
        "shifted": shifted.get("score"),
        "shifted_ci95": shifted.get("ci95"),
        "corruption": corruption.get("score"),
        "corruption_relative": None,
        "robust": {},
        "deepfool_l2_median": _minimal_median(doc, "deepfool_l2"),
        "jsma_l0_share_median": _minimal_median(doc, "jsma_l0_share"),
    }
    ref_score = (ref.get("corruption") or {}).get("score")
    if row["corruption"] is not None and ref_score:
        row["corruption_relative"] = row["corruption"] / ref_score
    for e in eps:
        r = _robust(doc, e)
        row["robust"][fmt_eps(e)] = {"score": r["score"], "ci95": r.get("ci95")}
    return row


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def _axes(
    rows: Sequence[Mapping[str, Any]], eps: Sequence[float], metric: str, corruption: str
) -> dict[str, list[float]]:
    """Every ranked axis as one value per model."""
    axes: dict[str, list[float]] = {
        f"clean {metric}": [r["clean"] for r in rows],
        f"shifted {metric}": [_nan(r["shifted"]) for r in rows],
        f"corruption {corruption}": [_nan(r["corruption"]) for r in rows],
    }
    for e in eps:
        axes[f"robust {metric} @ {fmt_eps(e)}"] = [r["robust"][fmt_eps(e)]["score"] for r in rows]
    axes["minimal L2 (DeepFool)"] = [as_number(r["deepfool_l2_median"]) for r in rows]
    axes["minimal L0 (JSMA)"] = [as_number(r["jsma_l0_share_median"]) for r in rows]
    return {k: v for k, v in axes.items() if not all(math.isnan(x) for x in v)}


def _paired(a: Sequence[float], b: Sequence[float], metric: str) -> dict[str, Any]:
    """McNemar for 0/1 correctness (accuracy), the paired bootstrap for scores (Dice)."""
    if metric == "accuracy":
        return mcnemar(a, b).to_dict()
    return paired_bootstrap(a, b).to_dict()


def _pairs(
    docs: Sequence[Mapping[str, Any]], eps: Sequence[float], metric: str
) -> list[dict[str, Any]]:
    pairs = []
    for a, b in itertools.combinations(docs, 2):
        lo_a, hi_a = a["clean"]["ci95"]
        lo_b, hi_b = b["clean"]["ci95"]
        pair: dict[str, Any] = {
            "a": a["key"],
            "b": b["key"],
            "clean_difference": a["clean"]["score"] - b["clean"]["score"],
            "comparable": bool(lo_a <= hi_b and lo_b <= hi_a),
            "clean_test": _paired(a["per_sample"]["clean"], b["per_sample"]["clean"], metric),
            "robust_tests": {},
        }
        for e in eps:
            name = f"robust@{e:.6g}"
            pair["robust_tests"][fmt_eps(e)] = _paired(
                a["per_sample"][name], b["per_sample"][name], metric
            )
        pairs.append(pair)
    for e in eps:
        tests = [p["robust_tests"][fmt_eps(e)] for p in pairs]
        for t, adj in zip(tests, holm([float(t["p_value"]) for t in tests]), strict=True):
            t["p_holm"] = adj
    return pairs


def _gaps(
    pair: Mapping[str, Any], robust: Mapping[str, float], clean: Mapping[str, float]
) -> tuple[float, float]:
    """``(|robust difference|, |clean difference|)`` of a pair at the headline budget."""
    a, b = pair["a"], pair["b"]
    return abs(robust[a] - robust[b]), abs(clean[a] - clean[b])


def _finding(
    rows: Sequence[Mapping[str, Any]],
    pairs: Sequence[Mapping[str, Any]],
    rho: float,
    e: float,
    metric: str,
) -> str:
    label = {r["key"]: r["label"] for r in rows}
    acc = {r["key"]: r["robust"][fmt_eps(e)]["score"] for r in rows}
    clean = {r["key"]: r["clean"] for r in rows}
    fmt = "{:.1%}" if metric == "accuracy" else "{:.3f}"
    test_name = "McNemar" if metric == "accuracy" else "paired bootstrap"
    eps_s = fmt_eps(e)
    comparable = [p for p in pairs if p["comparable"]]
    differing = [p for p in comparable if p["robust_tests"][eps_s]["p_holm"] < ALPHA]
    rho_s = "undefined (too few models or no spread)" if math.isnan(rho) else f"{rho:+.2f}"
    tail = (
        f" The clean-{metric} ranking and the robustness ranking at {eps_s} have Spearman "
        f"rho = {rho_s}."
    )
    if differing:
        # the pair whose robust gap most exceeds its clean gap
        p = max(differing, key=lambda q: _gaps(q, acc, clean)[0] - _gaps(q, acc, clean)[1])
        t = p["robust_tests"][eps_s]
        a, b = p["a"], p["b"]
        robust_gap, clean_gap = _gaps(p, acc, clean)
        stats = (
            f"({test_name} p = {t['p_value']:.3g}, Holm-adjusted {t['p_holm']:.3g}, n = {t['n']}); "
            f"{len(differing)} of {len(comparable)} comparable pairs differ significantly."
        )
        scores = (
            f"{label[a]} and {label[b]} reach {fmt.format(clean[a])} and {fmt.format(clean[b])} "
            f"clean {metric} (overlapping 95% intervals) and {fmt.format(acc[a])} and "
            f"{fmt.format(acc[b])} robust {metric} at {eps_s}"
        )
        if robust_gap >= BEYOND * clean_gap:
            return (
                f"Models of comparable clean {metric} differ in robustness: {scores} {stats}" + tail
            )
        return (
            f"Models of comparable clean {metric} differ significantly in robust {metric}, but by "
            f"less than {BEYOND:g} times their clean gap, so robustness here follows "
            f"generalizability: {scores} {stats}" + tail
        )
    if comparable:
        return (
            f"No pair of models with comparable clean {metric} ({len(comparable)} pairs with "
            f"overlapping 95% intervals) differs significantly in robust {metric} at {eps_s} "
            f"after Holm's correction: this run does not reproduce Paschali et al.'s finding "
            f"(more test samples or more models may)." + tail
        )
    return (
        f"No two models have overlapping clean-{metric} intervals, so this run cannot say "
        "whether models of comparable generalizability differ in robustness." + tail
    )


def summarise_comparison(
    docs: Sequence[Mapping[str, Any]], eps: Sequence[float], reference: str
) -> dict[str, Any]:
    """The ``comparison`` section of ``metrics.json`` (see the module docstring).

    Args:
        docs: Per-model documents, in the order of the comparison, each with ``metric``
            (``"accuracy"`` or ``"dice"``), ``clean``/``shifted`` (``score``, ``ci95``),
            ``corruption`` (``score``, ``name``, ``lower_is_better``), ``robust`` (per budget
            ``eps``, ``score``, ``ci95``) and ``per_sample`` outcomes (``clean``,
            ``robust@<eps>``) on shared samples.
        eps: The budgets every model was attacked at.
        reference: Key of the reference model of the relative corruption score.

    Raises:
        ValueError: For fewer than two models, mixed metrics or an unknown reference.
    """
    if len(docs) < 2:
        raise ValueError(f"a comparison needs at least two models, got {len(docs)}")
    metrics = {d.get("metric", "accuracy") for d in docs}
    if len(metrics) != 1:
        raise ValueError(f"every model must be scored by one metric, got {sorted(metrics)}")
    metric = metrics.pop()
    by_key = {d["key"]: d for d in docs}
    if reference not in by_key:
        raise ValueError(f"unknown reference model {reference!r}; models: {sorted(by_key)}")
    corruption = by_key[reference].get("corruption") or {}
    corruption_name = str(corruption.get("name", "error"))
    lower_better = {f"corruption {corruption_name}"} if corruption.get("lower_is_better") else set()
    rows = [_row(d, eps, by_key[reference]) for d in docs]
    axes = _axes(rows, eps, metric, corruption_name)
    rankings = {
        axis: rank(values, higher_is_better=axis not in lower_better)
        for axis, values in axes.items()
    }
    clean_ranks = rankings[f"clean {metric}"]
    rhos = {
        axis: spearman(clean_ranks, ranks)
        for axis, ranks in rankings.items()
        if axis != f"clean {metric}"
    }
    pairs = _pairs(docs, eps, metric)
    e = headline_budget(eps)
    rho = rhos.get(f"robust {metric} @ {fmt_eps(e)}", math.nan)
    return {
        "metric": metric,
        "corruption_metric": corruption_name,
        "headline_eps": e,
        "reference": reference,
        "alpha": ALPHA,
        "table": rows,
        "rankings": {axis: dict(zip(by_key, r, strict=True)) for axis, r in rankings.items()},
        "spearman": rhos,
        "pairs": pairs,
        "finding": _finding(rows, pairs, rho, e, metric),
    }
