"""Shared parts of the adversarial-training recipes: budget validation, per-step attack seeds and
crafting through the attack engine.

Every recipe crafts its adversarial examples with the one attack engine
(:class:`~medrobust.attacks.GradientAttack`, usually built by
:func:`~medrobust.attacks.create_attack`), which runs the model in eval mode, differentiates with
respect to the input only and restores every submodule's mode afterwards. So BatchNorm statistics
are frozen while an attack is crafted, and the parameters' gradients are never touched.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from medrobust.attacks.engine import Attack
from medrobust.defenses.recipes import Recipe
from medrobust.models.adapter import ModelAdapter
from medrobust.types import Norm, Task

__all__ = ["AdversarialRecipe", "check_count", "check_eps", "check_weight"]


def check_eps(name: str, value: Any) -> float:
    """Validate a positive finite budget.

    Raises:
        TypeError: If ``value`` is not a number.
        ValueError: If it is not finite and > 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """Validate an integer count ``>= minimum``.

    Raises:
        TypeError: If ``value`` is not an int.
        ValueError: If it is smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_weight(name: str, value: Any) -> float:
    """Validate a non-negative finite weight.

    Raises:
        TypeError: If ``value`` is not a number.
        ValueError: If it is negative or not finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class AdversarialRecipe(Recipe):
    """Base of the adversarial-training recipes.

    Subclasses build their attack in :meth:`setup` (through the attack engine) and call
    :meth:`craft` in :meth:`loss`. Each crafted batch gets its own attack seed drawn from the
    recipe's seeded generator, so random starts differ from step to step yet a run (and a resumed
    run) is reproducible.

    Args:
        eps: Training budget in the model's input space.
        norm: ``"linf"`` or ``"l2"``.
    """

    supported_tasks: ClassVar[tuple[Task, ...]] = (Task.CLASSIFICATION,)

    def __init__(self, *, eps: float, norm: str) -> None:
        super().__init__()
        self.eps = check_eps("eps", eps)
        self.norm = Norm.parse(norm)

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Check that the recipe supports the model's task; see :class:`Recipe`.

        Raises:
            ValueError: If the model's task is not supported by the recipe.
        """
        super().setup(model, generator=generator)
        if model.task not in self.supported_tasks:
            supported = ", ".join(t.value for t in self.supported_tasks)
            raise ValueError(
                f"recipe {self.name!r} supports {supported} models, but the model's task is "
                f"{model.task.value!r}"
            )

    def next_seed(self) -> int:
        """A fresh attack seed drawn from the recipe's generator.

        Raises:
            RuntimeError: If :meth:`setup` has not been called.
        """
        if self.generator is None:
            raise RuntimeError(f"recipe {self.name!r}: setup() must be called before loss()")
        gen = self.generator
        return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())

    def craft(
        self, attack: Attack, model: ModelAdapter, images: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """Adversarial examples of a batch from ``attack`` (run by the engine in eval mode).

        Args:
            attack: An engine attack (its seed is replaced by a fresh one for this batch).
            model: The model being trained.
            images: Clean batch ``(B, C, *spatial)``.
            target: Labels ``(B,)`` (or masks ``(B, *spatial)`` for segmentation attacks).

        Returns:
            Detached adversarial images with the shape of ``images``.
        """
        attack.seed = self.next_seed()
        return attack(model, images.detach(), target.detach()).x_adv.detach()
