"""Robustness audit of segmentation models: Dice/IoU/HD95 with MONAI semantics, untargeted and
targeted attacks, noise baselines at matched SSIM, and the run folder with its report.

Metrics (pure functions over class-index masks, and a thin stateful shell):

* :func:`dice_score`, :func:`iou_score`: per sample and class, MONAI's ``compute_dice`` and
  ``compute_iou`` semantics: with ``ignore_empty=True`` a class absent from the ground truth
  gives NaN (left out of every mean); with ``ignore_empty=False`` it gives 1 if the prediction
  is empty too and 0 otherwise; the background class is left out unless ``include_background``;
* :func:`hausdorff_distance`: the symmetric ``percentile``-th Hausdorff distance (95 by
  default) between the boundaries of prediction and ground truth (boundary = mask minus its
  erosion by the face-connected cross, Euclidean distances in voxels times ``spacing``), as
  MONAI's ``compute_hausdorff_distance``: NaN where the prediction or the ground truth of a
  class is empty;
* :class:`SegmentationStats`: sums and counts only; its means are MONAI's ``"mean"`` reduction
  (the mean over samples of each sample's mean over its defined classes) and ``"mean_batch"``
  (per class, over the samples that define it).

:func:`evaluate_segmentation` runs the audit and returns a :class:`SegmentationEvaluation`
whose ``write`` produces the run folder (``report.html``, ``metrics.json``, ``config.yaml``,
``adversarial/*.npz``).

References:
    Dice, Ecology 1945; Huttenlocher et al., "Comparing images using the Hausdorff distance",
    IEEE TPAMI 1993; Cardoso et al., "MONAI", 2022 (metric semantics); Ozbulak et al., MICCAI
    2019 (target IoU, pixel accuracy); Paschali et al., MICCAI 2018 (noise at matched SSIM).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from medrobust._utils.format import fmt_eps
from medrobust._utils.validate import parse_budgets
from medrobust.attacks.engine import eval_mode
from medrobust.attacks.objectives.segmentation import (
    check_mask,
    class_argmax,
    pixel_agreement,
    segmentation_logits,
)
from medrobust.attacks.presets import ATTACKS, create_attack
from medrobust.attacks.targets import TARGETS, make_target
from medrobust.evaluation.audit import ProgressEvent
from medrobust.evaluation.noise import NOISE_KINDS, noise_for_ssim
from medrobust.metrics import (
    SegmentationStats,
    dice_score,
    hausdorff_distance,
    iou_score,
    ssim,
)
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.models.segmentation import DEFAULT_MAX_VOXELS, check_volume_size
from medrobust.types import Norm, Task

logger = logging.getLogger(__name__)

__all__ = [
    "SegmentationEvaluation",
    "SegmentationExample",
    "SegmentationStats",
    "dice_budget_figure",
    "dice_score",
    "evaluate_segmentation",
    "hausdorff_distance",
    "iou_score",
    "overlay_figure",
]

SCHEMA_VERSION = 1
METRICS = "metrics.json"


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F")


def _plain(text: object) -> str:
    return str(text).replace("$", r"\$")


def dice_budget_figure(metrics: Mapping[str, Any]) -> Figure:
    """Mean Dice against the budget for every untargeted attack, starting at the clean Dice.

    Args:
        metrics: The ``"segmentation"`` entry of the metrics (``clean`` and ``untargeted``).

    Returns:
        A matplotlib figure.
    """
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    clean = (metrics.get("clean") or {}).get("mean_dice")
    rows = list(metrics.get("untargeted") or [])
    names: dict[str, None] = {}
    for r in rows:
        names.setdefault(str(r["attack"]), None)
    for i, name in enumerate(names):
        pts = sorted(
            (float(r["eps"]), float(r["mean_dice"]))
            for r in rows
            if r["attack"] == name and r.get("mean_dice") is not None
        )
        if clean is not None:
            pts = [(0.0, float(clean)), *pts]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", color=_COLOURS[i % len(_COLOURS)], label=_plain(name))
    if clean is not None:
        ax.axhline(float(clean), color="black", linestyle="--", linewidth=1, label="clean")
    budgets = sorted({float(r["eps"]) for r in rows})
    if budgets:
        ax.set_xticks([0.0, *budgets], ["0", *(fmt_eps(e) for e in budgets)])
    ax.set_xlabel("budget ε")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(True, color="#DDDDDD", linewidth=0.8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if names or clean is not None:
        ax.legend(loc="best", frameon=False, fontsize=9)
    return fig


@dataclass
class SegmentationExample:
    """One sample shown in the overlays figure.

    Attributes:
        image: Clean image ``(C, *spatial)``.
        adversarial: Adversarial image ``(C, *spatial)``.
        mask: True mask ``(*spatial)``.
        clean_pred: Prediction on the clean image.
        adv_pred: Prediction on the adversarial image.
        title: Row label (id, attack, budget).
        target: Target mask of a targeted attack, or None.
    """

    image: np.ndarray
    adversarial: np.ndarray
    mask: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    title: str = ""
    target: np.ndarray | None = None


def _slice_index(mask: np.ndarray) -> int:
    """The slice (last axis) of a 3-D mask with the most foreground (middle if none)."""
    fg = (mask > 0).reshape(-1, mask.shape[-1]).sum(axis=0)
    return int(fg.argmax()) if fg.any() else mask.shape[-1] // 2


def _cut(a: np.ndarray, sl: int | None) -> np.ndarray:
    return a[..., sl] if sl is not None else a


def overlay_figure(
    examples: Sequence[SegmentationExample], num_classes: int, magnify: float | None = None
) -> Figure:
    """Image, true mask, clean prediction, adversarial prediction (and the target, for targeted
    attacks) overlaid in colour, and the perturbation magnified; one example per row.

    For 3-D volumes the slice of the last axis with the most foreground in the true mask is
    shown (a representative slice), and the row says which.

    Args:
        examples: The examples.
        num_classes: Number of classes (fixes the colours).
        magnify: Magnification of the perturbation (default: the power of two that makes the
            99th percentile of ``|delta|`` fill half the grey range; larger values saturate).

    Returns:
        A matplotlib figure.

    Raises:
        ValueError: If ``examples`` is empty.
    """
    from matplotlib.colors import ListedColormap

    if not examples:
        raise ValueError("overlay_figure needs at least one example")
    cmap = ListedColormap(
        ["#000000", *(_COLOURS * (1 + num_classes // len(_COLOURS)))][: max(num_classes, 2)]
    )
    # scale by the 99th percentile of |delta|: minimal-perturbation attacks concentrate a few
    # large changes, and the bulk of the perturbation would otherwise stay invisible
    peak = max(float(np.percentile(np.abs(e.adversarial - e.image), 99)) for e in examples)
    if magnify is None:
        magnify = float(2.0 ** math.floor(math.log2(0.5 / peak))) if peak > 0 else 1.0
    has_target = any(e.target is not None for e in examples)
    cols = ["image", "true mask", "clean prediction", "adversarial prediction"]
    if has_target:
        cols.insert(2, "target mask")
    cols.append(f"perturbation ×{magnify:g}")
    fig = Figure(figsize=(2.1 * len(cols), 2.2 * len(examples)), layout="constrained")
    axes = fig.subplots(len(examples), len(cols), squeeze=False)
    for r, ex in enumerate(examples):
        img, adv = ex.image[0], ex.adversarial[0]
        masks = {
            "true mask": ex.mask,
            "clean prediction": ex.clean_pred,
            "adversarial prediction": ex.adv_pred,
            "target mask": ex.target,
        }
        note = ""
        sl: int | None = None
        if img.ndim == 3:
            sl = _slice_index(ex.mask)
            note = f" (slice {sl} of {img.shape[-1]})"

        lo, hi = float(min(img.min(), adv.min())), float(max(img.max(), adv.max()))
        for c, col in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if col.startswith("perturbation"):
                delta = _cut(adv - img, sl)
                ax.imshow(np.clip(0.5 + magnify * delta, 0, 1), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(_cut(img, sl), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
                m = masks.get(col)
                if m is not None:
                    mm = _cut(m, sl)
                    ax.imshow(
                        np.ma.masked_where(mm == 0, mm),
                        cmap=cmap,
                        vmin=0,
                        vmax=max(num_classes - 1, 1),
                        alpha=0.5,
                        interpolation="nearest",
                    )
            if r == 0:
                ax.set_title(_plain(col), fontsize=9)
        axes[r, 0].set_ylabel(_plain(ex.title + note), fontsize=8)
    return fig


# --------------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------------
@dataclass
class SegmentationEvaluation:
    """The outcome of :func:`evaluate_segmentation`.

    Attributes:
        metrics: Every number, in the ``metrics.json`` layout: the common header (``title``,
            ``model``, ``data``, ``threat_model``, ``timing``) and ``"segmentation"``.
        examples: Examples for the overlays, ``{"untargeted": [...], "targeted": [...]}``.
        adversarial: Arrays saved under ``adversarial/`` (name -> dict of arrays).
        config: The resolved configuration.
    """

    metrics: dict[str, Any]
    examples: dict[str, list[SegmentationExample]]
    adversarial: dict[str, dict[str, np.ndarray]]
    config: dict[str, Any]

    def mean_dice(self, attack: str | None = None, eps: float | None = None) -> float | None:
        """Mean Dice on clean inputs (``attack=None``) or under an untargeted attack at ``eps``
        (default: the largest budget).

        Raises:
            KeyError: If that attack or budget was not evaluated.
        """
        seg = self.metrics["segmentation"]
        if attack is None:
            return seg["clean"]["mean_dice"]
        budgets = self.metrics["threat_model"]["eps"]
        e = budgets[-1] if eps is None else eps
        for row in seg["untargeted"]:
            if row["attack"] == attack and math.isclose(row["eps"], e, rel_tol=1e-9):
                return row["mean_dice"]
        raise KeyError(f"no result for attack={attack!r}, eps={e!r}; budgets: {budgets}")

    def summary(self) -> str:
        """A short plain-text summary."""
        seg = self.metrics["segmentation"]
        md = seg["clean"]["mean_dice"]
        lines = [f"clean mean Dice: {_f(md)} (n={seg['clean']['n']})"]
        for row in seg["untargeted"]:
            lines.append(
                f"{row['attack']} at eps={row['eps_display']}: mean Dice {_f(row['mean_dice'])}"
            )
        for row in seg["targeted"]:
            lines.append(
                f"{row['attack']} toward {row['target']}: success {_f(row['success_rate'])}, "
                f"target IoU {_f(row['mean_target_iou'])}"
            )
        return "\n".join(lines)

    def sections(self) -> list[Any]:
        """The report sections (clean and untargeted results, targeted attacks, noise)."""
        return report_sections(self.metrics, self.examples)

    def write(
        self,
        run_dir: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        extra_sections: Sequence[Any] = (),
        config_extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``report.html``, ``metrics.json`` (last), ``config.yaml`` and
        ``adversarial/*.npz`` into ``run_dir``, each file atomically.

        Args:
            run_dir: The run folder (created if needed; other files in it are kept).
            overwrite: Replace an earlier completed evaluation in the same folder.
            extra_sections: More :class:`~medrobust.reporting.ReportSection` objects.
            config_extra: More entries for ``config.yaml``.

        Returns:
            The run folder.

        Raises:
            FileExistsError: If ``run_dir`` already holds a ``metrics.json`` and ``overwrite``
                is false.
        """
        return _write_run_folder(self, Path(run_dir), overwrite, extra_sections, config_extra)


