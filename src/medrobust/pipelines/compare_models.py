"""One model of ``medrobust compare``: train or load it, measure every axis, cache the result.

Each candidate has its own folder ``<out>/models/<key>/``: the training run (``train/``, with
``best.pt`` and its model card), the audit's per-batch state while it runs, and ``result.json``
(written atomically, last) with the model's measurements and per-sample outcomes. A rerun, or a
run resumed after a kill, reuses every ``result.json`` whose settings hash matches and resumes a
half-trained model from its ``last.pt``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medrobust._utils.dist import is_main, rank_path
from medrobust._utils.io import read_json, write_json_atomic
from medrobust.evaluation import evaluate
from medrobust.evaluation.comparison import (
    balanced_error,
    corruption_outcomes,
    finite_median,
    minimal_perturbation,
    model_facts,
    predictions,
)
from medrobust.evaluation.records import wilson_interval
from medrobust.models import ModelAdapter, create_model, load_checkpoint
from medrobust.models.adapter import as_adapter
from medrobust.pipelines.compare_config import CandidateSpec, CompareConfig
from medrobust.pipelines.compare_data import SharedData, corruption_summary
from medrobust.pipelines.compare_seg import measure_segmenter, segmenter_adversarial
from medrobust.training import TrainConfig, fit

__all__ = ["load_candidate", "measure_candidate"]

logger = logging.getLogger(__name__)

RESULT = "result.json"


def _accuracy_block(correct: torch.Tensor, pred: torch.Tensor, y: torch.Tensor, k: int) -> dict:
    n, hits = int(correct.numel()), int(correct.sum())
    return {
        "n": n,
        "score": hits / n,
        "accuracy": hits / n,
        "ci95": list(wilson_interval(hits, n)),
        "balanced_error": balanced_error(pred, y, k),
    }


def _train(
    spec: CandidateSpec, cfg: CompareConfig, data: SharedData, folder: Path, say: Callable
) -> tuple[ModelAdapter, dict[str, Any]]:
    """Train one candidate (resuming its ``last.pt``) and return the best model."""
    assert spec.architecture is not None
    model = create_model(
        spec.architecture,
        num_classes=data.num_classes,
        in_channels=data.in_channels,
        spatial_dims=data.spatial_dims,
        class_names=data.class_names,
        seed=spec.seed,
        **spec.params,
    )
    train_cfg = TrainConfig(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=5e-4,
        scheduler="cosine",
        seed=spec.seed,
        monitor="val_accuracy" if cfg.task == "classification" else "val_dice",
    )
    say(f"[{spec.key}] training {spec.label} ({cfg.epochs} epochs)")
    t0 = time.perf_counter()
    resume = (folder / "train" / "last.pt").exists()
    result = fit(
        model,
        data.train,
        data.val,
        train_cfg,
        folder / "train",
        card_info={"data": {"name": cfg.data, "seed": cfg.data_params.get("seed")}},
        resume=resume,
        overwrite=True,
    )
    best, _ = load_checkpoint(result.best_checkpoint)
    wall = sum(float(h.get("time_s", 0.0)) for h in result.history) or time.perf_counter() - t0
    return best, {
        "train_time_s": wall,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
    }


def load_candidate(
    spec: CandidateSpec, data: SharedData, task: str = "classification"
) -> ModelAdapter:
    """Load a checkpoint candidate (or wrap an in-memory one) and check it fits the data
    (channels, classes, dims).

    Raises:
        ValueError: For a model of another task, input space or class list.
    """
    if isinstance(spec.module, ModelAdapter):
        model = spec.module
    elif spec.module is not None:  # a bare module: inputs in [0, 1], the data's input space
        model = as_adapter(
            spec.module, in_channels=data.in_channels, spatial_dims=data.spatial_dims,
            class_names=data.class_names or None,
        )  # fmt: skip
    else:
        assert spec.checkpoint is not None
        model, _ = load_checkpoint(spec.checkpoint)
    where = spec.checkpoint or f"model {spec.label!r}"
    if model.task.value != task:
        raise ValueError(
            f"{where}: this comparison's task is {task}, but the model is a "
            f"{model.task.value} model"
        )
    facts = {
        "input channels": (model.in_channels, data.in_channels),
        "spatial dimensions": (model.spatial_dims, data.spatial_dims),
        "classes": (model.num_classes, data.num_classes),
    }
    for what, (got, want) in facts.items():
        if int(got) != int(want):
            raise ValueError(f"{where}: the model has {got} {what}, the data has {want}")
    if model.class_names and data.class_names and list(model.class_names) != data.class_names:
        raise ValueError(
            f"{where}: the model's classes {model.class_names} are not the data's "
            f"{data.class_names} (a comparison needs one class list)"
        )
    return model


def _adversarial(
    model: ModelAdapter, cfg: CompareConfig, data: SharedData, folder: Path, key: str
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The audit on the first ``adv_samples`` test images: each attack's own rows, the
    cumulative worst case, the checks, and per-sample robust correctness per budget."""
    loader = data.audit_batches(cfg.adv_samples, cfg.eval_batch_size, "label")
    result = evaluate(
        model,
        loader,
        attacks=list(cfg.attacks),
        eps=list(cfg.eps),
        seed=cfg.seed,
        per_attack="own",
        checkpoint=folder / "audit-state.pt",
        model_info={"architecture": key},
    )
    rec = result.records
    assert rec is not None  # a classification audit always has its records
    per_sample = {
        f"robust@{e:.6g}": (rec.eligible & (rec.worst_broken_by[i] < 0)).int().tolist()
        for i, e in enumerate(cfg.eps)
    }
    m = result.metrics
    keep = ("results", "worst_case", "checks")
    return {k: m[k] for k in keep}, per_sample


