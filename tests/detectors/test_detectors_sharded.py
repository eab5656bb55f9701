"""Detectors fitted on several processes (real ``gloo`` groups): each process runs its share of
the batches, and the statistics and thresholds equal a single-process fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medrobust.detectors import create_detector, layer_statistics
from medrobust.models import create_model

DETECTORS = ("uad", "mahalanobis", "kd-bu", "lid")


def _model() -> Any:
    return create_model("small-cnn", num_classes=2, in_channels=1, width=4, seed=0).eval()


def _clean(n: int = 70) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (0.3 + 0.4 * torch.rand(n, 1, 12, 12, generator=g)).clamp(0, 1)


def _fits() -> dict[str, Any]:
    """Thresholds, calibration scores and layer statistics of this process's fits."""
    model, x = _model(), _clean()
    out: dict[str, Any] = {}
    for name in DETECTORS:
        extra = {"fit_attack": None} if name in ("kd-bu", "lid") else {}  # z-score combination
        det = create_detector(name, fpr=0.1, batch_size=16, **extra).fit(model, x)
        out[name] = (det.threshold, det.calibration_scores.clone(), det.fit_info["n_fit"])
    stats = layer_statistics(model, x, ["features.layer2"], batch_size=16)["features.layer2"]
    out["stats"] = (stats.counts, stats.sums, stats.outer)
    return out


def _worker(rank: int, size: int, store: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    try:
        torch.save(_fits(), Path(out) / f"fits-{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_fit_the_same_detectors_as_one(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    torch.set_num_threads(1)
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"fits-{r}.pt", weights_only=False) for r in range(2)]
    one = _fits()
    for name in DETECTORS:
        for fit in ranks:  # every process holds the whole fit
            threshold, scores, n_fit = fit[name]
            assert n_fit == one[name][2]
            assert threshold == pytest.approx(one[name][0], rel=1e-6, abs=1e-9), name
            assert torch.allclose(scores, one[name][1], rtol=1e-6, atol=1e-9), name
    for fit in ranks:  # sums reduced across the processes: the whole data set's statistics
        for got, want in zip(fit["stats"], one["stats"], strict=True):
            assert torch.allclose(got, want, rtol=1e-10, atol=1e-8)
        assert float(fit["stats"][0].sum()) == 70
