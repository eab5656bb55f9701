"""Segmentation attack benchmarks: batched versus per-image ASMA, and PGD-10 on a 3-D UNet
against the floor of 10 forward+backward passes, with peak memory.

1. ASMA (Linf-normalised steps, no early stop, so both ways do the same number of iterations)
   on a batch of 16 images of 1x64x64, run once on the batch and once image by image; the
   speed-up is the per-image time over the batched time.
2. PGD-10 (Linf, ``pgd-seg`` on pixel-wise cross-entropy) on a MONAI 3-D UNet, batch 2 of
   1x64x64x64, against the floor: 10 forward+backward passes of the same loss, differentiating
   with respect to the input only; both are timed interleaved in one process. Peak memory is
   the growth of the process's peak resident set (CPU) or ``torch.cuda.max_memory_allocated``
   (GPU) over one run, measured in a fresh process per method.

Usage::

    python benchmarks/bench_segmentation.py --repeats 3 --out benchmarks/results/seg.json

Times are medians over ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _median_time(fn: Callable[[], None], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def asma_case(args: dict[str, Any]) -> dict[str, Any]:
    """Batched versus per-image ASMA; returns the two median times and the speed-up."""
    from medrobust.attacks import create_attack
    from medrobust.models import create_model

    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    model = (
        create_model(
            "unet",
            num_classes=2,
            channels=(8, 16, 32, 64),
            strides=(2, 2, 2),
            num_res_units=1,
            seed=0,
        )
        .eval()
        .to(device)
    )
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args["batch"], 1, 64, 64, generator=g).to(device)
    with torch.no_grad():
        pred = model(x).argmax(1)
    target = torch.roll(pred, 1, dims=0)
    attack = create_attack("asma", steps=args["steps"], polish=None)
    sync = _sync(device)

    def batched() -> None:
        attack(model, x, target)

    def per_image() -> None:
        for i in range(x.shape[0]):
            attack(model, x[i : i + 1], target[i : i + 1])

    tb = _median_time(batched, args["repeats"], sync)
    ts = _median_time(per_image, args["repeats"], sync)
    return {"batched_s": tb, "per_image_s": ts, "speedup": ts / tb}


def _pgd3d_setup(args: dict[str, Any]) -> dict[str, Callable[[], None]]:
    import torch.nn.functional as F

    from medrobust.attacks import create_attack
    from medrobust.models import create_model

    torch.set_num_threads(args["threads"])
    device = torch.device(args["device"])
    model = create_model("unet", num_classes=2, spatial_dims=3, seed=0).eval().to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 64, 64, 64, generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    steps, eps = 10, 4 / 255
    alpha = 2.5 * eps / steps

    def floor() -> None:
        xa = x.clone()
        for _ in range(steps):
            xg = xa.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xg), y)
            (grad,) = torch.autograd.grad(loss, xg)
            xa = xa + alpha * grad.sign()

    attack = create_attack("pgd-seg", eps=eps, steps=steps)

    def pgd() -> None:
        attack(model, x, y)

    return {"floor": floor, "pgd": pgd}


def pgd3d_times(args: dict[str, Any]) -> dict[str, Any]:
    """Median times of the floor and of pgd-seg, interleaved in one process (so that a change
    of machine load affects both alike)."""
    fns = _pgd3d_setup(args)
    sync = _sync(torch.device(args["device"]))
    times: dict[str, list[float]] = {"floor": [], "pgd": []}
    for fn in fns.values():
        fn()
    sync()
    for _ in range(args["repeats"]):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def pgd3d_memory(args: dict[str, Any]) -> float:
    """Peak memory growth (MB) of one run of one method, in a fresh process."""
    fn = _pgd3d_setup(args)[args["method"]]
    device = torch.device(args["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024


def _in_child(
    fn: Callable[[dict[str, Any]], dict[str, Any]], args: dict[str, Any]
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, (args,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--asma-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-3d", action="store_true", help="Only run the ASMA benchmark.")
    parser.add_argument("--out", type=Path, default=None)
    a = parser.parse_args()
    common = {"repeats": a.repeats, "threads": a.threads, "device": a.device}
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "threads": a.threads,
            "device": a.device,
            "load_average_start": os.getloadavg(),
            "torch": torch.__version__,
        }
    }
    asma = _in_child(asma_case, {**common, "batch": a.batch, "steps": a.asma_steps})
    report["asma"] = {"batch": a.batch, "image": [1, 64, 64], "steps": a.asma_steps, **asma}
    print(
        f"ASMA, {a.asma_steps} steps, batch {a.batch} of 1x64x64: "
        f"batched {asma['batched_s']:.2f} s, image by image {asma['per_image_s']:.2f} s, "
        f"speed-up {asma['speedup']:.1f}x"
    )
    if not a.skip_3d:
        times = _in_child(pgd3d_times, common)
        floor = {
            "time_s": times["floor"],
            "peak_memory_mb": _in_child(pgd3d_memory, {**common, "method": "floor"}),
        }
        pgd = {
            "time_s": times["pgd"],
            "peak_memory_mb": _in_child(pgd3d_memory, {**common, "method": "pgd"}),
        }
        ratio = pgd["time_s"] / floor["time_s"]
        report["pgd3d"] = {
            "model": "MONAI UNet (16, 32, 64, 128), 2 residual units",
            "input": [2, 1, 64, 64, 64],
            "steps": 10,
            "floor": floor,
            "pgd_seg": pgd,
            "ratio_to_floor": ratio,
        }
        print(
            f"PGD-10 on a 3-D UNet, batch 2 of 1x64x64x64: floor {floor['time_s']:.2f} s "
            f"(peak +{floor['peak_memory_mb']:.0f} MB), pgd-seg {pgd['time_s']:.2f} s "
            f"(peak +{pgd['peak_memory_mb']:.0f} MB), ratio {ratio:.2f}"
        )
    report["machine"]["load_average_end"] = os.getloadavg()
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
