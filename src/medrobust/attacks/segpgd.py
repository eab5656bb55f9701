"""SegPGD and CosPGD: PGD on segmentation losses that reweight the pixels, untargeted
(``segpgd``, ``cospgd``) or toward a target mask (``segpgd-targeted``, ``cospgd-targeted``).

SegPGD needs the iteration count inside its loss (its weight of the misclassified pixels grows
from 0 to 1/2 over the attack), so it runs on :class:`ScheduledPGD`, a PGD loop that passes each
step's progress to the objective through the target. CosPGD's weight depends only on the current
prediction, so it runs on the plain segmentation PGD.

The targeted presets are the same engines with the objective built with ``targeted=True``
(``create_attack("segpgd", targeted=True)`` builds the same attack); they are registered apart,
with the ``targeted`` tag, because the audit routes attacks by tag (targeted ones run once per
target kind and report the target IoU). Their success is the targeted rule of
:class:`~medrobust.attacks.objectives.segmentation.SegmentationObjective` (at most
``1 - success_fraction`` of the pixels that had to change still disagree with the target), and
they stop per sample once it holds.

References:
    Gu, Zhao, Tresp, Torr, ECCV 2022 (SegPGD); Agnihotri, Jung, Keuper, ICML 2024 (CosPGD);
    Madry et al., ICLR 2018 (PGD).
"""

from __future__ import annotations

from typing import Any

import torch

from medrobust.attacks.engine import Run, subset_region
from medrobust.attacks.objectives.base import Target, index_target
from medrobust.attacks.objectives.segmentation_losses import (
    PROGRESS_KEY,
    CosPGDLoss,
    SegPGDLoss,
)
from medrobust.attacks.presets import ObjectiveChoice, register_attack
from medrobust.attacks.rng import attack_generator, restrict
from medrobust.attacks.segmentation import SegmentationPGD

__all__ = ["ScheduledPGD"]


def with_progress(target: Target, progress: float) -> Target:
    """``target`` with ``target["progress"]`` set to ``progress`` for every sample.

    Raises:
        TypeError: If ``target`` is not the dict a segmentation objective prepares.
    """
    if not isinstance(target, dict) or "mask" not in target:
        raise TypeError(
            "a scheduled attack needs the dict target a segmentation objective prepares "
            f"({{'mask', ...}}), got {type(target).__name__}"
        )
    mask = target["mask"]
    value = torch.full((mask.shape[0],), float(progress), device=mask.device)
    return {**target, PROGRESS_KEY: value}


class ScheduledPGD(SegmentationPGD):
    """PGD whose objective sees the progress of the attack: at step ``t = 1..T`` the target
    carries ``progress = (t - 1) / T`` (SegPGD's schedule). Otherwise as
    :class:`~medrobust.attacks.segmentation.SegmentationPGD`: random start, restarts on the
    samples still unbroken, best iterate per sample, optional early stop.

    References:
        Gu et al., ECCV 2022, Algorithm 1.
    """

    engine = "scheduled-pgd"

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        return self.tracked(run, self._scheduled)

    def _scheduled(self, run: Run) -> dict[str, torch.Tensor] | None:
        """The PGD loop with the progress in the target (one cohesive loop)."""
        model, x, target, threat, region, best = run.unpack()
        gen = attack_generator(self.seed, x.device)
        for _ in range(self.restarts):
            idx = (~best.success).nonzero().flatten()
            if idx.numel() == 0:
                break
            xa, ta, ra = x[idx], index_target(target, idx), subset_region(region, idx)
            start = threat.random_init(xa, restrict(gen, idx), ra) if self.random_start else None
            delta = start if start is not None else torch.zeros_like(xa)
            for t in range(self.steps + 1):
                last = t == self.steps
                tt = with_progress(ta, t / self.steps)
                out, grad = self.evaluate(model, xa + delta, tt, grad=not last)
                best.update(idx, xa + delta, out)
                if last or grad is None:
                    break
                best.steps[idx] += 1
                if self.early_stop:
                    keep = ~out.success
                    if not bool(keep.any()):
                        break
                    rows = keep.nonzero().flatten()
                    idx, xa, delta, grad = idx[rows], xa[rows], delta[rows], grad[rows]
                    ta, ra = index_target(ta, rows), subset_region(ra, rows)
                step = self.step_size * threat.ascent_direction(grad, ra)
                delta = threat.project(xa, delta + step, ra)
        return None


@register_attack(
    "segpgd",
    ScheduledPGD,
    ObjectiveChoice("segpgd", {"segpgd": SegPGDLoss}, "segmentation"),
    kind="iterative",
    task="segmentation",
    extras=("gradient", "untargeted"),
    summary="SegPGD: PGD reweighting correct and wrong pixels over the iterations (untargeted)",
)
def segpgd(kw: dict[str, Any]) -> dict[str, Any]:
    """SegPGD (Gu et al. 2022): PGD on :class:`SegPGDLoss` with its schedule, 20 steps, Linf
    4/255 by default; every sample runs all steps (the lowest Dice is kept)."""
    return {"eps": 4 / 255, "steps": 20, "early_stop": False, **kw}


@register_attack(
    "cospgd",
    SegmentationPGD,
    ObjectiveChoice("cospgd", {"cospgd": CosPGDLoss}, "segmentation"),
    kind="iterative",
    task="segmentation",
    extras=("gradient", "untargeted"),
    summary="CosPGD: PGD on pixel CE weighted by the cosine to the label (untargeted)",
)
def cospgd(kw: dict[str, Any]) -> dict[str, Any]:
    """CosPGD (Agnihotri et al. 2024): PGD on :class:`CosPGDLoss`, 20 steps, Linf 4/255 by
    default; every sample runs all steps (the lowest Dice is kept)."""
    return {"eps": 4 / 255, "steps": 20, "early_stop": False, **kw}


@register_attack(
    "segpgd-targeted",
    ScheduledPGD,
    ObjectiveChoice("segpgd", {"segpgd": SegPGDLoss}, "segmentation"),
    kind="iterative",
    task="segmentation",
    extras=("gradient", "targeted"),
    fixed=("targeted", "broken_fraction"),
    summary="SegPGD toward a target mask: pixels not yet at the target weigh 1 - lambda",
)
def segpgd_targeted(kw: dict[str, Any]) -> dict[str, Any]:
    """Targeted SegPGD: :class:`SegPGDLoss` with ``targeted=True`` (descends the cross-entropy
    to the target mask), 20 steps, Linf 4/255 by default, stopping per sample at success."""
    return {"eps": 4 / 255, "steps": 20, "early_stop": True, **kw, "targeted": True}


@register_attack(
    "cospgd-targeted",
    SegmentationPGD,
    ObjectiveChoice("cospgd", {"cospgd": CosPGDLoss}, "segmentation"),
    kind="iterative",
    task="segmentation",
    extras=("gradient", "targeted"),
    fixed=("targeted", "broken_fraction"),
    summary="CosPGD toward a target mask: pixel CE to the target weighted by 1 - cosine",
)
def cospgd_targeted(kw: dict[str, Any]) -> dict[str, Any]:
    """Targeted CosPGD: :class:`CosPGDLoss` with ``targeted=True``, 20 steps, Linf 4/255 by
    default, stopping per sample at success."""
    return {"eps": 4 / 255, "steps": 20, "early_stop": True, **kw, "targeted": True}
