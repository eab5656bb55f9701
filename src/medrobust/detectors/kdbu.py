"""KD+BU: kernel density in the last hidden layer plus Bayesian (MC-dropout) uncertainty."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.detectors.base import DETECTORS, Detector, NotFittedError
from medrobust.detectors.features import PENULTIMATE, last_linear

__all__ = ["KDBU", "log_kernel_density", "mc_dropout_uncertainty"]

_ZERO = 1e-10


def log_kernel_density(
    feats: torch.Tensor,
    classes: torch.Tensor,
    reference: torch.Tensor,
    reference_classes: torch.Tensor,
    bandwidth: float,
) -> torch.Tensor:
    """Log of the Gaussian kernel density of each feature among the references of its class.

    ``KD(x) = mean_{i: c_i = c(x)} exp(-||f(x) - f_i||^2 / sigma^2)``; a reference at distance 0
    (the sample itself, when scoring the fit data) is left out; a class without references
    falls back to all references.

    Returns:
        ``(B,)`` ``log KD``, differentiable in ``feats``.

    Shape:
        - feats: ``(B, D)``; classes: ``(B,)``; reference: ``(M, D)``; reference_classes: ``(M,)``.

    References:
        Feinman et al., "Detecting Adversarial Samples from Artifacts", arXiv:1703.00410, 2017.
    """
    ref = reference.to(feats)
    d2 = (feats[:, None, :] - ref[None]).pow(2).sum(dim=2)
    valid = d2.detach() > _ZERO
    same = classes[:, None] == reference_classes[None].to(classes.device)
    mask = valid & same
    empty = ~mask.any(dim=1)
    mask = torch.where(empty[:, None], valid, mask)
    logits = (-d2 / bandwidth**2).masked_fill(~mask, -math.inf)
    count = mask.sum(dim=1).clamp_min(1).to(feats.dtype)
    out = torch.logsumexp(logits, dim=1) - torch.log(count)
    return torch.nan_to_num(out, neginf=-1e6)


def mc_dropout_uncertainty(
    feats: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    masks: torch.Tensor,
    p: float,
) -> torch.Tensor:
    """MC-dropout predictive variance ``mean_t ||y_t||^2 - ||mean_t y_t||^2`` of the head.

    The head ``softmax(W (m_t * f) / (1 - p) + b)`` is evaluated under each dropout mask ``m_t``;
    a one-logit head ``z`` is read as the two logits ``[0, z]`` like the model adapter does.

    Returns:
        ``(B,)`` uncertainty, differentiable in ``feats``.

    Shape:
        - feats: ``(B, D)``; weight: ``(K, D)``; masks: ``(T, D)``.

    References:
        Gal & Ghahramani, ICML 2016 (MC dropout); Feinman et al., 2017.
    """
    dropped = feats[None] * masks[:, None, :].to(feats) / (1.0 - p)
    z = dropped @ weight.to(feats).T
    if bias is not None:
        z = z + bias.to(feats)
    if z.shape[-1] == 1:
        z = torch.cat([torch.zeros_like(z), z], dim=-1)
    probs = F.softmax(z, dim=-1)
    mean_sq = probs.pow(2).sum(dim=-1).mean(dim=0)
    sq_mean = probs.mean(dim=0).pow(2).sum(dim=-1)
    return mean_sq - sq_mean


class KDBU(Detector):
    """Kernel density + Bayesian uncertainty (Feinman et al.), a supervised baseline.

    * KD: Gaussian kernel density of the penultimate features among clean fit images of the
      predicted class (the model's own predictions serve as classes, so no label is needed).
      ``bandwidth=None`` uses the median distance between clean features (the paper's values
      1.20 / 0.26 / 1.00 were tuned for MNIST / CIFAR-10 / SVHN).
    * BU: MC-dropout variance of the prediction. Dropout with rate ``dropout`` is applied to
      the penultimate features before the network's last linear layer (``mc_samples`` fixed
      seeded masks), so any network ending in a linear layer works, with or without dropout of
      its own.
    * Components ``(-log KD, BU)`` are combined by logistic regression on clean + noisy vs
      adversarial fit images (``fit_attack``, the paper's protocol) or, with
      ``fit_attack=None``, by the unsupervised z-score sum.

    Args:
        fpr: Clean false-positive rate of the threshold.
        bandwidth: Kernel bandwidth ``sigma`` or None (median heuristic).
        mc_samples: Dropout masks ``T`` (50 in the paper).
        dropout: Dropout rate of the MC passes, in ``(0, 1)``.
        max_reference: At most this many clean fit features are kept as kernel centres.
        fit_attack: Attack preset crafting the adversarial fit examples, or None.
        fit_eps: Its budget.
        batch_size: Batch size of feature extraction.
        seed: Seed of the calibration split, the reference subset and the dropout masks.
        calibration_fraction: Share of the clean images held out for calibration.

    Raises:
        ValueError: At fit time if the network's output is not its last linear layer applied to
            the penultimate features.

    References:
        Feinman et al., "Detecting Adversarial Samples from Artifacts", arXiv:1703.00410, 2017.
    """

    name: ClassVar[str] = "kd-bu"

    def __init__(
        self,
        *,
        fpr: float = 0.05,
        bandwidth: float | None = None,
        mc_samples: int = 50,
        dropout: float = 0.5,
        max_reference: int = 2000,
        fit_attack: str | None = "fgsm",
        fit_eps: float = 4 / 255,
        batch_size: int = 64,
        seed: int = 0,
        calibration_fraction: float = 0.3,
    ) -> None:
        super().__init__(
            fpr=fpr,
            layers=[PENULTIMATE],
            batch_size=batch_size,
            seed=seed,
            calibration_fraction=calibration_fraction,
            combine="logistic" if fit_attack else "zsum",
            fit_attack=fit_attack,
            fit_eps=fit_eps,
        )
        if bandwidth is not None and (
            isinstance(bandwidth, bool)
            or not isinstance(bandwidth, (int, float))
            or not (math.isfinite(bandwidth) and bandwidth > 0)
        ):
            raise ValueError(f"bandwidth must be a finite number > 0 or None, got {bandwidth!r}")
        self.bandwidth = None if bandwidth is None else float(bandwidth)
        if isinstance(mc_samples, bool) or not isinstance(mc_samples, int) or mc_samples < 2:
            raise ValueError(f"mc_samples must be an integer >= 2, got {mc_samples!r}")
        self.mc_samples = mc_samples
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not (0.0 < float(dropout) < 1.0)
        ):
            raise ValueError(f"dropout must be in (0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        if (
            isinstance(max_reference, bool)
            or not isinstance(max_reference, int)
            or (max_reference < 2)
        ):
            raise ValueError(f"max_reference must be an integer >= 2, got {max_reference!r}")
        self.max_reference = max_reference
        self._ref: torch.Tensor | None = None
        self._ref_classes: torch.Tensor | None = None
        self._sigma_kd = 1.0
        self._masks: torch.Tensor | None = None

    def params(self) -> dict[str, Any]:
        """Factory keyword arguments of this detector."""
        base = self._base_params()
        base.pop("layers")
        return {
            **base,
            "bandwidth": self.bandwidth,
            "mc_samples": self.mc_samples,
            "dropout": self.dropout,
            "max_reference": self.max_reference,
            "fit_attack": self.fit_attack,
            "fit_eps": self.fit_eps,
        }

    def component_names(self) -> list[str]:
        """``-log KD`` and ``BU``."""
        return ["neg_log_kd", "bu"]

    def _head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.model is None:
            raise NotFittedError("detector 'kd-bu' is not fitted")
        head = last_linear(self.model)
        return head.weight, head.bias

    def _fit_components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        f = feats[PENULTIMATE]
        weight, bias = self._head()
        z = f @ weight.T + (bias if bias is not None else 0)
        if z.shape[1] == 1:
            z = torch.cat([torch.zeros_like(z), z], dim=1)
        if z.shape != logits.shape or not torch.allclose(z, logits, rtol=1e-3, atol=1e-4):
            raise ValueError(
                "kd-bu needs a network whose output is its last nn.Linear layer applied to the "
                "penultimate features; this network does more after that layer"
            )
        gen = torch.Generator().manual_seed(self.seed + 7)
        n = f.shape[0]
        keep = torch.randperm(n, generator=gen)[: self.max_reference].to(f.device)
        self._ref = f[keep].detach().clone()
        self._ref_classes = logits.argmax(dim=1)[keep].detach().clone()
        if self.bandwidth is None:
            d = torch.cdist(self._ref, self._ref)
            off = d[~torch.eye(d.shape[0], dtype=torch.bool, device=d.device)]
            med = float(off.median()) if off.numel() else 1.0
            self._sigma_kd = med if math.isfinite(med) and med > 0 else 1.0
        else:
            self._sigma_kd = self.bandwidth
        keep_p = 1.0 - self.dropout
        masks = torch.rand((self.mc_samples, f.shape[1]), generator=gen) < keep_p
        self._masks = masks.to(device=f.device, dtype=f.dtype)

    def _components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        if self._ref is None or self._ref_classes is None or self._masks is None:
            raise NotFittedError("detector 'kd-bu' is not fitted")
        f = feats[PENULTIMATE]
        classes = logits.detach().argmax(dim=1)
        kd = log_kernel_density(f, classes, self._ref, self._ref_classes, self._sigma_kd)
        weight, bias = self._head()
        bu = mc_dropout_uncertainty(f, weight, bias, self._masks, self.dropout)
        return torch.stack([-kd, bu], dim=1)

    def _component_state(self) -> dict[str, torch.Tensor]:
        if self._ref is None or self._ref_classes is None or self._masks is None:
            raise NotFittedError("detector 'kd-bu' is not fitted")
        return {
            "reference": self._ref,
            "reference_classes": self._ref_classes,
            "bandwidth": torch.tensor(self._sigma_kd, dtype=torch.float64),
            "masks": self._masks,
        }

    def _load_component_state(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = {"reference", "reference_classes", "bandwidth", "masks"} - set(state)
        if missing:
            raise ValueError(f"the saved kd-bu state lacks {sorted(missing)}")
        self._ref = state["reference"]
        self._ref_classes = state["reference_classes"]
        self._sigma_kd = float(state["bandwidth"])
        self._masks = state["masks"]


@DETECTORS.register(
    "kd-bu",
    summary="Kernel density + Bayesian uncertainty (Feinman et al.), supervised baseline",
    tags=("supervised", "baseline"),
)
def _kd_bu(
    *,
    fpr: float = 0.05,
    bandwidth: float | None = None,
    mc_samples: int = 50,
    dropout: float = 0.5,
    max_reference: int = 2000,
    fit_attack: str | None = "fgsm",
    fit_eps: float = 4 / 255,
    batch_size: int = 64,
    seed: int = 0,
    calibration_fraction: float = 0.3,
) -> Detector:
    """KD+BU; see :class:`KDBU`."""
    return KDBU(
        fpr=fpr,
        bandwidth=bandwidth,
        mc_samples=mc_samples,
        dropout=dropout,
        max_reference=max_reference,
        fit_attack=fit_attack,
        fit_eps=fit_eps,
        batch_size=batch_size,
        seed=seed,
        calibration_fraction=calibration_fraction,
    )
