"""LID: local intrinsic dimensionality of the features around an input (Ma et al.)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from medrobust.detectors.base import DETECTORS, Detector, NotFittedError

__all__ = ["LID", "lid_mle"]

_ZERO = 1e-10


def lid_mle(feats: torch.Tensor, reference: torch.Tensor, k: int) -> torch.Tensor:
    """Maximum-likelihood LID estimate from the ``k`` nearest reference points.

    ``LID(x) = -( (1/k) sum_{i=1..k} log(r_i(x) / r_k(x)) )^{-1}`` with ``r_i`` the distance to
    the ``i``-th nearest reference; references at distance 0 (the point itself) are skipped.

    Args:
        feats: Query features.
        reference: Reference features (clean), at least ``k + 1`` rows.
        k: Number of neighbours.

    Returns:
        ``(B,)`` LID estimates, differentiable in ``feats``.

    Raises:
        ValueError: If there are not enough reference points.

    Shape:
        - feats: ``(B, D)``; reference: ``(R, D)``.

    References:
        Ma et al., "Characterizing Adversarial Subspaces Using Local Intrinsic
        Dimensionality", ICLR 2018.
    """
    if reference.shape[0] < k + 1:
        raise ValueError(
            f"LID with k={k} needs at least {k + 1} reference points, got {reference.shape[0]}"
        )
    ref = reference.to(feats)
    d2 = (feats[:, None, :] - ref[None]).pow(2).sum(dim=2)
    d2 = d2.masked_fill(d2.detach() <= _ZERO, float("inf"))
    near = torch.topk(d2, k, dim=1, largest=False).values.clamp_min(_ZERO)
    dist = near.sqrt()
    ratio = torch.log(dist / dist[:, -1:])
    mean = ratio.mean(dim=1).clamp(max=-1e-6)
    return -1.0 / mean


class LID(Detector):
    """Local intrinsic dimensionality (Ma et al.), a supervised baseline.

    For every feature layer the LID of an input is estimated from its ``k`` nearest neighbours
    among a fixed random set of ``reference_size`` clean fit images (the paper uses the clean
    samples of the same minibatch, typically 100 with ``k = 20``). Features are spatially
    averaged to keep the cost small. The per-layer LIDs are combined by logistic regression on
    clean + noisy vs adversarial fit images (``fit_attack``, the paper's protocol) or, with
    ``fit_attack=None``, by the unsupervised z-score sum.

    Args:
        fpr: Clean false-positive rate of the threshold.
        layers: Feature layers (None: the architecture's default set).
        k: Neighbours of the estimate.
        reference_size: Clean reference points (> ``k``).
        fit_attack: Attack preset crafting the adversarial fit examples, or None.
        fit_eps: Its budget.
        batch_size: Batch size of feature extraction.
        seed: Seed of the calibration split and the reference subset.
        calibration_fraction: Share of the clean images held out for calibration.

    References:
        Ma et al., "Characterizing Adversarial Subspaces Using Local Intrinsic
        Dimensionality", ICLR 2018.
    """

    name: ClassVar[str] = "lid"

    def __init__(
        self,
        *,
        fpr: float = 0.05,
        layers: Sequence[str] | None = None,
        k: int = 20,
        reference_size: int = 100,
        fit_attack: str | None = "fgsm",
        fit_eps: float = 4 / 255,
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
            combine="logistic" if fit_attack else "zsum",
            fit_attack=fit_attack,
            fit_eps=fit_eps,
        )
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValueError(f"k must be an integer >= 2, got {k!r}")
        if (
            isinstance(reference_size, bool)
            or not isinstance(reference_size, int)
            or (reference_size <= k)
        ):
            raise ValueError(f"reference_size must be an integer > k={k}, got {reference_size!r}")
        self.k = k
        self.reference_size = reference_size
        self._refs: dict[str, torch.Tensor] = {}

    def params(self) -> dict[str, Any]:
        """Factory keyword arguments of this detector."""
        return {
            **self._base_params(),
            "k": self.k,
            "reference_size": self.reference_size,
            "fit_attack": self.fit_attack,
            "fit_eps": self.fit_eps,
        }

    def component_names(self) -> list[str]:
        """One LID per layer."""
        return [f"lid:{n}" for n in self.layers_]

    def _fit_components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        n = logits.shape[0]
        if n < self.k + 1:
            raise ValueError(
                f"LID with k={self.k} needs at least {self.k + 1} clean fit images, got {n}"
            )
        gen = torch.Generator().manual_seed(self.seed + 11)
        keep = torch.randperm(n, generator=gen)[: self.reference_size].to(logits.device)
        self._refs = {name: feats[name][keep].detach().clone() for name in self.layers_}

    def _components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        if not self._refs:
            raise NotFittedError("detector 'lid' is not fitted")
        k = min(self.k, min(r.shape[0] for r in self._refs.values()) - 1)
        return torch.stack([lid_mle(feats[n], self._refs[n], k) for n in self.layers_], dim=1)

    def _component_state(self) -> dict[str, torch.Tensor]:
        return {f"reference{i}": self._refs[n] for i, n in enumerate(self.layers_)}

    def _load_component_state(self, state: Mapping[str, torch.Tensor]) -> None:
        for i, n in enumerate(self.layers_):
            if f"reference{i}" not in state:
                raise ValueError(f"the saved LID state lacks the references of layer {n!r}")
            self._refs[n] = state[f"reference{i}"]


@DETECTORS.register(
    "lid",
    summary="Local intrinsic dimensionality (Ma et al.), supervised baseline",
    tags=("supervised", "baseline"),
)
def _lid(
    *,
    fpr: float = 0.05,
    layers: Sequence[str] | None = None,
    k: int = 20,
    reference_size: int = 100,
    fit_attack: str | None = "fgsm",
    fit_eps: float = 4 / 255,
    batch_size: int = 64,
    seed: int = 0,
    calibration_fraction: float = 0.3,
) -> Detector:
    """LID; see :class:`LID`."""
    return LID(
        fpr=fpr,
        layers=layers,
        k=k,
        reference_size=reference_size,
        fit_attack=fit_attack,
        fit_eps=fit_eps,
        batch_size=batch_size,
        seed=seed,
        calibration_fraction=calibration_fraction,
    )
