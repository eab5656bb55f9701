"""3-D segmentation benchmark (issue 10, item 3): memory of an attack through sliding windows,
and worst-case Dice of ``pgd-seg`` alone against the ``seg-standard`` suite on a 3-D UNet.

Part 1, memory. A MONAI 3-D UNet attacked by ``pgd-seg`` (2 steps) through
``sliding_window(model, roi_size=32)`` on one 1x96x96x96 volume (64 windows, 4 per network
call), without and with gradient checkpointing per window batch, against a plain forward and
backward pass of the same 64 windows stacked as one batch. Each case runs in its own
subprocess; its peak is the rise of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` over the
same process after the setup (imports, model, input and a random mask; no forward pass),
since ``tracemalloc`` does not see torch's CPU allocator. Beside each measured peak, the
estimate of :func:`medrobust.models.window_memory.estimate_window_memory` that the memory
check compares with the free memory.

Part 2, strength. A small 3-D UNet trained here (Dice + CE, 60 Adam steps) on the
``volume-phantom`` (24^3 by default: organ, cavity, vessel, lesion), then audited on test
volumes by sliding windows of 16^3 (8 windows per volume, overlap 0.25, gradient checkpointing
per window batch), so every attack differentiates through the sliding-window inference: per
budget (each its own pair of audits, saved as it ends) the mean worst-case Dice, the share of
broken volumes, the iterations budgeted and spent, and the wall and CPU time with the load
average, for ``pgd-seg`` alone and for ``seg-standard`` with SEA-style scheduling (its attack
list is recorded). The suite should be lower.

Usage::

    python benchmarks/bench_seg_volume.py --threads 1 --out benchmarks/results/seg_volume.json

The machine's load average is recorded before and after each part: on a shared CPU the times
are only comparable within one run. On an oversubscribed CPU use ``--threads 1``: with two
intra-op threads each parallel region waits for a descheduled thread (measured on the 2-core
machine at load 10: the same ``pgd-seg`` audit took 188 s with two threads, 2.7 s with one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

BUDGETS = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
MEMORY_CASES = ("sliding-window attack", "sliding-window attack, checkpointed", "plain windows")
UNET = {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1}


def _maxrss() -> int:
    """Peak resident memory of this process in bytes (Linux reports KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def memory_case(case: str, size: int, roi: int) -> dict[str, Any]:
    """Run one memory case in this process and return its peak rise and the estimate."""
    from medrobust.attacks import create_attack
    from medrobust.models import create_model
    from medrobust.models.segmentation import sliding_window
    from medrobust.models.window_memory import count_windows

    torch.manual_seed(0)
    model = create_model("unet", num_classes=3, spatial_dims=3, seed=0, **UNET).eval()
    x = torch.rand(1, 1, size, size, size)
    checkpoint = case.endswith("checkpointed")
    sw = sliding_window(model, roi, overlap=0.25, checkpoint=checkpoint)
    estimate = sw.net.memory_estimate(x)
    windows, per_axis = count_windows((size,) * 3, (roi,) * 3, 0.25)
    if case == "plain windows":
        stride = max(int(roi * 0.75), 1)  # MONAI's placement: start i*stride, kept inside
        starts = [[min(i * stride, size - roi) for i in range(n)] for n in per_axis]
        crops = [
            x[:, :, i : i + roi, j : j + roi, k : k + roi]
            for i in starts[0] for j in starts[1] for k in starts[2]
        ]  # fmt: skip
        batch = torch.cat(crops).detach()
        labels = torch.randint(0, 3, (windows, roi, roi, roi))
        before = _maxrss()
        t0 = time.perf_counter()
        batch.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(batch), labels)
        (grad,) = torch.autograd.grad(loss, batch)
        float(grad.abs().sum())
    else:
        # a random mask: a clean forward pass here would raise the baseline's high-water mark
        mask = torch.randint(0, 3, (1, size, size, size))
        before = _maxrss()
        t0 = time.perf_counter()
        create_attack("pgd-seg", eps=4 / 255, steps=2, seed=0)(sw, x, mask)
    wall = time.perf_counter() - t0
    peak = _maxrss() - before
    return {
        "case": case,
        "windows": windows,
        "peak_rise_bytes": peak,
        "estimate_bytes": estimate.total if case != "plain windows" else None,
        "estimate_activations_bytes": estimate.activations,
        "per_window_bytes": estimate.per_window,
        "wall_s": round(wall, 2),
    }


