"""``medrobust compare``: generalizability against robustness for several models on one data set.

Paschali et al. (MICCAI 2018) show that models with comparable test accuracy can differ widely in
robustness, so a leaderboard of clean accuracy hides what matters. :func:`run_compare` answers
"which of my candidate models is the robust one?" for one data set:

1. every candidate is trained by the command from a zoo architecture (one per seed) or loaded
   from a checkpoint (checked to share the data's input space and class list);
2. each is measured on the *same* samples, on every axis:
   *generalizability* (clean accuracy and balanced error on the test split, and on a shifted
   test split: for the phantom, another scanner), *natural corruptions* (every corruption of
   the modality at five severities calibrated by SSIM, as balanced error and relative to a
   reference model, MedMNIST-C style), *adversarial* (each attack's own robust accuracy per
   budget, the cumulative worst case, the sanity checks) and the *minimal perturbation* per
   sample (DeepFool L2 and JSMA L0, a budget-free score), plus model facts (parameters, depth,
   FLOPs, training time);
3. :func:`~medrobust.evaluation.comparison_summary.summarise_comparison` ranks the models on
   every axis, correlates the rankings, runs paired tests (exact McNemar with Holm's correction)
   and states the finding in one sentence;
4. the run folder holds ``metrics.json``, ``report.html``, ``config.yaml``,
   ``corruptions.json`` (the calibrated strengths) and ``models/<key>/`` per candidate, whose
   ``result.json`` is reused on a rerun, so a killed comparison resumes where it stopped.

References:
    Paschali, Conjeti, Navarro & Navab, "Generalizability vs. Robustness: Adversarial Examples
    for Medical Imaging", MICCAI 2018; Di Salvo et al., "MedMNIST-C", 2024.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from medrobust._utils.dist import current_shard, is_main
from medrobust._utils.format import fmt_eps
from medrobust._utils.io import read_json, to_jsonable, write_json_atomic, write_text_atomic
from medrobust._version import __version__
from medrobust.attacks.presets import ATTACKS
from medrobust.evaluation.comparison import CorruptionPlan
from medrobust.evaluation.comparison_summary import summarise_comparison
from medrobust.evaluation.corruptions import (
    SEVERITY_SSIM,
    calibrate,
    check_applies,
    list_corruptions,
)
from medrobust.models import list_models
from medrobust.models.zoo import MODELS
from medrobust.pipelines.audit import load_split
from medrobust.pipelines.compare_config import CandidateSpec, CompareConfig
from medrobust.pipelines.compare_data import SharedData
from medrobust.pipelines.compare_models import load_candidate, measure_candidate
from medrobust.pipelines.locking import holds_run_lock
from medrobust.pipelines.results import check_docs
from medrobust.reporting.html import render_report
from medrobust.reporting.sections.compare import compare_sections
from medrobust.types import Task

__all__ = ["CompareResult", "compare", "run_compare"]

logger = logging.getLogger(__name__)

#: Images the corruption strengths are calibrated on (the first ones of the corrupted subset);
#: the strengths are then applied to every corrupted image.
CALIBRATION_SAMPLES = 32


@dataclass
class CompareResult:
    """What :func:`run_compare` returns.

    Attributes:
        metrics: The ``metrics.json`` document (``comparison`` holds the answer).
        report: Path of ``report.html``.
        run_dir: The run folder.
    """

    metrics: dict[str, Any]
    report: Path
    run_dir: Path

    @property
    def finding(self) -> str:
        """The one-sentence answer of the comparison."""
        return str(self.metrics["comparison"]["finding"])


def _tensors(ds: Dataset[Any], target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and targets (``"label"`` or ``"mask"``) of a whole split, stacked."""
    items = [ds[i] for i in range(len(ds))]  # type: ignore[arg-type]
    if not items:
        raise ValueError("the test split is empty: nothing to compare on")
    if target not in items[0]:
        raise ValueError(
            f"the data set's items have no {target!r} (keys: {sorted(items[0])}); a "
            f"segmentation comparison needs masks"
        )
    shapes = {tuple(it["image"].shape) for it in items}
    if len(shapes) > 1:
        raise ValueError(
            f"the test images differ in shape ({sorted(shapes)[:3]}...): compare needs one "
            "input size (pass a size or patch parameter)"
        )
    return torch.stack([it["image"] for it in items]), torch.stack(
        [torch.as_tensor(it[target]) for it in items]
    ).long()


