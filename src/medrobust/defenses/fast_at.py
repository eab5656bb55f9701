"""Fast adversarial training (Wong, Rice & Kolter): FGSM from a random start, with a guard
against catastrophic overfitting."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.attacks.engine import Attack
from medrobust.attacks.presets import create_attack
from medrobust.defenses.base import AdversarialRecipe, check_count, check_eps, check_weight
from medrobust.defenses.recipes import RECIPES, Recipe
from medrobust.models.adapter import ModelAdapter

__all__ = ["FastATRecipe"]

logger = logging.getLogger(__name__)

_STATE_KEYS = frozenset(
    {"probe_images", "probe_labels", "best_probe", "fallen_back", "overfit_step", "checks"}
)


class FastATRecipe(AdversarialRecipe):
    """ "Fast is better than free": one FGSM step of size ``alpha`` from a uniformly random start.

    **Guard against catastrophic overfitting.** A fixed probe batch (the first ``guard_samples``
    training images) is attacked with PGD-``guard_steps`` at the first step and then every
    ``guard_every`` steps (a step count rather than once per epoch, so the guard's cost does not
    depend on the epoch length; about 10% of the training cost with the defaults). Catastrophic
    overfitting shows as PGD accuracy collapsing while FGSM accuracy stays high; when the
    probe's PGD accuracy falls more than ``guard_drop`` below the best value seen so far (the
    criterion of Wong et al.'s early stop), the recipe
    switches for the rest of the run to PGD-``fallback_steps`` with a random start, so training
    continues on examples that FGSM's collapse cannot fool. The event (step, accuracies) is kept
    in the recipe state and logged as a warning.

    Args:
        eps: Training budget.
        step_size: FGSM step ``alpha``; default ``1.25 * eps`` (Wong et al.).
        norm: ``"linf"`` or ``"l2"``.
        guard: Enable the guard.
        guard_steps: PGD steps of the probe attack.
        guard_samples: Size of the fixed probe batch.
        guard_drop: Drop of probe PGD accuracy (absolute) that signals overfitting.
        guard_every: Check every this many optimisation steps (>= 1).
        fallback_steps: PGD steps used after overfitting was detected.

    Shape:
        - batch["image"]: ``(B, C, *spatial)``; batch["label"]: ``(B,)``.

    References:
        Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training",
        ICLR 2020.
    """

    name: ClassVar[str] = "fast-at"
    supports_class_weights: ClassVar[bool] = True

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        step_size: float | None = None,
        norm: str = "linf",
        guard: bool = True,
        guard_steps: int = 5,
        guard_samples: int = 16,
        guard_drop: float = 0.2,
        guard_every: int = 20,
        fallback_steps: int = 3,
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        self.step_size = 1.25 * self.eps if step_size is None else check_eps("step_size", step_size)
        self.guard = bool(guard)
        self.guard_steps = check_count("guard_steps", guard_steps)
        self.guard_samples = check_count("guard_samples", guard_samples)
        self.guard_drop = check_weight("guard_drop", guard_drop)
        if not 0 < self.guard_drop <= 1:
            raise ValueError(f"guard_drop must be in (0, 1], got {guard_drop}")
        self.guard_every = check_count("guard_every", guard_every)
        self.fallback_steps = check_count("fallback_steps", fallback_steps)
        self._attack: Attack | None = None
        self._probe_attack: Attack | None = None
        self.probe: tuple[torch.Tensor, torch.Tensor] | None = None
        self.best_probe = -1.0
        self.fallen_back = False
        self.overfit_step: int | None = None
        self.checks: list[list[float]] = []

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Build the FGSM-with-random-start attack and the probe; see :class:`Recipe`.

        Raises:
            ValueError: If the model is not a classifier.
        """
        super().setup(model, generator=generator)
        self._attack = self._fgsm() if not self.fallen_back else self._fallback()
        self._probe_attack = create_attack(
            "pgd", eps=self.eps, norm=self.norm.value, steps=self.guard_steps, seed=0
        )

    def _fgsm(self) -> Attack:
        attack = create_attack(
            "pgd",
            eps=self.eps,
            norm=self.norm.value,
            steps=1,
            step_size=self.step_size,
            random_start=True,
            early_stop=False,
            keep_best=False,
            need_success=False,
        )
        attack.check_clean = False
        return attack

    def _fallback(self) -> Attack:
        attack = create_attack(
            "pgd",
            eps=self.eps,
            norm=self.norm.value,
            steps=self.fallback_steps,
            random_start=True,
            early_stop=False,
            keep_best=False,
            need_success=False,
        )
        attack.check_clean = False
        return attack

    def probe_accuracy(self, model: ModelAdapter) -> float:
        """PGD robust accuracy of the probe batch (the engine runs in eval mode).

        Raises:
            RuntimeError: Before the first training step (no probe batch yet).
        """
        if self.probe is None or self._probe_attack is None:
            raise RuntimeError("the probe batch is taken at the first training step")
        x, y = self.probe
        res = self._probe_attack(model, x, y)
        return float((~res.success).float().mean())

    def _check(self, model: ModelAdapter, step: int, epoch: int) -> None:
        acc = self.probe_accuracy(model)
        self.checks.append([float(step), float(epoch), acc])
        if (
            not self.fallen_back
            and self.best_probe >= 0
            and acc < self.best_probe - self.guard_drop
        ):
            self.fallen_back = True
            self.overfit_step = step
            self._attack = self._fallback()
            logger.warning(
                "fast-at: catastrophic overfitting detected at step %d (probe PGD accuracy %.3f, "
                "best %.3f); switching to PGD-%d for the rest of training",
                step,
                acc,
                self.best_probe,
                self.fallback_steps,
            )
        self.best_probe = max(self.best_probe, acc)

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of the FGSM (or, after a guard event, PGD) batch; logs ``adv_accuracy``."""
        if self._attack is None:
            raise RuntimeError("FastATRecipe.setup must be called before loss")
        x, y = batch["image"], batch["label"]
        if self.guard:
            if self.probe is None:
                n = min(self.guard_samples, x.shape[0])
                self.probe = (x[:n].detach().clone(), y[:n].detach().clone())
            if step % self.guard_every == 0:
                self._check(model, step, epoch)
        x_adv = self.craft(self._attack, model, x, y)
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y, weight=self.ce_weight(logits))
        return loss, {"adv_accuracy": float((logits.detach().argmax(1) == y).float().mean())}

    def state_dict(self) -> dict[str, Any]:
        """The probe batch and the guard's history (tensors and plain values)."""
        return {
            "probe_images": None if self.probe is None else self.probe[0].cpu(),
            "probe_labels": None if self.probe is None else self.probe[1].cpu(),
            "best_probe": self.best_probe,
            "fallen_back": self.fallen_back,
            "overfit_step": self.overfit_step,
            "checks": [list(c) for c in self.checks],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ValueError: If ``state`` holds unknown entries.
        """
        unknown = sorted(set(state) - _STATE_KEYS)
        if unknown:
            raise ValueError(f"recipe 'fast-at' does not know the state entries {unknown}")
        images, labels = state.get("probe_images"), state.get("probe_labels")
        device = self.generator.device if self.generator is not None else torch.device("cpu")
        if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
            self.probe = (images.to(device), labels.to(device))
        self.best_probe = float(state.get("best_probe", -1.0))
        self.fallen_back = bool(state.get("fallen_back", False))
        overfit = state.get("overfit_step")
        self.overfit_step = None if overfit is None else int(overfit)
        self.checks = [list(map(float, c)) for c in state.get("checks", [])]
        if self.fallen_back:
            self._attack = self._fallback()


@RECIPES.register(
    "fast-at",
    summary="Fast AT (Wong et al.): FGSM from a random start, guarded against catastrophic "
    "overfitting (classification)",
    tags=("classification", "adversarial"),
)
def _fast_at(
    *,
    eps: float = 8 / 255,
    step_size: float | None = None,
    norm: str = "linf",
    guard: bool = True,
    guard_steps: int = 5,
    guard_samples: int = 16,
    guard_drop: float = 0.2,
    guard_every: int = 20,
    fallback_steps: int = 3,
) -> Recipe:
    """Fast adversarial training; see :class:`FastATRecipe`."""
    return FastATRecipe(
        eps=eps,
        step_size=step_size,
        norm=norm,
        guard=guard,
        guard_steps=guard_steps,
        guard_samples=guard_samples,
        guard_drop=guard_drop,
        guard_every=guard_every,
        fallback_steps=fallback_steps,
    )
