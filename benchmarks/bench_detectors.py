"""Benchmark: every registered detector against PGD and against each adaptive attack, per budget,
on a small CNN trained on the phantom (the demo's kind of model), with fit and score times.

For each detector: fit on the clean training split (threshold calibrated on the validation
split), then on the test split the AUROC and TPR at 5% FPR of the successful PGD examples and of
each adaptive attack's misclassified examples against the clean test scores
(:func:`medrobust.evaluation.assess_detector`), the measured clean false-alarm rate beside the
nominal 5%, and the system risk. Times are per 1,000 images (fit: the whole fit including
calibration; score: ``detector.score``).

Usage::

    python benchmarks/bench_detectors.py --threads 1                 # a few minutes
    python benchmarks/bench_detectors.py --n-test 200 --steps 20 --out benchmarks/results/x.json
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
from torch.utils.data import DataLoader

from medrobust.data import create_dataset
from medrobust.detectors import create_detector, list_detectors
from medrobust.evaluation import assess_detector, evaluate
from medrobust.models import create_model
from medrobust.training import TrainConfig, fit

ADAPTIVE = ("pgd-adaptive", "orthogonal-pgd", "feature-matching")


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n-train", type=int, default=320)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="steps of PGD and adaptive attacks")
    p.add_argument("--eps", default="1,2,4", help="budgets in 1/255")
    p.add_argument("--detectors", default=",".join(list_detectors()))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--demo",
        action="store_true",
        help="train the model of `medrobust demo` (small CNN at its default width, 64x64, the "
        "demo's training settings) instead of the small width-8 model",
    )
    return p.parse_args()


def _model(args: argparse.Namespace, work: Path) -> tuple[Any, Any, Any, Any]:
    data = {"size": args.size, "seed": 0}
    train, val, test = (
        create_dataset("bus-phantom", split=s, n=n, **data)
        for s, n in (("train", args.n_train), ("val", args.n_val), ("test", args.n_test))
    )
    if args.demo:
        from medrobust.pipelines.config import demo_config

        demo = demo_config()
        model = create_model("small-cnn", num_classes=2, in_channels=1, seed=0)
        cfg = demo.train
    else:
        model = create_model("small-cnn", num_classes=2, in_channels=1, width=8, seed=0)
        cfg = TrainConfig(epochs=args.epochs, batch_size=32, lr=3e-3, seed=0)
    fit(model, train, val, cfg, work / "train")
    return model.eval(), train, val, test


def _detector(name: str, model: Any, train: Any, val: Any) -> tuple[Any, float]:
    params: dict[str, Any] = {"fpr": 0.05}
    if name in ("kd-bu", "lid"):
        params["fit_eps"] = 8 / 255  # the supervised protocol needs fooled fit images
    det = create_detector(name, **params)
    t0 = time.perf_counter()
    det.fit(model, DataLoader(train, batch_size=100), calibration=DataLoader(val, batch_size=100))
    return det, time.perf_counter() - t0


def main() -> None:
    args = _args()
    if args.threads:
        torch.set_num_threads(args.threads)
    eps = [float(e) / 255 for e in args.eps.split(",")]
    out: dict[str, Any] = {
        "settings": vars(args) | {"out": str(args.out)},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "detectors": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model, train, val, test = _model(args, Path(tmp))
    loader = DataLoader(test, batch_size=100, shuffle=False)
    ev = evaluate(
        model,
        loader,
        attacks=[{"name": "pgd", "steps": args.steps}],
        eps=eps,
        checks=False,
        keep_adversarial=len(test),
    )
    out["clean_accuracy"] = ev.metrics["clean"]["accuracy"]
    x_test = torch.stack([test[i]["image"] for i in range(len(test))])
    for name in args.detectors.split(","):
        det, fit_s = _detector(name, model, train, val)
        t0 = time.perf_counter()
        det.score(x_test)
        score_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        risk = assess_detector(
            model,
            det,
            loader,
            ev,
            attacks=[],
            adaptive_attacks=list(ADAPTIVE),
            adaptive_params={"steps": args.steps},
        )
        entry = {
            "fit_s_per_1000": 1000 * fit_s / (len(train) + len(val)),
            "score_s_per_1000": 1000 * score_s / len(test),
            "assess_s": time.perf_counter() - t0,
            "false_alarms": risk.false_alarms,
            "check": risk.checks[0],
            "detection": [
                {k: r[k] for k in ("attack", "eps_display", "auroc", "tpr_at_fpr", "n_adversarial")}
                for r in risk.detection
            ],
            "risk": risk.risk,
        }
        out["detectors"][name] = entry
        far, status = risk.false_alarms["measured"], risk.checks[0]["status"]
        print(f"== {name}: fit {entry['fit_s_per_1000']:.1f} s/1000, score "
              f"{entry['score_s_per_1000']:.2f} s/1000, clean FAR {far:.3f} "
              f"(nominal 0.05, MR201 {status})")  # fmt: skip
        for r in entry["detection"]:
            auroc = "-" if r["auroc"] is None else f"{r['auroc']:.3f}"
            tpr = "-" if r["tpr_at_fpr"] is None else f"{r['tpr_at_fpr']:.3f}"
            print(f"   {r['attack']:>18} eps={r['eps_display']:>6}  AUROC {auroc}  TPR@5% {tpr}"
                  f"  (n={r['n_adversarial']})")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
