"""Supervised FGSM adversarial training, the "AT" baseline of Li, Pan & Zhu's notebook."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from medrobust.attacks.engine import Attack
from medrobust.attacks.presets import create_attack
from medrobust.defenses.base import AdversarialRecipe, check_eps
from medrobust.defenses.recipes import RECIPES, Recipe
from medrobust.models.adapter import ModelAdapter

__all__ = ["FGSMATRecipe", "uniform_budget"]


def uniform_budget(eps: float, eps_min: float | None, generator: torch.Generator | None) -> float:
    """``eps``, or a budget drawn uniformly from ``[eps_min, eps]`` with ``generator``.

    Raises:
        RuntimeError: If a draw is needed and no generator is given (setup not called).
    """
    if eps_min is None or eps_min == eps:
        return eps
    if generator is None:
        raise RuntimeError("setup() must be called before loss()")
    u = float(torch.rand((1,), generator=generator, device=generator.device).item())
    return eps_min + (eps - eps_min) * u


class FGSMATRecipe(AdversarialRecipe):
    """Supervised FGSM adversarial training on the labelled batch, concatenated with it.

    Each step crafts ``x' = clip(x + eps * sign grad_x CE(f(x), y))`` against the true labels
    (the engine's ``fgsm``, from the clean point, no random start) and minimises the
    cross-entropy of the concatenated batch ``[x; x']`` with labels ``[y; y]``, i.e. the mean
    of the clean and the adversarial cross-entropy. As in the reference notebook the budget is
    drawn once per step from ``U(eps_min, eps)`` (``U(0.001, 0.003)`` on ``[0, 1]`` by default);
    ``eps_min=None`` fixes it at ``eps``. The notebook crafts in training mode; the engine runs
    the model in eval mode (BatchNorm frozen while crafting), as for every recipe here.

    Args:
        eps: Budget (the upper end of the range when ``eps_min`` is set).
        eps_min: Lower end of a per-step uniform budget, or None for a fixed ``eps``.
        norm: ``"linf"`` or ``"l2"``.

    Shape:
        - batch["image"]: ``(B, C, *spatial)``; batch["label"]: ``(B,)``.

    References:
        Li, Pan & Zhu, arXiv:2006.13555, 2020 (the commented-out AT baseline of the SSAT
        notebook); Goodfellow, Shlens & Szegedy, ICLR 2015 (FGSM adversarial training).
    """

    name: ClassVar[str] = "fgsm-at"
    supports_class_weights: ClassVar[bool] = True

    def __init__(
        self, *, eps: float = 0.003, eps_min: float | None = 0.001, norm: str = "linf"
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        self.eps_min = None if eps_min is None else check_eps("eps_min", eps_min)
        if self.eps_min is not None and self.eps_min > self.eps:
            raise ValueError(f"eps_min ({eps_min}) must not exceed eps ({eps})")

    def build_attack(self, eps: float) -> Attack:
        """One signed-gradient step of size ``eps`` from the clean point for every row (the
        engine's one-step PGD without random start, early stop or best-iterate choice, so a
        row misclassified already is perturbed too, as advertorch's FGSM does)."""
        attack = create_attack(
            "pgd",
            eps=eps,
            norm=self.norm.value,
            steps=1,
            step_size=eps,
            random_start=False,
            early_stop=False,
            keep_best=False,
            need_success=False,
        )
        attack.check_clean = False
        return attack

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy of ``[x; x']``; logs the clean ``accuracy`` and ``adv_accuracy``."""
        x, y = batch["image"], batch["label"]
        eps = uniform_budget(self.eps, self.eps_min, self.generator)
        x_adv = self.craft(self.build_attack(eps), model, x, y)
        logits = model(torch.cat([x, x_adv]))
        loss = F.cross_entropy(logits, torch.cat([y, y]), weight=self.ce_weight(logits))
        pred = logits.detach().argmax(dim=1)
        b = x.shape[0]
        return loss, {
            "accuracy": float((pred[:b] == y).float().mean()),
            "adv_accuracy": float((pred[b:] == y).float().mean()),
        }


@RECIPES.register(
    "fgsm-at",
    summary="Supervised FGSM AT (Li, Pan & Zhu's baseline): CE of the clean batch "
    "concatenated with its FGSM examples, budget ~ U(eps_min, eps) (classification)",
    tags=("classification", "adversarial"),
)
def _fgsm_at(*, eps: float = 0.003, eps_min: float | None = 0.001, norm: str = "linf") -> Recipe:
    """Supervised FGSM adversarial training; see :class:`FGSMATRecipe`."""
    return FGSMATRecipe(eps=eps, eps_min=eps_min, norm=norm)
