"""Semi-supervised adversarial training (SSAT, Li, Pan & Zhu): a labelled and an unlabelled
stream; adversarial examples on the unlabelled batch against the model's own pseudo-labels."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medrobust._utils.dist import current_shard, shard_rows
from medrobust.attacks.engine import Attack
from medrobust.attacks.presets import create_attack
from medrobust.defenses.base import AdversarialRecipe, check_count, check_eps, check_weight
from medrobust.defenses.data import UnlabelledStream
from medrobust.defenses.recipes import RECIPES, Recipe
from medrobust.models.adapter import ModelAdapter

__all__ = ["SSATRecipe"]

_ATTACKS = ("fgsm", "pgd")


class SSATRecipe(AdversarialRecipe):
    """SSAT: ``L = CE(f(x_l), y_l) + lam * CE(f(x_u'), y_hat_u)``.

    Per step a labelled batch ``(x_l, y_l)`` comes from the training loader and a fresh random
    unlabelled batch ``x_u`` from the unlabelled stream (seeded by the recipe's generator). The
    pseudo-labels ``y_hat_u = argmax f(x_u)`` are the model's own clean predictions; with a
    confidence ``threshold`` only pseudo-labels whose softmax confidence reaches it count (the
    unlabelled term is ``sum(mask * CE) / B_u``, so the weight shrinks with fewer confident
    samples). The pseudo-labels come from a training-mode forward pass, as in the reference code
    (see :meth:`pseudo_labels`); ``x_u'`` is crafted against them by the engine (FGSM, or PGD
    with a random start), which runs the model in eval mode, so BatchNorm is frozen while the
    attack is crafted (the reference crafts in training mode).

    The budget is ``eps``, or, with ``eps_min``, drawn uniformly from ``[eps_min, eps]`` once per
    step as in the reference code (``U(0.001, 0.003)`` on ``[0, 1]``, the default here).
    Class weights (``TrainConfig.class_weights``) weight the supervised cross-entropy only.

    Args:
        eps: Budget (the upper end of the range when ``eps_min`` is set).
        eps_min: Lower end of a per-step uniform budget, or None for a fixed ``eps``.
        attack: ``"fgsm"`` (the reference) or ``"pgd"``.
        steps: PGD steps (``attack="pgd"`` only).
        step_size: PGD step size; default ``eps / 4``.
        lam: Weight ``lambda`` of the unlabelled adversarial term (3 in the reference).
        threshold: Pseudo-label confidence threshold in ``[0, 1)``; 0 keeps every pseudo-label.
        unlabelled_batch_size: Unlabelled images per step (over all processes of a
            distributed run, each taking its share); default the labelled batch size.
        warmup_steps: Ramp ``lambda`` up linearly from 0 over this many steps (0: the full weight
            from the first step, as in the reference code, which starts from an
            ImageNet-pretrained network). Trained from scratch, the pseudo-labels of the first
            steps are noise, and a full weight can lock the model into one class; a ramp-up
            (Laine & Aila, ICLR 2017) avoids that.
        norm: ``"linf"`` or ``"l2"``.

    Shape:
        - batch["image"]: ``(B, C, *spatial)``; batch["label"]: ``(B,)``; unlabelled batch
          ``(B_u, C, *spatial)``.

    References:
        Li, Pan & Zhu, "Defending against adversarial attacks on medical imaging AI system,
        classification or detection?", arXiv:2006.13555, 2020.
    """

    name: ClassVar[str] = "ssat"
    supports_class_weights: ClassVar[bool] = True
    uses_unlabelled: ClassVar[bool] = True

    def __init__(
        self,
        *,
        eps: float = 0.003,
        eps_min: float | None = 0.001,
        attack: str = "fgsm",
        steps: int = 7,
        step_size: float | None = None,
        lam: float = 3.0,
        threshold: float = 0.0,
        unlabelled_batch_size: int | None = None,
        warmup_steps: int = 0,
        norm: str = "linf",
    ) -> None:
        super().__init__(eps=eps, norm=norm)
        self.warmup_steps = check_count("warmup_steps", warmup_steps, minimum=0)
        self.eps_min = None if eps_min is None else check_eps("eps_min", eps_min)
        if self.eps_min is not None and self.eps_min > self.eps:
            raise ValueError(f"eps_min ({eps_min}) must not exceed eps ({eps})")
        if not isinstance(attack, str) or attack.strip().lower() not in _ATTACKS:
            raise ValueError(f"attack must be one of {list(_ATTACKS)}, got {attack!r}")
        self.attack = attack.strip().lower()
        self.steps = check_count("steps", steps)
        self.step_size = None if step_size is None else check_eps("step_size", step_size)
        self.lam = check_weight("lam", lam)
        self.threshold = check_weight("threshold", threshold)
        if self.threshold >= 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        self.unlabelled_batch_size = (
            None
            if unlabelled_batch_size is None
            else check_count("unlabelled_batch_size", unlabelled_batch_size)
        )
        self.stream: UnlabelledStream | None = None

    def set_unlabelled(self, data: Dataset[Any]) -> None:
        """Receive the unlabelled images (their labels, if any, are never read).

        Raises:
            ValueError: If the data set is empty.
            TypeError: If it is not a map-style data set.
        """
        self.stream = UnlabelledStream(data)

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Check the task and that an unlabelled stream was given; see :class:`Recipe`.

        Raises:
            ValueError: If the model is not a classifier or no unlabelled data was given.
        """
        super().setup(model, generator=generator)
        if self.stream is None:
            raise ValueError(
                "recipe 'ssat' needs unlabelled images: pass fit(..., unlabelled=dataset) or "
                "set labelled_fraction < 1 so that the rest of the training set is used "
                "without labels"
            )

    def _budget(self) -> float:
        if self.eps_min is None or self.eps_min == self.eps:
            return self.eps
        if self.generator is None:
            raise RuntimeError("SSATRecipe.setup must be called before loss")
        gen = self.generator
        u = float(torch.rand((1,), generator=gen, device=gen.device).item())
        return self.eps_min + (self.eps - self.eps_min) * u

    def build_attack(self, eps: float) -> Attack:
        """The engine attack used on the unlabelled batch at budget ``eps``."""
        if self.attack == "fgsm":
            attack = create_attack("fgsm", eps=eps, norm=self.norm.value, need_success=False)
        else:
            attack = create_attack(
                "pgd",
                eps=eps,
                norm=self.norm.value,
                steps=self.steps,
                step_size=self.step_size if self.step_size is not None else eps / 4,
                early_stop=False,
                keep_best=False,
                need_success=False,
            )
        attack.check_clean = False
        return attack

    def lam_at(self, step: int) -> float:
        """The weight of the unlabelled term at a (0-based) step, after the warm-up ramp."""
        if self.warmup_steps == 0:
            return self.lam
        return self.lam * min(1.0, step / self.warmup_steps)

    def pseudo_labels(
        self, model: ModelAdapter, x_u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-labels of an unlabelled batch and the mask of those kept by the threshold.

        The clean prediction is taken in the model's current mode, i.e. in training mode during
        ``fit`` (BatchNorm uses the batch statistics and updates its running estimates), as in
        the reference code: early in training from scratch the running estimates lag so far
        behind that eval-mode predictions collapse to one class, and self-training on them
        locks the model there.

        Returns:
            ``(labels (B_u,), keep (B_u,) bool)``, without gradients.
        """
        with torch.no_grad():
            probs = F.softmax(model(x_u), dim=1)
        conf, labels = probs.max(dim=1)
        return labels, conf >= self.threshold

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The SSAT loss; logs labelled ``accuracy``, ``pseudo_kept`` (fraction of pseudo-labels
        kept) and ``unlabelled_loss`` (the unweighted unlabelled adversarial term)."""
        if self.stream is None or self.generator is None:
            raise RuntimeError("SSATRecipe.setup must be called before loss")
        x_l, y_l = batch["image"], batch["label"]
        lam = self.lam_at(step)
        # the step's global unlabelled batch, the same on every process; each takes its share
        size = self.unlabelled_batch_size or int(x_l.shape[0]) * current_shard().size
        x_u = shard_rows(self.stream.sample(size, self.generator, x_l.device))
        model.check_input(x_u, "unlabelled images")
        pseudo, keep = self.pseudo_labels(model, x_u)
        logits_l = model(x_l)
        sup = F.cross_entropy(logits_l, y_l, weight=self.ce_weight(logits_l))
        stats = {
            "accuracy": float((logits_l.detach().argmax(1) == y_l).float().mean()),
            "pseudo_kept": float(keep.float().mean()),
        }
        if lam == 0 or not bool(keep.any()):
            stats["unlabelled_loss"] = 0.0
            return sup, stats
        x_adv = self.craft(self.build_attack(self._budget()), model, x_u, pseudo)
        logits_u = model(x_adv)
        ce = F.cross_entropy(logits_u, pseudo, reduction="none")
        unsup = (ce * keep.float()).sum() / x_u.shape[0]
        stats["unlabelled_loss"] = float(unsup.detach())
        return sup + lam * unsup, stats


@RECIPES.register(
    "ssat",
    summary="Semi-supervised AT (Li, Pan & Zhu): CE(labelled) + lambda * CE(adversarial "
    "unlabelled, pseudo-labels) (classification)",
    tags=("classification", "adversarial", "semi-supervised"),
)
def _ssat(
    *,
    eps: float = 0.003,
    eps_min: float | None = 0.001,
    attack: str = "fgsm",
    steps: int = 7,
    step_size: float | None = None,
    lam: float = 3.0,
    threshold: float = 0.0,
    unlabelled_batch_size: int | None = None,
    warmup_steps: int = 0,
    norm: str = "linf",
) -> Recipe:
    """Semi-supervised adversarial training; see :class:`SSATRecipe`."""
    return SSATRecipe(
        eps=eps,
        eps_min=eps_min,
        attack=attack,
        steps=steps,
        step_size=step_size,
        lam=lam,
        threshold=threshold,
        unlabelled_batch_size=unlabelled_batch_size,
        warmup_steps=warmup_steps,
        norm=norm,
    )
