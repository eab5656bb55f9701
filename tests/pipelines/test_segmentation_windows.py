"""The sliding-window settings of the segmentation audit pipelines
(:class:`~medrobust.pipelines.windows.SlidingWindowOptions`, passed as ``roi_size=``): checked
when made, before anything runs, and passed on to ``sliding_window``."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrobust.pipelines.config import CheckpointAudit
from medrobust.pipelines.segmentation import evaluate_segmentation_checkpoint
from medrobust.pipelines.windows import SlidingWindowOptions, as_window


def test_window_options_are_validated() -> None:
    assert as_window(None) is None and as_window(16) == SlidingWindowOptions(16)
    assert as_window([16, 16, 8]) == SlidingWindowOptions((16, 16, 8))
    assert SlidingWindowOptions(16).options() == {}
    got = SlidingWindowOptions(16, checkpoint=True, max_memory="512MiB")
    assert got.options() == {"checkpoint": True, "max_memory": 512 * 2**20}
    assert got.to_dict() == {"roi_size": 16, "checkpoint": True, "max_memory": 512 * 2**20}
    assert as_window(got) is got
    with pytest.raises(ValueError, match="overlap"):
        SlidingWindowOptions(16, overlap=1.5)
    with pytest.raises(ValueError, match="sw_batch_size"):
        SlidingWindowOptions(16, sw_batch_size=0)
    with pytest.raises(ValueError, match="max_memory must be a size like 6GiB"):
        SlidingWindowOptions(16, max_memory="plenty")
    with pytest.raises(TypeError, match="checkpoint must be True or False"):
        SlidingWindowOptions(16, checkpoint="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="roi_size"):
        SlidingWindowOptions(0)


def test_bad_options_are_refused_before_the_checkpoint_is_read(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pt"  # never opened: the window is checked first
    with pytest.raises(ValueError, match="roi_size"):
        evaluate_segmentation_checkpoint(missing, CheckpointAudit(), tmp_path / "out", roi_size=[0])
    assert not (tmp_path / "out" / "metrics.json").exists()
