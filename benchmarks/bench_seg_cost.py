"""What the segmentation audit costs, and how small its minimal-perturbation attacks are
(issue 10, items 0, 6 and 7).

Parts (``--parts``, comma-separated):

* ``audit``: the default ``medrobust evaluate SEGMENTER.pt`` audit (no attack named: ``pgd-seg``
  and ``apgd-seg`` at 1, 2, 4 and 8/255, ``asma`` and ``dag`` toward the background and another
  image's mask, three noise baselines, the sanity checks) on 8 bus-phantom images of 128x128:
  wall time, process CPU time, and per phase (each progress event opens one) the wall time and
  the images the model was run on (forward passes, counted by a forward hook, times the batch).
* ``forwards``: forward passes per ASMA step (a forward hook on the model; the stop
  (``polish=None``) and the final shrinking off, so every step runs; the prepare, clean and
  final passes are the fixed overhead).
* ``minimal``: ASMA (tuned default) and DAG against PGD toward the same target: per image, the
  smallest budget, in Linf and in L2 (a grid of factor sqrt 2, then 4 bisections), at which
  targeted PGD-20 on pixel CE reaches the target IoU that the attack reached; the attack's
  Linf, L2 and per-pixel RMS beside it, and per norm whether the attack was smaller.
* ``paper``: ``asma-paper`` (Ozbulak et al.'s raw tau and beta, 2501 steps) beside the tuned
  ``asma``: target IoU, pixel success, L2, Linf and per-pixel RMS, against the paper's Fig. 1
  (IoU 0.98, L2 2.3, Linf 0.16 on 3x572x572 inputs: per-pixel RMS 2.3 / sqrt(3 * 572^2)).

The model is a MONAI UNet (channels 8-16-32-64) trained here on 160 phantom images of 128x128
for 6 epochs (or ``--checkpoint``). ``--mni-checkpoint`` adds a 4-class model of the MNI152
tissue slices to ``minimal`` (e.g. one trained by ``medrobust train --data mni152-tissue --model
unet``), toward the background, another slice's classes and a class swap; ``--volume-steps N``
adds a 5-class 3-D UNet trained here for N steps on the volume phantom (4 test volumes of 32^3),
toward the background and a class swap.

The machine these figures come from may be shared: the load average before and after is
recorded; CPU time is less sensitive to other work than wall time.

Usage::

    python benchmarks/bench_seg_cost.py --parts audit,forwards,minimal,paper \
        --mni-checkpoint runs/mni/train/best.pt --volume-steps 300 \
        --out benchmarks/results/seg_cost.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medrobust.attacks import create_attack
from medrobust.attacks.targets import make_target

PAPER = {"target_iou": 0.98, "pixel_accuracy": 0.99, "l2": 2.3, "linf": 0.16}
PAPER["rms"] = PAPER["l2"] / math.sqrt(3 * 572 * 572)


def cpu_s() -> float:
    """User + system CPU time of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class ForwardCounter:
    """Counts the calls of the top-level network and the images they ran on (a forward hook
    on every module, keeping those whose class is ``kind``)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.calls = 0
        self.images = 0

    def __enter__(self) -> ForwardCounter:
        def hook(module: torch.nn.Module, args: Any, out: Any) -> None:
            if type(module) is self.kind:
                self.calls += 1
                self.images += int(args[0].shape[0]) if args else 0

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def train_unet(out: Path) -> Path:
    """Train the benchmark's UNet on 160 phantom images of 128x128 (6 epochs)."""
    from medrobust.data import BusPhantom
    from medrobust.models import create_model
    from medrobust.training import TrainConfig, fit

    model = create_model(
        "unet",
        num_classes=2,
        in_channels=1,
        spatial_dims=2,
        class_names=["background", "lesion"],
        seed=0,
        channels=[8, 16, 32, 64],
        strides=[2, 2, 2],
        num_res_units=1,
    )
    cfg = TrainConfig.from_dict(
        {"epochs": 6, "batch_size": 16, "lr": 3e-3, "seed": 0, "monitor": "val_dice"}
    )
    res = fit(
        model,
        BusPhantom("train", n=160, size=128, seed=0),
        BusPhantom("val", n=16, size=128, seed=0),
        cfg,
        out,
        card_info={"data": {"name": "bus-phantom", "seed": 0}},
        overwrite=True,
    )
    return Path(res.best_checkpoint)