def _f(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.3f}"


def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    if isinstance(batch, Mapping):
        if "image" not in batch or "mask" not in batch:
            raise ValueError(
                f"a segmentation batch needs 'image' and 'mask' keys, got {sorted(map(str, batch))}"
            )
        ids = batch.get("id")
        return batch["image"], batch["mask"], list(ids) if ids is not None else None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1], None
    raise ValueError(
        "each batch must be a dict with 'image' and 'mask' or a tuple (images, masks), got "
        f"{type(batch).__name__}"
    )


@dataclass
class _Spec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any], reserved: set[str]) -> _Spec:
        if isinstance(spec, str):
            out = cls(spec)
        elif isinstance(spec, Mapping) and "name" in spec:
            out = cls(str(spec["name"]), {k: v for k, v in spec.items() if k != "name"})
        else:
            raise ValueError(f"an attack is a name or a mapping with 'name', got {spec!r}")
        entry = ATTACKS.get(out.name)
        out.name = entry.name
        if "segmentation" not in entry.tags:
            seg = ", ".join(ATTACKS.list(tag="segmentation"))
            raise ValueError(
                f"attack {out.name!r} is not a segmentation attack; choose one of: {seg}"
            )
        bad = reserved & set(out.params)
        if bad:
            raise ValueError(f"attack {out.name!r}: {sorted(bad)} are set by the evaluation")
        return out

    @property
    def targeted(self) -> bool:
        return "targeted" in ATTACKS.get(self.name).tags


