"""The segmentation measurements of ``medrobust compare`` (Paschali et al.'s second task).

For a segmenter every axis is scored by the per-sample mean foreground Dice instead of
correctness: clean and shifted Dice (with per-class Dice), Dice under every corrupted copy of
the test images, and under attack the per-sample worst-case Dice over the untargeted attacks at
each budget (each attack's own rows too), plus the targeted DAG attack of the paper (its
success rate, target pixel accuracy and perturbation size). The per-sample Dice values are kept
so that :mod:`medrobust.evaluation.comparison_summary` can pair models with the bootstrap.

References:
    Paschali et al., MICCAI 2018 (whole-brain segmentation under DAG); Xie et al., "Adversarial
    Examples for Semantic Segmentation and Object Detection", ICCV 2017 (DAG).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medrobust.evaluation.comparison import corruption_outcomes, predictions
from medrobust.evaluation.segmentation import evaluate_segmentation
from medrobust.metrics.segmentation import dice_score, sample_dice
from medrobust.models import ModelAdapter
from medrobust.pipelines.compare_config import CandidateSpec, CompareConfig
from medrobust.pipelines.compare_data import SharedData, corruption_summary

__all__ = ["dice_block", "measure_segmenter", "segmenter_adversarial"]

#: Bootstrap resamples of the confidence interval of a mean Dice.
_BOOT = 2000


def mean_ci(values: torch.Tensor, seed: int = 0) -> list[float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (``[nan, nan]`` if empty)."""
    v = values.double().numpy()
    if v.size == 0:
        return [math.nan, math.nan]
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(_BOOT, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def dice_block(pred: torch.Tensor, masks: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Mean foreground Dice with its bootstrap interval and the Dice of each class.

    Shape:
        - pred, masks: ``(N, *spatial)`` class indices.
    """
    k = len(class_names)
    per_sample = sample_dice(pred, masks, k)
    per_class = dice_score(pred, masks, k)  # (N, K - 1), NaN where the class is absent
    classes = {}
    for c in range(1, k):
        col = per_class[:, c - 1]
        col = col[~torch.isnan(col)]
        classes[class_names[c]] = float(col.mean()) if col.numel() else None
    return {
        "n": int(per_sample.numel()),
        "score": float(per_sample.mean()),
        "dice": float(per_sample.mean()),
        "ci95": mean_ci(per_sample),
        "per_class": classes,
        "_per_sample": per_sample,
    }


def measure_segmenter(
    model: ModelAdapter, cfg: CompareConfig, data: SharedData, spec: CandidateSpec
) -> dict[str, Any]:
    """Clean, shifted and corrupted Dice of one segmenter, with per-sample clean Dice."""
    bs = cfg.eval_batch_size
    clean = dice_block(predictions(model, data.x, batch_size=bs), data.y, data.class_names)
    doc: dict[str, Any] = {
        "key": spec.key,
        "label": spec.label,
        "metric": "dice",
        "spec": spec.to_dict(),
        "per_sample": {"clean": clean.pop("_per_sample").tolist()},
        "clean": clean,
        "shifted": None,
        "corruptions": {},
    }
    if data.x_shift is not None and data.y_shift is not None:
        ps = predictions(model, data.x_shift, batch_size=bs)
        doc["shifted"] = dice_block(ps, data.y_shift, data.class_names)
        doc["shifted"].pop("_per_sample")
    n = min(cfg.corrupt_samples, data.x.shape[0])
    preds = corruption_outcomes(
        model, data.x[:n], data.y[:n], data.plans, seed=cfg.seed, batch_size=bs
    )
    for plan in data.plans:
        d = float(sample_dice(preds[plan.key], data.y[:n], len(data.class_names)).mean())
        doc["corruptions"][plan.key] = {"dice": d, "score": d}
    doc["corruption"] = corruption_summary(doc["corruptions"], "Dice", False)
    return doc


def segmenter_adversarial(
    model: ModelAdapter, cfg: CompareConfig, data: SharedData, folder: Path, key: str
) -> tuple[dict[str, Any], dict[str, list[float]], list[dict[str, Any]]]:
    """The segmentation audit on the first ``adv_samples`` test images.

    Returns:
        ``(adversarial section, per-sample worst-case Dice per budget, robust rows)``: each
        untargeted attack's own rows, the worst case, the targeted rows and the checks; the
        per-sample Dice under the worst case (``robust@<eps>``) and ``{"eps", "score", "ci95"}``
        per budget.
    """
    loader = data.audit_batches(cfg.adv_samples, cfg.eval_batch_size, "mask")
    result = evaluate_segmentation(
        model,
        loader,
        attacks=list(cfg.attacks),
        eps=list(cfg.eps),
        targeted=list(cfg.targeted),
        targets=["background"],
        noise=(),
        hd95=False,
        seed=cfg.seed,
        checkpoint=folder / "audit-state.pt",
        model_info={"architecture": key},
    )
    rec = result.records
    assert rec is not None  # an audit always keeps its records
    seg = result.metrics["segmentation"]
    per_sample, robust = {}, []
    for i, e in enumerate(cfg.eps):
        worst = torch.minimum(rec.worst_score[i], rec.clean_score)  # never above clean
        per_sample[f"robust@{e:.6g}"] = worst.tolist()
        robust.append({"eps": e, "score": float(worst.mean()), "ci95": mean_ci(worst)})
    adversarial = {
        "results": list(seg.get("untargeted", [])),
        "worst_case": seg.get("worst_case", []),
        "targeted": seg.get("targeted", []),
        "checks": result.metrics.get("checks", []),
        "per_class_clean": seg["clean"].get("dice"),
    }
    return adversarial, per_sample, robust
