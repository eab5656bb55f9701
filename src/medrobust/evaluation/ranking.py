"""Statistics for comparing models on the same samples: ranks, rank correlation, paired tests.

Paschali et al. (MICCAI 2018) show that models with comparable test accuracy can differ widely
in robustness. Saying so for one run needs three things, all computed here from per-sample
outcomes of several models on the *same* samples:

* :func:`rank` ranks the models on one axis (1 = best; tied values share their mean rank);
* :func:`spearman` is the rank correlation between two axes (say clean accuracy and robust
  accuracy): near 1 when the robust models are the accurate ones, near 0 or below when a
  leaderboard of clean accuracy says nothing about robustness;
* :func:`mcnemar` (exact, two-sided) and :func:`paired_bootstrap` test whether two models differ
  on the same samples: they use the pairing, so they detect differences that two overlapping
  confidence intervals would hide.

References:
    McNemar, "Note on the sampling error of the difference between correlated proportions or
    percentages", Psychometrika 12(2), 1947 (the exact form conditions on the discordant pairs);
    Efron & Tibshirani, "An Introduction to the Bootstrap", 1993 (paired bootstrap);
    Spearman, "The proof and measurement of association between two things", 1904.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PairedTest", "mcnemar", "paired_bootstrap", "rank", "spearman"]


def rank(values: Sequence[float], *, higher_is_better: bool = True) -> list[float]:
    """Rank of every value, 1 = best; tied values share the mean of their ranks.

    NaN values (a model without a result on this axis) rank last, tied among themselves.

    Args:
        values: One value per model.
        higher_is_better: Whether a larger value ranks first (accuracy) or a smaller one (error).

    Returns:
        One rank per value, as floats (2.5 for a tie between places 2 and 3).
    """
    keyed = []
    for i, v in enumerate(values):
        f = float(v)
        missing = math.isnan(f)
        keyed.append((missing, 0.0 if missing else (-f if higher_is_better else f), i))
    keyed.sort()
    ranks = [0.0] * len(keyed)
    start = 0
    while start < len(keyed):
        stop = start
        while stop + 1 < len(keyed) and keyed[stop + 1][:2] == keyed[start][:2]:
            stop += 1
        mean_rank = (start + stop) / 2 + 1
        for j in range(start, stop + 1):
            ranks[keyed[j][2]] = mean_rank
        start = stop + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of two paired sequences (ties get mean ranks).

    Returns:
        The Pearson correlation of the ranks, in ``[-1, 1]``; NaN with fewer than 3 pairs or
        when either sequence is constant (no ranking to correlate).

    Raises:
        ValueError: If the sequences differ in length.
    """
    if len(x) != len(y):
        raise ValueError(f"spearman needs paired sequences, got lengths {len(x)} and {len(y)}")
    pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=True)]
    pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3:
        return math.nan
    rx = np.asarray(rank([a for a, _ in pairs]))
    ry = np.asarray(rank([b for _, b in pairs]))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    if den == 0.0:
        return math.nan
    return float((dx * dy).sum() / den)


@dataclass(frozen=True)
class PairedTest:
    """The outcome of a paired comparison of models A and B on the same samples.

    Attributes:
        test: ``"mcnemar"`` or ``"bootstrap"``.
        n: Number of paired samples.
        difference: Mean of A minus mean of B (for 0/1 outcomes: the accuracy difference).
        p_value: Two-sided p-value of "A and B do not differ".
        ci95: 95% interval of ``difference`` (bootstrap percentiles; for McNemar the Wald
            interval of the paired difference), ``(nan, nan)`` when undefined.
        only_a: Samples where only A succeeded (McNemar's discordant count b).
        only_b: Samples where only B succeeded (McNemar's discordant count c).
    """

    test: str
    n: int
    difference: float
    p_value: float
    ci95: tuple[float, float]
    only_a: int = 0
    only_b: int = 0

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values."""
        return {
            "test": self.test,
            "n": self.n,
            "difference": self.difference,
            "p_value": self.p_value,
            "ci95": list(self.ci95),
            "only_a": self.only_a,
            "only_b": self.only_b,
        }


def _paired_arrays(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(a, dtype=np.float64).reshape(-1)
    xb = np.asarray(b, dtype=np.float64).reshape(-1)
    if xa.shape != xb.shape:
        raise ValueError(
            f"a paired test needs outcomes on the same samples, got {xa.size} and {xb.size}"
        )
    if xa.size == 0:
        raise ValueError("a paired test needs at least one sample, got none")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise ValueError("paired outcomes must be finite numbers (NaN or inf found)")
    return xa, xb


def mcnemar(a: Sequence[bool] | Sequence[float], b: Sequence[bool] | Sequence[float]) -> PairedTest:
    """Exact two-sided McNemar test of two models' 0/1 outcomes on the same samples.

    Under "A and B succeed equally often", each discordant sample (one succeeds, the other not)
    is a fair coin: the p-value is the two-sided binomial tail of the smaller discordant count,
    ``min(1, 2 * P[Bin(b + c, 1/2) <= min(b, c)])``, computed exactly.

    Args:
        a: Per-sample outcomes of model A (True / 1 = correct), shape ``(N,)``.
        b: The same samples' outcomes of model B.

    Raises:
        ValueError: For sequences of different length, empty ones or values other than 0/1.
    """
    xa, xb = _paired_arrays(a, b)
    if not (np.isin(xa, (0.0, 1.0)).all() and np.isin(xb, (0.0, 1.0)).all()):
        raise ValueError("mcnemar needs 0/1 (or boolean) outcomes; use paired_bootstrap for scores")
    only_a = int(((xa == 1) & (xb == 0)).sum())
    only_b = int(((xa == 0) & (xb == 1)).sum())
    n_disc = only_a + only_b
    if n_disc == 0:
        p = 1.0
    else:
        k = min(only_a, only_b)
        tail = sum(math.comb(n_disc, i) for i in range(k + 1))
        p = min(1.0, 2.0 * tail / 2.0**n_disc)
    n = int(xa.size)
    diff = (only_a - only_b) / n
    d = xa - xb
    se = float(np.sqrt(max(0.0, (d * d).mean() - diff * diff) / n))
    ci = (diff - 1.959964 * se, diff + 1.959964 * se) if n > 1 else (math.nan, math.nan)
    return PairedTest("mcnemar", n, diff, p, ci, only_a, only_b)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, seed: int = 0
) -> PairedTest:
    """Paired bootstrap of the mean difference of two models' per-sample scores.

    Samples are resampled with replacement as pairs, so the correlation between the models is
    kept. The p-value is twice the smaller share of bootstrap differences on either side of 0
    (the percentile test), at least ``1 / n_boot``.

    Args:
        a: Per-sample scores of model A (accuracy as 0/1, Dice, ...), shape ``(N,)``.
        b: The same samples' scores of model B.
        n_boot: Bootstrap resamples (>= 100).
        seed: Seed of the resampling.

    Raises:
        ValueError: For sequences of different length, empty or non-finite ones, or
            ``n_boot < 100``.
    """
    if n_boot < 100:
        raise ValueError(f"n_boot must be >= 100, got {n_boot}")
    xa, xb = _paired_arrays(a, b)
    d = xa - xb
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    boot = d[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    below, above = float((boot <= 0).mean()), float((boot >= 0).mean())
    p = min(1.0, max(2.0 * min(below, above), 1.0 / n_boot))
    if np.all(d == 0):
        p = 1.0
    return PairedTest("bootstrap", int(d.size), float(d.mean()), p, (float(lo), float(hi)))
