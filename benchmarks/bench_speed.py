"""Attack speed on one device: mixed precision and a compiled forward against eager fp32, with
robust accuracy beside each, and the plain PGD loop against its floor.

The model is the demo's (``small-cnn``), trained here for a few epochs on the breast-ultrasound
phantom (32x32 by default, as the quick demo), so that robust accuracy means something; it is
then attacked on a test batch with PGD (Linf, ``--eps``, ``--steps`` steps, the default engine:
best iterate, per-sample early stop, clean check).

Part 1 (options): eager fp32, autocast bf16, autocast fp16, ``torch.compile`` (inductor), and
compile + bf16. Each is timed (median of ``--repeats`` interleaved runs after a warm-up; the
compile time of the first call is reported separately) and its robust accuracy is reported
beside it: mixed precision changes the numbers slightly, so the figure to check is that robust
accuracy stays within noise of fp32's.

Part 2 (the floor): the plain Madry loop (no early stop, no clean check, last iterate) with and
without the final success forward (``need_success``), against ``steps`` forward+backward passes
of the same model and batch with respect to the input (the floor). Also one fast-AT training
step (FGSM with a random start, then the training forward, backward and optimiser step) with and
without the final forward.

Usage::

    python benchmarks/bench_speed.py --out benchmarks/results/speed.json
    python benchmarks/bench_speed.py --parts floor,fast_at --repeats 15 --out ...  # one part

Timings on a shared machine are noisy: the script records ``os.getloadavg()`` before and after
each part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from medrobust.attacks import GradientAttack, create_attack
from medrobust.attacks.objectives.classification import CrossEntropy
from medrobust.attacks.precision import CompileUnavailableWarning
from medrobust.data import create_dataset
from medrobust.models import ModelAdapter, create_model


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def train(args: argparse.Namespace) -> tuple[ModelAdapter, torch.Tensor, torch.Tensor]:
    """The demo's small CNN trained for ``args.epochs`` epochs; a test batch and its labels."""
    tr = create_dataset("bus-phantom", split="train", size=args.size, n=args.n_train)
    te = create_dataset("bus-phantom", split="test", size=args.size, n=args.n_train)
    model = create_model("small-cnn", num_classes=2, in_channels=1, spatial_dims=2, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        model.train()
        for b in DataLoader(tr, batch_size=32, shuffle=True, generator=g):
            opt.zero_grad()
            F.cross_entropy(model(b["image"]), b["label"]).backward()
            opt.step()
    model.eval()
    items = [te[i] for i in range(min(args.batch, len(te)))]
    x = torch.stack([it["image"] for it in items])
    y = torch.as_tensor([int(it["label"]) for it in items])
    return model, x, y


def timed(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Interleaved wall times of each function (after one warm-up call each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def options_part(
    model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    """Eager fp32 vs autocast and compile: median time, compile time and robust accuracy."""
    configs: dict[str, dict[str, Any]] = {
        "eager fp32": {},
        "autocast bf16": {"precision": "bf16"},
        "autocast fp16": {"precision": "fp16"},
        "compile (inductor) fp32": {"compile": True},
        "compile (inductor) + bf16": {"compile": True, "precision": "bf16"},
    }
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    attacks = {
        k: create_attack("pgd", eps=args.eps, steps=args.steps, seed=0, **kw)
        for k, kw in configs.items()
    }
    first: dict[str, float] = {}
    robust: dict[str, float] = {}
    for name, attack in attacks.items():  # the first call compiles (for the compiled ones)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            res = attack(model, x, y)
            first[name] = time.perf_counter() - t0
        for w in caught:  # only ours (inductor's own deprecation notices are left out)
            if issubclass(w.category, CompileUnavailableWarning):
                print(f"  warning ({name}): {w.message}")
        robust[name] = float((~res.success).float().mean())
    times = timed({k: (lambda a=a: a(model, x, y)) for k, a in attacks.items()}, args.repeats)
    base = statistics.median(times["eager fp32"])
    rows = []
    for name in attacks:
        med = statistics.median(times[name])
        rows.append(
            {
                "method": name,
                "median_s": med,
                "speedup_vs_eager_fp32": base / med,
                "first_call_s": first[name],
                "robust_accuracy": robust[name],
                "robust_accuracy_minus_fp32": robust[name] - robust["eager fp32"],
                "runs_s": times[name],
            }
        )
    return {"clean_accuracy": clean, "rows": rows}


def floor_part(
    model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    """The plain loop with/without the final forward against ``steps`` fwd+bwd passes."""
    alpha = 2.5 * args.eps / args.steps

    def floor() -> None:
        xa = x.clone()
        for _ in range(args.steps):
            xg = xa.detach().requires_grad_(True)
            loss = F.cross_entropy(model(xg), y)
            (g,) = torch.autograd.grad(loss, xg)
            xa = xa + alpha * g.sign()

    def plain(need_success: bool) -> Callable[[], Any]:
        attack = GradientAttack(
            objective=CrossEntropy(),
            eps=args.eps,
            steps=args.steps,
            early_stop=False,
            keep_best=False,
            need_success=need_success,
        )
        attack.check_clean = False
        return lambda: attack(model, x, y)

    fns = {
        f"floor ({args.steps} fwd+bwd wrt input)": floor,
        "plain pgd loop, need_success=True (before)": plain(True),
        "plain pgd loop, need_success=False (after)": plain(False),
    }
    times = timed(fns, args.repeats)
    fl = statistics.median(times[next(iter(fns))])
    rows = [
        {
            "method": k,
            "median_s": statistics.median(v),
            "ratio_floor": statistics.median(v) / fl,
            "runs_s": v,
        }
        for k, v in times.items()
    ]
    return {"rows": rows}


def fast_at_part(
    model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    """One fast-AT step (craft + training forward/backward + optimiser step) with and without
    the final success forward of the crafting attack."""
    net = create_model("small-cnn", num_classes=2, in_channels=1, spatial_dims=2, seed=1)
    net.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the model stays the same

    def step(need_success: bool) -> Callable[[], None]:
        attack = create_attack(
            "pgd",
            eps=args.eps,
            steps=1,
            step_size=1.25 * args.eps,
            early_stop=False,
            keep_best=need_success,  # the recipe before: best of two iterates
            need_success=need_success,
        )
        attack.check_clean = False

        def run() -> None:
            x_adv = attack(net, x, y).x_adv
            net.train()
            opt.zero_grad()
            F.cross_entropy(net(x_adv), y).backward()
            opt.step()
            net.eval()

        return run

    fns = {
        "fast-at step, final forward (before)": step(True),
        "fast-at step, no final forward (after)": step(False),
    }
    times = timed(fns, args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    before, after = med[next(iter(fns))], med[list(fns)[1]]
    return {
        "rows": [{"method": k, "median_s": v, "runs_s": times[k]} for k, v in med.items()],
        "saved_fraction_of_step": (before - after) / before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--eps", type=float, default=2 / 255)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="options,floor,fast_at", help="comma-separated parts")
    parser.add_argument("--out", default=None, help="JSON file; parts not run are kept from it")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"options", "floor", "fast_at"}
    if unknown:
        parser.error(f"unknown part(s) {sorted(unknown)}; expected options, floor, fast_at")
    torch.set_num_threads(args.threads)
    loads = {"start": load()}
    model, x, y = train(args)
    loads["after_training"] = load()
    runs = {"options": options_part, "floor": floor_part, "fast_at": fast_at_part}
    results: dict[str, Any] = {}
    for part in parts:
        results[part] = runs[part](model, x, y, args)
        loads[f"after_{part}"] = load()
    report(results, loads)
    if args.out:
        setup = {
            "model": "small-cnn (the demo's), trained here",
            "data": f"bus-phantom {args.size}x{args.size}, n={args.n_train}",
            "epochs": args.epochs,
            "batch": int(x.shape[0]),
            "attack": f"pgd linf eps={args.eps:.5f} steps={args.steps}",
            "repeats": args.repeats,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": "cpu",
            "machine": platform.processor() or platform.machine(),
            "load_average_1_5_15": loads,
            "note": "shared machine (other helpers ran tests and benchmarks at the same time)",
        }
        out: dict[str, Any] = {}
        if os.path.exists(args.out):
            with open(args.out, encoding="utf-8") as f:
                out = json.load(f)
        for part, res in results.items():
            out[part] = {**res, "setup": {**setup, "clean_accuracy": clean_accuracy(model, x, y)}}
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)


def clean_accuracy(model: ModelAdapter, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def report(results: dict[str, Any], loads: dict[str, list[float]]) -> None:
    """Print the parts that ran."""
    print(f"load averages (1, 5, 15 min) {loads}")
    if "options" in results:
        opts = results["options"]
        print(f"clean accuracy {opts['clean_accuracy']:.3f}")
        head = f"{'method':44s} {'median s':>9s} {'speedup':>8s} {'1st call':>9s} {'robust':>7s}"
        print(head)
        for r in opts["rows"]:
            print(
                f"{r['method']:44s} {r['median_s']:9.3f} {r['speedup_vs_eager_fp32']:8.2f} "
                f"{r['first_call_s']:9.2f} {r['robust_accuracy']:7.3f}"
            )
    for r in results.get("floor", {}).get("rows", []):
        print(f"{r['method']:44s} {r['median_s']:9.3f} /floor {r['ratio_floor']:.3f}")
    if "fast_at" in results:
        fast = results["fast_at"]
        for r in fast["rows"]:
            print(f"{r['method']:44s} {r['median_s']:9.3f}")
        print(f"fast-AT step time saved: {100 * fast['saved_fraction_of_step']:.1f}%")


if __name__ == "__main__":
    main()