class _Cell:
    """Running sums of one (attack, budget) or (attack, target) cell."""

    def __init__(self, stats: SegmentationStats) -> None:
        self.stats = stats
        self.success = 0
        self.n = 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.time_s = 0.0

    def add(self, key: str, values: torch.Tensor) -> None:
        v = values.detach().double().cpu().flatten()
        v = v[torch.isfinite(v)]
        self.sums[key] = self.sums.get(key, 0.0) + float(v.sum())
        self.counts[key] = self.counts.get(key, 0) + int(v.numel())

    def mean(self, key: str) -> float | None:
        c = self.counts.get(key, 0)
        return self.sums[key] / c if c else None


def _image_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    try:
        return ssim(x, y, data_range=data_range, spatial_dims=x.ndim - 2).double().cpu()
    except ValueError:  # too small for an SSIM window
        return torch.full((x.shape[0],), math.nan, dtype=torch.float64)


def evaluate_segmentation(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    attacks: Sequence[str | Mapping[str, Any]] = ("pgd-seg",),
    eps: Sequence[float] = (1 / 255, 2 / 255, 4 / 255, 8 / 255),
    norm: str | Norm = "linf",
    targeted: Sequence[str | Mapping[str, Any]] = ("asma", "dag"),
    targets: Sequence[str] = ("background", "other"),
    noise: Sequence[str] = NOISE_KINDS,
    seed: int = 0,
    max_samples: int | None = None,
    n_examples: int = 4,
    include_background: bool = False,
    hd95: bool = True,
    spacing: float | Sequence[float] | None = None,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
    progress: Callable[[ProgressEvent], None] | None = None,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> SegmentationEvaluation:
    """Audit a segmentation model: clean metrics, untargeted attacks per budget, targeted
    attacks per target kind, and noise baselines matched to the adversarial SSIM.

    Untargeted attacks (``pgd-seg``, ``apgd-seg``) run at every budget of ``eps`` in ``norm``
    and are scored by Dice, IoU, HD95 and pixel accuracy against the true masks. Targeted
    attacks (``asma``, ``dag``, ``asma-bounded``) run once per target kind (targets built from
    the true masks, see :mod:`medrobust.attacks.targets`) and are scored by success rate,
    target IoU and pixel accuracy against the target, perturbation norms and SSIM. For the
    first untargeted attack at every budget, each noise kind is scaled per sample (bisection)
    to the SSIM of that sample's adversarial example and the Dice under noise is reported.

    Args:
        model: A segmentation :class:`~medrobust.models.ModelAdapter` (possibly running by
            sliding windows, see :func:`~medrobust.models.segmentation.sliding_window`).
        loader: Batches ``{"image", "mask", "id"?}`` or ``(images, masks)`` tuples.
        attacks: Untargeted segmentation attacks (names or ``{"name", **params}``).
        eps: Budgets of the untargeted attacks.
        norm: ``"linf"`` or ``"l2"``.
        targeted: Targeted segmentation attacks (names or mappings).
        targets: Target kinds (``"background"``, ``"other"``, ``"swap"``, ``"dilate"``).
        noise: Noise kinds compared at matched SSIM (empty to skip).
        seed: Seed of the attacks, targets and noise.
        max_samples: Evaluate at most this many samples.
        n_examples: Samples shown in the overlay figures.
        include_background: Include class 0 in Dice/IoU/HD95.
        hd95: Compute the 95th-percentile Hausdorff distance.
        spacing: Voxel size for the Hausdorff distance.
        max_voxels: Batch size limit without sliding windows (None: no check).
        progress: Called with a :class:`~medrobust.evaluation.ProgressEvent` per step.
        model_info: Model card or description for the report.
        data_info: Data description for the report.
        title: Report title.

    Returns:
        A :class:`SegmentationEvaluation`.

    Raises:
        ValueError: For a non-segmentation model, masks that do not match the model (shape or
            classes), unknown or non-segmentation attacks, unknown targets or noise kinds,
            invalid budgets, or volumes too large without sliding windows.
        UnknownNameError: For unknown attack or target names.

    References:
        Ozbulak et al., MICCAI 2019; Xie et al., ICCV 2017; Paschali et al., MICCAI 2018.
    """
    t_start = time.perf_counter()
    adapter = as_adapter(model)
    if adapter.task is not Task.SEGMENTATION:
        raise ValueError(
            f"evaluate_segmentation needs a segmentation model, got task {adapter.task.value!r}; "
            "use medrobust.evaluate for classifiers"
        )
    nrm = Norm.parse(norm)
    budgets = parse_budgets(eps)
    untargeted_specs = [_Spec.parse(a, {"eps", "norm", "seed"}) for a in attacks]
    for s in untargeted_specs:
        if s.targeted:
            raise ValueError(f"attack {s.name!r} is targeted; list it under targeted=")
    targeted_specs = [_Spec.parse(a, {"seed"}) for a in targeted]
    for s in targeted_specs:
        if not s.targeted:
            raise ValueError(f"attack {s.name!r} is untargeted; list it under attacks=")
    target_kinds = [TARGETS.get(t).name for t in targets] if targeted_specs else []
    noise_kinds = [str(n).lower() for n in noise]
    for n in noise_kinds:
        if n not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {n!r}; expected one of {', '.join(NOISE_KINDS)}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    k = adapter.num_classes
    names = adapter.class_names or [str(i) for i in range(k)]

    def new_stats() -> SegmentationStats:
        return SegmentationStats(
            k, include_background=include_background, hd95=hd95, spacing=spacing, class_names=names
        )

    clean_stats = new_stats()
    cells_u = {(s.name, e): _Cell(new_stats()) for s in untargeted_specs for e in budgets}
    cells_t = {(s.name, t): _Cell(new_stats()) for s in targeted_specs for t in target_kinds}
    noise_cells = (
        {(e, kind): _Cell(new_stats()) for e in budgets for kind in noise_kinds}
        if untargeted_specs
        else {}
    )
    adv_ssim = {e: _Cell(new_stats()) for e in budgets}
    examples: dict[str, list[SegmentationExample]] = {"untargeted": [], "targeted": []}
    saved: dict[str, dict[str, list[np.ndarray]]] = {}
    n_batches = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    seen = 0
    data_range = adapter.bounds.width
    with eval_mode(adapter):
        for b_i, batch in enumerate(loader):
            if max_samples is not None and seen >= max_samples:
                break
            images, masks, ids = _unpack(batch)
            if max_samples is not None and seen + images.shape[0] > max_samples:
                keep = max_samples - seen
                images, masks = images[:keep], masks[:keep]
                ids = ids[:keep] if ids is not None else None
            device = _device(adapter)
            x, y = images.to(device), masks.to(device)
            adapter.check_input(x)
            check_volume_size(adapter, x, max_voxels)
            if progress:
                progress(ProgressEvent("clean", b_i, n_batches, seen))
            with torch.no_grad():
                logits = segmentation_logits(adapter, x)
            check_mask(y, logits.shape, "masks")
            clean_pred = class_argmax(logits)
            clean_stats.update(clean_pred, y)
            ids = ids or [f"sample {seen + i}" for i in range(x.shape[0])]
            for s_i, spec in enumerate(untargeted_specs):
                for e in budgets:
                    if progress:
                        progress(ProgressEvent("attack", b_i, n_batches, seen, spec.name, e))
                    attack = create_attack(
                        spec.name, eps=e, norm=nrm.value, seed=seed, **spec.params
                    )
                    attack.max_voxels = max_voxels  # type: ignore[attr-defined]
                    t0 = time.perf_counter()
                    res = attack(adapter, x, y)
                    cell = cells_u[(spec.name, e)]
                    cell.time_s += time.perf_counter() - t0
                    cell.stats.update(res.pred_adv, y)
                    cell.success += int(res.success.sum())
                    cell.n += x.shape[0]
                    cell.add("linf", res.linf)
                    cell.add("l2", res.l2)
                    s_adv = _image_ssim(x, res.x_adv, data_range)
                    cell.add("ssim", s_adv)
                    if s_i == 0:
                        _noise_at(
                            adapter,
                            x,
                            y,
                            s_adv,
                            e,
                            noise_kinds,
                            noise_cells,
                            adv_ssim,
                            res.pred_adv,
                            seed + b_i,
                            data_range,
                        )
                        if e == budgets[-1]:
                            _keep_examples(
                                examples["untargeted"],
                                n_examples,
                                x,
                                res.x_adv,
                                y,
                                clean_pred,
                                res.pred_adv,
                                None,
                                ids,
                                f"{spec.name} ε={fmt_eps(e)}",
                            )
                            _save(
                                saved,
                                f"{spec.name}_eps_{fmt_eps(e).replace('/', '_')}",
                                x,
                                res.x_adv,
                                y,
                                res.pred_adv,
                                None,
                            )
            for spec in targeted_specs:
                for kind in target_kinds:
                    if kind == "other" and x.shape[0] < 2:
                        logger.info("skipping target 'other' on a batch of one image")
                        continue
                    if progress:
                        progress(ProgressEvent("attack", b_i, n_batches, seen, spec.name, None))
                    tgt = make_target(kind, y, num_classes=k, seed=seed + b_i)
                    attack = create_attack(spec.name, seed=seed, **spec.params)
                    attack.max_voxels = max_voxels  # type: ignore[attr-defined]
                    t0 = time.perf_counter()
                    res = attack(adapter, x, tgt)
                    cell = cells_t[(spec.name, kind)]
                    cell.time_s += time.perf_counter() - t0
                    cell.stats.update(res.pred_adv, y)
                    cell.success += int(res.success.sum())
                    cell.n += x.shape[0]
                    for key in ("linf", "l2"):
                        cell.add(key, getattr(res, key))
                    cell.add("steps", res.steps.double())
                    cell.add("target_iou", res.extra["target_iou"])
                    cell.add("target_pixel_accuracy", pixel_agreement(res.pred_adv, tgt))
                    cell.add("ssim", _image_ssim(x, res.x_adv, data_range))
                    if spec is targeted_specs[0] and kind == target_kinds[0]:
                        _keep_examples(
                            examples["targeted"],
                            n_examples,
                            x,
                            res.x_adv,
                            y,
                            clean_pred,
                            res.pred_adv,
                            tgt,
                            ids,
                            f"{spec.name} → {kind}",
                        )
                        _save(
                            saved, f"{spec.name}_target_{kind}", x, res.x_adv, y, res.pred_adv, tgt
                        )
            seen += int(x.shape[0])
    if seen == 0:
        raise ValueError("the loader yielded no samples")
    if progress:
        progress(ProgressEvent("checks", n_batches or 0, n_batches, seen))
    config = {
        "attacks": [{"name": s.name, **s.params} for s in untargeted_specs],
        "targeted": [{"name": s.name, **s.params} for s in targeted_specs],
        "targets": target_kinds,
        "noise": noise_kinds,
        "eps": budgets,
        "norm": nrm.value,
        "seed": seed,
        "max_samples": max_samples,
        "include_background": include_background,
        "hd95": hd95,
        "spacing": list(spacing) if isinstance(spacing, Sequence) else spacing,
    }
    seg = {
        "num_classes": k,
        "class_names": names,
        "include_background": include_background,
        "clean": clean_stats.compute(),
        "untargeted": [
            {
                "attack": s.name,
                "params": dict(s.params),
                "eps": e,
                "eps_display": fmt_eps(e),
                **_cell_row(cells_u[(s.name, e)]),
            }
            for s in untargeted_specs
            for e in budgets
        ],
        "targeted": [
            {
                "attack": s.name,
                "params": dict(s.params),
                "target": kind,
                **_cell_row(cells_t[(s.name, kind)], targeted=True),
            }
            for s in targeted_specs
            for kind in target_kinds
            if cells_t[(s.name, kind)].n
        ],
        "noise": _noise_rows(untargeted_specs, budgets, noise_kinds, noise_cells, adv_ssim),
    }
    total = time.perf_counter() - t_start
    card = dict(model_info or {})
    data = {"n": seen, "class_names": names}
    data.update(dict(data_info or {}))
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "medrobust_version": _version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "title": title or f"Segmentation robustness audit: {card.get('architecture', 'model')}",
        "model": {
            "name": str(card.get("architecture", "model")),
            "card": card,
            "input": adapter.describe(),
        },
        "data": data,
        "threat_model": {
            "norm": nrm.value,
            "bounds": [adapter.bounds.low, adapter.bounds.high],
            "eps": budgets,
            "eps_display": [fmt_eps(e) for e in budgets],
            "mode": "segmentation",
        },
        "segmentation": seg,
        "timing": {
            "total_s": total,
            "attack_s": sum(c.time_s for c in [*cells_u.values(), *cells_t.values()]),
        },
    }
    adversarial = {
        name: {key: np.concatenate(parts) for key, parts in arrays.items()}
        for name, arrays in saved.items()
    }
    return SegmentationEvaluation(metrics, examples, adversarial, config)