def memory_part(size: int, roi: int, threads: int = 1) -> list[dict[str, Any]]:
    """Every memory case in its own subprocess (a fresh high-water mark each)."""
    out = []
    for case in MEMORY_CASES:
        cmd = [sys.executable, __file__, "--memory-case", case, "--size", str(size),
               "--roi", str(roi), "--threads", str(threads)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["load"] = list(os.getloadavg())
        mib = row["peak_rise_bytes"] / 2**20
        est = row["estimate_bytes"]
        est_text = f", estimate {est / 2**20:.0f} MiB" if est else ""
        print(f"  {case}: peak rise {mib:.0f} MiB{est_text} ({row['wall_s']} s)", flush=True)
        out.append(row)
    return out


def train_volume_unet(steps: int, seed: int = 0, size: int = 32) -> Any:
    """A 3-D UNet trained on the volume phantom with Dice + CE (Adam, batches of 4)."""
    from monai.losses import DiceCELoss

    from medrobust.data import create_dataset
    from medrobust.models import create_model

    train = create_dataset("volume-phantom", split="train", n=32, size=size, seed=seed)
    names = list(train.class_names)
    model = create_model(
        "unet", num_classes=len(names), spatial_dims=3, seed=seed, class_names=names, **UNET
    )
    images = torch.stack([train[i]["image"] for i in range(len(train))])
    masks = torch.stack([train[i]["mask"] for i in range(len(train))])
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(train), (4,), generator=gen)
        loss = loss_fn(model(images[idx]), masks[idx][:, None])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _spent(rows: list[dict[str, Any]], budgets: list[float]) -> dict[str, Any]:
    """Iterations the attacks actually ran: per attack and budget, the volumes attacked times
    their mean steps (an attack stops per volume once it is broken; the cascade skips volumes
    an earlier attack broke), and the sum."""
    per: dict[str, list[int]] = {}
    for r in rows:
        steps = r["mean_steps"] if r["mean_steps"] is not None else 0.0
        spent = round(r["n_attacked"] * steps)
        per.setdefault(r["attack"], [0] * len(budgets))[budgets.index(r["eps"])] += spent
    return {"per_attack_and_budget": per, "total": sum(sum(v) for v in per.values())}


def _leg(sw: Any, data: list[dict[str, Any]], attacks: Any, budgets: list[float]) -> dict[str, Any]:
    """One audit (untargeted only) and what the benchmark records of it."""
    from medrobust.evaluation.segmentation import evaluate_segmentation

    quiet: dict[str, Any] = {"targeted": [], "noise": [], "checks": False, "n_examples": 0}
    load_before = list(os.getloadavg())
    cpu0, t1 = _cpu_s(), time.perf_counter()
    res = evaluate_segmentation(sw, data, attacks=attacks, eps=budgets, **quiet)
    wall, cpu = time.perf_counter() - t1, _cpu_s() - cpu0
    seg = res.metrics["segmentation"]
    rows = seg["untargeted"]
    return {
        "attacks": sorted({r["attack"] for r in rows}, key=[r["attack"] for r in rows].index),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_before": load_before,
        "load_after": list(os.getloadavg()),
        "clean_dice": seg["clean"]["mean_dice"],
        "clean_surface_dice": seg["clean"].get("mean_surface_dice"),
        "worst_dice": [r["mean_worst_dice"] for r in seg["worst_case"]],
        "worst_surface_dice": [r["metrics"]["mean_surface_dice"] for r in seg["worst_case"]],
        "broken_rate": [r["broken_rate"] for r in seg["worst_case"]],
        "lowered_by": [r["lowered_by"] for r in seg["worst_case"]],
        "iterations_budget": seg["iterations"],
        "iterations_spent": _spent(rows, budgets),
        "time_s_per_attack": {
            a: round(sum(r["time_s"] for r in rows if r["attack"] == a), 1)
            for a in dict.fromkeys(r["attack"] for r in rows)
        },
    }


