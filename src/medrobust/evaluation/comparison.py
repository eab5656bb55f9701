"""Per-model measurements of a model comparison (Paschali et al. 2018), on shared samples.

:mod:`medrobust.pipelines.compare` trains or loads several classifiers and calls these functions
for each on the *same* samples, so that every per-sample outcome can be paired across models:

* :func:`predictions` and :func:`balanced_error` for clean, shifted and corrupted inputs;
* :func:`corruption_outcomes`: correct or not on every corrupted copy of the test images, one
  copy per corruption and severity, each corruption calibrated once by SSIM
  (:mod:`medrobust.evaluation.corruptions`) so all models see identical inputs;
* :func:`minimal_perturbation`: a budget-free robustness score per sample, the smallest L2
  perturbation DeepFool needs to flip the label and the share of pixels JSMA changes to flip it
  (``inf`` where the attack did not flip it within its limits);
* :func:`model_facts`: parameters, depth (layers with weights) and FLOPs per input.

Nothing here ranks or tests; :mod:`medrobust.evaluation.ranking` does that.

References:
    Paschali, Conjeti, Navarro & Navab, "Generalizability vs. Robustness: Adversarial Examples
    for Medical Imaging", MICCAI 2018; Moosavi-Dezfooli et al., CVPR 2016 (DeepFool); Papernot
    et al., EuroS&P 2016 (JSMA); Di Salvo et al., "MedMNIST-C", 2024 (balanced error).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medrobust.attacks.engine import eval_mode
from medrobust.attacks.presets import create_attack
from medrobust.evaluation.audit import model_device
from medrobust.evaluation.corruptions import corrupt
from medrobust.models.adapter import ModelAdapter, as_adapter

__all__ = [
    "CorruptionPlan",
    "balanced_error",
    "corruption_outcomes",
    "finite_median",
    "minimal_perturbation",
    "model_facts",
    "predictions",
]


def _adapter(model: nn.Module) -> ModelAdapter:
    return model if isinstance(model, ModelAdapter) else as_adapter(model)


def predictions(model: nn.Module, x: torch.Tensor, *, batch_size: int = 100) -> torch.Tensor:
    """Predicted labels of ``x`` in eval mode, batch by batch.

    Shape:
        - x: ``(N, C, *spatial)`` in the model's bounds; returns ``(N,)`` int64 on the CPU.
    """
    adapter = _adapter(model)
    dev = model_device(adapter)
    out = []
    with eval_mode(adapter), torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            logits = adapter(x[i : i + batch_size].to(dev))
            out.append(logits.argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def balanced_error(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """One minus the balanced accuracy: the mean over classes present in ``labels`` of the
    share of that class's samples predicted wrongly (MedMNIST-C's "balanced error").

    Raises:
        ValueError: For predictions and labels of different lengths or empty ones.
    """
    if pred.shape != labels.shape or pred.numel() == 0:
        raise ValueError(
            f"balanced_error needs one prediction per label, got {tuple(pred.shape)} and "
            f"{tuple(labels.shape)}"
        )
    errors = []
    for c in range(num_classes):
        sel = labels == c
        if bool(sel.any()):
            errors.append(float((pred[sel] != c).double().mean()))
    return sum(errors) / len(errors)


@dataclass(frozen=True)
class CorruptionPlan:
    """One corrupted copy of the test images: a corruption at one severity.

    Attributes:
        name: Registered corruption name.
        severity: 1 (mildest) to 5.
        strength: The corruption's strength calibrated for this severity's target SSIM.
        ssim: The target mean SSIM of the severity.
    """

    name: str
    severity: int
    strength: float
    ssim: float

    @property
    def key(self) -> str:
        """``"<name>@<severity>"``, the key of this copy in results."""
        return f"{self.name}@{self.severity}"


def corruption_outcomes(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    plans: Sequence[CorruptionPlan],
    *,
    seed: int = 0,
    batch_size: int = 100,
) -> dict[str, torch.Tensor]:
    """Predictions of ``model`` on each corrupted copy of ``x``.

    Every copy is ``corrupt(plan.name, x, plan.strength, seed)``: deterministic, so every model
    of a comparison sees the same corrupted images.

    Returns:
        ``{plan.key: (N,) int64 predicted labels}``.
    """
    out: dict[str, torch.Tensor] = {}
    for plan in plans:
        xc = corrupt(plan.name, x, plan.strength, seed)
        out[plan.key] = predictions(model, xc, batch_size=batch_size)
    return out


def minimal_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    batch_size: int = 50,
    jsma_gamma: float = 0.1,
) -> dict[str, torch.Tensor]:
    """The smallest perturbation that flips each correctly classified sample.

    DeepFool (unbounded, L2; Moosavi-Dezfooli et al. 2016) gives an L2 norm, JSMA (Papernot et
    al. 2016, ``theta = 1``, at most ``jsma_gamma`` of the input elements) the share of input
    elements changed (L0 / elements). Samples the model already misclassifies get NaN (they
    need no perturbation and are not part of the score); samples the attack did not flip get
    ``inf`` (more robust than the attack could measure). The median over samples is then a
    budget-free robustness score: larger is more robust.

    Returns:
        ``{"deepfool_l2": (N,), "jsma_l0_share": (N,)}`` float64 on the CPU.
    """
    adapter = _adapter(model)
    n = x.shape[0]
    per_sample = math.prod(x.shape[1:])
    correct = predictions(adapter, x, batch_size=batch_size) == labels.cpu()
    out = {
        "deepfool_l2": torch.full((n,), math.nan, dtype=torch.float64),
        "jsma_l0_share": torch.full((n,), math.nan, dtype=torch.float64),
    }
    attacks = {
        "deepfool_l2": create_attack("deepfool", norm="l2", eps=None, seed=seed),
        "jsma_l0_share": create_attack("jsma", gamma=jsma_gamma, seed=seed),
    }
    idx = correct.nonzero().flatten()
    dev = model_device(adapter)
    for key, attack in attacks.items():
        for i in range(0, idx.numel(), batch_size):
            sel = idx[i : i + batch_size]
            res = attack(adapter, x[sel].to(dev), labels[sel].to(dev))
            size = res.l2 if key == "deepfool_l2" else res.l0.double() / per_sample
            value = torch.where(res.success.cpu(), size.double().cpu(), math.inf)
            out[key][sel] = value
    return out


def finite_median(values: torch.Tensor) -> float | None:
    """Median of the non-NaN values (``inf`` counts as larger than every number); None if
    there are none."""
    v = values[~torch.isnan(values)]
    if v.numel() == 0:
        return None
    return float(v.sort().values[(v.numel() - 1) // 2])


def model_facts(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Parameters, depth and FLOPs of one forward pass of a single input.

    Depth counts the layers with weights (convolutions and linear layers). FLOPs come from
    :class:`torch.utils.flop_counter.FlopCounterMode` (multiply-adds counted as 2), None where
    it cannot count the model.

    Args:
        model: The network (bare or adapter).
        input_shape: ``(C, *spatial)`` of one input.
    """
    net = model.net if isinstance(model, ModelAdapter) else model
    params = sum(p.numel() for p in net.parameters())
    depth = sum(
        1 for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    )
    flops: int | None
    try:
        from torch.utils.flop_counter import FlopCounterMode

        dev = model_device(net)
        counter = FlopCounterMode(display=False)
        with eval_mode(net), torch.no_grad(), counter:
            net(torch.zeros((1, *input_shape), device=dev))
        flops = int(counter.get_total_flops())
    except (RuntimeError, TypeError, NotImplementedError):  # pragma: no cover - exotic models
        flops = None
    return {"parameters": int(params), "depth": int(depth), "flops": flops}
