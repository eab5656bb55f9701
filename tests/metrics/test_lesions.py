"""Lesion-level counts: components per size bin, found, and false components (2-D and 3-D)."""

from __future__ import annotations

import pytest
import torch

from medrobust.metrics.lesions import lesion_counts, size_bin_names


def test_components_found_missed_and_false_by_size() -> None:
    truth = torch.zeros(1, 32, 32, dtype=torch.long)
    truth[0, 1:3, 1:3] = 1  # a small lesion (4 px)
    truth[0, 10:20, 10:20] = 1  # a medium one (100 px)
    truth[0, 25:28, 25:28] = 2  # a small lesion of class 2 (9 px)
    pred = torch.zeros_like(truth)
    pred[0, 12:14, 12:14] = 1  # finds the medium lesion with 4 px
    pred[0, 25, 25] = 1  # wrong class on the class-2 lesion: missed, and a false class-1 blob
    pred[0, 30:32, 0:2] = 2  # a false class-2 blob
    out = lesion_counts(pred, truth, 3, edges=(64, 512))
    assert out["lesions"].tolist() == [[2.0, 1.0, 0.0]]
    assert out["lesions_found"].tolist() == [[0.0, 1.0, 0.0]]
    assert out["false_components"].tolist() == [2.0]
    perfect = lesion_counts(truth, truth, 3)
    assert torch.equal(perfect["lesions_found"], perfect["lesions"])
    assert perfect["false_components"].tolist() == [0.0]


def test_diagonal_voxels_are_one_component_and_3d_works() -> None:
    truth = torch.zeros(2, 6, 6, 6, dtype=torch.long)
    truth[0, 0, 0, 0] = truth[0, 1, 1, 1] = 1  # touching corners: one lesion (26-connectivity)
    truth[1, 0, 0, 0] = truth[1, 3, 3, 3] = 1  # two lesions
    out = lesion_counts(torch.zeros_like(truth), truth, 2, edges=(2,))
    assert out["lesions"].tolist() == [[0.0, 1.0], [2.0, 0.0]]
    assert out["lesions_found"].sum() == 0


def test_bin_names_and_bad_input() -> None:
    assert size_bin_names((64, 512)) == ["< 64 vx", "64-511 vx", ">= 512 vx"]
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="same shape"):
        lesion_counts(a, torch.zeros(1, 4, 5, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="edges must be increasing"):
        lesion_counts(a, a, 2, edges=(8, 8))
