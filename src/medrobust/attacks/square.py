"""Square Attack: a score-based black-box attack by random square-shaped updates (Linf).

It needs only the model's scores, no gradients, so it serves as a cross-check against gradient
masking: if it breaks samples that the gradient attacks could not, the gradients mislead.

References:
    Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via
    random search", ECCV 2020.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from medrobust.attacks.engine import Attack, Run, _check_positive
from medrobust.attacks.objectives.classification import Margin
from medrobust.attacks.rng import attack_generator, randint, restrict
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm


def square_fraction(p_init: float, it: int, n_queries: int) -> float:
    """The fraction ``p`` of pixels changed at iteration ``it``: ``p_init`` halved at the
    reference schedule's iterations (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000),
    rescaled to ``n_queries``."""
    it = int(it / n_queries * 10000)
    halvings = sum(it > m for m in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
    return p_init / (2**halvings)


class SquareAttack(Attack):
    """Square Attack (Linf): random search over square (cube in 3-D) patches of +-eps.

    The initial point puts +-eps stripes along the last spatial axis; each iteration proposes,
    per sample still unbroken, a new random +-eps value per channel on a random square whose side
    shrinks on a fixed schedule, and keeps it if the margin loss decreases.

    Args:
        eps: Linf radius.
        n_queries: Maximum number of model queries per sample.
        p_init: Initial fraction of pixels in the square (0.8 in the reference).
        seed: Seed of the private generator.

    References:
        Andriushchenko et al., ECCV 2020.
    """

    engine = "square"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: Norm | str = Norm.LINF,
        n_queries: int = 1000,
        p_init: float = 0.8,
        seed: int = 0,
        name: str = "square",
    ) -> None:
        if Norm.parse(norm) is not Norm.LINF:
            raise ValueError(
                "the square attack supports the 'linf' norm only; for an L2 black-box check use "
                "an Linf budget or rely on the gradient-based L2 attacks"
            )
        super().__init__(objective=Margin(), norm=norm, eps=eps, seed=seed)
        _check_positive("n_queries", n_queries, integer=True)
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        self.n_queries, self.p_init = int(n_queries), float(p_init)
        self.name = name

    def params(self) -> dict[str, Any]:
        return {"n_queries": self.n_queries, "p_init": self.p_init}

    def _margin(self, model: ModelAdapter, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``z_y - max_{i != y} z_i``: the attack succeeds when it is negative."""
        with torch.no_grad():
            return -self.objective(model, x, y).loss

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        model, x, target, threat, region, best = run.unpack()
        if isinstance(target, dict):
            raise TypeError("the square attack expects a label tensor as target")
        y = target
        gen = attack_generator(self.seed, x.device)
        eps = threat.eps
        b, c = x.shape[:2]
        spatial = x.shape[2:]
        n_pix = math.prod(spatial)
        # vertical stripes: one random sign per channel and position along the last axis
        stripe_shape = (b, c) + (1,) * (len(spatial) - 1) + (spatial[-1],)
        signs = randint(gen, 0, 2, stripe_shape, device=x.device) * 2 - 1
        delta = threat.project(x, eps * signs.to(x.dtype).expand_as(x).clone(), region)
        margin = self._margin(model, x + delta, y)
        margin = torch.where(best.success, torch.full_like(margin, -1.0), margin)
        queries = torch.ones(b, dtype=torch.long, device=x.device)
        grids = torch.meshgrid(*[torch.arange(s, device=x.device) for s in spatial], indexing="ij")
        for it in range(1, self.n_queries):
            idx = (margin > 0).nonzero().flatten()
            if idx.numel() == 0:
                break
            p = square_fraction(self.p_init, it, self.n_queries)
            side = max(round((p * n_pix) ** (1 / len(spatial))), 1)
            side = min(side, min(spatial))
            n = idx.numel()
            inside = torch.ones((n, *spatial), dtype=torch.bool, device=x.device)
            for dim, size in enumerate(spatial):
                start = randint(restrict(gen, idx), 0, size - side + 1, (n,), device=x.device)
                start = start.view(-1, *([1] * len(spatial)))
                pos = grids[dim].unsqueeze(0)
                inside &= (pos >= start) & (pos < start + side)
            new_vals = randint(
                restrict(gen, idx), 0, 2, (n, c) + (1,) * len(spatial), device=x.device
            )
            new_vals = (new_vals * 2 - 1).to(x.dtype) * eps
            xi, di = x[idx], delta[idx]
            cand = torch.where(inside.unsqueeze(1), new_vals, di)
            ri = None if region is None else (region if region.shape[0] == 1 else region[idx])
            cand = threat.project(xi, cand, ri)
            m_new = self._margin(model, xi + cand, y[idx])
            queries[idx] += 1
            better = m_new < margin[idx]
            if bool(better.any()):
                rows = idx[better]
                delta[rows] = cand[better]
                margin[rows] = m_new[better]
        with torch.no_grad():
            out = self.objective(model, x + delta, y)
        best.update(torch.arange(b, device=x.device), x + delta, out)
        best.steps.copy_(queries)
        return None
