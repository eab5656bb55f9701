"""UAD: unsupervised adversarial detection from multi-layer feature statistics of clean images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from medrobust.detectors.base import DETECTORS, Detector, NotFittedError

__all__ = ["UAD", "LayerGaussians", "fit_gaussians", "mahalanobis_min"]


def fit_gaussians(
    feats: torch.Tensor, classes: torch.Tensor | None, shrinkage: float, min_count: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means and the precision of a tied, shrunk covariance.

    ``Sigma = sum_c sum_{i in c} (f_i - mu_c)(f_i - mu_c)^T / N``, shrunk towards
    ``tr(Sigma)/D * I`` by ``shrinkage``, inverted in float64.

    Args:
        feats: Features ``(N, D)``.
        classes: Class of each row ``(N,)`` or None for a single Gaussian.
        shrinkage: Weight in ``[0, 1)`` of the scaled identity.
        min_count: Classes with fewer rows are left out (their rows still count in Sigma's
            normaliser through the other classes' means being unaffected).

    Returns:
        ``(means (C, D), precision (D, D))``.

    Raises:
        ValueError: If fewer than 2 rows are given.

    Shape:
        - feats: ``(N, D)``; classes: ``(N,)``.

    References:
        Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples and
        Adversarial Attacks", NeurIPS 2018.
    """
    if feats.shape[0] < 2:
        raise ValueError(
            f"fitting a Gaussian needs at least 2 feature vectors, got {feats.shape[0]}"
        )
    x = feats.detach().to(torch.float64)
    if classes is None:
        groups = [torch.arange(x.shape[0], device=x.device)]
    else:
        groups = [(classes == c).nonzero().flatten() for c in torch.unique(classes)]
        groups = [g for g in groups if g.numel() >= min_count] or [
            torch.arange(x.shape[0], device=x.device)
        ]
    means = torch.stack([x[g].mean(dim=0) for g in groups])
    centred = torch.cat([x[g] - means[i] for i, g in enumerate(groups)])
    cov = centred.T @ centred / centred.shape[0]
    d = cov.shape[0]
    scale = torch.trace(cov) / d
    if not bool(scale > 0):
        scale = torch.ones((), dtype=cov.dtype, device=cov.device)
    cov = (1 - shrinkage) * cov + shrinkage * scale * torch.eye(
        d, dtype=cov.dtype, device=cov.device
    )
    precision = torch.linalg.inv(cov)
    precision = 0.5 * (precision + precision.T)
    return means.to(feats.dtype), precision.to(feats.dtype)


def mahalanobis_min(
    feats: torch.Tensor, means: torch.Tensor, precision: torch.Tensor
) -> torch.Tensor:
    """Squared Mahalanobis distance to the closest class mean, differentiable in ``feats``.

    Returns:
        ``(B,)`` ``min_c (f - mu_c)^T P (f - mu_c)``.

    Shape:
        - feats: ``(B, D)``; means: ``(C, D)``; precision: ``(D, D)``.
    """
    diff = feats[:, None, :] - means[None].to(feats)
    d2 = torch.einsum("bcd,de,bce->bc", diff, precision.to(feats), diff)
    return d2.min(dim=1).values


