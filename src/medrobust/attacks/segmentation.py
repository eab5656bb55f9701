"""Attacks on segmentation models: PGD/APGD on dense losses (here), ASMA
(:mod:`medrobust.attacks.asma`) and DAG (:mod:`medrobust.attacks.dag`).

All of them run through the one engine (:class:`~medrobust.attacks.engine.Attack`): the same
input validation, eval-mode handling, :class:`~medrobust.attacks.engine.BestTracker` and
:class:`~medrobust.attacks.result.AttackResult`. The segmentation objective
(:mod:`medrobust.attacks.objectives.segmentation`) validates the masks and adds the mask metrics
to the result, so any engine runs on it. They are batched: every sample of a batch has its own
step multiplier, active set and stopping point.

Calling convention::

    attack = medrobust.create_attack("asma")            # or "dag", "asma-bounded"
    result = attack(model, images, target_masks)         # targeted: toward the target masks
    attack = medrobust.create_attack("pgd-seg", eps=4/255)  # or "apgd-seg"
    result = attack(model, images, masks)                # untargeted: away from the true masks

Masks are class indices ``(B, *spatial)`` matching the model's output. ``result.extra`` holds
``"target_iou"`` and ``"pixel_accuracy"`` (agreement with the target) for targeted attacks and
``"dice"`` and ``"pixel_accuracy"`` (against the true mask) for untargeted ones; ASMA adds its
final ``"multiplier"``.

References:
    Ozbulak, Van Messem, De Neve, MICCAI 2019 (ASMA); Xie et al., ICCV 2017 (DAG); Paschali et
    al., MICCAI 2018; Madry et al., ICLR 2018 (PGD); Croce & Hein, ICML 2020 (APGD).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch

from medrobust.attacks.apgd import APGD, apgd_checkpoints
from medrobust.attacks.engine import Attack, BestTracker, GradientAttack, Run, subset_region
from medrobust.attacks.objectives.base import ObjectiveOutput, index_target
from medrobust.attacks.objectives.segmentation import (
    PixelCrossEntropy,
    SegmentationObjective,
    SoftDice,
    sample_dice,
)
from medrobust.attacks.presets import ObjectiveChoice, register_attack
from medrobust.attacks.rng import attack_generator

__all__ = [
    "SEA_RADIUS_SCHEDULE",
    "SEGMENTATION_LOSSES",
    "DiceTracker",
    "SegmentationAPGD",
    "SegmentationAttack",
    "SegmentationPGD",
    "check_radius_schedule",
]

#: The dense losses of the untargeted segmentation presets.
SEGMENTATION_LOSSES = ObjectiveChoice(
    "ce",
    {
        "ce": PixelCrossEntropy,
        "pixel-ce": PixelCrossEntropy,
        "dice": SoftDice,
        "soft-dice": SoftDice,
    },
    "segmentation",
)


class DiceTracker(BestTracker):
    """The per-sample best iterate of an untargeted segmentation attack, ranked by what the
    audit measures: success first, then the lower Dice, then the higher loss.

    The engine's :class:`BestTracker` ranks by the loss, but the losses that skip flipped pixels
    (masked CE, SegPGD early on) are *lower* at a better adversarial example, so the iterate
    with the highest loss is not the one with the lowest Dice. This tracker shares its tensors
    with the engine's tracker (updates land there) and keeps the Dice of each best iterate.

    Args:
        base: The tracker of the attack call; its state is shared, not copied.
        mask: The true masks ``(B, *spatial)``.
        num_classes: ``K``.
    """

    def __init__(self, base: BestTracker, mask: torch.Tensor, num_classes: int) -> None:
        self.__dict__.update(base.__dict__)
        self.base = base
        self.mask = mask
        self.k = num_classes
        self.dice = torch.full_like(base.loss, math.inf, dtype=torch.float64)
        if base.pred is not None and bool(base.seen.any()):
            seen = base.seen
            self.dice[seen] = sample_dice(base.pred[seen], mask[seen], num_classes)

    def _pred_store(self, like: torch.Tensor) -> torch.Tensor:
        store = super()._pred_store(like)
        self.base.pred = store
        return store

    def update(
        self,
        idx: torch.Tensor,
        x: torch.Tensor,
        out: ObjectiveOutput,
        offer: torch.Tensor | None = None,
    ) -> None:
        """Offer iterate ``x`` (rows ``idx``, only those in ``offer`` if given); keep it where
        it ranks higher."""
        dice = sample_dice(out.pred.detach(), self.mask[idx], self.k).to(self.dice.device)
        loss, succ = out.loss.detach(), out.success.detach()
        old_s, old_d, old_l = self.success[idx], self.dice[idx], self.loss[idx]
        tie = (succ == old_s) & (dice == old_d)
        better = (
            ~self.seen[idx]
            | (succ & ~old_s)
            | ((succ == old_s) & (dice < old_d))
            | (tie & (loss > old_l))
        )
        if offer is not None:
            better = better & offer
        if not bool(better.any()):
            return
        rows = idx[better]
        self.dice[rows] = dice[better]
        self.x[rows] = x.detach()[better]
        self.loss[rows] = loss[better].to(self.loss.dtype)
        self.success[rows] = succ[better]
        self.seen[rows] = True
        self.evaluated[rows] = True
        if self.pred is None:
            pred = out.pred.detach()
            self.pred = torch.zeros(
                (self.x.shape[0], *pred.shape[1:]), dtype=pred.dtype, device=pred.device
            )
            self.base.pred = self.pred
        self.pred[rows] = out.pred.detach()[better]


class SegmentationAttack(Attack):
    """Base of the segmentation engines: exposes the objective's volume-size limit, and ranks
    the iterates of untargeted attacks by Dice (:class:`DiceTracker`).

    Attributes:
        max_voxels: Largest ``B * prod(spatial)`` attacked without sliding windows (see
            :func:`medrobust.models.segmentation.check_volume_size`); None turns the check off.
            It is the objective's setting, shown here for convenience.
    """

    def tracked(
        self, run: Run, search: Callable[[Run], dict[str, torch.Tensor] | None]
    ) -> dict[str, torch.Tensor] | None:
        """Run ``search`` on ``run``, with a :class:`DiceTracker` when the objective is an
        untargeted segmentation objective with a prepared mask (else as it is)."""
        target = run.target
        if self.targeted or not isinstance(target, dict) or "mask" not in target:
            return search(run)
        k = int(getattr(run.model, "num_classes", 0)) or None
        num_classes = k if k is not None else int(target["mask"].max()) + 1
        tracker = DiceTracker(run.best, target["mask"], num_classes)
        return search(Run(run.model, run.x, target, run.threat, run.region, tracker))

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        return self.tracked(run, super()._run)  # type: ignore[safe-super]

    def shrink(self, run: Run, steps: int) -> None:
        """Scale the perturbation ``delta`` of every successful sample of ``run.best`` down to
        the smallest ``x_0 + alpha delta``, ``alpha`` in ``[0, 1]``, that still succeeds
        (bisection over ``steps`` forward passes of the successful samples, no backward pass).

        The bounds, the ball and the region are convex and contain ``x_0``, so every scaled
        point stays inside them. For minimal-perturbation attacks, which stop at success with
        whatever perturbation the last step left.

        Args:
            run: The attack call; its tracker is updated in place.
            steps: Bisection steps (the fraction is found to ``2**-steps``).
        """
        model, x, target, _, _, best = run.unpack()
        rows = best.success.nonzero().flatten()
        if rows.numel() == 0 or best.pred is None or steps < 1:
            return
        ta = index_target(target, rows)
        x0 = x[rows]
        delta = best.x[rows] - x0
        view = (-1,) + (1,) * (x.ndim - 1)
        lo = torch.zeros(rows.numel(), dtype=x.dtype, device=x.device)
        hi = torch.ones_like(lo)
        pred, loss = best.pred[rows].clone(), best.loss[rows].clone()
        for _ in range(steps):
            mid = (lo + hi) / 2
            out, _ = self.evaluate(model, x0 + mid.view(view) * delta, ta, grad=False)
            ok = out.success
            hi = torch.where(ok, mid, hi)
            lo = torch.where(ok, lo, mid)
            pred[ok] = out.pred[ok]
            loss[ok] = out.loss[ok].to(loss.dtype)
        best.x[rows] = x0 + hi.view(view) * delta
        best.pred[rows] = pred
        best.loss[rows] = loss

    @property
    def max_voxels(self) -> int | None:
        """The objective's volume-size limit (None: no limit)."""
        obj = self.objective
        return obj.max_voxels if isinstance(obj, SegmentationObjective) else None

    @max_voxels.setter
    def max_voxels(self, value: int | None) -> None:
        if not isinstance(self.objective, SegmentationObjective):
            raise TypeError(f"attack {self.name!r} has no segmentation objective to limit")
        self.objective.max_voxels = value