def _version() -> str:
    from medrobust._version import __version__

    return __version__


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _cell_row(cell: _Cell, targeted: bool = False) -> dict[str, Any]:
    st = cell.stats.compute()
    row: dict[str, Any] = {
        "n": cell.n,
        "success_rate": cell.success / cell.n if cell.n else None,
    }
    if targeted:
        row.update(
            {
                "mean_target_iou": cell.mean("target_iou"),
                "mean_target_pixel_accuracy": cell.mean("target_pixel_accuracy"),
                "mean_steps": cell.mean("steps"),
            }
        )
    row.update(
        {
            "mean_dice": st["mean_dice"],
            "dice": st["dice"],
            "mean_iou": st["mean_iou"],
            "iou": st["iou"],
            "mean_hd95": st.get("mean_hd95"),
            "pixel_accuracy": st["pixel_accuracy"],
            "mean_linf": cell.mean("linf"),
            "mean_l2": cell.mean("l2"),
            "mean_ssim": cell.mean("ssim"),
            "time_s": cell.time_s,
        }
    )
    return row


def _noise_at(
    adapter: ModelAdapter,
    x: torch.Tensor,
    y: torch.Tensor,
    s_adv: torch.Tensor,
    e: float,
    kinds: Sequence[str],
    cells: dict[tuple[float, str], _Cell],
    adv_cells: dict[float, _Cell],
    pred_adv: torch.Tensor,
    seed: int,
    data_range: float,
) -> None:
    """Dice under each noise kind at the per-sample SSIM of the adversarial examples."""
    ok = torch.isfinite(s_adv) & (s_adv > 0) & (s_adv < 1)
    if not kinds or not bool(ok.any()):
        return
    rows = ok.nonzero().flatten().to(x.device)
    xa, ya, target = x[rows], y[rows], s_adv[ok.cpu()]
    adv_cells[e].stats.update(pred_adv[rows], ya)
    adv_cells[e].add("ssim", target)
    for j, kind in enumerate(kinds):
        res = noise_for_ssim(xa, kind, target, seed=seed * 31 + j, bounds=adapter.bounds)
        with torch.no_grad():
            pred = class_argmax(adapter(res.images))
        cell = cells[(e, kind)]
        cell.stats.update(pred, ya)
        cell.add("ssim", res.ssim)
        cell.add("sigma", res.sigma)
        cell.n += int(rows.numel())
        cell.success += int(res.reached.sum())


