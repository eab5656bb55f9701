"""Training recipes: what loss one optimisation step minimises, and their registry.

:func:`medrobust.training.fit` owns everything generic (seeding, optimiser, schedule, validation,
checkpoints, resuming); a *recipe* only says how the loss of one batch is computed. Standard
training, multi-task training, adversarial training (PGD-AT, TRADES, fast AT) and semi-supervised
adversarial training are all recipes registered in :data:`RECIPES`. Importing
:mod:`medrobust.defenses` registers every recipe of the package, so the registry is complete as
soon as the package is imported.

Extension point: adding a defence recipe
-----------------------------------------
1. Subclass :class:`Recipe`, set ``name`` and implement :meth:`Recipe.loss`. Draw all randomness
   (e.g. the random start of PGD) from ``self.generator``, which ``fit`` seeds and checkpoints,
   so runs are reproducible and resume exactly. If the recipe needs the model in eval mode to
   craft adversarial examples, switch it inside ``loss`` and switch back to train mode before
   the forward pass that is optimised.
2. Keep any state that changes during training (e.g. a schedule of epsilon) in the instance and
   return it from :meth:`Recipe.state_dict` (tensors and plain values only) so that ``last.pt``
   holds it; restore it in :meth:`Recipe.load_state_dict`.
3. Optionally list extra validation metrics in ``validation_metrics`` and compute them in
   :meth:`Recipe.validation_stats` (e.g. robust accuracy for early stopping against robust
   overfitting); ``fit`` reports them as ``val_<name>`` and they can be monitored.
4. Register a factory with explicit keyword parameters (no ``**kwargs``, so misspelt settings
   are reported)::

       @RECIPES.register("pgd-at", summary="Madry et al. PGD adversarial training",
                         tags=("classification",))
       def _pgd_at(*, eps: float = 8 / 255, steps: int = 10) -> Recipe:
           return PGDATRecipe(eps=eps, steps=steps)

5. A recipe that learns from unlabelled images too (semi-supervised) sets
   ``uses_unlabelled = True`` and overrides :meth:`Recipe.set_unlabelled`; ``fit`` hands it the
   unlabelled data set (``fit(..., unlabelled=...)`` and/or the remainder of
   ``TrainConfig.labelled_fraction``) before :meth:`Recipe.setup`.
6. Put the module under ``medrobust.defenses`` and import it from
   ``medrobust/defenses/__init__.py``: the recipe is then found by name from Python, YAML and the
   command line, and the registry-driven contract tests (``tests/defenses``) check it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medrobust.models.adapter import ModelAdapter
from medrobust.registry import Registry
from medrobust.types import Task

__all__ = [
    "RECIPES",
    "Recipe",
    "StandardRecipe",
    "create_recipe",
    "list_recipes",
]

RECIPES: Registry[Recipe] = Registry("defense")
"""Registry of training recipes (kind ``"defense"``); see the module docstring."""


def create_recipe(name: str, **params: Any) -> Recipe:
    """Build a registered recipe.

    Args:
        name: Registered name, e.g. ``"standard"``.
        **params: The recipe's keyword parameters.

    Returns:
        The recipe.

    Raises:
        UnknownNameError: If ``name`` is not registered (the message suggests close names).
        TypeError: If a parameter is not accepted by the recipe.
    """
    recipe = RECIPES.create(name, **params)
    if not isinstance(recipe, Recipe):
        raise TypeError(
            f"the factory of recipe {name!r} returned a {type(recipe).__name__}, not a Recipe"
        )
    return recipe


def list_recipes(pattern: str = "*", tag: str | None = None) -> list[str]:
    """Sorted names of registered recipes matching a shell-style pattern (and tag)."""
    return RECIPES.list(pattern, tag=tag)


def check_class_weights(weights: Any) -> list[float]:
    """Validate per-class weights: a list of non-negative numbers, not all zero.

    Raises:
        TypeError: If ``weights`` is not a list of numbers.
        ValueError: If a weight is negative or all are zero.
    """
    if not isinstance(weights, Sequence) or isinstance(weights, str):
        raise TypeError(f"class_weights must be a list of numbers, got {weights!r}")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise ValueError(f"class_weights must be non-negative numbers, got {w!r}")
        out.append(float(w))
    if not any(out):
        raise ValueError("class_weights must not all be zero")
    return out


class Recipe(abc.ABC):
    """Base class of training recipes: the loss of one batch, and optional state.

    Attributes:
        name: The registered name (also written to model cards).
        validation_metrics: Names of extra validation metrics returned by
            :meth:`validation_stats` (reported as ``val_<name>``).
        generator: A seeded generator on the training device, set by :meth:`setup`.
    """

    name: ClassVar[str] = "recipe"
    validation_metrics: ClassVar[tuple[str, ...]] = ()
    #: Whether the recipe trains on unlabelled images too (see :meth:`set_unlabelled`).
    uses_unlabelled: ClassVar[bool] = False
    #: Whether the recipe's loss is a cross-entropy that takes class weights (see
    #: :meth:`set_class_weights`).
    supports_class_weights: ClassVar[bool] = False

    def __init__(self) -> None:
        self.generator: torch.Generator | None = None
        self.class_weights: list[float] | None = None

    def set_class_weights(self, weights: Sequence[float]) -> None:
        """Weight the recipe's cross-entropy per class (``TrainConfig.class_weights``).

        ``fit`` calls this before :meth:`setup`. Recipes with ``supports_class_weights`` pass
        :meth:`ce_weight` as the ``weight`` of their (supervised) cross-entropy terms.

        Args:
            weights: One non-negative weight per class.

        Raises:
            ValueError: For a recipe whose loss takes no class weights, or invalid weights.
        """
        if not self.supports_class_weights:
            raise ValueError(
                f"recipe {self.name!r} does not take class weights; use a recipe whose loss is "
                "a cross-entropy (standard, pgd-at, trades, fast-at, fgsm-at, ssat)"
            )
        self.class_weights = check_class_weights(weights)

    def ce_weight(self, logits: torch.Tensor) -> torch.Tensor | None:
        """The class weights as a tensor on the device of ``logits`` (None when unweighted)."""
        if self.class_weights is None:
            return None
        if len(self.class_weights) != logits.shape[1]:
            raise ValueError(
                f"class_weights has {len(self.class_weights)} entries but the model has "
                f"{logits.shape[1]} classes"
            )
        return torch.tensor(self.class_weights, dtype=logits.dtype, device=logits.device)

    def set_unlabelled(self, data: Dataset[Any]) -> None:
        """Receive the unlabelled training images (only recipes with ``uses_unlabelled``).

        ``fit`` calls this before :meth:`setup` when unlabelled data is available.

        Args:
            data: A map-style data set whose items hold at least ``"image"``.

        Raises:
            ValueError: Always, for recipes that do not use unlabelled data.
        """
        raise ValueError(
            f"recipe {self.name!r} does not use unlabelled data; pass unlabelled images only to "
            "a semi-supervised recipe such as 'ssat'"
        )

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Prepare for training ``model``; called by ``fit`` before the first step.

        Override to validate the model (task, classes) or to build loss modules; call
        ``super().setup(...)`` to keep ``self.generator``.

        Args:
            model: The model being trained (already on the training device).
            generator: Seeded generator on the training device for all the recipe's randomness.

        Raises:
            ValueError: If the recipe cannot train this model.
        """
        self.generator = generator

    @abc.abstractmethod
    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss to minimise on one batch, and statistics to log.

        Args:
            model: The model, in training mode.
            batch: The batch on the training device: ``"image"`` ``(B, C, *spatial)``,
                ``"label"`` ``(B,)`` and, for segmentation, ``"mask"`` ``(B, *spatial)``.
            step: Global optimisation step (0-based, counted over all epochs).
            epoch: Current epoch (1-based).

        Returns:
            ``(loss, stats)``: a scalar tensor with gradients, and floats averaged over the
            epoch (weighted by batch size) and logged as ``train_<name>``.
        """

    def validation_stats(self, model: ModelAdapter, batch: dict[str, Any]) -> dict[str, float]:
        """Extra validation metrics of one batch (names listed in ``validation_metrics``).

        ``fit`` calls this in eval mode under ``torch.no_grad()``; wrap gradient computations
        (e.g. an attack) in ``torch.enable_grad()``. Values are averaged over the validation
        set weighted by batch size.

        Args:
            model: The model in eval mode.
            batch: The validation batch on the training device.

        Returns:
            Metric values by name (without the ``val_`` prefix).
        """
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State that changes during training (tensors and plain values), saved in ``last.pt``."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output when a run is resumed.

        Raises:
            ValueError: If ``state`` holds entries this recipe does not know.
        """
        if state:
            raise ValueError(
                f"recipe {self.name!r} keeps no state but the checkpoint holds {sorted(state)}"
            )


