"""Per-model measurements and the summary of a model comparison (Paschali et al.)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medrobust.evaluation.comparison import (
    balanced_error,
    finite_median,
    minimal_perturbation,
    model_facts,
)
from medrobust.evaluation.comparison_summary import holm, summarise_comparison
from medrobust.evaluation.ranking import mcnemar
from medrobust.models import ModelAdapter


def test_balanced_error_weights_classes_equally() -> None:
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    pred = torch.tensor([0, 0, 0, 0, 0, 0])  # all majority class: accuracy 4/6, BE 0.5
    assert balanced_error(pred, y, 2) == pytest.approx(0.5)
    assert balanced_error(y.clone(), y, 2) == 0.0
    assert balanced_error(torch.tensor([0, 1, 1, 1, 1, 0]), y, 2) == pytest.approx(
        (3 / 4 + 1 / 2) / 2
    )
    with pytest.raises(ValueError, match="one prediction per label"):
        balanced_error(pred[:3], y, 2)


class Linear2(nn.Module):
    """A linear binary classifier on 4 pixels: logit difference w.x + b."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 2.0, -0.5, 0.0]]))
            self.fc.bias.copy_(torch.tensor([0.3, -0.3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_minimal_l2_is_the_distance_to_a_linear_boundary() -> None:
    model = ModelAdapter(Linear2(), num_classes=2)
    x = torch.tensor([[0.6, 0.2, 0.4, 0.5], [0.5, 0.5, 0.5, 0.5], [0.2, 0.6, 0.5, 0.5]])
    x = x.reshape(3, 1, 2, 2)
    margin = (model(x)[:, 0] - model(x)[:, 1]).detach()
    y = torch.tensor([0, 1, 0])  # sample 1 (margin 0.3 - 1.0 + ... ) is misclassified
    pred = model(x).argmax(1)
    out = minimal_perturbation(model, x, y, batch_size=2, jsma_gamma=1.0)
    w = torch.tensor([2.0, -4.0, 1.0, 0.0])  # gradient of the logit difference
    for i in range(3):
        if pred[i] != y[i]:
            assert math.isnan(out["deepfool_l2"][i])  # misclassified: not part of the score
        else:
            exact = float(margin[i].abs() / w.norm())
            # DeepFool's overshoot (0.02) steps just past the boundary
            assert out["deepfool_l2"][i] == pytest.approx(exact * 1.02, rel=0.02)
            assert 0 < out["jsma_l0_share"][i] <= 0.5 + 1e-9  # at most 2 of 4 values changed


def test_finite_median_counts_unflipped_samples_as_largest() -> None:
    assert finite_median(torch.tensor([1.0, math.inf, 3.0, math.nan])) == 3.0
    assert finite_median(torch.tensor([1.0, math.inf, math.inf])) == math.inf
    assert finite_median(torch.tensor([math.nan])) is None


def test_model_facts_count_parameters_depth_and_flops() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
    facts = model_facts(net, (1, 4, 4))
    assert facts["parameters"] == 16 * 8 + 8 + 8 * 2 + 2
    assert facts["depth"] == 2
    assert facts["flops"] == 2 * (16 * 8 + 8 * 2)


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def _doc(key: str, clean: list[int], robust: list[int], be: float) -> dict:
    n, m = len(clean), len(robust)
    acc, rob = sum(clean) / n, sum(robust) / m
    ci = [max(0.0, acc - 0.05), min(1.0, acc + 0.05)]
    return {
        "key": key,
        "label": key.upper(),
        "metric": "accuracy",
        "clean": {"score": acc, "ci95": ci, "n": n},
        "shifted": {"score": acc - 0.1, "ci95": ci},
        "corruption": {"score": be, "name": "balanced error", "lower_is_better": True},
        "robust": [{"eps": 0.01, "score": rob, "ci95": [0, 1]}],
        "minimal": {"deepfool_l2": {"median": 0.1 + rob}, "jsma_l0_share": {"median": "inf"}},
        "facts": {"parameters": 10, "depth": 2, "flops": 40},
        "per_sample": {"clean": clean, "robust@0.01": robust},
    }


def test_summary_states_a_robustness_gap_between_comparable_models() -> None:
    clean = [1] * 80 + [0] * 20
    a = _doc("a", clean, [1] * 60 + [0] * 40, 0.2)
    b = _doc("b", clean, [1] * 10 + [0] * 90, 0.4)  # same clean accuracy, far less robust
    c = _doc("c", [1] * 50 + [0] * 50, [0] * 100, 0.5)  # worse on every axis
    s = summarise_comparison([a, b, c], [0.01], "a")
    assert s["rankings"]["clean accuracy"] == {"a": 1.5, "b": 1.5, "c": 3.0}
    assert s["rankings"]["corruption balanced error"] == {"a": 1.0, "b": 2.0, "c": 3.0}
    pair = next(p for p in s["pairs"] if (p["a"], p["b"]) == ("a", "b"))
    assert pair["comparable"] is True
    t = pair["robust_tests"]["0.01"]
    assert t["p_value"] == pytest.approx(
        mcnemar(a["per_sample"]["robust@0.01"], b["per_sample"]["robust@0.01"]).p_value
    )
    assert t["p_holm"] >= t["p_value"]
    assert s["finding"].startswith(
        "Models of comparable clean accuracy differ in robustness: A and B"
    )
    assert s["table"][1]["corruption_relative"] == pytest.approx(2.0)
    assert s["table"][0]["jsma_l0_share_median"] == "inf"
    assert s["spearman"]["robust accuracy @ 0.01"] == pytest.approx(0.866, abs=1e-3)


def test_summary_says_when_it_cannot_answer() -> None:
    a = _doc("a", [1] * 90 + [0] * 10, [1] * 50 + [0] * 50, 0.2)
    b = _doc("b", [1] * 50 + [0] * 50, [1] * 50 + [0] * 50, 0.2)
    s = summarise_comparison([a, b], [0.01], "b")
    assert s["finding"].startswith("No two models have overlapping clean-accuracy intervals")
    same = summarise_comparison(
        [a, _doc("c", [1] * 90 + [0] * 10, [1] * 50 + [0] * 50, 0.2)], [0.01], "a"
    )
    assert same["finding"].startswith("No pair of models with comparable clean accuracy")
    with pytest.raises(ValueError, match="at least two models"):
        summarise_comparison([a], [0.01], "a")
    with pytest.raises(ValueError, match="unknown reference model 'z'"):
        summarise_comparison([a, b], [0.01], "z")


def test_summary_of_segmenters_uses_dice_and_the_paired_bootstrap() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    clean = rng.uniform(0.7, 0.9, 60).tolist()

    def seg(key: str, robust: list[float], corr: float) -> dict:
        return {
            "key": key,
            "label": key,
            "metric": "dice",
            "clean": {"score": float(np.mean(clean)), "ci95": [0.75, 0.85], "n": 60},
            "shifted": None,
            "corruption": {"score": corr, "name": "Dice", "lower_is_better": False},
            "robust": [{"eps": 0.01, "score": float(np.mean(robust)), "ci95": None}],
            "facts": {},
            "per_sample": {"clean": clean, "robust@0.01": robust},
        }

    a = seg("a", [c - 0.1 for c in clean], 0.7)
    b = seg("b", [c - 0.5 for c in clean], 0.6)
    s = summarise_comparison([a, b], [0.01], "a")
    assert s["metric"] == "dice"
    assert s["rankings"]["corruption Dice"] == {"a": 1.0, "b": 2.0}  # higher Dice is better
    t = s["pairs"][0]["robust_tests"]["0.01"]
    assert t["test"] == "bootstrap" and t["difference"] == pytest.approx(0.4)
    assert s["finding"].startswith("Models of comparable clean dice differ in robustness")
    assert "paired bootstrap p" in s["finding"]
    with pytest.raises(ValueError, match="one metric"):
        summarise_comparison([a, {**b, "metric": "accuracy"}], [0.01], "a")


def test_a_robust_gap_that_only_carries_the_clean_gap_is_not_called_a_robustness_gap() -> None:
    a = _doc("a", [1] * 80 + [0] * 20, [1] * 60 + [0] * 40, 0.2)
    b = _doc("b", [1] * 75 + [0] * 25, [1] * 52 + [0] * 48, 0.2)
    s = summarise_comparison([a, b], [0.01], "a")
    t = s["pairs"][0]["robust_tests"]["0.01"]
    assert s["pairs"][0]["comparable"] and t["p_holm"] < 0.05  # significant, 8 points
    # but 8 points is less than twice the 5-point clean gap
    assert "robustness here follows generalizability" in s["finding"]
    wide = _doc("b", [1] * 75 + [0] * 25, [1] * 40 + [0] * 60, 0.2)  # 20 points: beyond
    assert summarise_comparison([a, wide], [0.01], "a")["finding"].startswith(
        "Models of comparable clean accuracy differ in robustness"
    )
