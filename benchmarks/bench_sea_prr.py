"""SEA's progressive radius reduction (2, 1.5, 1 x eps over 3/10, 3/10, 4/10 of the iterations)
against plain APGD at the same iteration budget, per SEA loss, on the demo's phantom UNet.

For each SEA preset (``apgd-sea-mce``, ``-msph``, ``-js``, ``-mbce``) and budget, the mean Dice
under attack and the share of samples broken (Dice below half the clean Dice), with
``radius_schedule`` at its SEA default and with ``radius_schedule=None``; and the worst case
per sample over the four losses (and over the three without the masked spherical loss). Both
arms return only iterates inside the eps-ball. Writes ``--out`` (JSON).

Usage: ``python -m benchmarks.bench_sea_prr [--checkpoint PT] [--n 8] [--steps 30]
[--budgets 2,4,8] [--out PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from benchmarks.bench_seg_suite import phantom_unet

SEA = ("apgd-sea-mce", "apgd-sea-msph", "apgd-sea-js", "apgd-sea-mbce")


def run(
    model: Any, x: torch.Tensor, y: torch.Tensor, steps: int, budgets: tuple[float, ...]
) -> dict[str, Any]:
    """Dice per sample for every preset, budget and arm (radius reduction on / off)."""
    from medrobust.attacks import create_attack
    from medrobust.metrics.segmentation import sample_dice

    k = int(model.num_classes)
    with torch.no_grad():
        clean = sample_dice(model(x).argmax(1), y, k)
    out: dict[str, Any] = {"clean_dice": clean.mean().item(), "budgets": list(budgets)}
    for arm, sched in (("radius_reduction", "default"), ("plain", None)):
        dice: dict[str, list[torch.Tensor]] = {}
        t0 = time.perf_counter()
        for name in SEA:
            kw: dict[str, Any] = {"steps": steps}
            if sched is None:
                kw["radius_schedule"] = None
            dice[name] = []
            for eps in budgets:
                res = create_attack(name, eps=eps, **kw)(model, x, y)
                dice[name].append(res.extra["dice"].double())
        wall = time.perf_counter() - t0
        rows: dict[str, Any] = {"wall_s": round(wall, 1), "load": os.getloadavg()[0]}
        for name in SEA:
            rows[name] = {
                "mean_dice": [round(d.mean().item(), 4) for d in dice[name]],
                "broken": [round((d < 0.5 * clean).double().mean().item(), 3) for d in dice[name]],
            }
        for label, names in (("worst_of_4", SEA), ("worst_without_msph", SEA[:1] + SEA[2:])):
            worst = [torch.stack([dice[n][e] for n in names]).amin(0) for e in range(len(budgets))]
            rows[label] = {
                "mean_dice": [round(w.mean().item(), 4) for w in worst],
                "broken": [round((w < 0.5 * clean).double().mean().item(), 3) for w in worst],
            }
        out[arm] = rows
        print(f"{arm}: {json.dumps(rows)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=8, help="phantom test images")
    parser.add_argument("--steps", type=int, default=30, help="iterations per attack")
    parser.add_argument("--checkpoint", default=None, help="a trained phantom UNet")
    parser.add_argument("--budgets", default="2,4,8", help="Linf budgets in units of 1/255")
    parser.add_argument("--out", default="benchmarks/results/sea_prr.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budgets = tuple(float(b) / 255 for b in args.budgets.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        model, test = phantom_unet(args.checkpoint, Path(tmp))
        items = [test[i] for i in range(min(args.n, len(test)))]
    x = torch.stack([it["image"] for it in items])
    y = torch.stack([it["mask"] for it in items]).long()
    if y.ndim == x.ndim:
        y = y[:, 0]
    record = {
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": args.threads,
        "n": int(x.shape[0]),
        "steps": args.steps,
        "result": run(model.eval(), x, y, args.steps, budgets),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
