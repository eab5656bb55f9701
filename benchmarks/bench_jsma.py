"""JSMA speed per image: medrobust's batched attack against a plain one-image-at-a-time loop.

The baseline is written here, in the simplest form of Papernot et al.'s Algorithm 3: one image
at a time, one pair per step, and at every step the full ``n x n`` matrix of pair scores
(``n = 1024`` elements at 1x32x32). It uses the same rule as medrobust (logit gradients, target
= the second most likely class, ``theta = +1``, ``gamma``; success = prediction != label), so
both must return the same adversarial images: the script checks that before timing. medrobust
searches the same pairs exactly (``max_candidates = 1024 = n``; its candidate bound prunes most of
them), vectorised over the batch; it is also timed one image per call, to separate the gain of
batching from that of the search.

Usage::

    python benchmarks/bench_jsma.py --images 16 --repeats 3

Prints the load average before and after (timings on a shared machine are only comparable at
similar load), medians over ``--repeats`` runs, and the time per image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from medrobust.attacks import create_attack
from medrobust.models import create_model


def jsma_one_image(
    model: torch.nn.Module, x: torch.Tensor, y: int, gamma: float
) -> tuple[torch.Tensor, int]:
    """Untargeted JSMA on one ``(1, C, H, W)`` image in ``[0, 1]``: the baseline loop."""
    n = x[0].numel()
    with torch.no_grad():
        z0 = model(x)[0]
    z0[y] = -float("inf")
    t = int(z0.argmax())
    domain = (x.flatten() < 1.0).clone()
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    xa = x.clone()
    steps = 0
    budget = int(gamma * n + 1e-9) // 2
    while True:
        xg = xa.detach().requires_grad_(True)
        z = model(xg)[0]
        if int(z.argmax()) != y or steps >= budget or int(domain.sum()) < 2:
            return xa, steps
        (ga,) = torch.autograd.grad(z[t], xg, retain_graph=True)
        (gz,) = torch.autograd.grad(z.sum(), xg)
        a, b = ga.flatten(), (gz - ga).flatten()
        pa, pb = a[:, None] + a[None, :], b[:, None] + b[None, :]
        ok = (pa > 0) & (pb < 0) & domain[:, None] & domain[None, :] & upper
        score = (-pa * pb).masked_fill(~ok, -float("inf")).flatten()
        best = int(score.argmax())
        if not torch.isfinite(score[best]):
            return xa, steps
        p, q = divmod(best, n)
        flat = xa.flatten().clone()
        flat[p] = flat[q] = 1.0
        domain[p] = domain[q] = False
        xa = flat.view_as(x)
        steps += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gamma", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}  threads: {torch.get_num_threads()}")
    model = create_model("small-cnn", num_classes=10, width=8, spatial_dims=2, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 1, 32, 32, generator=g) * 0.8 + 0.1
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = create_attack("jsma", gamma=args.gamma, max_candidates=32 * 32)

    def batched() -> torch.Tensor:
        return attack(model, x, y).x_adv

    def baseline() -> torch.Tensor:
        return torch.cat([jsma_one_image(model, x[i : i + 1], int(y[i]), args.gamma)[0]
                          for i in range(x.shape[0])])  # fmt: skip

    ours, ref = batched(), baseline()  # also the warm-up
    same = torch.equal(ours, ref)
    res = attack(model, x, y)
    print(
        f"same adversarial images as the baseline: {same}; success "
        f"{int(res.success.sum())}/{args.images}, mean pairs {res.steps.float().mean():.1f}, "
        f"max L0 {int(res.l0.max())} (budget {int(args.gamma * 1024)})"
    )

    def one_by_one() -> torch.Tensor:
        return torch.cat([attack(model, x[i : i + 1], y[i : i + 1]).x_adv
                          for i in range(x.shape[0])])  # fmt: skip

    times: dict[str, list[float]] = {
        "baseline (one image, one pair)": [],
        "medrobust jsma, one image a call": [],
        "medrobust jsma (batched)": [],
    }
    for _ in range(args.repeats):
        for name, fn in zip(times, (baseline, one_by_one, batched), strict=True):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["baseline (one image, one pair)"])
    print(f"{'method':34s} {'median s':>9s} {'ms/image':>9s} {'speed-up':>9s}")
    for name, runs in times.items():
        t = statistics.median(runs)
        print(f"{name:34s} {t:9.3f} {1000 * t / args.images:9.1f} {base / t:9.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