def check_config(
    cfg: CompareConfig, modules: Mapping[str, Any] | None = None
) -> tuple[list[CandidateSpec], list[str], dict[str, str]]:
    """Validate every name before any compute.

    Returns:
        ``(candidates, corruptions to run, skipped corruptions with their reasons)``.

    Raises:
        ValueError: For one model only, an unknown or non-classification architecture or
            attack, or an unknown corruption.
    """
    specs = cfg.candidates(modules)
    for spec in specs:
        if spec.module is not None:
            if not isinstance(spec.module, nn.Module):
                raise TypeError(
                    f"model {spec.label!r} must be an nn.Module, a ModelAdapter, a zoo name or a "
                    f"checkpoint path, got {type(spec.module).__name__}"
                )
            continue
        if spec.architecture is None:
            if not Path(str(spec.checkpoint)).is_file():
                raise ValueError(f"checkpoint {spec.checkpoint!r} does not exist")
            continue
        if spec.architecture not in list_models():
            raise ValueError(f"unknown architecture {spec.architecture!r}; known: {list_models()}")
        if cfg.task not in MODELS.get(spec.architecture).tags:
            noun = "classifier" if cfg.task == "classification" else "segmenter"
            raise ValueError(
                f"{spec.architecture!r} is not a {noun} (this comparison's task is {cfg.task}; "
                f"its architectures: {list_models(tag=cfg.task)})"
            )
    targeted = list(cfg.targeted) if cfg.task == "segmentation" else []
    for item in [*cfg.attacks, *targeted]:
        name = item["name"] if isinstance(item, Mapping) else str(item)
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; known: {sorted(ATTACKS)}")
        if cfg.task not in ATTACKS.get(name).tags:
            raise ValueError(f"{name!r} is not a {cfg.task} attack")
    return specs, *_corruptions(cfg)


def _corruptions(cfg: CompareConfig) -> tuple[list[str], dict[str, str]]:
    from medrobust.data import DATASETS

    if cfg.data not in DATASETS:
        raise ValueError(f"unknown data set {cfg.data!r}; known: {sorted(DATASETS)}")
    if cfg.task not in DATASETS.get(cfg.data).tags:
        raise ValueError(f"data set {cfg.data!r} has no {cfg.task} labels")
    modality = str(cfg.modality or getattr(DATASETS.get(cfg.data).factory, "modality", "any"))
    if cfg.corruptions is None:
        return list_corruptions(modality), {}
    keep, skipped = [], {}
    for name in cfg.corruptions:
        reason = check_applies(name, modality)  # raises for an unknown name
        if reason is None:
            keep.append(name)
        else:
            skipped[name] = reason
    return keep, skipped


def _plans(
    names: Sequence[str], x: torch.Tensor, cfg: CompareConfig, out: Path, say: Callable
) -> tuple[list[CorruptionPlan], dict[str, str]]:
    """Calibrate every corruption once on the shared images (cached in corruptions.json)."""
    path = out / "corruptions.json"
    cached: dict[str, Any] = {}
    if path.exists():
        try:
            cached = dict(read_json(path))
        except (OSError, ValueError):
            cached = {}
    plans, failed = [], {}
    for name in names:
        key = f"{name}|seed={cfg.seed}|n={x.shape[0]}|shape={list(x.shape[1:])}"
        strengths = cached.get(key)
        if strengths is None:
            say(f"calibrating {name} to SSIM {', '.join(f'{t:g}' for t in SEVERITY_SSIM)}")
            try:
                strengths = calibrate(name, x, SEVERITY_SSIM, seed=cfg.seed)
            except ValueError as err:  # a severity this corruption cannot reach here
                failed[name] = str(err)
                continue
            cached[key] = strengths
            if is_main():
                write_json_atomic(path, cached)
        for sev, (s, t) in enumerate(zip(strengths, SEVERITY_SSIM, strict=True), start=1):
            plans.append(CorruptionPlan(name, sev, float(s), float(t)))
    return plans, failed


