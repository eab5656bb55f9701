"""Tests of the resumable training state (training/state.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from medrobust.training import TrainConfig
from medrobust.training.state import (
    STATE_VERSION,
    Generators,
    Progress,
    check_resumable,
    write_history,
)


def test_progress_round_trips_through_the_saved_state() -> None:
    p = Progress([{"epoch": 1}], 1, 7, 0.5, 1, 0, False, 2.0)
    back = Progress.from_state(p.to_state(wall=3.5))
    assert back == Progress([{"epoch": 1}], 1, 7, 0.5, 1, 0, False, 3.5)


def test_generators_restore_every_stream() -> None:
    gens = Generators(
        torch.device("cpu"), torch.Generator(), torch.Generator(), [torch.Generator()]
    )
    state = gens.state()
    first = [torch.rand(1, generator=g) for g in (gens.data, gens.recipe, gens.loader[0])]
    glob = torch.rand(1)
    gens.set_state(state)
    assert [torch.rand(1, generator=g) for g in (gens.data, gens.recipe, gens.loader[0])] == first
    assert torch.equal(torch.rand(1), glob)
    with pytest.raises(ValueError, match=r"has 0 generator\(s\) but the checkpoint saved 1"):
        Generators(torch.device("cpu"), torch.Generator(), torch.Generator()).set_state(state)


def test_check_resumable() -> None:
    cfg = TrainConfig(epochs=3)
    state = {"version": STATE_VERSION, "config": cfg.to_dict(), "epoch": 2}
    check_resumable(Path("last.pt"), state, TrainConfig(epochs=5, patience=2))  # may change
    with pytest.raises(ValueError, match="holds no training state of this medrobust version"):
        check_resumable(Path("last.pt"), {"version": 0}, cfg)
    with pytest.raises(ValueError, match=r"lr: saved 0\.001, now 0\.01"):
        check_resumable(Path("last.pt"), state, TrainConfig(epochs=3, lr=0.01))
    with pytest.raises(ValueError, match="has already trained 2 epochs, more than"):
        check_resumable(Path("last.pt"), state, TrainConfig(epochs=1))


def test_history_writes_non_finite_numbers_as_null(tmp_path: Path) -> None:
    write_history(tmp_path / "h.json", [{"epoch": 1, "val_auc": math.nan, "loss": 0.5}])
    assert json.loads((tmp_path / "h.json").read_text()) == [
        {"epoch": 1, "val_auc": None, "loss": 0.5}
    ]
