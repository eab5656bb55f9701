"""The example record a report shows: one clean/adversarial pair (a plain, numpy-only type that
the audits produce and the reports read)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ExampleImages", "ExplanationExample", "SegmentationExample"]


def _as_image_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor without importing torch
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(value).__name__}")
    if value.ndim not in (3, 4):
        raise ValueError(
            f"{name} must be channel-first (C, H, W) or (C, H, W, D), got shape {value.shape}"
        )
    if value.size == 0:
        raise ValueError(f"{name} is empty: shape {value.shape}")
    if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
    arr = value.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


@dataclasses.dataclass
class ExampleImages:
    """One clean/adversarial pair to show in a report.

    Attributes:
        clean: The clean input, channel first: ``(C, H, W)`` or ``(C, H, W, D)``.
        adversarial: The adversarial input, same shape as ``clean``.
        label: True class index.
        clean_pred: Predicted class of the clean input.
        adv_pred: Predicted class of the adversarial input.
        attack: Name of the attack that produced ``adversarial``.
        eps: Budget of the attack, in the model's input space.
        id: Identifier of the sample (file name, index); may be empty.
        class_names: Names of the classes, indexable by class index; may be empty (indices are
            shown instead).
        eps_display: How to print ``eps`` (e.g. ``"8/255"``); empty for a plain number.

    Torch tensors are accepted for ``clean`` and ``adversarial`` and converted to numpy arrays.

    Raises:
        ValueError: If the arrays differ in shape, are not 3-D or 4-D, are empty or not finite.
        TypeError: If a field has the wrong type.
    """

    clean: np.ndarray
    adversarial: np.ndarray
    label: int
    clean_pred: int
    adv_pred: int
    attack: str
    eps: float
    id: str = ""
    class_names: Sequence[str] = ()
    eps_display: str = ""

    def __post_init__(self) -> None:
        self.clean = _as_image_array(self.clean, "clean")
        self.adversarial = _as_image_array(self.adversarial, "adversarial")
        if self.clean.shape != self.adversarial.shape:
            raise ValueError(
                f"example {self.id!r}: clean and adversarial images must have the same shape, got "
                f"{self.clean.shape} and {self.adversarial.shape}"
            )
        for name in ("label", "clean_pred", "adv_pred"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"example {self.id!r}: {name} must be an int, got {value!r}")
            setattr(self, name, int(value))
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float, np.floating)):
            raise TypeError(f"example {self.id!r}: eps must be a number, got {self.eps!r}")
        self.eps = float(self.eps)
        self.attack = str(self.attack)
        self.id = str(self.id)
        self.eps_display = str(self.eps_display)
        if isinstance(self.class_names, str):
            raise TypeError("class_names must be a sequence of strings, not one string")
        self.class_names = tuple(str(c) for c in self.class_names)

    def class_name(self, index: int) -> str:
        """The name of class ``index``, or the index itself when no name is known."""
        if 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)


@dataclasses.dataclass
class SegmentationExample:
    """One sample shown in the overlays figure.

    Attributes:
        image: Clean image ``(C, *spatial)``.
        adversarial: Adversarial image ``(C, *spatial)``.
        mask: True mask ``(*spatial)``.
        clean_pred: Prediction on the clean image.
        adv_pred: Prediction on the adversarial image.
        title: Row label (id, attack, budget).
        target: Target mask of a targeted attack, or None.
    """

    image: np.ndarray
    adversarial: np.ndarray
    mask: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    title: str = ""
    target: np.ndarray | None = None


@dataclasses.dataclass
class ExplanationExample:
    """One attacked sample for the overlay figure.

    Attributes:
        image: The clean input, channel first ``(C, *spatial)``.
        mask: Binary lesion mask ``(*spatial)``, or None.
        label: True class.
        clean_pred: Predicted class of the clean input (the explained class).
        id: Identifier of the sample ("" when unknown).
        clean_map: Clean Grad-CAM map ``(*spatial)`` (sum-normalised).
        attacked: One record per (attack, budget): ``attack``, ``eps``, ``map`` (array),
            ``adv_pred``, ``success``, ``topk_intersection``.
        index: Position of the sample in the data set (-1 when unknown).
    """

    image: np.ndarray
    mask: np.ndarray | None
    label: int
    clean_pred: int
    id: str
    clean_map: np.ndarray
    attacked: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    index: int = -1
