"""Benchmark: one audit on 1 process against the same audit on 2 processes (``torchrun``, gloo),
each process with one thread; the speed-up and whether ``metrics.json`` is identical.

The audit is ``medrobust evaluate`` of a classifier checkpoint on the embedded phantom (the
demo's attacks and budgets by default). Without ``--checkpoint`` a small CNN is trained first
(``medrobust train``, not timed). Each configuration runs ``--repeats`` times, alternating, and
the medians are compared; the wall time includes starting the processes. Processes share the
work batch by batch, so the batch size should leave each process several batches (default 16
with 128 samples: 8 batches). ``metrics.json`` of
every run is compared with the first single-process run after removing what may differ between
runs (``created``, ``timing``, ``time_s``) and ``world_size``.

Usage::

    python benchmarks/bench_distributed.py                       # train, then 1 vs 2 processes
    python benchmarks/bench_distributed.py --checkpoint runs/demo/train/best.pt --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--attacks", default="fgsm,pgd,apgd-ce,square")
    p.add_argument("--eps", default="1/255,2/255,4/255,8/255")
    p.add_argument("--max-samples", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16, help="several batches per process")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/distributed.json"))
    return p.parse_args()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    return env


def _train(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "medrobust", "train", "--out", str(folder), "--epochs", "4"]
    subprocess.run(cmd, check=True, env=_env(), capture_output=True)
    return folder / "train" / "best.pt"


def _audit(args: argparse.Namespace, ckpt: Path, out: Path, procs: int) -> float:
    tail = ["evaluate", str(ckpt), "--out", str(out), "--attacks", args.attacks, "--eps", args.eps]
    tail += ["--max-samples", str(args.max_samples), "--batch-size", str(args.batch_size)]
    if procs == 1:
        cmd = [sys.executable, "-m", "medrobust", *tail]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs)]
        cmd += ["-m", "medrobust", *tail]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(), capture_output=True)
    return time.perf_counter() - t0


def _numbers(m: Any) -> Any:
    if isinstance(m, dict):
        drop = ("created", "timing", "time_s", "world_size")
        return {k: _numbers(v) for k, v in m.items() if k not in drop}
    if isinstance(m, list):
        return [_numbers(v) for v in m]
    return m


def main() -> None:
    args = _args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = args.checkpoint or _train(root / "model")
        times: dict[int, list[float]] = {1: [], args.procs: []}
        docs: dict[int, list[Any]] = {1: [], args.procs: []}
        for r in range(args.repeats):
            for procs in (1, args.procs):
                out = root / f"audit-{procs}-{r}"
                times[procs].append(_audit(args, ckpt, out, procs))
                doc = json.loads((out / "metrics.json").read_text())
                assert doc["world_size"] == procs
                docs[procs].append(doc)
        reference = _numbers(docs[1][0])
        identical = all(_numbers(d) == reference for ds in docs.values() for d in ds)
        one, many = statistics.median(times[1]), statistics.median(times[args.procs])
        result = {
            "audit": {
                "attacks": args.attacks,
                "eps": args.eps,
                "max_samples": args.max_samples,
                "batch_size": args.batch_size,
            },
            "attack_s_summed": {
                str(k): [d["timing"]["attack_s"] for d in ds] for k, ds in docs.items()
            },
            "threads_per_process": 1,
            "wall_s": {str(k): v for k, v in times.items()},
            "median_wall_s": {"1": one, str(args.procs): many},
            "in_audit_s": {str(k): [d["timing"]["total_s"] for d in ds] for k, ds in docs.items()},
            "speedup": one / many,
            "metrics_identical": identical,
            "worst_case": [
                {"eps": row["eps"], "robust_accuracy": row["robust_accuracy"]}
                for row in docs[1][0]["worst_case"]
            ],
            "clean_accuracy": docs[1][0]["clean"]["accuracy"],
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "cpus": os.cpu_count(),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
