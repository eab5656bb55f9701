"""Training on several processes: the sharded global batches, DDP steps that equal one process
training on the global batch, rank 0's files, SSAT's sharded unlabelled stream, and a resume on
another number of processes (real ``gloo`` process groups)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from medrobust._utils.dist import Shard
from medrobust.models import as_adapter
from medrobust.training import TrainConfig, fit
from medrobust.training.distributed import ShardedBatches


def test_the_shards_of_each_global_batch_are_the_single_process_batch() -> None:
    n, bs = 21, 6
    one = list(ShardedBatches(n, bs, torch.Generator().manual_seed(5), Shard()))
    shards = [
        list(ShardedBatches(n, bs, torch.Generator().manual_seed(5), Shard(r, 3))) for r in range(3)
    ]
    assert len(one) == 4 and all(len(s) == 4 for s in shards)
    for i, batch in enumerate(one):
        parts = [s[i] for s in shards]
        assert len({len(p) for p in parts}) == 1  # equal shares: the same step on every rank
        assert sorted(x for p in parts for x in p) == sorted(batch)
    seen = [x for s in shards for b in s for x in b]
    assert sorted(set(seen)) == list(range(n))  # every sample, 21 is a multiple of 3: no padding


def test_an_uneven_data_set_is_padded_to_equal_shares() -> None:
    shards = [list(ShardedBatches(5, 4, None, Shard(r, 2), shuffle=False)) for r in range(2)]
    assert shards == [[[0, 2], [4]], [[1, 3], [0]]]  # sample 0 repeated to fill the last share


def test_a_global_batch_that_does_not_split_evenly_is_refused() -> None:
    with pytest.raises(ValueError, match=r"multiple of the 4 processes; use e\.g\. batch_size=8"):
        ShardedBatches(10, 10, None, Shard(0, 4))


def _net() -> Any:
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 2),
    )  # fmt: skip
    return as_adapter(body, num_classes=2)


def _data(n: int = 24) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0.5).long()
    return TensorDataset(x, y)


class _Dicts(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = self.base[i]
        return {"image": x, "label": y}


def _config(recipe: str, epochs: int, **kw: Any) -> TrainConfig:
    # no random start: each process draws its own (the steps are then the global batch's)
    pgd = {"eps": 4 / 255, "steps": 1, "random_start": False}
    params = {"pgd-at": pgd, "ssat": {"steps": 1}}.get(recipe, {})
    return TrainConfig(
        epochs=epochs, batch_size=8, lr=0.05, recipe=recipe, recipe_params=params,
        batchnorm_check="off", **kw,
    )  # fmt: skip


def _train(run: Path, recipe: str, epochs: int, resume: bool = False) -> dict[str, torch.Tensor]:
    model = _net()
    unlabelled = _Dicts(_data(16)) if recipe == "ssat" else None
    fit(
        model, _Dicts(_data()), _Dicts(_data(8)), _config(recipe, epochs), run,
        card_info={"architecture": "tiny-cnn"}, resume=resume, unlabelled=unlabelled,
    )  # fmt: skip
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, size: int, store: str, run: str, recipe: str, epochs: int) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    try:
        state = _train(Path(run), recipe, epochs)
        torch.save(state, Path(run).parent / f"weights-{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(tmp: Path, recipe: str, epochs: int, size: int = 2) -> list[dict[str, torch.Tensor]]:
    import torch.multiprocessing as mp

    run = tmp / "run"
    tmp.mkdir(parents=True, exist_ok=True)
    mp.spawn(
        _worker, args=(size, str(tmp / "store"), str(run), recipe, epochs), nprocs=size, join=True
    )
    return [torch.load(tmp / f"weights-{r}.pt", weights_only=True) for r in range(size)]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["standard", "pgd-at", "ssat"])
def test_two_processes_train_like_one_on_the_global_batch(tmp_path: Path, recipe: str) -> None:
    torch.set_num_threads(1)
    ranks = _spawn(tmp_path / "ddp", recipe, epochs=2)
    for key in ranks[0]:  # DDP keeps the processes' weights identical
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    one = _train(tmp_path / "one" / "run", recipe, epochs=2)
    start = _net().state_dict()
    for key in one:
        assert not torch.equal(one[key], start[key])  # it trained
        # the same global batches and averaged gradients: the same steps up to rounding
        assert torch.allclose(ranks[0][key], one[key], atol=2e-5), key
    run = tmp_path / "ddp" / "run"
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


@pytest.mark.slow
def test_a_run_of_two_processes_resumes_on_one(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    _spawn(tmp_path, "standard", epochs=1)
    resumed = _train(tmp_path / "run", "standard", epochs=2, resume=True)
    straight = _train(tmp_path / "straight", "standard", epochs=2)
    for key in straight:
        assert torch.allclose(resumed[key], straight[key], atol=2e-5), key


def test_sync_batchnorm_on_the_cpu_is_refused_with_the_reason(tmp_path: Path) -> None:
    cfg = _config("standard", 1, sync_batchnorm=True)
    with pytest.raises(ValueError, match="GPU"):
        fit(_net(), _Dicts(_data()), _Dicts(_data(8)), cfg, tmp_path / "r",
            card_info={"architecture": "tiny-cnn"})  # fmt: skip