def _prepare(cfg: CompareConfig, say: Callable) -> SharedData:
    """Load the training splits and the (shifted) test tensors; corruptions come later."""
    say(f"preparing data set {cfg.data!r}")
    train = load_split(cfg.data, cfg.data_params, "train", cfg.split_sizes)
    val = load_split(cfg.data, cfg.data_params, "val", cfg.split_sizes)
    target = "label" if cfg.task == "classification" else "mask"
    x, y = _tensors(load_split(cfg.data, cfg.data_params, "test", cfg.split_sizes), target)
    x_shift = y_shift = None
    if cfg.shift_params is not None or cfg.shift_data is not None:
        shift_params = {**cfg.data_params, **(cfg.shift_params or {})}
        if cfg.shift_data is not None:
            shift_params = dict(cfg.shift_params or {})
        name = cfg.shift_data or cfg.data
        shifted = load_split(name, shift_params, cfg.shift_split, cfg.split_sizes)
        x_shift, y_shift = _tensors(shifted, target)
        if x_shift.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"the shifted split's images are {tuple(x_shift.shape[1:])}, the test split's "
                f"{tuple(x.shape[1:])}: pass the same size in the shift parameters"
            )
    names = list(getattr(train, "class_names", []) or [])
    if cfg.task == "segmentation" and getattr(train, "task", None) != Task.SEGMENTATION:
        # a classification data set with lesion masks (the phantom, BUSI): its class names are
        # the image labels, the masks hold background and lesion
        names = ["background", "lesion"]
    if not names:
        names = [f"class {i}" for i in range(int(y.max()) + 1)]
    data = SharedData(
        train=train,
        val=val,
        x=x,
        y=y,
        x_shift=x_shift,
        y_shift=y_shift,
        plans=[],
        num_classes=len(names),
        in_channels=int(x.shape[1]),
        spatial_dims=x.dim() - 2,
        class_names=names,
    )
    return data


@holds_run_lock("out_dir")
def run_compare(
    config: CompareConfig | None = None,
    out_dir: str | os.PathLike[str] = "runs/compare",
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    modules: Mapping[str, nn.Module] | None = None,
) -> CompareResult:
    """Compare several models on generalizability, corruptions and adversarial robustness.

    Args:
        config: The settings (default :class:`CompareConfig`: four small architectures on the
            64-pixel phantom).
        out_dir: The run folder. A folder of an interrupted or finished comparison is resumed:
            every model whose ``result.json`` matches the settings is reused.
        overwrite: Start from scratch (the old folder is moved aside until the run succeeds).
        progress: Receives one-line status messages.
        modules: Models given in memory, by name (bare modules with inputs in ``[0, 1]`` or
            adapters), compared beside the configured ones.

    Returns:
        A :class:`CompareResult`.

    Raises:
        ValueError: For invalid settings (see :func:`check_config`), a checkpoint of another
            input space or class list, or an empty test split.
    """
    cfg = config or CompareConfig()
    out = Path(out_dir)
    say = progress or (lambda text: logger.info(text))
    t_start = time.perf_counter()
    specs, names, skipped = check_config(cfg, modules)
    out.mkdir(parents=True, exist_ok=True)
    data = _prepare(cfg, say)
    for spec in specs:  # checkpoints and given models must fit the data before any training
        if spec.architecture is None:
            load_candidate(spec, data, cfg.task)
    n = min(CALIBRATION_SAMPLES, cfg.corrupt_samples, data.x.shape[0])
    data.plans, failed = _plans(names, data.x[:n], cfg, out, say)
    skipped.update(failed)
    docs = [measure_candidate(s, cfg, data, out / "models" / s.key, say) for s in specs]
    reference = _reference(cfg, specs)
    summary = summarise_comparison(docs, cfg.eps, reference)
    metrics = _metrics(cfg, docs, summary, skipped, data, time.perf_counter() - t_start)
    metrics["world_size"] = current_shard().size
    html = render_report(metrics, extra_sections=compare_sections(metrics), check_docs=check_docs())
    report = out / "report.html"
    if is_main():  # under torchrun, rank 0 writes the run folder
        write_text_atomic(report, html)
        config_text = yaml.safe_dump(to_jsonable(cfg.to_dict()), sort_keys=False)
        write_text_atomic(out / "config.yaml", config_text)
        write_json_atomic(out / "metrics.json", metrics)
    say(summary["finding"])
    say(f"comparison finished in {time.perf_counter() - t_start:.0f} s: {report}")
    return CompareResult(metrics=metrics, report=report, run_dir=out)