def _cpu_s() -> float:
    """CPU seconds of this process (all threads, user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return float(usage.ru_utime + usage.ru_stime)


def strength_part(
    n: int,
    train_steps: int,
    budgets: list[float],
    roi: int,
    cache: Path | None,
    checkpoint: bool = True,
    size: int = 24,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Worst-case Dice of pgd-seg alone and of seg-standard on volumes of ``size``^3 (through
    sliding windows of ``roi``, checkpointed unless ``checkpoint`` is false, or on whole
    volumes when ``roi`` is 0).

    Each budget is its own pair of audits, in the order given, and ``save`` gets the record
    after each one (a long run keeps what it measured). The cascade skips, at a budget, what
    an earlier attack broke at that budget, so one audit per budget schedules as one audit over
    all budgets does."""
    from medrobust.data import create_dataset
    from medrobust.evaluation.suites import resolve_suite
    from medrobust.models.segmentation import sliding_window

    t0 = time.perf_counter()
    cached = cache is not None and cache.is_file()
    model = train_volume_unet(0 if cached else train_steps, size=size)
    if cache is not None and cached:
        model.load_state_dict(torch.load(cache, weights_only=True))
    elif cache is not None:
        torch.save(model.state_dict(), cache)
    train_s = time.perf_counter() - t0
    test = create_dataset("volume-phantom", split="test", n=n, size=size, seed=0)
    data = [
        {
            "image": torch.stack([test[i]["image"] for i in range(n)]),
            "mask": torch.stack([test[i]["mask"] for i in range(n)]),
        }
    ]
    sw = sliding_window(model, roi, overlap=0.25, checkpoint=checkpoint) if roi else model
    suite = resolve_suite("seg-standard", "linf", model.num_classes)
    out: dict[str, Any] = {
        "train_steps": train_steps,
        "train_s": None if cached else round(train_s, 1),
        "model_cache": str(cache) if cached else None,
        "n_volumes": n,
        "size": size,
        "roi": roi,
        "windows_per_volume": _windows(roi, size),
        "checkpoint": bool(roi) and checkpoint,
        "suite_attacks": suite.attacks,
    }
    out["per_budget"] = []
    legs = (("pgd-seg", ["pgd-seg"]), ("seg-standard (cascade)", "seg-standard"))
    for eps in budgets:
        row: dict[str, Any] = {"eps": eps, "eps_255": round(eps * 255, 3)}
        for label, attacks in legs:
            row[label] = _leg(sw, data, attacks, [eps])
            print(
                f"  {eps * 255:g}/255 {label}: worst Dice {row[label]['worst_dice'][0]:.3f}, "
                f"broken {row[label]['broken_rate'][0]:.2f} ({row[label]['wall_s']} s, load "
                f"{row[label]['load_after'][0]:.1f})",
                flush=True,
            )
        alone, suite_worst = (row[label]["worst_dice"][0] for label, _ in legs)
        row["suite_lower"] = suite_worst < alone
        out["per_budget"].append(row)
        if save is not None:
            save(out)
    return out


def _windows(roi: int, size: int) -> int | None:
    from medrobust.models.window_memory import count_windows

    return count_windows((size,) * 3, (roi,) * 3, 0.25)[0] if roi else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=96, help="side of the memory volume")
    parser.add_argument("--roi", type=int, default=32, help="window of the memory part")
    parser.add_argument("--n", type=int, default=6, help="test volumes of the strength part")
    parser.add_argument("--train-steps", type=int, default=60)
    parser.add_argument(
        "--budgets", type=float, nargs="+", default=BUDGETS, help="Linf budgets of part 2"
    )
    parser.add_argument("--skip-strength", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--strength-roi", type=int, default=16, help="window of part 2 (0: whole volumes)"
    )
    parser.add_argument("--strength-size", type=int, default=24, help="volume side of part 2")
    parser.add_argument(
        "--strength-checkpoint",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="gradient checkpointing of the windows in part 2",
    )
    parser.add_argument("--model-cache", type=Path, default=None, help="trained UNet (.pt)")
    parser.add_argument("--memory-case", choices=MEMORY_CASES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case, args.size, args.roi)))
        return
    record: dict[str, Any] = {
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": args.threads,
        "load_before": list(os.getloadavg()),
        "budgets": args.budgets,
    }
    if not args.skip_memory:
        print(f"memory: one 1x{args.size}^3 volume, windows of {args.roi}^3:", flush=True)
        record["memory"] = memory_part(args.size, args.roi, args.threads)

    def save(strength: dict[str, Any] | None = None) -> None:
        if strength is not None:
            record["strength"] = strength
        record["load_after"] = list(os.getloadavg())
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record, indent=2) + "\n")

    if not args.skip_strength:
        print(
            f"strength: 3-D UNet on {args.n} volume-phantom volumes of {args.strength_size}^3:",
            flush=True,
        )
        record["strength"] = strength_part(
            args.n,
            args.train_steps,
            args.budgets,
            args.strength_roi,
            args.model_cache,
            args.strength_checkpoint,
            args.strength_size,
            save,
        )
    save()


if __name__ == "__main__":
    main()
