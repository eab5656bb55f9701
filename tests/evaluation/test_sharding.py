"""Audits shared among processes: the batch plan, the join of the records, per-rank resume, and
real ``gloo`` process groups of 1, 2 and 4 processes giving the same ``metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from medrobust._utils.dist import Shard, rank_path
from medrobust.data.phantom import generate_bus_phantom
from medrobust.evaluation.audit import make_context, run_audit
from medrobust.evaluation.records import Records
from medrobust.evaluation.sharding import _merge_kept, _merge_pool, plan_batches
from medrobust.evaluation.tasks.classification import ClassificationTask
from medrobust.models import create_model
from tests.evaluation.interrupt import numbers

N, BATCH = 22, 4  # six batches, the last one of two
ATTACKS = [
    "fgsm",
    {"name": "pgd", "steps": 2, "random_start": True},
    {"name": "square", "n_queries": 20},
]
EPS = [2 / 255, 8 / 255]


def _data(n: int = N) -> TensorDataset:
    ph = generate_bus_phantom(n, 32, seed=4, stream=2)
    return TensorDataset(torch.from_numpy(ph.images), torch.from_numpy(ph.labels))


_WEIGHTS: dict[str, Any] = {}


def _model(weights: str | None = None) -> Any:
    """The small CNN trained by the shared fixture (its weights, or a file of them)."""
    model = create_model("small-cnn", num_classes=2, width=8, seed=0)
    state = torch.load(weights, weights_only=True) if weights else _WEIGHTS["state"]
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _trained(trained_cnn: Any) -> None:
    _WEIGHTS["state"] = {k: v.clone() for k, v in trained_cnn.model.state_dict().items()}


def _run(shard: Shard, loader: Any, **kw: Any) -> tuple[Records, Any, Any]:
    ctx = make_context(
        ClassificationTask(), _model(), ATTACKS, EPS, norm="linf", mode="individual", seed=3,
        device=None, max_samples=kw.pop("max_samples", None), n_examples=2,
        keep_adversarial=kw.pop("keep_adversarial", 5), noise_draws=1,
    )  # fmt: skip
    return run_audit(ctx, loader, kw.pop("checkpoint", None), shard=shard)


def _same_records(a: Records, b: Records) -> None:
    assert a.n == b.n
    assert torch.equal(a.index, b.index)
    for name in ("eligible", "clean_score", "worst_broken_by", "worst_score", "noise_broken"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.zero_grad, b.zero_grad)
    for key in a.clean:
        assert torch.equal(a.clean[key], b.clean[key]), key
    for row_a, row_b in zip(a.cells, b.cells, strict=True):
        for ca, cb in zip(row_a, row_b, strict=True):
            for name in ("broken", "attacked", "score", "linf", "l2", "ssim", "psnr"):
                assert torch.equal(
                    getattr(ca, name).nan_to_num(-7), getattr(cb, name).nan_to_num(-7)
                )


@pytest.fixture(scope="module")
def single() -> tuple[Records, Any, Any]:
    torch.set_num_threads(1)
    return _run(Shard(), DataLoader(_data(), batch_size=BATCH))


@pytest.mark.parametrize("size", [2, 3])
def test_shards_join_into_what_one_process_records(single: Any, size: int) -> None:
    records, kept, pool = single
    parts = [_run(Shard(r, size), DataLoader(_data(), batch_size=BATCH)) for r in range(size)]
    # round robin: rank r ran batches r, r + size, ...
    for r, (rec, _, _) in enumerate(parts):
        assert rec.done == list(range(r, 6, size))
    joined = Records.merge([p[0] for p in parts])
    _same_records(joined, records)
    assert joined.done == list(range(6))
    kept_joined = _merge_kept([p[1] for p in parts], 5)
    assert any(kept[e_i]["index"] for e_i in kept)
    for e_i in kept:
        one = {k: torch.cat(v) if v else None for k, v in kept[e_i].items()}
        many = {k: torch.cat(v) if v else None for k, v in kept_joined[e_i].items()}
        if one["index"] is None:
            assert many["index"] is None or many["index"].numel() == 0
            continue
        assert many["index"] is not None and many["x_adv"] is not None
        assert torch.equal(one["index"], many["index"]) and torch.equal(one["x_adv"], many["x_adv"])
    limit = 4 * 2 * len(EPS)
    pool_joined = _merge_pool([p[2] for p in parts], limit)
    assert [(e["index"], e["eps_index"]) for e in pool_joined] == [
        (e["index"], e["eps_index"]) for e in pool
    ]


def test_a_plain_iterable_is_shared_like_a_dataloader(single: Any) -> None:
    batches = list(DataLoader(_data(), batch_size=BATCH))
    parts = [_run(Shard(r, 2), batches) for r in range(2)]
    _same_records(Records.merge([p[0] for p in parts]), single[0])


def test_max_samples_counts_the_whole_data_set_not_each_process() -> None:
    task = ClassificationTask()
    loader = DataLoader(_data(), batch_size=BATCH)
    plans = [list(plan_batches(loader, task.read_batch, Shard(r, 2), 10)) for r in range(2)]
    got = sorted((p.position, p.offset, len(p.batch)) for plan in plans for p in plan)
    assert got == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]


def test_a_shuffled_loader_cannot_be_shared() -> None:
    loader = DataLoader(_data(), batch_size=BATCH, shuffle=True)
    with pytest.raises(ValueError, match="fixed order"):
        list(plan_batches(loader, ClassificationTask().read_batch, Shard(0, 2)))


def test_records_of_two_processes_with_the_same_sample_are_refused(single: Any) -> None:
    with pytest.raises(ValueError, match="two processes"):
        Records.merge([single[0], single[0]])


def test_each_rank_resumes_its_own_share(tmp_path: Path, single: Any) -> None:
    ckpt = tmp_path / "state.pt"
    loader = DataLoader(_data(), batch_size=BATCH)
    whole = _run(Shard(1, 2), loader)[0]

    class Kill(Exception):
        pass

    calls = {"n": 0}

    def die_on_second_batch(ev: Any) -> None:
        if ev.stage == "clean":
            calls["n"] += 1
            if calls["n"] == 2:
                raise Kill

    ctx = make_context(
        ClassificationTask(), _model(), ATTACKS, EPS, norm="linf", mode="individual", seed=3,
        device=None, max_samples=None, n_examples=2, keep_adversarial=5, noise_draws=1,
        progress=die_on_second_batch,
    )  # fmt: skip
    with pytest.raises(Kill):
        run_audit(ctx, loader, ckpt, shard=Shard(1, 2))
    state = rank_path(ckpt, Shard(1, 2))
    assert state.name == "state.rank1-of-2.pt" and state.exists() and not ckpt.exists()
    resumed = _run(Shard(1, 2), loader, checkpoint=ckpt)[0]
    assert resumed.done == [1, 3, 5]
    _same_records(resumed, whole)


# ---------------------------------------------------------------- real process groups (gloo)


def _worker(rank: int, size: int, store: str, out: str, weights: str) -> None:
    import torch.distributed as dist

    import medrobust

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=size)
    try:
        loader = DataLoader(_data(), batch_size=BATCH)
        result = medrobust.evaluate(
            _model(weights), loader, ATTACKS, EPS, seed=3, noise_draws=1, probe_samples=4
        )
        if rank == 0:
            Path(out).write_text(json.dumps(result.metrics, default=str))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_one_two_and_four_processes_write_the_same_metrics(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    weights = tmp_path / "weights.pt"
    torch.save(_WEIGHTS["state"], weights)
    docs = {}
    for size in (1, 2, 4):
        out = tmp_path / f"metrics-{size}.json"
        store = tmp_path / f"store-{size}"
        mp.spawn(_worker, args=(size, str(store), str(out), str(weights)), nprocs=size, join=True)
        docs[size] = json.loads(out.read_text())
    for size in (1, 2, 4):
        assert docs[size]["world_size"] == size
    plain = {s: numbers({k: v for k, v in d.items() if k != "world_size"}) for s, d in docs.items()}
    for size in (2, 4):
        for key in plain[1]:
            assert plain[size][key] == plain[1][key], (size, key)
    assert plain[1]["clean"]["n"] == N


@pytest.mark.parametrize("batch_size", [3, 8])
def test_the_batch_size_does_not_change_any_sample(single: Any, batch_size: int) -> None:
    """Every random draw (random starts, Square's squares, the noise probe) is seeded from the
    run seed and the sample's index, so another batching gives each sample the same attacks."""
    other = _run(Shard(), DataLoader(_data(), batch_size=batch_size))[0]
    records = single[0]
    assert torch.equal(other.index, records.index)
    for name in ("eligible", "worst_broken_by", "noise_broken"):
        assert torch.equal(getattr(other, name), getattr(records, name)), name
    assert torch.allclose(other.worst_score, records.worst_score, atol=1e-6, equal_nan=True)
    for row_a, row_b in zip(other.cells, records.cells, strict=True):
        for ca, cb in zip(row_a, row_b, strict=True):
            assert torch.equal(ca.broken, cb.broken)
            # the L2 size of each example depends on its random start's values
            assert torch.allclose(ca.l2, cb.l2, atol=1e-5, equal_nan=True)
