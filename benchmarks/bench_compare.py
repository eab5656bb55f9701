"""Benchmark: the default ``medrobust compare`` run, its wall time per phase and its finding.

Runs :func:`medrobust.pipelines.compare.run_compare` with the default settings (four small
networks of three families on the 64-pixel phantom, or the models given with ``--model``) into a
fresh folder and records: the total wall time and each model's time per phase (training, clean
+ shifted + corrupted inference, attacks, minimal perturbation), the load average before and
after, and what the comparison found: every pair of models with overlapping clean-accuracy
intervals, its robust-accuracy difference at the headline budget with the McNemar p-value
(raw and Holm-adjusted), and Spearman's rho between the clean-accuracy ranking and each other
ranking. JSMA's own speed (time per image against a one-pair-per-step loop) is measured by
``bench_jsma.py``.

Usage::

    python benchmarks/bench_compare.py                      # the default run (minutes)
    python benchmarks/bench_compare.py --seeds 0,1 --out benchmarks/results/compare-2seeds.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medrobust._utils.format import fmt_eps
from medrobust.pipelines.compare import run_compare
from medrobust.pipelines.compare_config import CompareConfig


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=None, help="candidate (repeatable)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/compare.json"))
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="keep the comparison's folder here (else a temporary folder)",
    )
    return p.parse_args()


def _pairs(cmp: dict[str, Any]) -> list[dict[str, Any]]:
    e = fmt_eps(cmp["headline_eps"])
    rob = {r["key"]: r["robust"][e]["score"] for r in cmp["table"]}
    clean = {r["key"]: r["clean"] for r in cmp["table"]}
    out = []
    for p in cmp["pairs"]:
        t = p["robust_tests"][e]
        out.append(
            {
                "a": p["a"],
                "b": p["b"],
                "comparable": p["comparable"],
                "clean_a": clean[p["a"]],
                "clean_b": clean[p["b"]],
                "robust_a": rob[p["a"]],
                "robust_b": rob[p["b"]],
                "eps": e,
                "p_value": t["p_value"],
                "p_holm": t["p_holm"],
                "n": t["n"],
            }
        )
    return out


def main() -> None:
    args = _args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings: dict[str, Any] = {"seeds": [int(s) for s in args.seeds.split(",")]}
    if args.model:
        settings["models"] = args.model
    if args.epochs:
        settings["epochs"] = args.epochs
    cfg = CompareConfig(**settings)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or Path(tmp) / "compare"
        result = run_compare(cfg, run_dir, overwrite=True, progress=print)
    wall = time.perf_counter() - t0
    cmp = result.metrics["comparison"]
    record = {
        "wall_s": wall,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "config": cfg.to_dict(),
        "models": {
            d["key"]: {
                "timing_s": d.get("timing"),
                "clean": d["clean"]["score"],
                "shifted": (d.get("shifted") or {}).get("score"),
                "corruption": d.get("corruption"),
                "robust": d.get("robust"),
                "facts": d["facts"],
                "minimal": d.get("minimal"),
            }
            for d in result.metrics["compare"]["models"]
        },
        "pairs": _pairs(cmp),
        "spearman": cmp["spearman"],
        "finding": cmp["finding"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str))
    print(json.dumps({k: record[k] for k in ("wall_s", "load_before", "spearman")}, indent=2))
    print(record["finding"])


if __name__ == "__main__":
    main()
