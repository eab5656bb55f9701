"""PGD-10 (Linf) speed on a MONAI ResNet-18, batch 64 of 1x64x64, against the floor and peers.

The floor is 10 forward+backward passes of the same model and batch, differentiating with
respect to the input only. Every method is timed in the same process, interleaved, after a
warm-up; the script reports medians over ``--repeats`` runs and writes them as JSON.

Usage::

    python benchmarks/bench_pgd.py --repeats 5 --out benchmarks/results/pgd.json

Labels are the model's own predictions, so every sample starts correctly classified and must be
attacked. Two medrobust configurations are timed: the default (per-sample early stop and the
clean check) and the plain Madry loop (no early stop, no clean check, last iterate), which does
the same work as the peers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from medrobust.attacks import create_attack
from medrobust.models import create_model

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


def floor_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        xa = x.clone()
        for _ in range(STEPS):
            xg = xa.detach().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xg), y)
            (g,) = torch.autograd.grad(loss, xg)
            xa = xa + ALPHA * g.sign()

    return run


def medrobust_fn(model, x, y, plain: bool) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    attack = create_attack(
        "pgd",
        eps=EPS,
        step_size=ALPHA,
        steps=STEPS,
        random_start=True,
        early_stop=not plain,
        keep_best=not plain,
    )
    if plain:
        attack.check_clean = False

    def run() -> None:
        attack(model, x, y)

    return run


def torchattacks_fn(model, x, y) -> Callable[[], None] | None:  # type: ignore[no-untyped-def]
    try:
        import torchattacks
    except Exception:
        return None
    atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)

    def run() -> None:
        atk(x, y)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = create_model("resnet18", num_classes=2, in_channels=1, spatial_dims=2, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, args.size, args.size, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    methods: dict[str, Callable[[], None]] = {
        "floor (10 fwd+bwd wrt input)": floor_fn(model, x, y),
        "medrobust pgd (plain loop)": medrobust_fn(model, x, y, plain=True),
        "medrobust pgd (default: early stop)": medrobust_fn(model, x, y, plain=False),
    }
    ta = torchattacks_fn(model, x, y)
    if ta is not None:
        methods["torchattacks pgd"] = ta
    for fn in methods.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.repeats):
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    floor = med["floor (10 fwd+bwd wrt input)"]
    peer = med.get("torchattacks pgd")
    rows = []
    print(f"{'method':40s} {'median s':>9s} {'/floor':>7s} {'/torchattacks':>14s}")
    for name, t in med.items():
        r_floor = t / floor
        r_peer = t / peer if peer else None
        rows.append(
            {
                "method": name,
                "median_s": t,
                "ratio_floor": r_floor,
                "ratio_torchattacks": r_peer,
                "runs_s": times[name],
            }
        )
        rp = f"{r_peer:14.3f}" if r_peer else f"{'n/a':>14s}"
        print(f"{name:40s} {t:9.3f} {r_floor:7.3f} {rp}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "setup": {
                        "model": "MONAI ResNet-18",
                        "batch": args.batch,
                        "size": args.size,
                        "eps": EPS,
                        "alpha": ALPHA,
                        "steps": STEPS,
                        "repeats": args.repeats,
                        "threads": torch.get_num_threads(),
                        "torch": torch.__version__,
                        "machine": platform.processor() or platform.machine(),
                    },
                    "results": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
