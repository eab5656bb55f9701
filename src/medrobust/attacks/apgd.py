"""Auto-PGD: PGD with a step-size schedule driven by the progress of the objective.

References:
    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", ICML 2020.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from medrobust.attacks.engine import (
    Attack,
    Run,
    _check_positive,
    subset_region,
)
from medrobust.attacks.objectives.base import Objective, index_target
from medrobust.attacks.rng import AnyGenerator, attack_generator, restrict
from medrobust.types import Norm


def _grad(g: torch.Tensor | None) -> torch.Tensor:
    if g is None:  # pragma: no cover - evaluate(grad=True) always returns a gradient
        raise RuntimeError("gradient was requested but not computed")
    return g


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD checks its progress: ``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, scaled by ``steps``.

    Returns:
        Sorted distinct checkpoint iterations in ``(0, steps)``.
    """
    ps = [0.0, 0.22]
    while ps[-1] < 1.0:
        ps.append(ps[-1] + max(ps[-1] - ps[-2] - 0.03, 0.06))
    ws = sorted({math.ceil(p * steps) for p in ps[1:]})
    return [w for w in ws if 0 < w < steps]


class APGD(Attack):
    """Auto-PGD (APGD) in an Linf or L2 ball with momentum 0.75 and step-size halving.

    The step size starts at ``2 * eps``; at each checkpoint it is halved (and the iterate reset to
    the best point so far) when fewer than ``rho`` of the steps since the last checkpoint improved
    the objective, or when neither the step size nor the best objective changed.

    Args:
        objective: What to maximise (``ce`` for APGD-CE, ``dlr`` for APGD-DLR).
        norm: ``"linf"`` or ``"l2"``.
        eps: Radius of the ball.
        steps: Iterations (100 in the reference).
        restarts: Random restarts, each only on the samples still unbroken.
        rho: Fraction of improving steps required between checkpoints (0.75).
        momentum: Weight ``alpha`` of the new point (0.75).
        early_stop: Stop per sample as soon as the attack succeeds.
        seed: Seed of the private generator.

    References:
        Croce & Hein, ICML 2020.
    """

    engine = "apgd"
    #: Steps between host round trips (batch compaction under ``early_stop``); None: every
    #: step on the CPU and every 5 steps on an accelerator. The result does not depend on it:
    #: a sample that succeeds is frozen (no longer offered, its steps no longer counted) until
    #: the next compaction drops it.
    sync_every: int | None = None

    def __init__(
        self,
        *,
        objective: Objective,
        norm: Norm | str = Norm.LINF,
        eps: float = 8 / 255,
        steps: int = 100,
        restarts: int = 1,
        rho: float = 0.75,
        momentum: float = 0.75,
        early_stop: bool = True,
        seed: int = 0,
        name: str = "apgd",
    ) -> None:
        super().__init__(objective=objective, norm=norm, eps=eps, seed=seed)
        _check_positive("steps", steps, integer=True)
        _check_positive("restarts", restarts, integer=True)
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if not 0 < momentum <= 1:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.steps, self.restarts = int(steps), int(restarts)
        self.rho, self.momentum, self.early_stop = float(rho), float(momentum), bool(early_stop)
        self.name = name

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "restarts": self.restarts,
            "rho": self.rho,
            "momentum": self.momentum,
            "early_stop": self.early_stop,
        }

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        gen = attack_generator(self.seed, run.x.device)
        checkpoints = set(apgd_checkpoints(self.steps))
        every = self.sync_every or (1 if run.x.device.type == "cpu" else 5)
        _check_positive("sync_every", every, integer=True)
        for _ in range(self.restarts):
            idx = (~run.best.success).nonzero().flatten()
            if idx.numel() == 0:
                break
            self._one_run(run, idx, gen, (checkpoints, every))
        return None

    def _one_run(
        self,
        run: Run,
        idx: torch.Tensor,
        gen: AnyGenerator,
        sched: tuple[set[int], int],
        *,
        steps: int | None = None,
        start: torch.Tensor | None = None,
    ) -> None:
        """One APGD run on rows ``idx``: momentum steps and the checkpoint rule.

        Cohesive algorithm: kept in one function. ``sched`` is ``(checkpoints, every)``: the
        checkpoint iterations and the steps between batch compactions (host round trips).
        ``steps`` overrides :attr:`steps` and ``start`` (the perturbation of rows ``idx``,
        inside ``run.threat``) replaces the random start (a warm start).
        """
        checkpoints, every = sched
        n_steps = self.steps if steps is None else int(steps)
        model, x, target, threat, region, best = run.unpack()
        x0, ta, ra = x[idx], index_target(target, idx), subset_region(region, idx)
        view = (-1,) + (1,) * (x.ndim - 1)
        d = start if start is not None else threat.random_init(x0, restrict(gen, idx), ra)
        out, g0 = self.evaluate(model, x0 + d, ta, grad=True)
        g = _grad(g0)
        best.update(idx, x0 + d, out)
        s = {
            "x0": x0,
            "d": d,
            "d_prev": d.clone(),
            "g": g,
            "f": out.loss.detach(),
            "f_max": out.loss.detach().clone(),
            "d_max": d.clone(),
            "g_max": g,
            "eta": torch.full((idx.numel(),), 2 * threat.eps, device=x.device, dtype=x.dtype),
            "count": torch.zeros(idx.numel(), device=x.device),
            "eta_ck": torch.full((idx.numel(),), 2 * threat.eps, device=x.device, dtype=x.dtype),
            "fmax_ck": out.loss.detach().clone(),
            "idx": idx,
            "active": torch.ones(idx.numel(), dtype=torch.bool, device=x.device),
        }
        last_ck = 0
        for k in range(n_steps):
            if self.early_stop:
                s["active"] = s["active"] & ~out.success
                if k % every == 0:
                    keep = s["active"]
                    if not bool(keep.any()):
                        return
                    if not bool(keep.all()):
                        rows = keep.nonzero().flatten()
                        s = {key: v[rows] for key, v in s.items()}
                        ta = index_target(ta, rows)
                        ra = ra if ra is None or ra.shape[0] == 1 else ra[rows]
            eta = s["eta"].view(view)
            z = threat.project(s["x0"], s["d"] + eta * threat.ascent_direction(s["g"], ra), ra)
            if k == 0:
                d_new = z
            else:
                a = self.momentum
                d_new = threat.project(
                    s["x0"], s["d"] + a * (z - s["d"]) + (1 - a) * (s["d"] - s["d_prev"]), ra
                )
            out, g_new = self.evaluate(model, s["x0"] + d_new, ta, grad=k < n_steps - 1)
            g = g_new if g_new is not None else torch.zeros_like(d_new)
            best.update(s["idx"], s["x0"] + d_new, out, offer=s["active"])
            best.steps[s["idx"]] += s["active"].long()
            f_new = out.loss.detach()
            s["count"] += (f_new > s["f"]).float()
            improved = f_new > s["f_max"]
            s["d_max"] = torch.where(improved.view(view), d_new, s["d_max"])
            s["g_max"] = torch.where(improved.view(view), g, s["g_max"])
            s["f_max"] = torch.where(improved, f_new, s["f_max"])
            s["d_prev"], s["d"], s["f"] = s["d"], d_new, f_new
            s["g"] = g
            if k + 1 in checkpoints:
                window = k + 1 - last_ck
                cond1 = s["count"] < self.rho * window
                cond2 = (s["eta_ck"] == s["eta"]) & (s["fmax_ck"] == s["f_max"])
                halve = cond1 | cond2
                s["eta_ck"] = s["eta"].clone()
                s["fmax_ck"] = s["f_max"].clone()
                s["eta"] = torch.where(halve, s["eta"] / 2, s["eta"])
                hv = halve.view(view)
                # restart the halved samples from their best point (its gradient is stored)
                s["d"] = torch.where(hv, s["d_max"], s["d"])
                s["d_prev"] = torch.where(hv, s["d_max"], s["d_prev"])
                s["g"] = torch.where(hv, s["g_max"], s["g"])
                s["f"] = torch.where(halve, s["f_max"], s["f"])
                s["count"].zero_()
                last_ck = k + 1
