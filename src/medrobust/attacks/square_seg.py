"""A Square-style black-box attack on segmentation models: random search on the Dice loss.

It queries the model's scores only (no gradients), so it is the gradient-masking cross-check of
the segmentation suite: if it lowers the Dice of samples that every gradient attack left intact,
the gradients mislead (check MR103).

References:
    Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via
    random search", ECCV 2020; Croce, Singh, Hein, ECCV 2024 (black-box checks of SEA).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from medrobust.attacks.engine import Run, _check_positive, subset_region
from medrobust.attacks.objectives.base import ObjectiveOutput, Target, index_target
from medrobust.attacks.objectives.segmentation import SoftDice
from medrobust.attacks.presets import ObjectiveChoice, register_attack
from medrobust.attacks.rng import AnyGenerator, attack_generator, randint, restrict
from medrobust.attacks.segmentation import SegmentationAttack
from medrobust.attacks.square import square_fraction
from medrobust.types import Norm

__all__ = ["SegmentationSquare", "square_window"]


def square_window(
    spatial: tuple[int, ...], side: int, n: int, gen: AnyGenerator, device: torch.device
) -> torch.Tensor:
    """``n`` random axis-aligned windows of ``side`` pixels per axis, as a bool mask.

    Shape:
        - output: ``(n, *spatial)``.
    """
    inside = torch.ones((n, *spatial), dtype=torch.bool, device=device)
    for dim, size in enumerate(spatial):
        start = randint(gen, 0, size - side + 1, (n,), device=device)
        shape = (1, *(size if i == dim else 1 for i in range(len(spatial))))
        pos = torch.arange(size, device=device).view(shape)
        start = start.view(-1, *([1] * len(spatial)))
        inside &= (pos >= start) & (pos < start + side)
    return inside


class SegmentationSquare(SegmentationAttack):
    """Square-style random search (Linf) that maximises a segmentation loss (soft Dice by
    default) from the model's scores only.

    The start puts ``+-eps`` stripes along the last spatial axis; each iteration proposes, for
    every sample not yet broken, new ``+-eps`` values per channel on a random square (a cube in
    3-D) whose side shrinks on the reference schedule, and keeps the proposal where the loss
    rose. One model query per iteration and sample.

    Args:
        objective: The untargeted segmentation loss to maximise.
        eps: Linf radius.
        norm: ``"linf"`` only.
        n_queries: Maximum model queries per sample.
        p_init: Initial fraction of pixels in the square (0.8 in the reference).
        seed: Seed of the private generator.
        name: Name in the result's config.

    Raises:
        ValueError: For a norm other than Linf, or a targeted objective.

    References:
        Andriushchenko et al., ECCV 2020.
    """

    engine = "square-seg"

    def __init__(
        self,
        *,
        objective: SoftDice,
        eps: float = 4 / 255,
        norm: Norm | str = Norm.LINF,
        n_queries: int = 200,
        p_init: float = 0.8,
        seed: int = 0,
        name: str = "square-seg",
    ) -> None:
        if Norm.parse(norm) is not Norm.LINF:
            raise ValueError(
                f"the {name} attack supports the 'linf' norm only, got {Norm.parse(norm).value!r};"
                " use the gradient attacks for L2"
            )
        if objective.targeted:
            raise ValueError(f"the {name} attack is untargeted; its objective must be too")
        super().__init__(objective=objective, norm=norm, eps=eps, seed=seed)
        _check_positive("n_queries", n_queries, integer=True)
        if not (isinstance(p_init, (int, float)) and 0 < p_init <= 1):
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}")
        self.n_queries, self.p_init = int(n_queries), float(p_init)
        self.name = name

    def params(self) -> dict[str, Any]:
        return {"n_queries": self.n_queries, "p_init": self.p_init}

    def _query(self, run: Run, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        out, _ = self.evaluate(run.model, x, target, grad=False)
        return out

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        return self.tracked(run, self._search)

    def _search(self, run: Run) -> dict[str, torch.Tensor] | None:
        """The random search (one cohesive loop)."""
        _, x, target, threat, region, best = run.unpack()
        eps, spatial = threat.eps, tuple(x.shape[2:])
        idx = (~best.success).nonzero().flatten()
        if idx.numel() == 0:
            return None
        gen = restrict(attack_generator(self.seed, x.device), idx)
        xa, ra = x[idx], subset_region(region, idx)
        stripes = (xa.shape[0], xa.shape[1]) + (1,) * (len(spatial) - 1) + (spatial[-1],)
        signs = randint(gen, 0, 2, stripes, device=x.device) * 2 - 1
        delta = threat.project(xa, eps * signs.to(x.dtype).expand_as(xa).clone(), ra)
        out = self._query(run, xa + delta, index_target(target, idx))
        best.update(idx, xa + delta, out)
        loss, done = out.loss.clone(), out.success.clone()
        best.steps[idx] += 1
        n_pix = math.prod(spatial)
        for it in range(1, self.n_queries):
            rows = (~done).nonzero().flatten()
            if rows.numel() == 0:
                break
            p = square_fraction(self.p_init, it, self.n_queries)
            side = min(max(round((p * n_pix) ** (1 / len(spatial))), 1), min(spatial))
            n, c = rows.numel(), x.shape[1]
            g_rows = restrict(gen, rows)
            inside = square_window(spatial, side, n, g_rows, x.device).unsqueeze(1)
            vals = randint(g_rows, 0, 2, (n, c) + (1,) * len(spatial), device=x.device)
            ri = subset_region(ra, rows)
            cand = threat.project(
                xa[rows], torch.where(inside, (vals * 2 - 1).to(x.dtype) * eps, delta[rows]), ri
            )
            new = self._query(run, xa[rows] + cand, index_target(target, idx[rows]))
            best.update(idx[rows], xa[rows] + cand, new)
            best.steps[idx[rows]] += 1
            better = new.loss > loss[rows]
            keep = rows[better]
            delta[keep], loss[keep] = cand[better], new.loss[better]
            done[rows] |= new.success
        return None


@register_attack(
    "square-seg",
    SegmentationSquare,
    ObjectiveChoice("dice", {"dice": SoftDice}, "segmentation"),
    kind="black-box",
    task="segmentation",
    extras=("untargeted", "linf-only"),
    fixed=("targeted",),
    summary="Square-style black-box random search on the soft Dice loss (Linf, untargeted)",
)
def square_seg(kw: dict[str, Any]) -> dict[str, Any]:
    """Square-style random search on the soft Dice loss (Andriushchenko et al. 2020), 200
    queries per sample, Linf 4/255 by default: the gradient-free cross-check."""
    return {"eps": 4 / 255, **kw}
