"""Benchmark: the training cost of the adversarial-training recipes and their robustness.

For the same model, data and epochs, train with standard training, fast AT (FGSM with a random
start, guard on), PGD-AT (7 steps) and SSAT (FGSM on an unlabelled stream of the same training
images, lambda = 3), through the same training loop (``medrobust.training.fit``), then audit each
model with the same worst-case evaluation (``medrobust.evaluation.evaluate``).

Training cost is the wall time of the training steps only (validation and checkpoint writing,
the same for every recipe, are excluded; they are read from the loop's progress events), as a
ratio to standard training. With ``--repeats N`` the recipes are trained N times, interleaved,
and the median time is reported (the machine may be shared).

Target: fast AT at most 2.5x standard training, with robust accuracy within a few points of
PGD-AT.

Usage::

    python benchmarks/bench_defenses.py                    # defaults below, a few minutes
    python benchmarks/bench_defenses.py --size 64 --n-train 600 --epochs 15 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from medrobust.data import create_dataset
from medrobust.defenses.data import UnlabelledView
from medrobust.evaluation import evaluate
from medrobust.models import create_model
from medrobust.training import TrainConfig, TrainEvent, fit

RECIPES = ("standard", "fast-at", "pgd-at", "ssat")


class StepTimer:
    """Sums the time of the training steps from the loop's progress events."""

    def __init__(self) -> None:
        self.train_s = 0.0
        self.steps = 0
        self._mark = 0.0

    def __call__(self, ev: TrainEvent) -> None:
        now = time.perf_counter()
        if ev.kind in ("start", "epoch_end"):
            self._mark = now  # the next epoch's first step starts here
        elif ev.kind == "step":
            self.train_s += now - self._mark
            self.steps += 1
            self._mark = now


def recipe_params(name: str, eps: float) -> dict[str, Any]:
    if name == "standard":
        return {}
    if name == "pgd-at":
        return {"eps": eps, "steps": 7}
    if name == "ssat":
        return {"eps": eps, "eps_min": None, "attack": "fgsm", "lam": 3.0}
    return {"eps": eps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=48, help="phantom image size")
    p.add_argument("--n-train", type=int, default=320)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--width", type=int, default=8, help="small-cnn width")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-eps", type=float, default=4 / 255)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/defenses.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    train = create_dataset("bus-phantom", split="train", size=args.size, n=args.n_train)
    val = create_dataset("bus-phantom", split="val", size=args.size, n=100)
    test = create_dataset("bus-phantom", split="test", size=args.size, n=args.n_test)
    unlabelled = UnlabelledView(train)
    times: dict[str, list[float]] = {r: [] for r in RECIPES}
    models: dict[str, Any] = {}
    steps: dict[str, int] = {}
    for rep in range(args.repeats):
        for name in RECIPES:
            model = create_model(
                "small-cnn", num_classes=2, in_channels=1, width=args.width, seed=args.seed
            )
            cfg = TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                recipe=name,
                recipe_params=recipe_params(name, args.train_eps),
            )
            timer = StepTimer()
            with tempfile.TemporaryDirectory() as tmp:
                fit(
                    model,
                    train,
                    val,
                    cfg,
                    tmp,
                    progress=timer,
                    unlabelled=unlabelled if name == "ssat" else None,
                )
            times[name].append(timer.train_s)
            steps[name] = timer.steps
            models[name] = model.eval()
            print(
                f"repeat {rep + 1}: {name:9s} {timer.train_s:7.1f} s for {timer.steps} steps",
                flush=True,
            )

    eps = [2 / 255, 4 / 255, 8 / 255]
    loader = DataLoader(test, batch_size=100)
    rows = []
    base = statistics.median(times["standard"])
    for name in RECIPES:
        t0 = time.perf_counter()
        res = evaluate(
            models[name],
            loader,
            attacks=["fgsm", {"name": "pgd", "steps": 20}],
            eps=eps,
            checks=False,
            seed=args.seed,
        )
        rows.append(
            {
                "recipe": name,
                "train_s": statistics.median(times[name]),
                "train_s_all": times[name],
                "steps": steps[name],
                "cost_ratio": statistics.median(times[name]) / base,
                "clean_accuracy": res.metrics["clean"]["accuracy"],
                "robust_accuracy": {
                    r["eps_display"]: r["robust_accuracy"] for r in res.metrics["worst_case"]
                },
                "eval_s": time.perf_counter() - t0,
            }
        )
    keys = [r for r in rows[0]["robust_accuracy"]]
    header = f"{'recipe':9s} {'train s':>8s} {'ratio':>6s} {'clean':>6s} " + " ".join(
        f"{'rob ' + k:>9s}" for k in keys
    )
    print("\n" + header)
    for r in rows:
        print(
            f"{r['recipe']:9s} {r['train_s']:8.1f} {r['cost_ratio']:5.2f}x "
            f"{r['clean_accuracy']:6.3f} "
            + " ".join(f"{r['robust_accuracy'][k]:9.3f}" for k in keys)
        )
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    doc = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_after": load,
        "evaluation": {"attacks": ["fgsm", "pgd-20"], "eps": eps, "worst_case": True},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"\nload average after the run: {load}; results: {args.out}")


if __name__ == "__main__":
    main()
