"""PGD adversarial training (Madry et al.), for classification and segmentation."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medrobust.attacks.engine import Attack
from medrobust.attacks.presets import create_attack
from medrobust.defenses.base import AdversarialRecipe, check_count, check_eps, check_weight
from medrobust.defenses.recipes import RECIPES, Recipe, StandardRecipe
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Task

__all__ = ["PGDATRecipe"]


class PGDATRecipe(AdversarialRecipe):
    """Madry et al.'s min-max training: each batch is replaced by its PGD adversarial examples.

    The inner maximisation is the engine's PGD with a random start and no early stopping on the
    cross-entropy: the ``"pgd"`` preset for classifiers, ``"pgd-seg"`` (pixel-wise
    cross-entropy against the true mask) for segmenters; the
    outer loss is the standard recipe's loss (cross-entropy, or Dice + cross-entropy for
    segmentation) on the adversarial batch, optionally mixed with the clean batch.

    Args:
        eps: Training budget (default 8/255 as in Madry et al.'s CIFAR setting).
        steps: PGD steps (7 as in Madry et al.).
        step_size: Step size; default ``eps / 4`` (2/255 for 8/255).
        norm: ``"linf"`` or ``"l2"``.
        random_start: Start from a uniformly random point of the ball.
        clean_weight: Weight ``w`` in ``[0, 1]`` of the clean loss:
            ``(1 - w) * L(x_adv) + w * L(x)``; 0 is pure adversarial training.

    Shape:
        - batch["image"]: ``(B, C, *spatial)``; batch["label"]: ``(B,)``;
          batch["mask"] (segmentation): ``(B, *spatial)``.

    References:
        Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
    """

    name: ClassVar[str] = "pgd-at"
    supports_class_weights: ClassVar[bool] = True
    supported_tasks: ClassVar[tuple[Task, ...]] = (Task.CLASSIFICATION, Task.SEGMENTATION)

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        steps: int = 7,
        step_size: float | None = None,
        norm: str = "linf",
        random_start: bool = True,
        clean_weight: float = 0.0,
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        self.steps = check_count("steps", steps)
        self.step_size = self.eps / 4 if step_size is None else check_eps("step_size", step_size)
        self.random_start = bool(random_start)
        self.clean_weight = check_weight("clean_weight", clean_weight)
        if self.clean_weight > 1:
            raise ValueError(f"clean_weight must be in [0, 1], got {clean_weight}")
        self._criterion = StandardRecipe()
        self._attack: Attack | None = None

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Build the PGD attack and the outer loss for the model's task; see :class:`Recipe`.

        Raises:
            ValueError: If the model is neither a classifier nor a segmenter.
        """
        super().setup(model, generator=generator)
        self._criterion.class_weights = self.class_weights
        self._criterion.setup(model, generator=generator)
        self._attack = create_attack(
            "pgd-seg" if model.task is Task.SEGMENTATION else "pgd",
            eps=self.eps,
            norm=self.norm.value,
            steps=self.steps,
            step_size=self.step_size,
            random_start=self.random_start,
            objective="ce",
            early_stop=False,
            keep_best=False,
            need_success=False,
        )
        self._attack.check_clean = False

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The (mixed) loss of the PGD adversarial batch; logs ``adv_accuracy`` for classifiers."""
        if self._attack is None:
            raise RuntimeError("PGDATRecipe.setup must be called before loss")
        seg = model.task is Task.SEGMENTATION
        key = "mask" if seg else "label"
        x_adv = self.craft(self._attack, model, batch["image"], batch[key])
        adv_loss, adv_stats = self._criterion.loss(
            model, {**batch, "image": x_adv}, step=step, epoch=epoch
        )
        stats: dict[str, float] = {}
        if "accuracy" in adv_stats:
            stats["adv_accuracy"] = adv_stats["accuracy"]
        if self.clean_weight == 0:
            return adv_loss, stats
        clean_loss, clean_stats = self._criterion.loss(model, batch, step=step, epoch=epoch)
        if "accuracy" in clean_stats:
            stats["accuracy"] = clean_stats["accuracy"]
        w = self.clean_weight
        return (1 - w) * adv_loss + w * clean_loss, stats


@RECIPES.register(
    "pgd-at",
    summary="PGD adversarial training (Madry et al.): train on PGD examples (classification, "
    "segmentation)",
    tags=("classification", "segmentation", "adversarial"),
)
def _pgd_at(
    *,
    eps: float = 8 / 255,
    steps: int = 7,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    clean_weight: float = 0.0,
) -> Recipe:
    """PGD adversarial training; see :class:`PGDATRecipe`."""
    return PGDATRecipe(
        eps=eps,
        steps=steps,
        step_size=step_size,
        norm=norm,
        random_start=random_start,
        clean_weight=clean_weight,
    )