class LayerGaussians:
    """Mixin of the detectors whose state is one Gaussian model per layer (class means and a
    tied precision): saving and loading that state (UAD, Mahalanobis)."""

    layers_: list[str]
    _means: dict[str, torch.Tensor]
    _precisions: dict[str, torch.Tensor]

    def _component_state(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, n in enumerate(self.layers_):
            out[f"mean{i}"] = self._means[n]
            out[f"precision{i}"] = self._precisions[n]
        return out

    def _load_component_state(self, state: Mapping[str, torch.Tensor]) -> None:
        for i, n in enumerate(self.layers_):
            if f"mean{i}" not in state or f"precision{i}" not in state:
                raise ValueError(
                    f"the saved {type(self).__name__} state lacks the statistics of layer {n!r}"
                )
            self._means[n] = state[f"mean{i}"]
            self._precisions[n] = state[f"precision{i}"]


class UAD(LayerGaussians, Detector):
    """Unsupervised adversarial detection (Li, Pan & Zhu's UAD, following Li & Zhu).

    Fitted on clean images only, with no labels and no adversarial examples:

    1. spatially averaged features of several layers (default: the architecture's stages and
       the penultimate features);
    2. per layer, class-conditional Gaussians with a tied covariance, the classes being the
       model's own predictions (``class_conditional=False``: one Gaussian);
    3. per-layer score: the squared Mahalanobis distance to the closest class mean;
    4. combined score: the sum of the per-layer scores z-scored against clean calibration
       images;
    5. threshold at the ``(1 - fpr)`` quantile of clean calibration scores (5% by default).

    Args:
        fpr: Clean false-positive rate of the threshold.
        layers: Feature layers (None: the architecture's default set).
        class_conditional: Class-conditional Gaussians on pseudo-labels (else one Gaussian).
        shrinkage: Covariance shrinkage towards a scaled identity, in ``[0, 1)``.
        batch_size: Batch size of feature extraction.
        seed: Seed of the calibration split.
        calibration_fraction: Share of the clean images held out for calibration when
            :meth:`fit` receives no calibration data.

    References:
        Li, Pan & Zhu, arXiv:2006.13555, 2020 (UAD); Li & Zhu, "Robust detection of adversarial
        attacks on medical images", ISBI 2020; Lee et al., NeurIPS 2018 (tied-covariance
        Gaussians on spatially averaged features).
    """

    name: ClassVar[str] = "uad"

    def __init__(
        self,
        *,
        fpr: float = 0.05,
        layers: Sequence[str] | None = None,
        class_conditional: bool = True,
        shrinkage: float = 0.05,
        batch_size: int = 64,
        seed: int = 0,
        calibration_fraction: float = 0.3,
    ) -> None:
        super().__init__(
            fpr=fpr,
            layers=layers,
            batch_size=batch_size,
            seed=seed,
            calibration_fraction=calibration_fraction,
            combine="zsum",
        )
        self.class_conditional = bool(class_conditional)
        if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)):
            raise TypeError(f"shrinkage must be a number, got {shrinkage!r}")
        if not 0.0 <= float(shrinkage) < 1.0:
            raise ValueError(f"shrinkage must be in [0, 1), got {shrinkage}")
        self.shrinkage = float(shrinkage)
        self._means: dict[str, torch.Tensor] = {}
        self._precisions: dict[str, torch.Tensor] = {}

    def params(self) -> dict[str, Any]:
        """Factory keyword arguments of this detector."""
        return {
            **self._base_params(),
            "class_conditional": self.class_conditional,
            "shrinkage": self.shrinkage,
        }

    def component_names(self) -> list[str]:
        """One Mahalanobis score per layer."""
        return [f"mahalanobis:{n}" for n in self.layers_]

    def _fit_components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        classes = logits.argmax(dim=1) if self.class_conditional else None
        for name in self.layers_:
            self._means[name], self._precisions[name] = fit_gaussians(
                feats[name], classes, self.shrinkage
            )

    def _components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        if not self._means:
            raise NotFittedError("detector 'uad' is not fitted")
        return torch.stack(
            [mahalanobis_min(feats[n], self._means[n], self._precisions[n]) for n in self.layers_],
            dim=1,
        )


@DETECTORS.register(
    "uad",
    summary="UAD (Li, Pan & Zhu): multi-layer Gaussian feature statistics of clean images, "
    "no labels, no adversarial examples",
    tags=("unsupervised",),
)
def _uad(
    *,
    fpr: float = 0.05,
    layers: Sequence[str] | None = None,
    class_conditional: bool = True,
    shrinkage: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    calibration_fraction: float = 0.3,
) -> Detector:
    """Unsupervised adversarial detection; see :class:`UAD`."""
    return UAD(
        fpr=fpr,
        layers=layers,
        class_conditional=class_conditional,
        shrinkage=shrinkage,
        batch_size=batch_size,
        seed=seed,
        calibration_fraction=calibration_fraction,
    )