class SegmentationPGD(SegmentationAttack, GradientAttack):
    """PGD (or BIM/FGSM) on a dense segmentation loss: :class:`GradientAttack`'s loop with a
    segmentation objective (arguments as :class:`GradientAttack`).

    References:
        Madry et al., ICLR 2018; Arnab, Miksik, Torr, "On the Robustness of Semantic
        Segmentation Models to Adversarial Attacks", CVPR 2018.
    """


#: SEA's progressive radius reduction: ``(radius / eps, share of the iterations)`` per stage.
SEA_RADIUS_SCHEDULE: tuple[tuple[float, float], ...] = ((2.0, 0.3), (1.5, 0.3), (1.0, 0.4))


def check_radius_schedule(value: Any) -> tuple[tuple[float, float], ...] | None:
    """Validate a radius schedule: ``None`` or stages ``(factor, share)`` with factors >= 1,
    the last one 1 (the attack ends in the eps-ball), and shares in ``(0, 1]`` summing to 1.

    Raises:
        ValueError: Naming what was expected and what came.
    """
    if value is None:
        return None
    try:
        stages = tuple((float(f), float(s)) for f, s in value)
    except (TypeError, ValueError):
        raise ValueError(
            "radius_schedule must be None or a sequence of (radius factor, share of the "
            f"iterations) pairs such as {SEA_RADIUS_SCHEDULE}, got {value!r}"
        ) from None
    bad = [f for f, _ in stages if not (math.isfinite(f) and f >= 1.0)]
    shares = [s for _, s in stages]
    if not stages or bad or any(not 0.0 < s <= 1.0 for s in shares):
        raise ValueError(
            "radius_schedule needs at least one stage, radius factors >= 1 and shares in "
            f"(0, 1], got {value!r}"
        )
    if stages[-1][0] != 1.0:
        raise ValueError(
            f"the last stage of radius_schedule must have factor 1 (end in the eps-ball), got "
            f"{stages[-1][0]} in {value!r}"
        )
    if abs(sum(shares) - 1.0) > 1e-6:
        raise ValueError(f"the shares of radius_schedule must sum to 1, got {sum(shares)}")
    return stages