def part_audit(ckpt: Path) -> dict[str, Any]:
    """The default audit of a saved segmenter on 8 images of 128x128, timed per phase."""
    from medrobust.models import load_checkpoint
    from medrobust.pipelines.audit import evaluate_checkpoint
    from medrobust.pipelines.config import CheckpointAudit
    from medrobust.pipelines.reporter import Reporter

    net = type(load_checkpoint(ckpt)[0].net)
    phases: list[dict[str, Any]] = []
    counter = ForwardCounter(net)
    t0, c0 = time.perf_counter(), cpu_s()

    def close() -> None:
        if phases:
            p = phases[-1]
            p["wall_s"] = round(time.perf_counter() - t0 - p.pop("start"), 2)
            p["cpu_s"] = round(cpu_s() - p.pop("cpu0"), 2)
            p["images_forwarded"] = counter.images - p.pop("images0")
            print(json.dumps(p), flush=True)

    def on_event(ev: Any) -> None:
        close()
        label = ev.stage if ev.attack is None else f"{ev.attack}"
        if ev.eps is not None:
            label += f" eps={ev.eps * 255:g}/255"
        phases.append(
            {
                "phase": label,
                "start": time.perf_counter() - t0,
                "cpu0": cpu_s(),
                "images0": counter.images,
            }
        )

    # the phantom's class names are its classification labels (benign, malignant), the model's
    # are mask classes (background, lesion): the card check would refuse the pair
    settings = CheckpointAudit(
        data_params={"size": 128, "n": 40}, max_samples=8, allow_class_mismatch=True
    )
    with tempfile.TemporaryDirectory() as tmp, counter:
        outcome = evaluate_checkpoint(
            ckpt, settings, Path(tmp) / "run", reporter=Reporter(evaluate=on_event)
        )
        close()
    seg = outcome.result.metrics["segmentation"]
    return {
        "settings": "medrobust evaluate SEGMENTER.pt --data-param size=128 --max-samples 8",
        "wall_s": round(time.perf_counter() - t0, 1),
        "cpu_s": round(cpu_s() - c0, 1),
        "images_forwarded": counter.images,
        "phases": phases,
        "targeted": [
            {
                k: r.get(k)
                for k in (
                    "attack",
                    "target",
                    "success_rate",
                    "mean_target_iou",
                    "mean_pixel_success",
                    "mean_linf",
                    "mean_l2",
                    "mean_steps",
                    "time_s",
                )
            }
            for r in seg["targeted"]
        ],
        "worst_case_dice": [r["mean_worst_dice"] for r in seg["worst_case"]],
    }


