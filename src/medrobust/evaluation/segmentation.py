"""Robustness audit of segmentation models, on the one audit loop.

:func:`evaluate_segmentation` runs the untargeted attacks through
:func:`medrobust.evaluation.audit` with the
:class:`~medrobust.evaluation.tasks.segmentation.SegmentationTask`: per-sample records, the worst
case per sample across the attack list at every budget (the lowest Dice any attack reached),
samples broken at a smaller budget not attacked again, the sanity checks, resume from a per-batch
checkpoint and the shared ``metrics.json`` header. Targeted attacks and noise baselines at
matched SSIM run per batch in the same loop. Metrics follow MONAI's semantics
(:mod:`medrobust.metrics.segmentation`).

References:
    Dice, Ecology 1945; Cardoso et al., "MONAI", 2022 (metric semantics); Ozbulak et al.,
    MICCAI 2019 (target IoU, pixel accuracy); Paschali et al., MICCAI 2018 (noise at matched
    SSIM); Croce & Hein, ICML 2020 (worst case per sample).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from medrobust.attacks.objectives.segmentation import check_fraction
from medrobust.attacks.presets import ATTACKS
from medrobust.attacks.targets import TARGETS
from medrobust.evaluation.api import audit
from medrobust.evaluation.audit import AttackSpec
from medrobust.evaluation.noise import NOISE_KINDS
from medrobust.evaluation.records import Records
from medrobust.evaluation.suites import SEGMENTATION_SUITES, resolve_suite
from medrobust.evaluation.tasks.segmentation import (
    BROKEN_FRACTION,
    SegmentationSettings,
    SegmentationTask,
)
from medrobust.models.adapter import as_adapter
from medrobust.models.segmentation import DEFAULT_MAX_VOXELS
from medrobust.types import Task

__all__ = ["SegmentationEvaluation", "evaluate_segmentation"]


@dataclass
class SegmentationEvaluation:
    """The outcome of :func:`evaluate_segmentation`.

    Attributes:
        metrics: Every number, in the ``metrics.json`` layout: the common header (``title``,
            ``model``, ``data``, ``threat_model``, ``attacks``, ``checks``, ``timing``) and
            ``"segmentation"``.
        examples: Examples for the overlays, ``{"untargeted": [...], "targeted": [...]}``.
        adversarial: Arrays saved under ``adversarial/`` (name -> dict of arrays).
        config: The resolved configuration.
        records: The per-sample records.
    """

    metrics: dict[str, Any]
    examples: dict[str, list[Any]]
    adversarial: dict[str, dict[str, np.ndarray]]
    config: dict[str, Any]
    records: Records | None = None

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

    def worst_dice(self, eps: float | None = None) -> float | None:
        """Mean over samples of the lowest Dice any attack reached at ``eps`` (default: the
        largest budget).

        Raises:
            KeyError: If that budget was not evaluated.
        """
        budgets = self.metrics["threat_model"]["eps"]
        e = budgets[-1] if eps is None else eps
        for row in self.metrics["segmentation"]["worst_case"]:
            if math.isclose(row["eps"], e, rel_tol=1e-9):
                return row["mean_worst_dice"]
        raise KeyError(f"no worst case at eps={e!r}; budgets: {budgets}")

    def summary(self) -> str:
        """A short plain-text summary."""
        seg = self.metrics["segmentation"]
        lines = [f"clean mean Dice: {_f(seg['clean']['mean_dice'])} (n={seg['clean']['n']})"]
        for row in seg["untargeted"]:
            lines.append(
                f"{row['attack']} at eps={row['eps_display']}: mean Dice {_f(row['mean_dice'])}"
            )
        frac = seg.get("broken_fraction", BROKEN_FRACTION)
        for row in seg["worst_case"]:
            lines.append(
                f"worst case at eps={row['eps_display']}: mean Dice "
                f"{_f(row['mean_worst_dice'])}, broken {_f(row.get('broken_rate'))} of "
                f"{row.get('n_attacked', '?')} attacked (Dice < {frac:g} x clean)"
            )
        for row in seg["targeted"]:
            lines.append(
                f"{row['attack']} toward {row['target']}: success {_f(row['success_rate'])}, "
                f"target IoU {_f(row['mean_target_iou'])}, pixel success "
                f"{_f(row.get('mean_pixel_success'))}, mean Linf {_f(row.get('mean_linf'))}"
            )
        warn = [c["code"] for c in self.metrics.get("checks", []) if c["status"] != "pass"]
        if self.metrics.get("checks"):
            lines.append(
                f"sanity checks: {len(warn)} flagged" + (f" ({', '.join(warn)})" if warn else "")
            )
        return "\n".join(lines)


def _f(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{float(v):.3f}"


def _segmentation_specs(
    items: Sequence[str | Mapping[str, Any]], *, targeted: bool
) -> list[AttackSpec]:
    """Parse an attack list and check every entry is a segmentation attack of the right kind.

    Raises:
        ValueError: For a classification/explanation attack, or a targeted attack among the
            untargeted ones (and the reverse).
    """
    specs = [AttackSpec.parse(a) if not isinstance(a, AttackSpec) else a for a in items]
    for s in specs:
        tags = ATTACKS.get(s.name).tags
        if "segmentation" not in tags:
            seg = ", ".join(ATTACKS.list(tag="segmentation"))
            raise ValueError(
                f"attack {s.name!r} is not a segmentation attack; choose one of: {seg}"
            )
        if targeted and "targeted" not in tags:
            raise ValueError(f"attack {s.name!r} is untargeted; list it under attacks=")
        if not targeted and "targeted" in tags:
            raise ValueError(f"attack {s.name!r} is targeted; list it under targeted=")
        reserved = sorted({"seed", "broken_fraction"} & set(s.params))
        if reserved:
            raise ValueError(f"attack {s.name!r}: {reserved} are set by the evaluation")
    return specs


def resolve_segmentation_attacks(
    attacks: Sequence[str | Mapping[str, Any]] | str | None, options: dict[str, Any]
) -> Sequence[str | Mapping[str, Any]]:
    """The untargeted attack list: ``attacks`` as given; the frozen suite it names when it is a
    segmentation suite's name (resolved for the norm in ``options``, which then defaults to
    SEA-style scheduling, ``mode="cascade"``); or ``pgd-seg`` alone when None."""
    if attacks is None:
        return ("pgd-seg",)
    if isinstance(attacks, str):
        key = attacks.strip().lower()
        if key not in SEGMENTATION_SUITES:
            return (attacks,)
        options.setdefault("mode", "cascade")
        return resolve_suite(key, options.get("norm", "linf"), 2).attacks
    return attacks


def evaluate_segmentation(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    attacks: Sequence[str | Mapping[str, Any]] | str | None = None,
    broken_fraction: float = BROKEN_FRACTION,
    eps: Any = (1 / 255, 2 / 255, 4 / 255, 8 / 255),
    targeted: Sequence[str | Mapping[str, Any]] = ("asma", "dag"),
    targets: Sequence[str] = ("background", "other"),
    noise: Sequence[str] = NOISE_KINDS,
    include_background: bool = False,
    hd95: bool = True,
    spacing: float | Sequence[float] | None = None,
    max_voxels: int | None = DEFAULT_MAX_VOXELS,
    **kwargs: Any,
) -> SegmentationEvaluation:
    """Audit a segmentation model: clean metrics, untargeted attacks per budget with the worst
    case per sample, targeted attacks per target kind, and noise baselines matched to the
    adversarial SSIM.

    Untargeted attacks (``pgd-seg``, ``segpgd``, ``apgd-sea-*``, ... or a frozen ``suite``) run
    at every budget of ``eps`` in ``norm`` on every sample with a clean Dice above 0, and are
    scored by Dice, IoU, HD95, surface Dice and pixel accuracy against the true masks; a sample
    is broken when its Dice falls below ``broken_fraction`` of its clean Dice, and the worst case
    per sample is the lowest Dice any of them reached. Targeted attacks (``asma``, ``dag``,
    ``asma-bounded``) run once per target kind (targets built from the true masks, see
    :mod:`medrobust.attacks.targets`) and are scored by success rate, target IoU and pixel
    accuracy against the target, perturbation norms and SSIM. For the first untargeted attack at
    every budget, each noise kind is scaled per sample (bisection) to the SSIM of that sample's
    adversarial example and the Dice under noise is reported.

    Args:
        model: A segmentation :class:`~medrobust.models.ModelAdapter` (possibly running by
            sliding windows, see :func:`~medrobust.models.segmentation.sliding_window`).
        loader: Batches ``{"image", "mask", "id"?}`` or ``(images, masks)`` tuples.
        attacks: Untargeted segmentation attacks (names or ``{"name", **params}``; default
            ``pgd-seg`` alone), or the name of a frozen segmentation suite
            (``"seg-standard"``, ``"seg-thorough"``, see :mod:`medrobust.evaluation.suites`),
            which runs with SEA-style scheduling (``mode="cascade"``: each attack only on the
            samples the earlier ones left unbroken) unless ``mode`` is given.
        broken_fraction: A sample is broken when its Dice under attack falls below this
            fraction of its clean Dice (0.5, as Daza et al.), in ``(0, 1]``.
        eps: Budgets of the untargeted attacks.
        targeted: Targeted segmentation attacks (names or mappings).
        targets: Target kinds (``"background"``, ``"other"``, ``"swap"``, ``"dilate"``).
        noise: Noise kinds compared at matched SSIM (empty to skip).
        include_background: Include class 0 in Dice/IoU/HD95/surface Dice.
        hd95: Compute the 95th-percentile Hausdorff distance and the surface Dice
            (normalised surface distance, :func:`~medrobust.metrics.surface_dice`).
        spacing: Voxel size in mm, one number or one per spatial dim; HD95 and the surface
            Dice are then in mm (else in voxels). None takes the data set's ``spacing``
            attribute where it has one (the loader's ``dataset``, e.g. NIfTI volumes whose
            headers agree), else voxels.
        max_voxels: Batch size limit without sliding windows (None: no check; a model run by
            sliding windows is checked against the memory of an attack step instead, see
            :func:`~medrobust.models.segmentation.sliding_window`).
        **kwargs: ``n_examples`` (4), the samples shown in the overlay figures (and the
            worst-case examples), ``surface_tolerance`` (1.0), the boundary tolerance of the
            surface Dice (mm with a spacing, else voxels), and as
            :func:`medrobust.evaluation.audit`: ``norm``, ``mode``, ``seed``,
            ``device``, ``max_samples``, ``checks``, ``probe_samples``, ``noise_draws``,
            ``checkpoint`` (resume), ``progress``, ``model_info``, ``data_info``, ``title``.

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
    adapter = as_adapter(model)
    if adapter.task is not Task.SEGMENTATION:
        raise ValueError(
            f"evaluate_segmentation needs a segmentation model, got task {adapter.task.value!r}; "
            "use medrobust.evaluate for classifiers"
        )
    fraction = check_fraction("broken_fraction", broken_fraction, open_low=True)
    attack_list = resolve_segmentation_attacks(attacks, kwargs)
    n_examples = int(kwargs.pop("n_examples", 4))
    untargeted_specs = _segmentation_specs(attack_list, targeted=False)
    targeted_specs = _segmentation_specs(targeted, targeted=True)
    noise_kinds = [str(n).lower() for n in noise]
    for n in noise_kinds:
        if n not in NOISE_KINDS:
            raise ValueError(f"unknown noise kind {n!r}; expected one of {', '.join(NOISE_KINDS)}")
    if spacing is None:
        spacing = data_spacing(loader)
    settings = SegmentationSettings(
        targeted=targeted_specs,
        targets=[TARGETS.get(t).name for t in targets] if targeted_specs else [],
        noise=noise_kinds,
        include_background=include_background,
        hd95=hd95,
        spacing=spacing,
        max_voxels=max_voxels,
        n_examples=n_examples,
        broken_fraction=fraction,
        tolerance=_check_tolerance(kwargs.pop("surface_tolerance", 1.0)),
    )
    names = adapter.class_names or [str(i) for i in range(adapter.num_classes)]
    task = SegmentationTask(settings, adapter.num_classes, names)
    card = dict(kwargs.get("model_info") or {})
    kwargs["title"] = (
        kwargs.get("title") or f"Segmentation robustness audit: {card.get('architecture', 'model')}"
    )
    kwargs["n_examples"] = 0  # the task keeps its own overlays
    result = audit(task, adapter, loader, untargeted_specs, eps, **kwargs)
    adversarial = {
        name: {key: np.concatenate(parts) for key, parts in arrays.items()}
        for name, arrays in task.saved.items()
    }
    return SegmentationEvaluation(
        result.metrics, task.examples, adversarial, result.config, result.records
    )


def _check_tolerance(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"surface_tolerance must be a number > 0, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"surface_tolerance must be finite, got {value!r}")
    return float(value)


def data_spacing(loader: Iterable[Any]) -> tuple[float, ...] | None:
    """The voxel spacing (mm) a data set declares: the ``spacing`` attribute of the loader's
    ``dataset`` (or of the loader itself), when it is a sequence of positive numbers."""
    source = getattr(loader, "dataset", loader)
    value = getattr(source, "spacing", None)
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) and v > 0 for v in out) else None
