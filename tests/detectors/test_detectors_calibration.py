"""Tests of detector calibration: the held-out split, the standardisation and the threshold."""

from __future__ import annotations

import math

import pytest
import torch

from medrobust.detectors.calibration import (
    calibration_split,
    check_fraction,
    standardiser,
    threshold_at_fpr,
)


def test_calibration_split_is_seeded_disjoint_and_keeps_two_each_side() -> None:
    cal, fit = calibration_split(10, 0.3, seed=0, device=torch.device("cpu"))
    assert len(cal) == 3 and len(fit) == 7
    assert sorted(torch.cat([cal, fit]).tolist()) == list(range(10))
    again = calibration_split(10, 0.3, seed=0, device=torch.device("cpu"))
    assert torch.equal(cal, again[0])
    assert [len(t) for t in calibration_split(4, 0.01, 0, torch.device("cpu"))] == [2, 2]
    assert [len(t) for t in calibration_split(4, 0.99, 0, torch.device("cpu"))] == [2, 2]
    with pytest.raises(ValueError, match="at least 4 clean images"):
        calibration_split(3, 0.3, 0, torch.device("cpu"))


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.1, 0.5])
def test_threshold_flags_at_most_fpr_of_the_calibration_scores(fpr: float) -> None:
    scores = torch.randn(200, generator=torch.Generator().manual_seed(1))
    threshold, scale = threshold_at_fpr(scores, fpr)
    rate = float((scores > threshold).double().mean())
    assert rate <= fpr and rate >= fpr - 1 / 200 - 1e-12
    assert scale == pytest.approx(float(scores.double().std()))
    assert threshold_at_fpr(torch.ones(5), 0.1)[1] == 1.0  # no spread: unit scale


def test_standardiser_replaces_degenerate_spreads() -> None:
    comp = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    mu, sigma = standardiser(comp)
    assert mu.tolist() == [2.0, 5.0] and sigma[0] == pytest.approx(math.sqrt(2)) and sigma[1] == 1
    assert standardiser(comp[:1])[1].tolist() == [1.0, 1.0]


def test_check_fraction() -> None:
    assert check_fraction("fpr", 0.5) == 0.5
    for bad in (0, 1.0, math.nan):
        with pytest.raises(ValueError, match=r"fpr must be in \(0, 1\)"):
            check_fraction("fpr", bad)
    with pytest.raises(TypeError, match="fpr must be a number"):
        check_fraction("fpr", True)


def test_a_detector_refuses_inputs_of_another_shape_than_it_was_fitted_on() -> None:
    import pytest
    import torch

    from medrobust.detectors import create_detector
    from medrobust.models import create_model

    model = create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0).eval()
    det = create_detector("uad", fpr=0.1).fit(
        model, torch.rand(32, 1, 16, 16), calibration=torch.rand(16, 1, 16, 16)
    )
    assert det.score(torch.rand(2, 1, 16, 16)).shape == (2,)
    with pytest.raises(ValueError, match=r"fitted on inputs of shape \(1, 16, 16\).*\(1, 24, 24\)"):
        det.score(torch.rand(2, 1, 24, 24))
