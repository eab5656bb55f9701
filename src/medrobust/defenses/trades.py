"""TRADES (Zhang et al.): clean cross-entropy plus a KL term between clean and adversarial
predictions, the adversarial point maximising that KL."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.engine import GradientAttack
from medrobust.attacks.objectives.base import Objective, ObjectiveOutput, Target
from medrobust.defenses.base import AdversarialRecipe, check_count, check_eps, check_weight
from medrobust.defenses.recipes import RECIPES, Recipe
from medrobust.models.adapter import ModelAdapter

__all__ = ["CleanKL", "TRADESRecipe"]


class CleanKL(Objective):
    """``KL(p(x) || p(x'))`` between the clean and the current prediction (to maximise).

    :meth:`prepare` stores the clean softmax ``p(x)`` as the per-sample target; success means the
    predicted class differs from the clean prediction.

    Shape:
        - target: ``(B, K)`` clean probabilities; loss ``(B,)``.

    References:
        Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
        ICML 2019.
    """

    name = "clean-kl"
    tasks = ("classification",)

    def prepare(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> Target:
        """The clean probabilities ``(B, K)`` (no gradient)."""
        with torch.no_grad():
            return F.softmax(model(x), dim=1).detach()

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        if isinstance(target, dict):
            raise TypeError("the clean-KL objective expects the clean probabilities as target")
        z = model(x)
        logp = F.log_softmax(z, dim=1)
        p0 = target
        kl = (p0 * (torch.log(p0.clamp_min(1e-12)) - logp)).sum(dim=1)
        pred = z.argmax(dim=1)
        return ObjectiveOutput(kl, (pred != p0.argmax(dim=1)).detach(), pred.detach(), z)


class TRADESRecipe(AdversarialRecipe):
    """TRADES: ``CE(f(x), y) + beta * KL(p(x) || p(x'))`` with ``x'`` maximising the KL in the ball.

    The inner maximisation is the engine's PGD on :class:`CleanKL` (the clean prediction taken in
    eval mode, as the attack runs in eval mode), from a uniformly random start in the ball (the
    reference code starts from ``x + 0.001 * N(0, 1)``). The outer KL uses the training-mode
    clean prediction, as in the reference code. Class weights (``TrainConfig.class_weights``)
    weight the natural cross-entropy only; the KL term is unweighted.

    Args:
        eps: Training budget.
        steps: Steps of the inner maximisation (10 in the reference setting).
        step_size: Step size; default ``eps / 4``.
        beta: Weight of the robustness term (6 in the reference CIFAR setting).
        norm: ``"linf"`` or ``"l2"``.

    Shape:
        - batch["image"]: ``(B, C, *spatial)``; batch["label"]: ``(B,)``.

    References:
        Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
        ICML 2019.
    """

    name: ClassVar[str] = "trades"
    supports_class_weights: ClassVar[bool] = True

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        steps: int = 10,
        step_size: float | None = None,
        beta: float = 6.0,
        norm: str = "linf",
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        self.steps = check_count("steps", steps)
        self.step_size = self.eps / 4 if step_size is None else check_eps("step_size", step_size)
        self.beta = check_weight("beta", beta)
        self._attack: GradientAttack | None = None

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Build the KL attack; see :class:`Recipe`.

        Raises:
            ValueError: If the model is not a classifier.
        """
        super().setup(model, generator=generator)
        self._attack = GradientAttack(
            objective=CleanKL(),
            norm=self.norm,
            eps=self.eps,
            steps=self.steps,
            step_size=self.step_size,
            random_start=True,
            early_stop=False,
            keep_best=False,
            need_success=False,
            name="trades-kl",
        )
        self._attack.check_clean = False

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The TRADES loss; logs clean ``accuracy``, ``adv_accuracy`` and the mean ``kl``."""
        if self._attack is None:
            raise RuntimeError("TRADESRecipe.setup must be called before loss")
        x, y = batch["image"], batch["label"]
        x_adv = self.craft(self._attack, model, x, y)
        logits = model(x)
        logits_adv = model(x_adv)
        natural = F.cross_entropy(logits, y, weight=self.ce_weight(logits))
        kl = F.kl_div(
            F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean"
        )
        stats = {
            "accuracy": float((logits.detach().argmax(1) == y).float().mean()),
            "adv_accuracy": float((logits_adv.detach().argmax(1) == y).float().mean()),
            "kl": float(kl.detach()),
        }
        return natural + self.beta * kl, stats


@RECIPES.register(
    "trades",
    summary="TRADES (Zhang et al.): clean CE + beta * KL(clean || adversarial) (classification)",
    tags=("classification", "adversarial"),
)
def _trades(
    *,
    eps: float = 8 / 255,
    steps: int = 10,
    step_size: float | None = None,
    beta: float = 6.0,
    norm: str = "linf",
) -> Recipe:
    """TRADES; see :class:`TRADESRecipe`."""
    return TRADESRecipe(eps=eps, steps=steps, step_size=step_size, beta=beta, norm=norm)
