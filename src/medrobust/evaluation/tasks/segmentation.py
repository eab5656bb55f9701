"""The segmentation task of the audit loop: Dice under attack, worst case per sample, targeted
attacks and noise baselines.

Every sample whose clean mean foreground Dice is above 0 is attacked (a sample at Dice 0 has
nothing left to break and is recorded as not attacked). A sample is *broken* when its Dice under
attack falls below ``broken_fraction`` (0.5 by default) of its own clean Dice, as Daza et al.
(ROG) count a volume as broken; the threshold is a setting of the audit and of the attacks'
objectives, which measure the same clean Dice. The score of a sample is its mean foreground
Dice (:func:`medrobust.metrics.sample_dice`), so the worst case across the attack list at a
budget is the lowest Dice any attack reached.

After the untargeted list, every batch also runs the targeted attacks (ASMA, DAG) once per
target kind and the noise baselines matched to the SSIM of the first attack's adversarial
examples; their per-sample results are kept in the records, so an interrupted audit resumes.

References:
    Ozbulak et al., MICCAI 2019 (ASMA); Xie et al., ICCV 2017 (DAG); Paschali et al.,
    MICCAI 2018; Daza et al., MICCAI 2021 (a volume counts as broken below half its clean Dice).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from medrobust._utils.examples import SegmentationExample
from medrobust._utils.format import fmt_eps
from medrobust.attacks.engine import Attack
from medrobust.attacks.objectives.segmentation import (
    check_mask,
    class_argmax,
    segmentation_logits,
)
from medrobust.attacks.presets import create_attack
from medrobust.attacks.result import AttackResult
from medrobust.attacks.targets import make_target
from medrobust.evaluation.noise import noise_for_ssim
from medrobust.evaluation.records import Records
from medrobust.evaluation.tasks.base import (
    AttackOutcome,
    AuditTask,
    Batch,
    CleanOutcome,
    as_index_tensor,
    check_finite_outputs,
    norms_of_all,
    read_pair,
)
from medrobust.evaluation.tasks.segmentation_checks import iterations_probe, segmentation_checks
from medrobust.evaluation.tasks.segmentation_summary import summarise_segmentation
from medrobust.metrics import SegmentationStats, pixel_agreement, sample_dice, ssim_or_nan
from medrobust.metrics.lesions import lesion_counts
from medrobust.models.adapter import ModelAdapter
from medrobust.models.segmentation import check_volume_size
from medrobust.types import Norm

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AttackSpec, AuditContext

__all__ = ["BROKEN_FRACTION", "SegmentationSettings", "SegmentationTask"]

logger = logging.getLogger(__name__)

#: A sample is broken when its Dice under attack falls below this fraction of its clean Dice
#: (the untargeted objectives' default ``broken_fraction``).
BROKEN_FRACTION = 0.5
#: Where :meth:`SegmentationTask.clean` keeps each sample's clean Dice in ``Batch.aux``.
CLEAN_DICE = "clean_dice"
_SAVE_LIMIT = 16


@dataclass
class SegmentationSettings:
    """What a segmentation audit runs beside the untargeted attack list.

    Attributes:
        targeted: Targeted attacks (parsed specs), run once per target kind.
        targets: Target kinds (``"background"``, ``"other"``, ``"swap"``, ``"dilate"``).
        noise: Noise kinds compared at matched SSIM.
        include_background: Include class 0 in Dice/IoU/HD95/surface Dice.
        hd95: Compute the 95th-percentile Hausdorff distance and the surface Dice.
        spacing: Voxel size (mm) for the Hausdorff distance and the surface Dice.
        max_voxels: Batch size limit without sliding windows (None: no check).
        n_examples: Samples shown in the overlay figures (and worst-case examples kept).
        broken_fraction: A sample is broken below this fraction of its clean Dice.
        tolerance: Boundary tolerance of the surface Dice (mm with a spacing, else voxels).
    """

    targeted: list[AttackSpec] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)
    include_background: bool = False
    hd95: bool = True
    spacing: float | Sequence[float] | None = None
    max_voxels: int | None = None
    n_examples: int = 4
    broken_fraction: float = BROKEN_FRACTION
    tolerance: float = 1.0

    def describe(self) -> dict[str, Any]:
        return {
            "broken_fraction": self.broken_fraction,
            "targeted": [s.to_dict() for s in self.targeted],
            "targets": list(self.targets),
            "noise": list(self.noise),
            "include_background": self.include_background,
            "hd95": self.hd95,
            "spacing": list(self.spacing) if isinstance(self.spacing, Sequence) else self.spacing,
            "surface_tolerance": self.tolerance,
        }


class SegmentationTask(AuditTask):
    """Untargeted attacks on a segmenter's masks, plus targeted attacks and noise baselines
    (see the module docstring).

    Args:
        settings: The targeted attacks, target kinds, noise kinds and metric options.
        num_classes: Number of classes of the segmenter.
        class_names: Their names.
    """

    name = "segmentation"
    attack_task = "segmentation"
    eligible_noun = "attacked samples (clean Dice above 0)"
    probe_name = "PGD-seg-50"

    def __init__(
        self, settings: SegmentationSettings, num_classes: int, class_names: Sequence[str]
    ) -> None:
        self.settings = settings
        self.k = num_classes
        self.class_names = list(class_names)
        self.examples: dict[str, list[SegmentationExample]] = {
            "untargeted": [], "targeted": [], "worst": [],
        }  # fmt: skip
        #: data-set position -> (Dice under attack, example): the lowest-Dice samples at the
        #: largest budget across the attack list (the report's worst-case outlines)
        self.worst: dict[int, tuple[float, SegmentationExample]] = {}
        #: per-sample Dice under MR101's unbounded probe (check MR304), set by probe_broken
        self.probe_dice: torch.Tensor | None = None
        self.requires_attacks = not settings.targeted
        self.saved: dict[str, dict[str, list[np.ndarray]]] = {}

    @property
    def broken_fraction(self) -> float:
        """A sample is broken below this fraction of its clean Dice."""
        return self.settings.broken_fraction

    def is_broken(self, dice: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``(B,)`` bool: ``dice`` is below ``broken_fraction`` times the batch's clean Dice.

        Raises:
            KeyError: If :meth:`clean` did not run on ``batch`` (or a batch it was selected
                from).
        """
        clean = batch.aux[CLEAN_DICE].to(dice.device, torch.float64)
        return dice.double() < self.broken_fraction * clean

    def new_stats(self) -> SegmentationStats:
        """An empty accumulator with the audit's metric options."""
        s = self.settings
        return SegmentationStats(
            self.k,
            include_background=s.include_background,
            hd95=s.hd95,
            spacing=s.spacing,
            class_names=self.class_names,
            tolerance=s.tolerance,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings.describe()}

    def artifacts(self) -> dict[str, Any]:
        return {"examples": self.examples, "saved": self.saved, "worst": self.worst}

    def restore_artifacts(self, state: Mapping[str, Any]) -> None:
        self.examples = dict(state.get("examples", self.examples))
        self.saved = dict(state.get("saved", self.saved))
        self.worst = dict(state.get("worst", self.worst))
        self.examples["worst"] = self._worst_examples()

    def merge_artifacts(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Examples and saved adversarial arrays of every process, in rank order, within the
        same limits as one process."""
        n = self.settings.n_examples
        self.examples = {
            kind: [ex for st in states for ex in st["examples"].get(kind, [])][:n]
            for kind in ("untargeted", "targeted")
        }
        self.saved = {}
        for st in states:
            for name, arrays in st["saved"].items():
                store = self.saved.setdefault(name, {})
                room = _SAVE_LIMIT - sum(a.shape[0] for a in store.get("x_adv", []))
                for key, parts in arrays.items():
                    left = room
                    for part in parts:
                        if left > 0:
                            store.setdefault(key, []).append(part[:left])
                        left -= part.shape[0]

    def read_batch(self, batch: Any) -> Batch:
        x, y, ids = read_pair(batch, "mask")
        return Batch(x, as_index_tensor(y, "masks"), ids)

    def check(self, adapter: ModelAdapter, batch: Batch) -> None:
        adapter.check_input(batch.x)
        check_volume_size(adapter, batch.x, self.settings.max_voxels)

    def clean(self, adapter: ModelAdapter, batch: Batch) -> CleanOutcome:
        with torch.no_grad():
            logits = segmentation_logits(adapter, batch.x)
        check_finite_outputs(adapter, logits)
        check_mask(batch.target, logits.shape, "masks")
        pred = class_argmax(logits)
        score = sample_dice(pred, batch.target, self.k)
        batch.aux[CLEAN_DICE] = score
        rows = self.new_stats().rows(pred, batch.target)
        rows.update(lesion_counts(pred, batch.target, self.k))
        return CleanOutcome(score > 0, score, rows, pred)

    def build_attack(
        self, spec: AttackSpec, eps: float, norm: Norm, seed: int, adapter: ModelAdapter
    ) -> Attack:
        if "targeted" in _tags(spec.name):
            raise ValueError(f"attack {spec.name!r} is targeted; list it under targeted=")
        params = {"broken_fraction": self.broken_fraction, **dict(spec.params)}
        attack = create_attack(spec.name, eps=eps, norm=norm.value, seed=seed, **params)
        attack.max_voxels = self.settings.max_voxels  # type: ignore[attr-defined]
        return attack

    def outcome(self, adapter: ModelAdapter, batch: Batch, result: AttackResult) -> AttackOutcome:
        extra = self.new_stats().rows(result.pred_adv, batch.target)
        extra["ssim_all"] = _image_ssim(batch.x, result.x_adv, adapter.bounds.width)
        extra.update(norms_of_all(result))
        extra["steps_all"] = result.steps.detach().double().cpu()
        extra.update(lesion_counts(result.pred_adv, batch.target, self.k))
        score = sample_dice(result.pred_adv, batch.target, self.k)
        return AttackOutcome(score, self.is_broken(score, batch), extra)

    def noise_broken(
        self, adapter: ModelAdapter, batch: Batch, x_noisy: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            pred = class_argmax(segmentation_logits(adapter, x_noisy))
        return self.is_broken(sample_dice(pred, batch.target, self.k), batch)

    def gradient_loss(self, adapter: ModelAdapter, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(segmentation_logits(adapter, x), batch.target, reduction="sum")

    def probe_attack(self, eps: float, norm: Norm, seed: int) -> Attack:
        attack = create_attack(
            "pgd-seg", eps=eps, norm=norm.value, steps=50, seed=seed,
            broken_fraction=self.broken_fraction,
        )  # fmt: skip
        attack.max_voxels = self.settings.max_voxels  # type: ignore[attr-defined]
        return attack

    # ------------------------------------------------------------------ after each batch
    def after_batch(
        self,
        ctx: AuditContext,
        batch: Batch,
        clean: CleanOutcome,
        cells: list[list[Any]],
        offset: int,
    ) -> dict[str, torch.Tensor]:
        """The iterations probe of check MR301, noise baselines at the first attack's SSIM,
        then the targeted attacks."""
        out: dict[str, torch.Tensor] = {}
        if ctx.checks and ctx.specs:
            out.update(iterations_probe(self, ctx, batch, clean, offset))
        seed = ctx.seed + offset
        if ctx.specs and self.settings.noise:
            for e_i in range(len(ctx.budgets)):
                out.update(self._noise(ctx, batch, cells[0][e_i], e_i, seed))
        for spec in self.settings.targeted:
            for kind in self.settings.targets:
                out.update(self._targeted(ctx, batch, clean, spec, kind, seed))
        return out

    def _noise(
        self, ctx: AuditContext, batch: Batch, cell: Any, e_i: int, seed: int
    ) -> dict[str, Any]:
        """Dice under each noise kind at the per-sample SSIM of the adversarial examples."""
        b = len(batch)
        s_adv = cell.extra.get("ssim_all", torch.full((b,), math.nan)).float()
        ok = torch.isfinite(s_adv) & (s_adv > 0) & (s_adv < 1)
        out: dict[str, torch.Tensor] = {f"noise/{e_i}/included": ok.double()}
        if not bool(ok.any()):
            return out
        rows = ok.nonzero().flatten()
        xa = batch.x[rows.to(batch.x.device)]
        ya = batch.target[rows.to(batch.x.device)]
        for j, kind in enumerate(self.settings.noise):
            res = noise_for_ssim(xa, kind, s_adv[ok], seed=seed * 31 + j, bounds=ctx.adapter.bounds)
            with torch.no_grad():
                pred = class_argmax(ctx.adapter(res.images))
            stats = self.new_stats().rows(pred, ya)
            key = f"noise/{e_i}/{kind}"
            for name, value in stats.items():
                out[f"{key}/{name}"] = _scatter(value, rows, b)
            out[f"{key}/ssim"] = _scatter(res.ssim, rows, b)
            out[f"{key}/sigma"] = _scatter(res.sigma, rows, b)
            out[f"{key}/reached"] = _scatter(res.reached.double(), rows, b)
        return out

    def _targeted(
        self,
        ctx: AuditContext,
        batch: Batch,
        clean: CleanOutcome,
        spec: AttackSpec,
        kind: str,
        seed: int,
    ) -> dict[str, torch.Tensor]:
        b = len(batch)
        key = f"targeted/{spec.name}/{kind}"
        if kind == "other" and b < 2:
            logger.info("skipping target 'other' on a batch of one image")
            return {f"{key}/included": torch.zeros(b, dtype=torch.float64)}
        tgt = make_target(kind, batch.target, num_classes=self.k, seed=seed)
        if ctx.progress:  # stage "targeted" of the current batch (the last "clean" event's)
            from medrobust.evaluation.audit import ProgressEvent

            ctx.progress(ProgressEvent("targeted", -1, None, b, f"{spec.name} → {kind}"))
        attack = create_attack(spec.name, seed=ctx.seed, **dict(spec.params))
        attack.max_voxels = self.settings.max_voxels  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        res = attack(ctx.adapter, batch.x, tgt)
        spent = time.perf_counter() - t0
        stats = self.new_stats().rows(res.pred_adv, batch.target)
        out = {f"{key}/{n}": v for n, v in stats.items()}
        per_sample = {
            "included": torch.ones(b),
            "success": res.success.double(),
            "linf": res.linf,
            "l2": res.l2,
            "steps": res.steps.double(),
            "target_iou": res.extra["target_iou"],
            "target_pixel_accuracy": pixel_agreement(res.pred_adv, tgt),
            "pixel_success": res.extra["pixel_success"],
            "ssim": _image_ssim(batch.x, res.x_adv, ctx.adapter.bounds.width),
            "time_s": torch.full((b,), spent / b),
        }
        out.update({f"{key}/{n}": v.detach().double().cpu() for n, v in per_sample.items()})
        if spec is self.settings.targeted[0] and kind == self.settings.targets[0]:
            self._keep("targeted", batch, clean.pred, res, tgt, f"{spec.name} → {kind}")
            self._save(f"{spec.name}_target_{kind}", batch, res, tgt)
        return out

    def on_attack(
        self, ctx: AuditContext, batch: Batch, clean_pred: torch.Tensor, res: AttackResult,
        a_i: int, e_i: int,
    ) -> None:  # fmt: skip
        """Offer every attacked sample as a worst-case example, and keep overlays and arrays
        of the first attack at the largest budget."""
        self._keep_worst(ctx, batch, clean_pred, res, a_i, e_i)
        if a_i != 0 or e_i != len(ctx.budgets) - 1:
            return
        spec, e = ctx.specs[0], ctx.budgets[-1]
        self._keep("untargeted", batch, clean_pred, res, None, f"{spec.name} ε={fmt_eps(e)}")
        self._save(f"{spec.name}_eps_{fmt_eps(e).replace('/', '_')}", batch, res, None)

    def _keep_worst(
        self, ctx: AuditContext, batch: Batch, clean_pred: torch.Tensor, res: AttackResult,
        a_i: int, e_i: int,
    ) -> None:  # fmt: skip
        """Offer the attacked samples as worst-case examples: per sample the attack and budget
        with the lowest Dice (a sample broken at a smaller budget is carried, not attacked
        again, so its lowest Dice may come from there), over all samples the ``n_examples``
        lowest."""
        if self.settings.n_examples <= 0:
            return
        dice = sample_dice(res.pred_adv, batch.target, self.k).double().cpu()
        clean = batch.aux[CLEAN_DICE].double().cpu()
        index = batch.index if batch.index is not None else torch.arange(len(batch))
        ids = batch.ids or [f"sample {int(i)}" for i in index]
        label = f"{ctx.specs[a_i].name} ε={fmt_eps(ctx.budgets[e_i])}"
        for i in range(len(batch)):
            key, d = int(index[i]), float(dice[i])
            if key in self.worst and self.worst[key][0] <= d:
                continue
            if key not in self.worst and len(self.worst) >= self.settings.n_examples:
                highest = max(self.worst, key=lambda k: (self.worst[k][0], k))
                if self.worst[highest][0] <= d:
                    continue
                del self.worst[highest]
            title = f"{str(ids[i]).rsplit('/', 1)[-1]}\n{label}: Dice {clean[i]:.2f} → {d:.2f}"
            self.worst[key] = (d, SegmentationExample(
                image=_np(batch.x[i]), adversarial=_np(res.x_adv[i]), mask=_np(batch.target[i]),
                clean_pred=_np(clean_pred[i]), adv_pred=_np(res.pred_adv[i]), title=title,
            ))  # fmt: skip
        self.examples["worst"] = self._worst_examples()

    def _worst_examples(self) -> list[SegmentationExample]:
        return [ex for _, (_, ex) in sorted(self.worst.items(), key=lambda kv: (kv[1][0], kv[0]))]

    def _keep(
        self,
        kind: str,
        batch: Batch,
        clean_pred: torch.Tensor,
        res: AttackResult,
        target: torch.Tensor | None,
        label: str,
    ) -> None:
        store = self.examples[kind]
        ids = batch.ids or [f"sample {i}" for i in range(len(batch))]
        for i in range(len(batch)):
            if len(store) >= self.settings.n_examples:
                return
            store.append(
                SegmentationExample(
                    image=_np(batch.x[i]),
                    adversarial=_np(res.x_adv[i]),
                    mask=_np(batch.target[i]),
                    clean_pred=_np(clean_pred[i]),
                    adv_pred=_np(res.pred_adv[i]),
                    title=f"{str(ids[i]).rsplit('/', 1)[-1]}\n{label}",
                    target=None if target is None else _np(target[i]),
                )
            )

    def _save(
        self, name: str, batch: Batch, res: AttackResult, target: torch.Tensor | None
    ) -> None:
        store = self.saved.setdefault(name, {})
        room = _SAVE_LIMIT - sum(a.shape[0] for a in store.get("x_adv", []))
        if room <= 0:
            return
        parts = {"x": batch.x, "x_adv": res.x_adv, "mask": batch.target, "pred_adv": res.pred_adv}
        if target is not None:
            parts["target"] = target
        for key, t in parts.items():
            store.setdefault(key, []).append(_np(t[:room]))

    # ------------------------------------------------------------------ summary
    def summarise(self, ctx: AuditContext, records: Records) -> dict[str, Any]:
        """The ``"segmentation"`` part of ``metrics.json``."""
        return summarise_segmentation(self, ctx, records)

    def probe_broken(
        self, adapter: ModelAdapter, batch: Batch, result: AttackResult
    ) -> torch.Tensor:
        """MR101's test (the task's own), keeping the probe's per-sample Dice for MR304."""
        out = self.outcome(adapter, batch, result)
        self.probe_dice = out.score.detach().double().cpu()
        return out.broken

    def extra_checks(self, ctx: AuditContext, records: Records) -> list[dict[str, Any]]:
        """MR301-MR304 (:mod:`medrobust.evaluation.tasks.segmentation_checks`); MR304 reads
        the Dice of MR101's unbounded probe, which the shared checks run first."""
        if not ctx.specs:
            return []
        return segmentation_checks(ctx, records, self.probe_dice)


def _tags(name: str) -> tuple[str, ...]:
    from medrobust.attacks.presets import ATTACKS

    return ATTACKS.get(name).tags


def _scatter(values: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    v = values.detach().double().cpu()
    out = torch.full((n, *v.shape[1:]), math.nan, dtype=torch.float64)
    out[rows.cpu()] = v
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _image_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    return ssim_or_nan(x, y, data_range, x.ndim - 2).double().cpu()
