"""The explanation task of the audit loop: Grad-CAM maps under attack.

A sample is eligible when it is correctly classified and its clean Grad-CAM map is not all zero.
An explanation attack breaks it when the attack reaches its own goal (the map moved past the
threshold with the label kept for ``gradcam-kept``; label changed and map moved for
``gradcam-flip``). The score of a sample is the top-k intersection of its attacked map with the
clean map *while the label is kept* (1 when the label changed: that is not a change of the
explanation of the same decision), so the worst case across the attack list at a budget is the
largest map change with the label kept.

References:
    Rasaee & Rivaz, IEEE IUS 2021; Ghorbani, Abid & Zou, AAAI 2019 (top-k intersection, rank
    correlation, centre of mass, random baseline); Dombrowski et al., NeurIPS 2019.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from medrobust._utils.examples import ExplanationExample
from medrobust.attacks.engine import Attack
from medrobust.attacks.objectives.base import index_target
from medrobust.attacks.objectives.explanation import GradCamObjective, default_gradcam_layer
from medrobust.attacks.presets import create_attack
from medrobust.attacks.result import AttackResult
from medrobust.attacks.rng import SampleGenerator
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
from medrobust.evaluation.tasks.explanation_summary import summarise_explanations
from medrobust.metrics.maps import lesion_hit_ratio, map_ssim, pearson
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm

if TYPE_CHECKING:
    from medrobust.evaluation.audit import AttackSpec, AuditContext

__all__ = ["MAP_STATS", "ExplanationSettings", "ExplanationTask"]

#: Per-sample map measurements recorded for every attack, budget and the noise baseline.
MAP_STATS = (
    "label_kept",
    "moved",
    "topk_intersection",
    "spearman",
    "pearson",
    "map_ssim",
    "com_shift_px",
    "lesion_hit_adv",
)


@dataclass
class ExplanationSettings:
    """The options every explanation attack of an audit shares.

    Attributes:
        steps: Gradient steps of every attack (overridable per attack).
        layer: Grad-CAM layer; None picks the model's default.
        method: ``"gradcam"`` or ``"gradcam++"``.
        k: Top-k size of the map metrics (fraction of the pixels or a count).
        n_examples: Samples kept with their maps for the overlay figure.
        keep_maps: Keep every map for ``maps.npz``.
    """

    steps: int = 20
    layer: str | None = None
    method: str = "gradcam"
    k: int | float = 0.05
    n_examples: int = 4
    keep_maps: bool = True

    def describe(self) -> dict[str, Any]:
        return {"steps": self.steps, "layer": self.layer, "method": self.method, "k": self.k}


class ExplanationTask(AuditTask):
    """Explanation attacks on a classifier's Grad-CAM maps (see the module docstring).

    Args:
        settings: Options shared by the attacks.
    """

    name = "explanation"
    attack_task = "explanation"
    eligible_noun = "correctly classified samples with a defined map"
    probe_name = "gradcam-flip-50"

    def __init__(self, settings: ExplanationSettings) -> None:
        self.settings = settings
        self.probe = GradCamObjective(
            loss="topk", label="kept", layer=settings.layer, method=settings.method, k=settings.k
        )
        self.examples: list[ExplanationExample] = []
        self.maps: dict[str, list[np.ndarray]] = {}
        self.has_masks = False
        self.spatial: tuple[int, ...] | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings.describe()}

    def artifacts(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "maps": self.maps,
            "layer": self.probe.layer,
            "has_masks": self.has_masks,
            "spatial": list(self.spatial) if self.spatial else None,
        }

    def restore_artifacts(self, state: Mapping[str, Any]) -> None:
        self.examples = list(state.get("examples", self.examples))
        self.maps = dict(state.get("maps", self.maps))
        self.probe.layer = state.get("layer") or self.probe.layer
        self.has_masks = bool(state.get("has_masks", self.has_masks))
        spatial = state.get("spatial")
        self.spatial = tuple(spatial) if spatial else self.spatial

    def merge_artifacts(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Examples (the first by data-set index) and kept maps of every process; each map
        array travels with its ``index`` array, so rank order is enough."""
        examples = sorted((ex for st in states for ex in st["examples"]), key=lambda e: e.index)
        self.examples = examples[: self.settings.n_examples]
        maps: dict[str, list[np.ndarray]] = {}
        for st in states:
            for key, parts in st["maps"].items():
                maps.setdefault(key, []).extend(parts)
        self.maps = maps
        rest = {k: v for k, v in states[0].items() if k not in ("examples", "maps")}
        self.restore_artifacts(rest)

    def read_batch(self, batch: Any) -> Batch:
        x, y, ids = read_pair(batch, "label")
        aux = {}
        mask = batch.get("mask") if isinstance(batch, dict) else None
        if isinstance(batch, (tuple, list)) and len(batch) == 3:
            mask = batch[2]
        if mask is not None:
            aux["mask"] = torch.as_tensor(mask)
        ids = [str(i) for i in ids] if ids is not None else None
        return Batch(x, as_index_tensor(y, "labels").reshape(-1), ids, aux)

    def check(self, adapter: ModelAdapter, batch: Batch) -> None:
        adapter.check_input(batch.x)
        adapter.check_labels(batch.target, len(batch))
        mask = batch.aux.get("mask")
        if mask is None:
            return
        x = batch.x
        mask = (mask != 0).to(x.dtype)
        if mask.ndim == x.ndim:
            mask = mask[:, 0]
        if tuple(mask.shape) != (x.shape[0], *x.shape[2:]):
            raise ValueError(
                f"masks must have shape {(x.shape[0], *x.shape[2:])} to match the images "
                f"{tuple(x.shape)}, got {tuple(mask.shape)}"
            )
        batch.aux["mask"] = mask
        self.has_masks = True

    def _layer(self, adapter: ModelAdapter, x: torch.Tensor) -> str:
        if self.probe.layer is None:
            self.probe.layer = default_gradcam_layer(adapter, x[:1])
        return self.probe.layer

    def clean(self, adapter: ModelAdapter, batch: Batch) -> CleanOutcome:
        x, y = batch.x, batch.target
        self.spatial = tuple(int(s) for s in x.shape[2:])
        with torch.no_grad():
            logits = adapter(x)
        check_finite_outputs(adapter, logits)
        pred = logits.argmax(dim=1)
        eligible = pred == y
        b = len(batch)
        hit = torch.full((b,), float("nan"), dtype=torch.float64)
        defined = torch.zeros(b, dtype=torch.bool, device=x.device)
        idx = eligible.nonzero().flatten()
        if idx.numel():
            self._layer(adapter, x)
            tgt = cast("dict[str, torch.Tensor]", self.probe.prepare(adapter, x[idx], y[idx]))
            defined[idx] = tgt["valid"]
            if "mask" in batch.aux:
                h = lesion_hit_ratio(tgt["map"], batch.aux["mask"][idx])
                hit[idx.cpu()] = h.detach().double().cpu()
            self._keep_clean(batch, idx[tgt["valid"]], index_target(tgt, tgt["valid"]))
        record = {
            "label": y,
            "logits": logits.float(),
            "map_defined": defined,
            "lesion_hit_clean": hit,
        }
        return CleanOutcome(eligible & defined, torch.ones(b, dtype=torch.float64), record, pred)

    def build_attack(
        self, spec: AttackSpec, eps: float, norm: Norm, seed: int, adapter: ModelAdapter
    ) -> Attack:
        s = self.settings
        return create_attack(
            spec.name,
            **{"steps": s.steps, **dict(spec.params)},
            eps=eps,
            norm=norm.value,
            seed=seed,
            layer=s.layer,
            k=s.k,
            method=s.method,
        )

    def _measures(
        self, ex: dict[str, torch.Tensor], mask: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        out = {
            "label_kept": ex["label_kept"].double(),
            "moved": ex["moved"].double(),
            "topk_intersection": ex["topk_intersection"].double(),
            "spearman": ex["spearman"].double(),
            "pearson": pearson(ex["map_clean"], ex["map_adv"]).double(),
            "map_ssim": map_ssim(ex["map_clean"], ex["map_adv"]).double(),
            "com_shift_px": ex["com_shift"].double(),
        }
        if mask is not None:
            out["lesion_hit_adv"] = lesion_hit_ratio(ex["map_adv"], mask).double()
        return {k: v.detach().cpu() for k, v in out.items()}

    def outcome(self, adapter: ModelAdapter, batch: Batch, result: AttackResult) -> AttackOutcome:
        extra = self._measures(result.extra, batch.aux.get("mask"))
        extra["success"] = result.success.double().cpu()
        extra.update(norms_of_all(result))
        kept = extra["label_kept"] > 0
        score = torch.where(kept, torch.nan_to_num(extra["topk_intersection"], nan=1.0), 1.0)
        return AttackOutcome(score, result.success.cpu(), extra)

    def _noise_measure(
        self, adapter: ModelAdapter, batch: Batch, x_noisy: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        self._layer(adapter, batch.x)
        tgt = cast("dict[str, torch.Tensor]", self.probe.prepare(adapter, batch.x, batch.target))
        meas = self.probe.measure(adapter, x_noisy, tgt)
        return self._measures(meas, batch.aux.get("mask"))

    def noise_broken(
        self, adapter: ModelAdapter, batch: Batch, x_noisy: torch.Tensor
    ) -> torch.Tensor:
        m = self._noise_measure(adapter, batch, x_noisy)
        return ((m["moved"] > 0) & (m["label_kept"] > 0)).to(batch.x.device)

    def gradient_loss(self, adapter: ModelAdapter, batch: Batch, x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(adapter(x), batch.target, reduction="sum")

    def probe_attack(self, eps: float, norm: Norm, seed: int) -> Attack:
        s = self.settings
        return create_attack(
            "gradcam-flip", eps=eps, norm=norm.value, seed=seed, steps=50,
            layer=s.layer, k=s.k, method=s.method,
        )  # fmt: skip

    def after_batch(
        self,
        ctx: AuditContext,
        batch: Batch,
        clean: CleanOutcome,
        cells: list[list[Any]],
        offset: int,
    ) -> dict[str, torch.Tensor]:
        """The random-noise baseline: one draw of each budget's sphere per eligible sample."""
        self._carry_examples(ctx)
        b = len(batch)
        out: dict[str, torch.Tensor] = {}
        idx = clean.eligible.nonzero().flatten()
        if not idx.numel():
            return out
        from medrobust.evaluation.audit import random_perturbation

        sub = batch.select(idx)
        for j, e in enumerate(ctx.budgets):
            assert sub.index is not None  # one draw per sample, keyed by its data-set index
            gen = SampleGenerator.seeded(ctx.seed * 1_000_003 + j, sub.index.tolist())
            xn = ctx.adapter.bounds.clamp(sub.x + random_perturbation(sub.x, e, ctx.norm, gen))
            for key, value in self._noise_measure(ctx.adapter, sub, xn).items():
                full = torch.full((b,), float("nan"), dtype=torch.float64)
                full[idx.cpu()] = value
                out[f"noise/{j}/{key}"] = full
        return out

    def on_attack(
        self,
        ctx: AuditContext,
        batch: Batch,
        clean_pred: torch.Tensor,
        result: AttackResult,
        a_i: int,
        e_i: int,
    ) -> None:
        """Keep the attacked maps (``maps.npz``) and the examples' attacked maps."""
        ex = result.extra
        name = ctx.specs[a_i].name
        if self.settings.keep_maps and batch.index is not None:
            key = f"{name}__eps{e_i}"
            self.maps.setdefault(key, []).append(
                ex["map_adv"].detach().cpu().numpy().astype(np.float16)
            )
            self.maps.setdefault(f"{key}__pred", []).append(result.pred_adv.cpu().numpy())
            self.maps.setdefault(f"{key}__index", []).append(batch.index.cpu().numpy())
        if batch.index is None:
            return
        rows = {int(i): r for r, i in enumerate(batch.index.tolist())}
        for example in self.examples:
            r = rows.get(example.index)
            if r is None:
                continue
            example.attacked.append(
                {
                    "attack": name,
                    "eps": ctx.budgets[e_i],
                    "map": ex["map_adv"][r, 0].detach().cpu().numpy(),
                    "adv_pred": int(result.pred_adv[r]),
                    "success": bool(result.success[r]),
                    "topk_intersection": float(ex["topk_intersection"][r]),
                }
            )

    def _carry_examples(self, ctx: AuditContext) -> None:
        """An example broken at a smaller budget shows the same adversarial map at the larger
        ones (it was carried over, not attacked again)."""
        for example in self.examples:
            for spec in ctx.specs:
                have = {rec["eps"]: rec for rec in example.attacked if rec["attack"] == spec.name}
                last = None
                for e in ctx.budgets:
                    if e in have:
                        last = have[e]
                    elif last is not None:
                        example.attacked.append({**last, "eps": e, "carried": True})

    def _keep_clean(self, batch: Batch, idx: torch.Tensor, tgt: Any) -> None:
        """Keep the clean maps of the attacked samples and the first examples."""
        if batch.index is None or not idx.numel():
            return
        index = batch.index[idx.to(batch.index.device)].cpu()
        ids = [
            batch.ids[int(i)] if batch.ids else f"#{int(n)}"
            for i, n in zip(idx.tolist(), index.tolist(), strict=True)
        ]
        mask = batch.aux.get("mask")
        if self.settings.keep_maps:
            self.maps.setdefault("index", []).append(index.numpy())
            self.maps.setdefault("label", []).append(batch.target[idx].cpu().numpy())
            self.maps.setdefault("clean_pred", []).append(tgt["cls"].cpu().numpy())
            self.maps.setdefault("clean", []).append(tgt["map"].cpu().numpy().astype(np.float16))
            self.maps.setdefault("id", []).append(np.asarray(ids, dtype=str))
        for r in range(min(self.settings.n_examples - len(self.examples), int(idx.numel()))):
            i = int(idx[r])
            self.examples.append(
                ExplanationExample(
                    image=batch.x[i].detach().cpu().numpy(),
                    mask=mask[i].detach().cpu().numpy() if mask is not None else None,
                    label=int(batch.target[i]),
                    clean_pred=int(tgt["cls"][r]),
                    id=ids[r],
                    clean_map=tgt["map"][r, 0].detach().cpu().numpy(),
                    index=int(index[r]),
                )
            )

    def summarise(self, ctx: AuditContext, records: Records) -> dict[str, Any]:
        """The ``"explanations"`` part of ``metrics.json``."""
        return summarise_explanations(self, ctx, records)

    def rules(self, specs: Sequence[AttackSpec], built: list[list[Attack]]) -> list[str]:
        """``"kept"`` or ``"changed"`` per attack: whether it must keep the label."""
        return [cast(GradCamObjective, row[0].objective).label for row in built]