def _noise_rows(
    specs: Sequence[_Spec],
    budgets: Sequence[float],
    kinds: Sequence[str],
    cells: dict[tuple[float, str], _Cell],
    adv_cells: dict[float, _Cell],
) -> list[dict[str, Any]]:
    if not specs or not kinds:
        return []
    out = []
    for e in budgets:
        adv = adv_cells[e]
        if not adv.stats.n:
            continue
        row: dict[str, Any] = {
            "attack": specs[0].name,
            "eps": e,
            "eps_display": fmt_eps(e),
            "n": adv.stats.n,
            "mean_ssim_adversarial": adv.mean("ssim"),
            "dice_adversarial": adv.stats.compute()["mean_dice"],
        }
        for kind in kinds:
            c = cells[(e, kind)]
            row[f"dice_{kind}"] = c.stats.compute()["mean_dice"]
            row[f"ssim_{kind}"] = c.mean("ssim")
            row[f"sigma_{kind}"] = c.mean("sigma")
            row[f"matched_{kind}"] = c.success / c.n if c.n else None
        out.append(row)
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _keep_examples(
    store: list[SegmentationExample],
    n: int,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    adv_pred: torch.Tensor,
    target: torch.Tensor | None,
    ids: Sequence[str],
    label: str,
) -> None:
    for i in range(x.shape[0]):
        if len(store) >= n:
            return
        store.append(
            SegmentationExample(
                image=_np(x[i]),
                adversarial=_np(x_adv[i]),
                mask=_np(y[i]),
                clean_pred=_np(clean_pred[i]),
                adv_pred=_np(adv_pred[i]),
                title=f"{str(ids[i]).rsplit('/', 1)[-1]}\n{label}",
                target=None if target is None else _np(target[i]),
            )
        )


