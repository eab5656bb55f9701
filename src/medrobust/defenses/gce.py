"""Guided complement entropy (Chen et al. 2019), the loss-based baseline of Li, Pan & Zhu."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.defenses.recipes import RECIPES, Recipe
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Task

__all__ = ["GCERecipe", "guided_complement_entropy"]

_TINY = 1e-12


def guided_complement_entropy(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float
) -> torch.Tensor:
    """The guided complement entropy loss (mean over the batch).

    With ``p = softmax(z)``, ``g`` the true class and ``q_j = p_j / (1 - p_g)`` for ``j != g``:

        ``L = mean_n p_g^alpha * (1 / log(K - 1)) * sum_{j != g} q_j log q_j``

    ``sum q log q`` is minus the entropy of the complement distribution, so minimising ``L``
    flattens the wrong classes' probabilities, weighted by the guide factor ``p_g^alpha``
    (which also pushes ``p_g`` up, as the entropy term is negative). ``L`` lies in ``[-1, 0]``.

    Args:
        logits: ``(B, K)`` with ``K >= 3``.
        labels: ``(B,)`` class indices.
        alpha: Guide exponent ``> 0`` (0.2 in Chen et al.; 0.333 in the SSAT notebook).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: For fewer than 3 classes (the complement of the true class is then one
            class, whose entropy is always 0) or mismatched shapes.

    Shape:
        - logits: ``(B, K)``; labels: ``(B,)``.

    References:
        Chen et al., "Improving Adversarial Robustness via Guided Complement Entropy",
        ICCV 2019.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"logits must be (B, K) and labels (B,), got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    k = logits.shape[1]
    if k < 3:
        raise ValueError(
            f"guided complement entropy needs at least 3 classes, got {k}: with 2 the "
            "complement of the true class is a single class whose entropy is always 0, so "
            "the loss has no gradient"
        )
    p = F.softmax(logits, dim=1)
    pg = p.gather(1, labels[:, None]).squeeze(1)
    q = p / (1.0 - pg)[:, None].clamp_min(_TINY)
    others = ~F.one_hot(labels, k).bool()
    neg_entropy = (q * torch.log(q.clamp_min(_TINY)) * others).sum(dim=1)
    return (pg.clamp_min(_TINY) ** alpha * neg_entropy / math.log(k - 1)).mean()


class GCERecipe(Recipe):
    """Training with the guided complement entropy as the only objective (no adversarial
    examples): a loss-based defence that Li, Pan & Zhu compared SSAT with.

    Args:
        alpha: Guide exponent (0.333, as in the SSAT notebook's commented-out criterion).

    Raises:
        ValueError: At setup, for a model with fewer than 3 classes or another task.

    Shape:
        - batch["image"]: ``(B, C, *spatial)``; batch["label"]: ``(B,)``.

    References:
        Chen et al., ICCV 2019; Li, Pan & Zhu, arXiv:2006.13555, 2020.
    """

    name: ClassVar[str] = "gce"

    def __init__(self, *, alpha: float = 0.333) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha must be a number, got {type(alpha).__name__} {alpha!r}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        self.alpha = float(alpha)

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Check the task and the class count; see :class:`Recipe`.

        Raises:
            ValueError: For a model that is not a classifier or has fewer than 3 classes.
        """
        super().setup(model, generator=generator)
        if model.task is not Task.CLASSIFICATION:
            raise ValueError(f"recipe 'gce' trains classifiers, got task {model.task.value!r}")
        if model.num_classes < 3:
            raise ValueError(
                f"recipe 'gce' needs at least 3 classes, the model has {model.num_classes}: "
                "with 2 the complement entropy is always 0 and gives no gradient (Kermany OCT "
                "has 4 classes; for a binary task use another recipe)"
            )

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The guided complement entropy of the clean batch; logs ``accuracy``."""
        logits = model(batch["image"])
        labels = batch["label"]
        loss = guided_complement_entropy(logits, labels, self.alpha)
        return loss, {"accuracy": float((logits.detach().argmax(1) == labels).float().mean())}


@RECIPES.register(
    "gce",
    summary="Guided complement entropy (Chen et al.): flatten the wrong classes, no "
    "adversarial examples (classification, >= 3 classes)",
    tags=("classification", "multiclass"),
)
def _gce(*, alpha: float = 0.333) -> Recipe:
    """Guided complement entropy training; see :class:`GCERecipe`."""
    return GCERecipe(alpha=alpha)
