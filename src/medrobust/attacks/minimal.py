"""Minimal-perturbation attacks: Carlini & Wagner L2 and DeepFool.

Both look for the smallest perturbation that changes the prediction. When the attack has a
budget ``eps``, the perturbation found is projected onto the eps-ball of the attack's norm and
success is re-checked there, so their results are comparable with budget-bounded attacks.

References:
    Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.
    Moosavi-Dezfooli et al., "DeepFool: a simple and accurate method to fool deep neural
    networks", CVPR 2016.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from medrobust.attacks.engine import Attack, Run, _check_positive
from medrobust.attacks.objectives.base import Target
from medrobust.attacks.objectives.classification import Margin
from medrobust.types import Norm


def _labels(target: Target) -> torch.Tensor:
    if isinstance(target, dict):
        raise TypeError("this attack expects a label tensor as target")
    return target


class _MinimalAttack(Attack):
    """Shared ending: project onto the budget (if any) and re-check success."""

    def _finish(self, run: Run, x_found: torch.Tensor, steps: torch.Tensor) -> None:
        """Offer ``x_found`` (projected onto the budget, if any, and the bounds) to the tracker,
        with the objective (the margin) evaluated there, and record the steps spent."""
        x, threat, region = run.x, run.threat, run.region
        delta = x_found - x
        if self.eps is not None:
            delta = threat.project(x, delta, region)
        else:
            delta = threat.bounds.clamp(x + delta) - x
        x_adv = x + delta
        with torch.no_grad():
            out = self.objective(run.model, x_adv, run.target)
        run.best.update(torch.arange(x.shape[0], device=x.device), x_adv, out)
        run.best.steps.copy_(steps)


class CarliniWagnerL2(_MinimalAttack):
    """Carlini & Wagner's L2 attack: Adam in tanh space on ``||delta||_2^2 + c * margin``, with a
    binary search over the trade-off constant ``c`` per sample.

    Args:
        eps: Optional L2 budget; the minimal perturbation is projected onto it.
        steps: Adam steps per binary-search step.
        binary_search_steps: Number of values of ``c`` tried per sample.
        initial_const: First value of ``c``.
        confidence: Required logit margin ``kappa``.
        lr: Adam learning rate.
        seed: Unused by the algorithm (deterministic); kept for a uniform interface.

    References:
        Carlini & Wagner, IEEE S&P 2017.
    """

    engine = "cw"

    def __init__(
        self,
        *,
        eps: float | None = None,
        norm: Norm | str = Norm.L2,
        steps: int = 100,
        binary_search_steps: int = 5,
        initial_const: float = 1.0,
        confidence: float = 0.0,
        lr: float = 0.01,
        seed: int = 0,
        name: str = "cw",
    ) -> None:
        super().__init__(objective=Margin(confidence=None), norm=norm, eps=eps, seed=seed)
        for n, v in (("steps", steps), ("binary_search_steps", binary_search_steps)):
            _check_positive(n, v, integer=True)
        _check_positive("initial_const", initial_const)
        _check_positive("lr", lr)
        if confidence < 0:
            raise ValueError(f"confidence must be >= 0, got {confidence}")
        self.steps, self.binary_search_steps = int(steps), int(binary_search_steps)
        self.initial_const, self.confidence, self.lr = initial_const, confidence, lr
        self.name = name

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "binary_search_steps": self.binary_search_steps,
            "initial_const": self.initial_const,
            "confidence": self.confidence,
            "lr": self.lr,
        }

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        model, x, target, threat, region, _ = run.unpack()
        y = _labels(target)
        lo, width = threat.bounds.low, threat.bounds.width
        b = x.shape[0]
        # tanh space: x = lo + width * (tanh(w) + 1) / 2
        unit = ((x - lo) / width * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        w0 = torch.atanh(unit)
        const = torch.full((b,), float(self.initial_const), device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, math.inf)
        best_l2 = torch.full_like(const, math.inf)
        best_x = x.clone()
        steps = torch.zeros(b, dtype=torch.long, device=x.device)
        onehot = F.one_hot(y, model.num_classes).bool()
        for _ in range(self.binary_search_steps):
            w = w0.clone()
            m = torch.zeros_like(w)
            v = torch.zeros_like(w)
            succeeded_here = torch.zeros(b, dtype=torch.bool, device=x.device)
            for t in range(1, self.steps + 1):
                wg = w.detach().requires_grad_(True)
                with torch.enable_grad():
                    xa = lo + width * (torch.tanh(wg) + 1) / 2
                    if region is not None:
                        xa = x + (xa - x) * region
                    z = model(xa)
                    zy = z.masked_fill(~onehot, float("-inf")).amax(dim=1)
                    zo = z.masked_fill(onehot, float("-inf")).amax(dim=1)
                    f = (zy - zo + self.confidence).clamp(min=0)
                    l2sq = (xa - x).flatten(1).pow(2).sum(dim=1)
                    (g,) = torch.autograd.grad((l2sq + const * f).sum(), wg)
                steps += 1
                with torch.no_grad():
                    ok = (zo - zy) >= self.confidence
                    ok &= z.argmax(dim=1) != y
                    l2 = l2sq.sqrt()
                    better = ok & (l2 < best_l2)
                    best_l2 = torch.where(better, l2, best_l2)
                    best_x[better] = xa.detach()[better]
                    succeeded_here |= ok
                    # Adam on w (element-wise, so every sample is optimised independently)
                    m = 0.9 * m + 0.1 * g
                    v = 0.999 * v + 0.001 * g * g
                    mh = m / (1 - 0.9**t)
                    vh = v / (1 - 0.999**t)
                    w = w - self.lr * mh / (vh.sqrt() + 1e-8)
            upper = torch.where(succeeded_here, torch.minimum(upper, const), upper)
            lower = torch.where(~succeeded_here, torch.maximum(lower, const), lower)
            const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
        self._finish(run, best_x, steps)
        return None


class DeepFool(_MinimalAttack):
    """DeepFool: iterative linearisation of the decision boundaries toward the closest one.

    At each iteration, for the ``candidates`` classes with the highest clean logits, the
    boundary with the original class is linearised; the sample moves to the closest linearised
    boundary (L2: along ``w``; Linf: along ``sign(w)``) and the accumulated perturbation is
    scaled by ``1 + overshoot``. Stops per sample when the prediction changes.

    Args:
        norm: ``"l2"`` or ``"linf"``.
        eps: Optional budget; the minimal perturbation is projected onto it.
        steps: Maximum iterations (50).
        overshoot: Overshoot (0.02).
        candidates: Number of classes considered (the original plus the closest ones).
        seed: Unused (deterministic); kept for a uniform interface.

    References:
        Moosavi-Dezfooli et al., CVPR 2016.
    """

    engine = "deepfool"

    def __init__(
        self,
        *,
        norm: Norm | str = Norm.L2,
        eps: float | None = None,
        steps: int = 50,
        overshoot: float = 0.02,
        candidates: int = 10,
        seed: int = 0,
        name: str = "deepfool",
    ) -> None:
        super().__init__(objective=Margin(), norm=norm, eps=eps, seed=seed)
        _check_positive("steps", steps, integer=True)
        _check_positive("candidates", candidates, integer=True)
        if overshoot < 0:
            raise ValueError(f"overshoot must be >= 0, got {overshoot}")
        if candidates < 2:
            raise ValueError(f"candidates must be >= 2, got {candidates}")
        self.steps, self.overshoot, self.candidates = int(steps), float(overshoot), int(candidates)
        self.name = name

    def params(self) -> dict[str, Any]:
        return {"steps": self.steps, "overshoot": self.overshoot, "candidates": self.candidates}

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        model, x, target, threat, region, _ = run.unpack()
        y = _labels(target)
        b = x.shape[0]
        view = (-1,) + (1,) * (x.ndim - 1)
        with torch.no_grad():
            z0 = model(x)
        k = min(self.candidates, z0.shape[1])
        # classes to consider: the label first, then the highest other logits
        others = z0.masked_fill(F.one_hot(y, z0.shape[1]).bool(), float("-inf"))
        cand = torch.cat([y[:, None], others.topk(k - 1, dim=1).indices], dim=1)
        r_tot = torch.zeros_like(x)
        active = torch.ones(b, dtype=torch.bool, device=x.device)
        steps = torch.zeros(b, dtype=torch.long, device=x.device)
        x_adv = x.clone()
        for _ in range(self.steps):
            idx = active.nonzero().flatten()
            if idx.numel() == 0:
                break
            xi = x_adv[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                z = model(xi)
                still = z.argmax(dim=1) == y[idx]
                zc = z.gather(1, cand[idx])  # (n, k)
                grads = []
                for j in range(k):
                    (gj,) = torch.autograd.grad(zc[:, j].sum(), xi, retain_graph=j < k - 1)
                    grads.append(gj)
            active[idx[~still]] = False
            if not bool(still.any()):
                break
            steps[idx[still]] += 1
            with torch.no_grad():
                g = torch.stack(grads, dim=1)[still]  # (n, k, C, *spatial)
                if region is not None:
                    rg = region if region.shape[0] == 1 else region[idx[still]]
                    g = g * rg.unsqueeze(1)
                zs = zc[still].detach()
                w = g[:, 1:] - g[:, :1]  # (n, k-1, ...)
                f = zs[:, 1:] - zs[:, :1]  # (n, k-1), negative while not fooled
                wf = w.flatten(2)
                dual = wf.abs().sum(dim=2) if self.norm is Norm.LINF else wf.norm(dim=2)
                dist = f.abs() / (dual + 1e-12)
                closest = dist.argmin(dim=1)
                rows = torch.arange(closest.numel(), device=x.device)
                wb = w[rows, closest]
                fb = f.abs()[rows, closest]
                db = dual[rows, closest]
                if self.norm is Norm.LINF:
                    r = ((fb + 1e-4) / (db + 1e-12)).view(view) * wb.sign()
                else:
                    r = ((fb + 1e-4) / (db.pow(2) + 1e-12)).view(view) * wb
                sel = idx[still]
                r_tot[sel] = r_tot[sel] + r
                x_adv[sel] = threat.bounds.clamp(x[sel] + (1 + self.overshoot) * r_tot[sel])
        self._finish(run, x_adv, steps)
        return None


__all__ = ["CarliniWagnerL2", "DeepFool"]