_SAVE_LIMIT = 16


def _save(
    saved: dict[str, dict[str, list[np.ndarray]]],
    name: str,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    pred_adv: torch.Tensor,
    target: torch.Tensor | None,
) -> None:
    store = saved.setdefault(name, {})
    have = sum(a.shape[0] for a in store.get("x_adv", []))
    room = _SAVE_LIMIT - have
    if room <= 0:
        return
    parts = {"x": x, "x_adv": x_adv, "mask": y, "pred_adv": pred_adv}
    if target is not None:
        parts["target"] = target
    for key, t in parts.items():
        store.setdefault(key, []).append(_np(t[:room]))


# --------------------------------------------------------------------------------------------
# report and run folder
# --------------------------------------------------------------------------------------------
def _class_table(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in stats.get("dice") or {}:
        rows.append(
            {
                "class": name,
                "Dice": stats["dice"].get(name),
                "IoU": stats["iou"].get(name),
                "HD95": (stats.get("hd95") or {}).get(name),
            }
        )
    rows.append(
        {
            "class": "mean",
            "Dice": stats.get("mean_dice"),
            "IoU": stats.get("mean_iou"),
            "HD95": stats.get("mean_hd95"),
        }
    )
    return rows


def report_sections(
    metrics: Mapping[str, Any], examples: Mapping[str, Sequence[SegmentationExample]]
) -> list[Any]:
    """Report sections for a segmentation audit (tables, Dice-vs-budget curve, overlays,
    noise versus adversarial at matched SSIM).

    Args:
        metrics: The metrics of :func:`evaluate_segmentation`.
        examples: ``{"untargeted": [...], "targeted": [...]}``.

    Returns:
        A list of :class:`~medrobust.reporting.ReportSection`.
    """
    from markupsafe import Markup

    from medrobust.reporting.html import ReportSection, html_table

    seg = metrics["segmentation"]
    k = int(seg["num_classes"])
    clean = seg["clean"]
    body = Markup("<h3>Clean segmentation</h3>") + Markup(
        "<p class='note'>Dice, IoU and HD95 per class with MONAI's semantics: a class absent "
        "from a ground-truth mask is left out of its means; HD95 (in voxels) is undefined where "
        "the prediction or the truth of a class is empty. Pixel accuracy {}, on {} samples.</p>"
    ).format(_f(clean.get("pixel_accuracy")), clean.get("n"))
    body += html_table(_class_table(clean))
    unt = seg["untargeted"]
    if unt:
        body += Markup("<h3>Untargeted attacks</h3>")
        body += html_table(
            [
                {
                    "attack": r["attack"],
                    "ε": r["eps_display"],
                    "mean Dice": r["mean_dice"],
                    "mean IoU": r["mean_iou"],
                    "mean HD95": r["mean_hd95"],
                    "pixel accuracy": r["pixel_accuracy"],
                    "success rate": r["success_rate"],
                    "mean L∞": r["mean_linf"],
                    "mean L2": r["mean_l2"],
                    "mean SSIM": r["mean_ssim"],
                    "time (s)": r["time_s"],
                }
                for r in unt
            ]
        )
        body += Markup(
            "<p class='note'>Success: the sample's mean foreground Dice fell below the attack's "
            "<code>success_dice</code> (0.5 unless set).</p>"
        )
    figures: list[Any] = []
    captions: list[str] = []
    if unt:
        figures.append(dice_budget_figure(seg))
        captions.append("Mean Dice against the budget ε; the dashed line is the clean Dice.")
    if examples.get("untargeted"):
        figures.append(overlay_figure(examples["untargeted"], k))
        captions.append(
            "Image, true mask, clean prediction, adversarial prediction (largest budget of the "
            "first untargeted attack) and the magnified perturbation; for volumes a "
            "representative slice."
        )
    sections = [
        ReportSection("Segmentation under attack", body, figures, captions, key="segmentation")
    ]
    tgt = seg["targeted"]
    if tgt:
        tbody = html_table(
            [
                {
                    "attack": r["attack"],
                    "target": r["target"],
                    "success rate": r["success_rate"],
                    "target IoU": r["mean_target_iou"],
                    "pixel accuracy vs target": r["mean_target_pixel_accuracy"],
                    "Dice vs truth": r["mean_dice"],
                    "mean L∞": r["mean_linf"],
                    "mean L2": r["mean_l2"],
                    "mean SSIM": r["mean_ssim"],
                    "mean steps": r["mean_steps"],
                    "time (s)": r["time_s"],
                }
                for r in tgt
            ]
        )
        tbody += Markup(
            "<p class='note'>Targeted attacks push the prediction toward a target mask: "
            "<code>background</code> erases every structure, <code>other</code> is another "
            "image's mask. Success: at most 1% of the pixels that had to change still disagree "
            "with the target. ASMA and DAG are minimal-perturbation attacks: their L2 and L∞ "
            "are results, not budgets.</p>"
        )
        tfig = [overlay_figure(examples["targeted"], k)] if examples.get("targeted") else []
        tcap = ["Targeted attack examples: the target mask is shown beside the predictions."] * len(
            tfig
        )
        sections.append(ReportSection("Targeted segmentation attacks", tbody, tfig, tcap))
    noise_rows = seg["noise"]
    if noise_rows:
        kinds = [c[5:] for c in noise_rows[0] if c.startswith("dice_") and c != "dice_adversarial"]
        table = []
        for r in noise_rows:
            row = {
                "attack": r["attack"],
                "ε": r["eps_display"],
                "SSIM": r["mean_ssim_adversarial"],
                "Dice adversarial": r["dice_adversarial"],
            }
            for kind in kinds:
                row[f"Dice {kind}"] = r[f"dice_{kind}"]
                row[f"SSIM {kind}"] = r[f"ssim_{kind}"]
            table.append(row)
        nbody = html_table(table) + Markup(
            "<p class='note'>Each noise kind (Gaussian, Rician for MRI, speckle for ultrasound) is "
            "scaled per sample by bisection until its SSIM to the clean image matches that of the "
            "sample's adversarial example: at equal perceptibility, noise barely moves the Dice "
            "while the adversarial perturbation does (Paschali et al., 2018).</p>"
        )
        sections.append(
            ReportSection("Noise versus adversarial perturbations at matched SSIM", nbody)
        )
    return sections


def _write_run_folder(
    result: SegmentationEvaluation,
    run_dir: Path,
    overwrite: bool,
    extra_sections: Sequence[Any],
    config_extra: Mapping[str, Any] | None,
) -> Path:
    from medrobust.evaluation.run_folder import commit_run_folder, npz_bytes
    from medrobust.reporting.html import render_report

    html = render_report(result.metrics, extra_sections=[*result.sections(), *extra_sections])
    return commit_run_folder(
        run_dir,
        metrics=result.metrics,
        report_html=html,
        config={"evaluation": result.config, **dict(config_extra or {})},
        files={
            f"adversarial/{name}.npz": npz_bytes(arrays)
            for name, arrays in result.adversarial.items()
        },
        overwrite=overwrite,
    )
