"""Ranks, rank correlation and paired tests, checked against scipy and hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from medrobust.evaluation.ranking import mcnemar, paired_bootstrap, rank, spearman


def test_rank_orders_ties_and_missing_values() -> None:
    assert rank([0.9, 0.7, 0.8]) == [1.0, 3.0, 2.0]
    assert rank([0.9, 0.7, 0.8], higher_is_better=False) == [3.0, 1.0, 2.0]
    assert rank([0.5, 0.8, 0.5, 0.1]) == [2.5, 1.0, 2.5, 4.0]
    assert rank([math.nan, 0.2, 0.4]) == [3.0, 2.0, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, 12).astype(float)
    y = x + rng.normal(0, 2, 12)
    assert spearman(x.tolist(), y.tolist()) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_spearman_edge_cases() -> None:
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="lengths 2 and 3"):
        spearman([1, 2], [1, 2, 3])


def test_mcnemar_exact_p_value_and_counts() -> None:
    # 10 samples only A gets right, 2 only B, 30 both, 8 neither
    a = [1] * 10 + [0] * 2 + [1] * 30 + [0] * 8
    b = [0] * 10 + [1] * 2 + [1] * 30 + [0] * 8
    t = mcnemar(a, b)
    assert (t.only_a, t.only_b, t.n) == (10, 2, 50)
    assert t.difference == pytest.approx(8 / 50)
    assert t.p_value == pytest.approx(stats.binomtest(2, 12, 0.5).pvalue)
    same = mcnemar(a, a)
    assert same.p_value == 1.0 and same.difference == 0.0
    assert mcnemar(b, a).p_value == pytest.approx(t.p_value)


def test_mcnemar_refuses_scores_and_unpaired_input() -> None:
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([0.5, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="same samples, got 2 and 3"):
        mcnemar([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="at least one sample"):
        mcnemar([], [])


def test_paired_bootstrap_detects_a_paired_shift_that_intervals_hide() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.2, 200)
    a, b = base + 0.02, base  # a constant small paired advantage, large spread between samples
    t = paired_bootstrap(a.tolist(), b.tolist(), n_boot=500)
    assert t.difference == pytest.approx(0.02)
    assert t.p_value <= 1 / 500 + 1e-12 and t.ci95[0] > 0
    null = paired_bootstrap(base.tolist(), (base + rng.normal(0, 0.05, 200)).tolist(), seed=1)
    assert null.p_value > 0.05 and null.ci95[0] < 0 < null.ci95[1]
    assert paired_bootstrap([1.0, 2.0], [1.0, 2.0]).p_value == 1.0
    with pytest.raises(ValueError, match="n_boot must be >= 100"):
        paired_bootstrap([1.0], [1.0], n_boot=10)
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap([1.0, math.nan], [1.0, 2.0])