def compare(
    models: Sequence[Any] | Mapping[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = "runs/compare",
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    **settings: Any,
) -> CompareResult:
    """Compare models on generalizability and robustness (the Python form of
    ``medrobust compare``).

    Example::

        result = medrobust.compare(["small-cnn:width=8", "resnet10"], "runs/cmp", epochs=4)
        result = medrobust.compare({"mine": my_model, "baseline": "checkpoints/best.pt"})
        print(result.finding)

    Args:
        models: What to compare: zoo architectures to train (``"small-cnn:width=16"``), saved
            checkpoints (paths to ``.pt`` files), and models in memory (bare modules with inputs
            in ``[0, 1]``, or adapters), as a list or as a mapping from display names. None:
            the default candidates.
        out_dir: The run folder (rerunning reuses every finished model).
        overwrite: Start over in ``out_dir``.
        progress: Receives one-line status messages.
        **settings: Any field of :class:`CompareConfig` (``data``, ``eps``, ``epochs``, ...).

    Raises:
        ValueError: For bad settings or fewer than two models.
        TypeError: For a model that is none of the above.
    """
    items = list(models.items()) if isinstance(models, Mapping) else list(enumerate(models or []))
    names: list[str] = []
    checkpoints: list[str] = []
    modules: dict[str, Any] = {}
    for key, item in items:
        if isinstance(item, nn.Module):
            modules[str(key) if isinstance(models, Mapping) else f"model {key}"] = item
        elif isinstance(item, Path) or (isinstance(item, str) and item.endswith((".pt", ".pth"))):
            checkpoints.append(str(item))
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(
                f"model {key!r} must be an nn.Module, a ModelAdapter, a zoo name or a "
                f"checkpoint path, got {type(item).__name__}"
            )
    if models is not None:
        settings.setdefault("models", names)
        settings.setdefault("checkpoints", checkpoints)
    cfg = CompareConfig(**settings)
    return run_compare(cfg, out_dir, overwrite=overwrite, progress=progress, modules=modules)


def _reference(cfg: CompareConfig, specs: Sequence[CandidateSpec]) -> str:
    if cfg.reference is None:
        return specs[0].key
    for s in specs:
        if cfg.reference in (s.key, s.label):
            return s.key
    raise ValueError(f"unknown reference model {cfg.reference!r}; models: {[s.key for s in specs]}")


def _metrics(
    cfg: CompareConfig,
    docs: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    skipped: dict[str, str],
    data: SharedData,
    total_s: float,
) -> dict[str, Any]:
    checks = [
        {**c, "message": f"{d['label']}: {c.get('message', '')}"}
        for d in docs
        for c in d["adversarial"].get("checks", [])
    ]
    models = [{k: v for k, v in d.items() if k != "per_sample"} for d in docs]
    return {
        "schema_version": 1,
        "medrobust_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "title": f"Model comparison: generalizability vs robustness on {cfg.data}",
        "task": "compare",
        "data": {
            "name": cfg.data,
            "params": dict(cfg.data_params),
            "split_sizes": dict(cfg.split_sizes or {}),
            "n_test": int(data.x.shape[0]),
            "n_shifted": None if data.x_shift is None else int(data.x_shift.shape[0]),
            "class_names": data.class_names,
        },
        "threat_model": {
            "norm": "linf",
            "eps": list(cfg.eps),
            "eps_display": [fmt_eps(e) for e in cfg.eps],
            "per_attack": "own",
        },
        "compare": {
            "config": cfg.to_dict(),
            "corruptions": [p.__dict__ for p in data.plans],
            "corruptions_skipped": skipped,
            "models": models,
        },
        "comparison": summary,
        "checks": checks,
        "timing": {"total_s": total_s, "torch_threads": torch.get_num_threads()},
    }