def test_images(n: int, size: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    from medrobust.data import BusPhantom

    ds = BusPhantom("test", n=max(n, 8), size=size, seed=0)
    x = torch.stack([ds[i]["image"] for i in range(n)])
    y = torch.stack([ds[i]["mask"] for i in range(n)])
    return x, y


def part_forwards(model: Any, steps: int = 20) -> dict[str, Any]:
    """Forward passes per ASMA step, by a forward hook."""
    x, y = test_images(4)
    tgt = make_target("background", y, num_classes=model.num_classes, seed=0)
    counter = ForwardCounter(type(model.net))
    out = {}
    for n in (steps, 2 * steps):
        attack = create_attack("asma", steps=n, polish=None, refine=0)
        with counter:
            c0 = counter.calls
            attack(model, x, tgt)
            out[n] = counter.calls - c0
    per_step = (out[2 * steps] - out[steps]) / steps
    return {
        "calls": {str(k): v for k, v in out.items()},
        "forwards_per_step": per_step,
        "fixed_overhead": out[steps] - per_step * steps,
    }


def _stats(res: Any, x: torch.Tensor) -> dict[str, Any]:
    n = x[0].numel()
    return {
        "success": res.success.double().tolist(),
        "target_iou": [round(float(v), 4) for v in res.extra["target_iou"]],
        "pixel_success": [round(float(v), 4) for v in res.extra["pixel_success"]],
        "linf": [round(float(v), 4) for v in res.linf],
        "l2": [round(float(v), 3) for v in res.l2],
        "rms": [round(float(v) / math.sqrt(n), 5) for v in res.l2],
        "steps": res.steps.tolist(),
    }


_GRID = {"linf": (0.25 / 255, 128 / 255), "l2": (0.05, 64.0)}


def _reaches(
    model: Any, x: torch.Tensor, tgt: torch.Tensor, goal: torch.Tensor, norm: str, eps: float
) -> tuple[torch.Tensor, Any]:
    """Whether targeted PGD-20 on pixel CE, ``norm`` ball of radius ``eps``, reaches ``goal``."""
    res = create_attack("pgd-seg", targeted=True, eps=eps, steps=20, norm=norm)(model, x, tgt)
    return res.extra["target_iou"] >= goal - 1e-9, res


def pgd_needed(
    model: Any,
    x: torch.Tensor,
    tgt: torch.Tensor,
    goal: torch.Tensor,
    norm: str = "linf",
    bisect: int = 4,
) -> dict[str, Any]:
    """Per image, the smallest ``norm`` budget at which targeted PGD-20 reaches target IoU
    ``goal``: a grid of factor sqrt 2, then ``bisect`` bisections per image between the last
    budget that fell short and the first that was enough (so ``needed`` is within a factor
    ``2 ** (0.5 / 2 ** bisect)`` of the true threshold of this attack). Also the other norm of
    PGD's perturbation at that budget."""
    other = "l2" if norm == "linf" else "linf"
    b = x.shape[0]
    need, below, at = [math.inf] * b, [0.0] * b, [math.nan] * b
    eps, stop = _GRID[norm]
    while eps <= stop and any(math.isinf(v) for v in need):
        ok, res = _reaches(model, x, tgt, goal, norm, eps)
        for i in range(b):
            if math.isinf(need[i]):
                if bool(ok[i]):
                    need[i], at[i] = eps, float(getattr(res, other)[i])
                else:
                    below[i] = eps
        eps *= math.sqrt(2)
    for i in range(b):
        if math.isinf(need[i]) or below[i] == 0.0:
            continue
        lo, hi = below[i], need[i]
        for _ in range(bisect):
            mid = math.sqrt(lo * hi)
            ok, res = _reaches(model, x[i : i + 1], tgt[i : i + 1], goal[i : i + 1], norm, mid)
            if bool(ok[0]):
                hi, at[i] = mid, float(getattr(res, other)[0])
            else:
                lo = mid
        need[i], below[i] = hi, lo
    return {
        f"{norm}_needed": [round(v, 4) for v in need],
        f"{norm}_not_enough": [round(v, 4) for v in below],
        f"{other}_at_needed": [round(v, 4) for v in at],
    }


def _smaller(stats: dict[str, Any], pgd: dict[str, Any], norm: str) -> list[bool | None]:
    """Per image: is the attack's ``norm`` perturbation below what PGD needed (None where PGD
    never reached the IoU, i.e. the attack needed less than the largest budget tried)."""
    return [
        None if math.isinf(n) else bool(a < n)
        for a, n in zip(stats[norm], pgd[f"{norm}_needed"], strict=True)
    ]


def part_minimal(model: Any, x: torch.Tensor, y: torch.Tensor, kinds: list[str]) -> dict:
    """ASMA and DAG against targeted PGD toward the same targets, PGD bounded in Linf and in L2:
    per image, the budget PGD needs to reach the target IoU the attack reached."""
    out: dict[str, Any] = {}
    for kind in kinds:
        tgt = make_target(kind, y, num_classes=model.num_classes, seed=0)
        row: dict[str, Any] = {}
        for name in ("asma", "dag"):
            t = time.perf_counter()
            res = create_attack(name)(model, x, tgt)
            st = {**_stats(res, x), "wall_s": round(time.perf_counter() - t, 1)}
            goal = res.extra["target_iou"]
            st["pgd_linf_toward_same_iou"] = pgd_needed(model, x, tgt, goal, "linf")
            st["pgd_l2_toward_same_iou"] = pgd_needed(model, x, tgt, goal, "l2")
            st["smaller_than_pgd"] = {
                n: _smaller(st, st[f"pgd_{n}_toward_same_iou"], n) for n in ("l2", "linf")
            }
            row[name] = st
            print(kind, name, json.dumps(st), flush=True)
        out[kind] = row
    return out


def part_minimal_volume(steps: int, n: int) -> dict[str, Any]:
    """``part_minimal`` on a 5-class 3-D UNet (``bench_seg_volume.train_volume_unet``) and ``n``
    test volumes of 32^3 of the volume phantom, toward the background and a class swap."""
    from bench_seg_volume import train_volume_unet

    from medrobust.data import create_dataset
    from medrobust.metrics.segmentation import dice_per_sample

    t = time.perf_counter()
    model = train_volume_unet(steps)
    test = create_dataset("volume-phantom", split="test", n=n, size=32, seed=0)
    x = torch.stack([test[i]["image"] for i in range(n)])
    y = torch.stack([test[i]["mask"] for i in range(n)])
    with torch.no_grad():
        clean = dice_per_sample(model(x), y)
    out: dict[str, Any] = {
        "train_steps": steps,
        "train_s": round(time.perf_counter() - t, 1),
        "clean_dice": [round(float(v), 3) for v in clean],
    }
    return {**out, **part_minimal(model, x, y, ["background", "swap"])}


def part_paper(model: Any, n: int, steps: int) -> dict[str, Any]:
    """asma-paper beside the tuned asma toward another image's mask."""
    x, y = test_images(n)
    tgt = make_target("other", y, num_classes=model.num_classes, seed=0)
    out: dict[str, Any] = {"paper_fig1": PAPER, "n": n}
    for name, kw in (("asma-paper", {"steps": steps}), ("asma", {})):
        t = time.perf_counter()
        res = create_attack(name, **kw)(model, x, tgt)
        out[name] = {**_stats(res, x), "params": kw, "wall_s": round(time.perf_counter() - t, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="audit,forwards,minimal,paper")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--mni-checkpoint", type=Path, default=None)
    ap.add_argument(
        "--volume-steps",
        type=int,
        default=0,
        help="train a 5-class 3-D UNet on the volume phantom for this many steps and add it "
        "to the minimal part (0: skip)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=4, help="images of the minimal and paper parts")
    ap.add_argument("--paper-steps", type=int, default=2501)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/seg_cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    from medrobust.models import load_checkpoint

    result: dict[str, Any] = {
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": args.threads,
        "load_before": list(os.getloadavg()),
        "note": "shared machine: compare cpu_s and images_forwarded rather than wall_s",
    }
    if args.out.exists():
        result = {**json.loads(args.out.read_text()), **result}
    ckpt = args.checkpoint
    if ckpt is None:
        t = time.perf_counter()
        ckpt = train_unet(Path(tempfile.mkdtemp()) / "unet128")
        result["train_s"] = round(time.perf_counter() - t, 1)
    model = load_checkpoint(ckpt)[0].eval()
    for part in parts:
        t = time.perf_counter()
        if part == "audit":
            result["audit"] = part_audit(ckpt)
        elif part == "forwards":
            result["forwards"] = part_forwards(model)
        elif part == "minimal":
            x, y = test_images(args.n)
            result["minimal"] = {"phantom": part_minimal(model, x, y, ["background", "other"])}
            if args.mni_checkpoint is not None:
                from medrobust.data import create_dataset

                mni = load_checkpoint(args.mni_checkpoint)[0].eval()
                ds = create_dataset("mni152-tissue", split="test", mode="slice")
                pick = [3, 9, 6, 12][: args.n]
                xm = torch.stack([ds[i]["image"] for i in pick])
                ym = torch.stack([ds[i]["mask"] for i in pick])
                result["minimal"]["mni152"] = part_minimal(
                    mni, xm, ym, ["background", "other", "swap"]
                )
            if args.volume_steps:
                result["minimal"]["volume"] = part_minimal_volume(args.volume_steps, args.n)
        elif part == "paper":
            result["paper"] = part_paper(model, args.n, args.paper_steps)
        else:
            raise SystemExit(f"unknown part {part!r}; expected audit, forwards, minimal, paper")
        result.setdefault("part_wall_s", {})[part] = round(time.perf_counter() - t, 1)
        result["load_after"] = list(os.getloadavg())
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(part, json.dumps(result.get(part), indent=1)[:3000], flush=True)


if __name__ == "__main__":
    main()