class StandardRecipe(Recipe):
    """Empirical risk minimisation on clean inputs.

    Classification: cross-entropy on the logits. Segmentation: Dice + cross-entropy
    (``monai.losses.DiceCELoss`` with one-hot targets and softmax).

    Args:
        label_smoothing: Label smoothing of the cross-entropy in ``[0, 1)``.
        class_weights: Per-class weights of the cross-entropy (length ``K``), or None.

    Shape:
        - batch["image"]: ``(B, C, *spatial)``; batch["label"]: ``(B,)``;
          batch["mask"] (segmentation): ``(B, *spatial)``.

    References:
        Milletari et al., "V-Net", 3DV 2016 (Dice loss); Szegedy et al., "Rethinking the
        Inception Architecture", CVPR 2016 (label smoothing).
    """

    name: ClassVar[str] = "standard"
    supports_class_weights: ClassVar[bool] = True

    def __init__(
        self, *, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
            raise TypeError(f"label_smoothing must be a number, got {label_smoothing!r}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        if class_weights is not None:
            self.class_weights = check_class_weights(class_weights)
        self._weight: torch.Tensor | None = None
        self._seg_loss: nn.Module | None = None

    def setup(self, model: ModelAdapter, *, generator: torch.Generator) -> None:
        """Check the class weights against the model and build the loss; see :class:`Recipe`.

        Raises:
            ValueError: If ``class_weights`` does not have one entry per class, or the task is
                not classification or segmentation.
        """
        super().setup(model, generator=generator)
        if model.task not in (Task.CLASSIFICATION, Task.SEGMENTATION):
            raise ValueError(
                f"recipe 'standard' trains classification or segmentation models, got task "
                f"{model.task.value!r}"
            )
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        self._weight = None
        if self.class_weights is not None:
            if len(self.class_weights) != model.num_classes:
                raise ValueError(
                    f"class_weights has {len(self.class_weights)} entries but the model has "
                    f"{model.num_classes} classes"
                )
            self._weight = torch.tensor(self.class_weights, dtype=torch.float32, device=device)
        if model.task is Task.SEGMENTATION:
            from monai.losses import DiceCELoss

            self._seg_loss = DiceCELoss(
                to_onehot_y=True,
                softmax=True,
                weight=self._weight,
                label_smoothing=self.label_smoothing,
            )

    def loss(
        self, model: ModelAdapter, batch: dict[str, Any], *, step: int, epoch: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy (classification) or Dice+CE (segmentation) of the clean batch."""
        logits = model(batch["image"])
        if model.task is Task.SEGMENTATION:
            if self._seg_loss is None:
                raise RuntimeError("StandardRecipe.setup must be called before loss")
            mask = batch["mask"]
            loss = self._seg_loss(logits, mask.unsqueeze(1))
            return loss, {}
        labels = batch["label"]
        loss = F.cross_entropy(
            logits, labels, weight=self._weight, label_smoothing=self.label_smoothing
        )
        acc = float((logits.detach().argmax(dim=1) == labels).float().mean())
        return loss, {"accuracy": acc}


@RECIPES.register(
    "standard",
    summary="Standard training: cross-entropy (Dice + cross-entropy for segmentation)",
    tags=("classification", "segmentation"),
)
def _standard(
    *, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None
) -> Recipe:
    """Standard (non-adversarial) training; see :class:`StandardRecipe`."""
    return StandardRecipe(label_smoothing=label_smoothing, class_weights=class_weights)