def robust_rows(worst_case: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The task's worst-case rows as ``{"eps", "score", "ci95"}`` (``key``: the row's score)."""
    return [{"eps": w["eps"], "score": w[key], "ci95": w.get("ci95")} for w in worst_case]


def _minimal(model: ModelAdapter, cfg: CompareConfig, data: SharedData) -> dict[str, Any]:
    n = min(cfg.adv_samples, data.x.shape[0])
    found = minimal_perturbation(
        model, data.x[:n], data.y[:n], seed=cfg.seed, batch_size=cfg.eval_batch_size
    )
    out: dict[str, Any] = {}
    for name, values in found.items():
        valid = ~torch.isnan(values)
        med = finite_median(values)
        out[name] = {
            "median": med if med is None or math.isfinite(med) else "inf",
            "n": int(valid.sum()),
            "flipped": int(torch.isfinite(values).sum()),
        }
    return out


def measure_candidate(
    spec: CandidateSpec,
    cfg: CompareConfig,
    data: SharedData,
    folder: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Every measurement of one candidate, from its cached ``result.json`` when the settings
    match, else trained/loaded, measured and cached (atomically)."""
    digest = cfg.measure_hash(spec)
    cached = folder / RESULT
    if cached.exists():
        try:
            doc = read_json(cached)
        except (OSError, ValueError) as err:
            logger.warning("ignoring unreadable %s: %s", cached, err)
        else:
            if doc.get("settings_hash") == digest:
                say(f"[{spec.key}] reusing the measurements in {cached}")
                return doc
    folder.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    if spec.architecture is None:
        source = "checkpoint" if spec.checkpoint is not None else "given"
        model, training = load_candidate(spec, data, cfg.task), {"source": source}
    else:
        model, training = _train(spec, cfg, data, folder, say)
        training["source"] = "trained"
    model.eval()
    clock.lap("load_or_train")
    say(f"[{spec.key}] measuring on clean, shifted and corrupted images")
    names = ", ".join(str(a) for a in cfg.attacks)
    robust: dict[str, list[Any]]
    if cfg.task == "segmentation":
        doc = measure_segmenter(model, cfg, data, spec)
        clock.lap("clean_shift_corruptions")
        say(f"[{spec.key}] attacking ({names}; targeted: DAG)")
        doc["adversarial"], robust, doc["robust"] = segmenter_adversarial(
            model, cfg, data, folder, spec.key
        )
    else:
        doc = _measure(model, cfg, data, spec)
        clock.lap("clean_shift_corruptions")
        say(f"[{spec.key}] attacking ({names})")
        doc["adversarial"], robust = _adversarial(model, cfg, data, folder, spec.key)
        doc["robust"] = robust_rows(doc["adversarial"]["worst_case"], "robust_accuracy")
    doc["per_sample"].update(robust)
    clock.lap("attacks")
    if cfg.minimal and cfg.task == "classification":
        say(f"[{spec.key}] minimal perturbations (DeepFool L2, JSMA L0)")
        doc["minimal"] = _minimal(model, cfg, data)
        clock.lap("minimal")
    doc["facts"] = {**model_facts(model, tuple(data.x.shape[1:])), **training}
    doc["timing"] = clock.laps
    doc["settings_hash"] = digest
    if is_main():  # under torchrun every process measured alongside; rank 0 keeps the result
        write_json_atomic(cached, doc)
    rank_path(folder / "audit-state.pt").unlink(missing_ok=True)
    return doc


class _Clock:
    """Wall time of each phase of one candidate (seconds, for the report's cost column)."""

    def __init__(self) -> None:
        self.t = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.t
        self.t = now


def _measure(
    model: ModelAdapter, cfg: CompareConfig, data: SharedData, spec: CandidateSpec
) -> dict[str, Any]:
    k = data.num_classes
    pred = predictions(model, data.x, batch_size=cfg.eval_batch_size)
    correct = pred == data.y
    doc: dict[str, Any] = {
        "key": spec.key,
        "label": spec.label,
        "metric": "accuracy",
        "spec": spec.to_dict(),
        "clean": _accuracy_block(correct, pred, data.y, k),
        "per_sample": {"clean": correct.int().tolist()},
        "shifted": None,
        "corruptions": {},
    }
    if data.x_shift is not None and data.y_shift is not None:
        ps = predictions(model, data.x_shift, batch_size=cfg.eval_batch_size)
        doc["shifted"] = _accuracy_block(ps == data.y_shift, ps, data.y_shift, k)
    n = min(cfg.corrupt_samples, data.x.shape[0])
    preds = corruption_outcomes(
        model, data.x[:n], data.y[:n], data.plans, seed=cfg.seed, batch_size=cfg.eval_batch_size
    )
    for plan in data.plans:
        pc = preds[plan.key]
        be = balanced_error(pc, data.y[:n], k)
        doc["corruptions"][plan.key] = {
            "accuracy": float((pc == data.y[:n]).double().mean()),
            "balanced_error": be,
            "score": be,
        }
    doc["corruption"] = corruption_summary(doc["corruptions"], "balanced error", True)
    return doc
