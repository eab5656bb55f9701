"""Segmentation suite benchmark (issue 10): worst-case Dice of ``pgd-seg`` alone against the
``seg-standard`` suite at each budget, and the suite's time with SEA-style scheduling
(``mode="cascade"``: each attack only on the samples still unbroken) against running every
attack on every sample (``mode="individual"``).

Models:

1. the phantom UNet of ``medrobust demo --task segmentation`` (trained here on the simulated
   breast-ultrasound lesions, 64x64, or loaded with ``--checkpoint``), on ``--n`` test images;
2. a small MONAI 3-D UNet (seeded, untrained) on ``--n3d`` random volumes of 1x32x32x32, its own
   clean prediction as the mask (clean Dice 1), so only the attacks' strength is compared.

Usage::

    python benchmarks/bench_seg_suite.py --threads 2 --out benchmarks/results/seg_suite.json

The machine's load average is recorded before and after: on a shared CPU the times are only
comparable within one run.
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

BUDGETS = [1 / 255, 2 / 255, 4 / 255, 8 / 255]
QUIET: dict[str, Any] = {"targeted": [], "noise": [], "checks": False, "n_examples": 0}


def phantom_unet(checkpoint: str | None, work: Path) -> tuple[Any, Any]:
    """The demo's phantom UNet and its test split (trained unless ``checkpoint`` is given)."""
    from medrobust.data import BusPhantom
    from medrobust.models import load_checkpoint
    from medrobust.pipelines.reporter import Reporter
    from medrobust.pipelines.segmentation import _train_demo_unet, demo_settings

    cfg = demo_settings(quick=False)
    if checkpoint is not None:
        model, _ = load_checkpoint(checkpoint)
        d = cfg["data"]
        return model, BusPhantom("test", n=d["n_test"], size=d["size"], seed=d["seed"])
    model, _, _, test = _train_demo_unet(cfg, work, Reporter(), overwrite=True)
    return model, test


def volumes(n: int) -> tuple[Any, list[dict[str, torch.Tensor]]]:
    """A seeded 3-D UNet and ``n`` random volumes masked by its own clean prediction."""
    from medrobust.models import create_model

    model = create_model(
        "unet", num_classes=3, spatial_dims=3, channels=(8, 16), strides=(2,), seed=0
    ).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((n, 1, 32, 32, 32), generator=g) * 0.8 + 0.1
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, [{"image": x, "mask": y}]


def compare(model: Any, data: Any, batch_size: int) -> dict[str, Any]:
    """``pgd-seg`` alone, the suite with scheduling and the suite on every sample."""
    from torch.utils.data import DataLoader, Dataset

    from medrobust.pipelines.results import evaluate_segmentation

    loader = data
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    runs = {
        "pgd-seg": {"attacks": [{"name": "pgd-seg", "steps": 10}]},
        "seg-standard (cascade)": {"attacks": "seg-standard"},
        "seg-standard (every attack on every sample)": {
            "attacks": "seg-standard",
            "mode": "individual",
        },
    }
    out: dict[str, Any] = {}
    for label, kw in runs.items():
        t0 = time.perf_counter()
        res = evaluate_segmentation(model, loader, eps=BUDGETS, **kw, **QUIET)
        wall = time.perf_counter() - t0
        seg = res.metrics["segmentation"]
        out[label] = {
            "wall_s": round(wall, 2),
            "clean_dice": seg["clean"]["mean_dice"],
            "worst_dice": [r["mean_worst_dice"] for r in seg["worst_case"]],
            "broken_rate": [r["broken_rate"] for r in seg["worst_case"]],
            "lowered_by": [r["lowered_by"] for r in seg["worst_case"]],
            "iterations": seg["iterations"],
        }
        print(
            f"  {label}: {wall:.1f} s, worst Dice "
            + ", ".join(f"{d:.3f}" for d in out[label]["worst_dice"])
            + " | broken "
            + ", ".join(f"{b:.2f}" for b in out[label]["broken_rate"]),
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=8, help="phantom test images")
    parser.add_argument("--n3d", type=int, default=2, help="3-D volumes (0: skip the 3-D part)")
    parser.add_argument("--checkpoint", default=None, help="a trained phantom UNet (skip training)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = {
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": args.threads,
        "load_before": os.getloadavg(),
        "budgets": BUDGETS,
    }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        model, test = phantom_unet(args.checkpoint, Path(tmp))
        record["train_s"] = round(time.perf_counter() - t0, 1)
        subset = torch.utils.data.Subset(test, range(min(args.n, len(test))))
        print(f"phantom UNet, {len(subset)} images of 64x64:", flush=True)
        record["phantom_2d"] = compare(model, subset, batch_size=args.n)
    if args.n3d > 0:  # 0 skips the 3-D part
        print(f"3-D UNet, {args.n3d} volumes of 32^3:", flush=True)
        record["unet_3d"] = compare(*volumes(args.n3d), batch_size=args.n3d)
    record["load_after"] = os.getloadavg()
    print(f"load average before {record['load_before']}, after {record['load_after']}")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=2, default=str))


if __name__ == "__main__":
    main()
