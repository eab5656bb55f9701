"""The Mahalanobis detector of Lee et al. (2018): class-conditional Gaussians with a tied
covariance per layer, the input-preprocessing step, and a layer ensemble."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from medrobust.detectors.base import DETECTORS, Detector, NotFittedError
from medrobust.detectors.features import capture_features
from medrobust.detectors.gaussian import GaussianStats
from medrobust.detectors.uad import LayerGaussians, mahalanobis_min
from medrobust.models.adapter import ModelAdapter

__all__ = ["NOISE_GRID", "Mahalanobis"]

#: The preprocessing magnitudes Lee et al. tune over (on a ``[0, 1]`` input range).
NOISE_GRID = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)


class Mahalanobis(LayerGaussians, Detector):
    """Lee et al.'s Mahalanobis detector.

    1. Per layer ``l`` (spatially averaged features, default: the architecture's stages and the
       penultimate features), class means ``mu_c`` and one tied covariance ``Sigma_l`` from
       clean fit images. The model's own predictions stand in for the labels (on clean
       training images of an accurate model they agree; the fit interface reads no labels).
       The statistics are sums that add (:class:`~medrobust.detectors.gaussian.GaussianStats`),
       so sharded fits give the one-pass answer.
    2. Input preprocessing: ``x_l = x - eta * sign grad_x d_l(x)`` with
       ``d_l(x) = min_c (f_l(x) - mu_c)^T Sigma_l^{-1} (f_l(x) - mu_c)``, which moves a clean
       input closer to its class more than an adversarial one. ``eta = noise * (high - low)``
       of the model's bounds, so ``noise`` is on the paper's ``[0, 1]`` scale
       (:data:`NOISE_GRID`); 0 skips the step (and its extra backward pass per layer).
    3. Component ``l``: ``d_l(x_l)`` (the paper's confidence score ``M_l`` is its negative).
    4. Layer ensemble: ``combine="zsum"`` (default, no adversarial examples: the sum of the
       components z-scored on clean calibration images) or ``combine="logistic"`` (the paper's
       logistic regression on clean and noisy versus adversarial examples of ``fit_attack``,
       FGSM unless named).

    The score stays differentiable in the input for adaptive attacks: the preprocessing sign is
    a constant of the input (its derivative is zero almost everywhere), so gradients flow
    through ``x - eta * sign(...)`` as through ``x``.

    Args:
        fpr: Clean false-positive rate of the threshold.
        layers: Feature layers (None: the architecture's default set).
        noise: Preprocessing magnitude ``eta`` relative to the input range (>= 0).
        shrinkage: Covariance shrinkage toward a scaled identity in ``[0, 1)`` (Lee et al. use
            the empirical covariance; a little shrinkage keeps it invertible when a layer has
            more features than fit images).
        combine: ``"zsum"`` or ``"logistic"``.
        fit_attack: Attack preset of the logistic combination (default ``"fgsm"``).
        fit_eps: Its budget.
        batch_size: Batch size of feature extraction.
        seed: Seed of the calibration split.
        calibration_fraction: Share of the clean images held out for calibration.

    References:
        Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
        Samples and Adversarial Attacks", NeurIPS 2018.
    """

    name: ClassVar[str] = "mahalanobis"

    def __init__(
        self,
        *,
        fpr: float = 0.05,
        layers: Sequence[str] | None = None,
        noise: float = 0.0014,
        shrinkage: float = 0.01,
        combine: str = "zsum",
        fit_attack: str | None = None,
        fit_eps: float = 4 / 255,
        batch_size: int = 64,
        seed: int = 0,
        calibration_fraction: float = 0.3,
    ) -> None:
        if combine == "logistic" and fit_attack is None:
            fit_attack = "fgsm"
        super().__init__(
            fpr=fpr,
            layers=layers,
            batch_size=batch_size,
            seed=seed,
            calibration_fraction=calibration_fraction,
            combine=combine,
            fit_attack=fit_attack,
            fit_eps=fit_eps,
        )
        for key, value, top in (("noise", noise, math.inf), ("shrinkage", shrinkage, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{key} must be a number, got {type(value).__name__} {value!r}")
            if not (math.isfinite(value) and 0.0 <= value < top):
                raise ValueError(f"{key} must be in [0, {top}), got {value!r}")
        self.noise = float(noise)
        self.shrinkage = float(shrinkage)
        self.statistics_: dict[str, GaussianStats] = {}
        self._means: dict[str, torch.Tensor] = {}
        self._precisions: dict[str, torch.Tensor] = {}

    def params(self) -> dict[str, Any]:
        """Factory keyword arguments of this detector."""
        return {
            **self._base_params(),
            "noise": self.noise,
            "shrinkage": self.shrinkage,
            "combine": self.combine,
            "fit_attack": self.fit_attack,
            "fit_eps": self.fit_eps,
        }

    def component_names(self) -> list[str]:
        """One Mahalanobis distance per layer."""
        return [f"mahalanobis:{n}" for n in self.layers_]

    def _uses_images(self) -> bool:
        return self.noise > 0

    def set_statistics(self, stats: Mapping[str, GaussianStats], dtype: torch.dtype) -> None:
        """Take the class means and tied precisions of per-layer statistics (e.g. the sum of
        the statistics of several shards, see
        :func:`~medrobust.detectors.gaussian.layer_statistics`).

        Raises:
            ValueError: If a layer of the detector has no statistics.
        """
        missing = [n for n in self.layers_ if n not in stats]
        if missing:
            raise ValueError(f"no statistics for the layers {missing}")
        self.statistics_ = {n: stats[n] for n in self.layers_}
        for n in self.layers_:
            means, precision = stats[n].gaussians(self.shrinkage)
            self._means[n], self._precisions[n] = means.to(dtype), precision.to(dtype)

    def _fit_components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        classes = logits.argmax(dim=1)
        k = int(logits.shape[1])
        stats = {n: GaussianStats.of(feats[n], classes, k) for n in self.layers_}
        self.set_statistics(stats, logits.dtype)

    def _distances(self, feats: Mapping[str, torch.Tensor], rows: slice | None = None) -> Any:
        out = []
        for n in self.layers_:
            f = feats[n] if rows is None else feats[n][rows]
            out.append(mahalanobis_min(f, self._means[n], self._precisions[n]))
        return out

    def _components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        if not self._means:
            raise NotFittedError("detector 'mahalanobis' is not fitted")
        return torch.stack(self._distances(feats), dim=1)

    def _image_components(
        self, model: ModelAdapter, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``images`` and the distances of the preprocessed inputs, one per layer
        (one forward pass and one backward pass per layer for the signs, then one forward pass
        of the clean and the ``L`` preprocessed batches together)."""
        if self.noise == 0:
            return super()._image_components(model, images)
        if not self._means:
            raise NotFittedError("detector 'mahalanobis' is not fitted")
        eta = self.noise * model.bounds.width
        layers = self.layers_
        with torch.enable_grad():
            x0 = images.detach().requires_grad_(True)
            with capture_features(model, layers) as cap:
                model(x0)
                dists = self._distances(cap.features)
            signs = [
                torch.autograd.grad(d.sum(), x0, retain_graph=i < len(layers) - 1)[0].sign()
                for i, d in enumerate(dists)
            ]
        xs = torch.cat([images, *(model.bounds.clamp(images - eta * s) for s in signs)])
        b = images.shape[0]
        with capture_features(model, layers) as cap:
            logits = model(xs)
            comp = [
                mahalanobis_min(
                    cap.features[n][(i + 1) * b : (i + 2) * b],
                    self._means[n],
                    self._precisions[n],
                )
                for i, n in enumerate(layers)
            ]
        return logits[:b], torch.stack(comp, dim=1)


@DETECTORS.register(
    "mahalanobis",
    summary="Mahalanobis (Lee et al.): tied-covariance class Gaussians per layer, input "
    "preprocessing, layer ensemble (z-score sum, or logistic regression)",
    tags=("unsupervised", "baseline"),
)
def _mahalanobis(
    *,
    fpr: float = 0.05,
    layers: Sequence[str] | None = None,
    noise: float = 0.0014,
    shrinkage: float = 0.01,
    combine: str = "zsum",
    fit_attack: str | None = None,
    fit_eps: float = 4 / 255,
    batch_size: int = 64,
    seed: int = 0,
    calibration_fraction: float = 0.3,
) -> Detector:
    """Lee et al.'s Mahalanobis detector; see :class:`Mahalanobis`."""
    return Mahalanobis(
        fpr=fpr,
        layers=layers,
        noise=noise,
        shrinkage=shrinkage,
        combine=combine,
        fit_attack=fit_attack,
        fit_eps=fit_eps,
        batch_size=batch_size,
        seed=seed,
        calibration_fraction=calibration_fraction,
    )
