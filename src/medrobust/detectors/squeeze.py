"""Feature squeezing (Xu, Evans & Qi 2018): compare the prediction on the input with the
predictions on squeezed copies (reduced bit depth, median smoothing)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.detectors.base import DETECTORS, Detector
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Bounds

__all__ = ["FeatureSqueezing", "median_smooth", "reduce_bit_depth"]

_JOINT = ("max", "zsum")


def reduce_bit_depth(x: torch.Tensor, bits: int, bounds: Bounds) -> torch.Tensor:
    """Quantise ``x`` to ``2**bits`` levels across the bounds, with a straight-through gradient.

    ``q(x) = low + round(u (2^b - 1)) / (2^b - 1) (high - low)``, ``u = (x - low) / (high - low)``;
    the forward value is ``q(x)``, the gradient that of the identity (BPDA, Athalye et al. 2018),
    so an adaptive attack sees through the rounding.

    Shape:
        - x: any; the output has its shape.

    References:
        Xu, Evans & Qi, "Feature Squeezing", NDSS 2018; Athalye, Carlini & Wagner, ICML 2018.
    """
    levels = 2**bits - 1
    u = (x - bounds.low) / bounds.width
    q = torch.round(u * levels) / levels * bounds.width + bounds.low
    return x + (q - x).detach()


def median_smooth(x: torch.Tensor, size: int) -> torch.Tensor:
    """Median filter over a ``size``-wide window in every spatial dimension, per channel.

    The window of an output element at index ``i`` covers ``i - size // 2`` to
    ``i + (size - 1) // 2`` along each axis, edges repeated (what
    ``scipy.ndimage.median_filter(size=..., mode="nearest")`` does); for an even number of
    elements the upper of the two middle values is taken, as scipy does. Differentiable
    (the gradient goes to the selected element).

    Shape:
        - x: ``(B, C, *spatial)``; the output has its shape.

    References:
        Xu, Evans & Qi, "Feature Squeezing", NDSS 2018 (median smoothing, 2x2 and 3x3).
    """
    dims = x.ndim - 2
    pad: list[int] = []
    for _ in range(dims):
        pad += [size // 2, (size - 1) // 2]
    xp = F.pad(x, pad, mode="replicate") if size > 1 else x
    windows = xp
    for d in range(dims):
        windows = windows.unfold(2 + d, size, 1)
    flat = windows.reshape(*x.shape, -1)
    return flat.kthvalue(flat.shape[-1] // 2 + 1, dim=-1).values


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


class FeatureSqueezing(Detector):
    """Feature squeezing: the L1 distance between the softmax prediction on the input and on
    each squeezed copy of it; a legitimate input changes little when squeezed, an adversarial
    one often a lot.

    Components: ``||p(x) - p(bit_depth(x))||_1`` and ``||p(x) - p(median(x))||_1``. The joint
    detector (``joint="max"``, the paper's) scores the largest of them; ``joint="zsum"`` sums
    their z-scores on clean calibration images. No statistics are fitted: fitting only sets
    the threshold at the ``(1 - fpr)`` quantile of the clean calibration scores (the paper's
    protocol, with no adversarial example). Inputs are squeezed in the model's bounds.

    Defaults follow the paper's settings for natural images (5-bit depth, 2x2 median); its
    1-bit setting for MNIST would erase grey-level images such as ultrasound.

    Args:
        fpr: Clean false-positive rate of the threshold.
        bit_depth: Bits kept by the bit-depth squeezer (1-8), or None to leave it out.
        median_size: Window of the median smoother (2-5), or None to leave it out.
        joint: ``"max"`` or ``"zsum"``.
        batch_size: Batch size of scoring.
        seed: Seed of the calibration split.
        calibration_fraction: Share of the clean images held out for calibration.

    Raises:
        ValueError: If both squeezers are left out, or for invalid settings.

    References:
        Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
        Networks", NDSS 2018.
    """

    name: ClassVar[str] = "feature-squeezing"

    def __init__(
        self,
        *,
        fpr: float = 0.05,
        bit_depth: int | None = 5,
        median_size: int | None = 2,
        joint: str = "max",
        batch_size: int = 64,
        seed: int = 0,
        calibration_fraction: float = 0.3,
    ) -> None:
        super().__init__(
            fpr=fpr, batch_size=batch_size, seed=seed, calibration_fraction=calibration_fraction
        )
        self.bit_depth = None if bit_depth is None else _check_int("bit_depth", bit_depth, 1, 8)
        self.median_size = (
            None if median_size is None else _check_int("median_size", median_size, 2, 5)
        )
        if self.bit_depth is None and self.median_size is None:
            raise ValueError("feature squeezing needs at least one squeezer: bit_depth or median")
        if joint not in _JOINT:
            raise ValueError(f"joint must be one of {list(_JOINT)}, got {joint!r}")
        self.joint = joint
        self._fitted_components = False

    def params(self) -> dict[str, Any]:
        """Factory keyword arguments of this detector."""
        base = self._base_params()
        base.pop("layers")
        return {
            **base,
            "bit_depth": self.bit_depth,
            "median_size": self.median_size,
            "joint": self.joint,
        }

    def component_names(self) -> list[str]:
        """One L1 distance per squeezer."""
        names = []
        if self.bit_depth is not None:
            names.append(f"l1:bit-depth-{self.bit_depth}")
        if self.median_size is not None:
            names.append(f"l1:median-{self.median_size}")
        return names

    def _uses_images(self) -> bool:
        return True

    def _default_layers(self, model: ModelAdapter, example: torch.Tensor) -> list[str]:
        return []  # the predictions are all it reads

    def _fit_components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        self._fitted_components = True

    def _components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("feature squeezing scores images, not features")

    def _image_components(
        self, model: ModelAdapter, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``images`` and the L1 distances to the squeezed copies' predictions (one
        forward pass of the input and its squeezed copies together)."""
        squeezed = []
        if self.bit_depth is not None:
            squeezed.append(reduce_bit_depth(images, self.bit_depth, model.bounds))
        if self.median_size is not None:
            squeezed.append(median_smooth(images, self.median_size))
        b = images.shape[0]
        logits = model(torch.cat([images, *squeezed]))
        probs = F.softmax(logits, dim=1)
        p0 = probs[:b]
        comp = [
            (probs[(i + 1) * b : (i + 2) * b] - p0).abs().sum(dim=1) for i in range(len(squeezed))
        ]
        return logits[:b], torch.stack(comp, dim=1)

    def _combine(self, comp: torch.Tensor) -> torch.Tensor:
        if self.joint == "max":
            return comp.max(dim=1).values
        return super()._combine(comp)

    def _component_state(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_component_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._fitted_components = True


@DETECTORS.register(
    "feature-squeezing",
    summary="Feature squeezing (Xu et al.): L1 distance of the predictions on bit-depth "
    "reduced and median-smoothed copies, no adversarial examples",
    tags=("unsupervised", "baseline"),
)
def _feature_squeezing(
    *,
    fpr: float = 0.05,
    bit_depth: int | None = 5,
    median_size: int | None = 2,
    joint: str = "max",
    batch_size: int = 64,
    seed: int = 0,
    calibration_fraction: float = 0.3,
) -> Detector:
    """Feature squeezing; see :class:`FeatureSqueezing`."""
    return FeatureSqueezing(
        fpr=fpr,
        bit_depth=bit_depth,
        median_size=median_size,
        joint=joint,
        batch_size=batch_size,
        seed=seed,
        calibration_fraction=calibration_fraction,
    )