class SegmentationAPGD(SegmentationAttack, APGD):
    """APGD on a dense segmentation loss (other arguments as :class:`APGD`).

    Args:
        radius_schedule: Optional progressive radius reduction (SEA's "red-eps"): stages
            ``(factor, share)`` run one after the other, each a fresh APGD run of
            ``int(share * steps)`` iterations (the last stage takes the rest) in the ball of
            radius ``factor * eps``, warm-started from the previous stage's best iterate
            projected onto the smaller ball. Only the last stage (factor 1) offers its
            iterates to the result, so the returned perturbation, its success and its Dice
            always come from inside the eps-ball; the earlier stages only find a starting
            point. ``steps`` counts the iterations of all stages. See
            :data:`SEA_RADIUS_SCHEDULE`.

    References:
        Croce & Hein, ICML 2020; Croce, Singh, Hein, ECCV 2024 (SEA's radius reduction, as the
        authors' ``apgd_largereps`` runs it: 2, 1.5 and 1 times eps over 3/10, 3/10 and 4/10 of
        the iterations).
    """

    def __init__(
        self,
        *,
        radius_schedule: Sequence[Sequence[float]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.radius_schedule = check_radius_schedule(radius_schedule)

    def params(self) -> dict[str, Any]:
        sched = self.radius_schedule
        return {
            **super().params(),
            "radius_schedule": None if sched is None else [list(st) for st in sched],
        }

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        if self.radius_schedule is None:
            return super()._run(run)
        return self.tracked(run, self._staged)

    def stage_steps(self) -> list[int]:
        """Iterations per stage of :attr:`radius_schedule` (the last stage takes the rest)."""
        sched = self.radius_schedule or ((1.0, 1.0),)
        head = [int(share * self.steps) for _, share in sched[:-1]]
        return [*head, self.steps - sum(head)]

    def _staged(self, run: Run) -> dict[str, torch.Tensor] | None:
        """Restarts of the staged APGD; only the last stage writes to ``run.best``."""
        model, x, target, threat, region, best = run.unpack()
        gen = attack_generator(self.seed, x.device)
        every = self.sync_every or (1 if x.device.type == "cpu" else 5)
        factors = [f for f, _ in self.radius_schedule or ()]
        stages = list(zip(factors, self.stage_steps(), strict=True))
        for _ in range(self.restarts):
            idx = (~best.success).nonzero().flatten()
            if idx.numel() == 0:
                break
            start: torch.Tensor | None = None
            for i, (factor, n) in enumerate(stages):
                last = i == len(stages) - 1
                ball = replace(threat, eps=factor * threat.eps)
                if start is not None:  # warm start: the previous best, inside this ball
                    start = ball.project(x[idx], start, subset_region(region, idx))
                if n == 0:
                    continue
                tracker = best if last else _fresh_tracker(best, x)
                sched = (set(apgd_checkpoints(n)), every)
                stage = Run(model, x, target, ball, region, tracker)
                self._one_run(stage, idx, gen, sched, steps=n, start=start)
                if not last:
                    start = tracker.x[idx] - x[idx]
                    best.steps[idx] += tracker.steps[idx]
        return None


def _fresh_tracker(like: BestTracker, x: torch.Tensor) -> BestTracker:
    """An empty tracker that ranks as ``like`` does (Dice first for untargeted attacks)."""
    if isinstance(like, DiceTracker):
        return DiceTracker(BestTracker(x), like.mask, like.k)
    return BestTracker(x)


@register_attack(
    "pgd-seg",
    SegmentationPGD,
    SEGMENTATION_LOSSES,
    kind="iterative",
    task="segmentation",
    extras=("gradient", "untargeted"),
    summary="PGD on pixel-wise cross-entropy or soft Dice of a segmentation (untargeted)",
)
def pgd_seg(kw: dict[str, Any]) -> dict[str, Any]:
    """PGD on ``objective`` ``"ce"`` (pixel-wise cross-entropy) or ``"dice"`` (soft Dice).
    Without early stop every sample runs all steps, so the Dice it reports is the lowest the
    attack reaches rather than the first one below ``success_dice``."""
    return {"eps": 4 / 255, "early_stop": False, **kw}


@register_attack(
    "apgd-seg",
    SegmentationAPGD,
    SEGMENTATION_LOSSES,
    kind="iterative",
    task="segmentation",
    extras=("gradient", "untargeted"),
    summary="APGD on pixel-wise cross-entropy or soft Dice of a segmentation (untargeted)",
)
def apgd_seg(kw: dict[str, Any]) -> dict[str, Any]:
    """APGD (Croce & Hein 2020) on ``objective`` ``"ce"`` or ``"dice"``."""
    return {"eps": 4 / 255, "steps": 20, "early_stop": False, **kw}
