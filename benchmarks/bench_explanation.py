"""One explanation-attack step against one PGD step on the multi-task ResNet-50: time and memory.

A "step" is what the gradient engine does per iteration: one evaluation of the objective and its
gradient with respect to the input (``attack.evaluate(model, x, target, grad=True)``), then the
signed step and the projection. For PGD the objective is the cross-entropy; for the explanation
attack (``gradcam-kept``) it is the Grad-CAM top-k term at ``encoder.layer4`` computed with
``create_graph=True`` plus the class-preservation term, so its gradient goes through the
Grad-CAM weights (second order). Both run on the same model (``mtl-resnet50``, eval mode, both
heads computed by the forward pass) and the same batch (16 x 1 x 128 x 128).

Time: medians over ``--repeats`` steps after ``--warmup`` steps, in one process, interleaved.
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the memory held before the step;
on the CPU the peak of the PyTorch CPU allocator during one step above what was allocated before
it, from the profiler's memory events (``profile_memory=True``).

Usage::

    python benchmarks/bench_explanation.py --threads 2 --out benchmarks/results/explanation.json

Target (issue 3): the explanation step costs at most 3x the PGD step.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

EPS = 8 / 255


def _setup(model_name: str, batch: int, size: int, device: str, seed: int) -> tuple[Any, ...]:
    from medrobust.attacks import create_attack
    from medrobust.attacks.engine import eval_mode
    from medrobust.models import create_model

    model = create_model(model_name, num_classes=2, seed=seed).to(device).eval()
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(batch, 1, size, size, generator=gen) * 0.8 + 0.1).to(device)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    pgd = create_attack("pgd", eps=EPS, steps=10)
    expl = create_attack("gradcam-kept", eps=EPS, steps=10)
    with eval_mode(model), torch.no_grad():
        t_pgd = pgd.prepare_target(model, x, y)
        t_expl = expl.prepare_target(model, x, y)
    threat = pgd.threat(model, None)
    return model, x, (pgd, t_pgd), (expl, t_expl), threat


def _step_fn(
    model: Any, x: torch.Tensor, attack: Any, target: Any, threat: Any
) -> Callable[[], None]:
    def step() -> None:
        _, grad = attack.evaluate(model, x, target, grad=True)
        delta = threat.project(x, attack.step_size * threat.ascent_direction(grad, None), None)
        (x + delta).sum().item()  # synchronise (CUDA) and use the result

    return step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def cpu_peak_mib(fn: Callable[[], None]) -> float:
    """Peak CPU memory allocated by PyTorch while ``fn`` runs, above what was allocated before.

    Every allocation and free of the CPU allocator is recorded with the profiler
    (``profile_memory=True``): allocations are attributed to the operator that made them, frees
    are separate events; sorted by time, their running sum peaks at the answer.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted(
        (e.time_range.start, e.self_cpu_memory_usage)
        for e in prof.events()
        if e.self_cpu_memory_usage
    )
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mtl-resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, x, pgd, expl, threat = _setup(args.model, args.batch, args.size, args.device, args.seed)
    (pgd_attack, pgd_target), (expl_attack, expl_target) = pgd, expl
    fns = {
        "pgd": _step_fn(model, x, pgd_attack, pgd_target, threat),
        "explanation": _step_fn(model, x, expl_attack, expl_target, threat),
    }
    for _ in range(args.warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            _sync(args.device)
            t0 = time.perf_counter()
            fn()
            _sync(args.device)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median seconds per step: {med}", flush=True)
    memory: dict[str, float] = {}
    if args.device.startswith("cuda"):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            memory[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
        mem_kind = "cuda max_memory_allocated above the step's baseline, MiB"
    else:
        for name, fn in fns.items():
            memory[name] = cpu_peak_mib(fn)
        mem_kind = "peak of the PyTorch CPU allocations during one step (profiler), MiB"
    result = {
        "model": args.model,
        "batch": [args.batch, 1, args.size, args.size],
        "device": args.device,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "seconds_per_step": med,
        "all_seconds": times,
        "ratio_explanation_to_pgd": med["explanation"] / med["pgd"],
        "peak_memory_mib": memory,
        "memory_ratio": memory["explanation"] / memory["pgd"] if memory["pgd"] > 0 else None,
        "memory_measure": mem_kind,
        "target_ratio_max": 3.0,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
