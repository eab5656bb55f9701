"""Explanation attacks: the gradient engine with a Grad-CAM objective, as named presets.

=====================  ======================================================================
preset                 goal
=====================  ======================================================================
``gradcam-kept``       move the map (top-k mass drop or centre-of-mass shift), label kept
``gradcam-targeted``   pull the map toward a target map (shifted / mirrored clean map, another
                       image's map, or maps given in place of the labels), label kept
``gradcam-flip``       change the label and move the map
=====================  ======================================================================

All three are :class:`ExplanationAttack` objects: the projected-gradient engine
(:class:`~medrobust.attacks.GradientAttack`) with a
:class:`~medrobust.attacks.objectives.explanation.GradCamObjective`, an Linf or L2 budget, an
optional region mask (``attack(model, x, y, region=mask)``) and a seed, returning an
:class:`~medrobust.attacks.AttackResult` like every attack.

Success semantics differ from classification attacks, so the presets carry the tag
``"explanation"`` (and not ``"classification"``): ``result.success`` is "the map moved past the
objective's threshold **and** the label is kept" (or changed, for ``gradcam-flip``), never
"prediction differs from the label". For the label-kept presets the returned example is always the
best iterate whose label equals the clean prediction (see
:mod:`medrobust.attacks.objectives.explanation` for why the best-iterate tracker guarantees it).

Defaults differ from PGD on purpose: no random start (Ghorbani et al. start from the clean image)
and no early stop, so that the returned map is the strongest found within the budget, not the first
one past the threshold; 20 steps of ``2.5 · eps / steps``.

``result.extra`` holds per-sample tensors measured at the returned inputs: ``map_clean`` and
``map_adv`` (sum-normalised Grad-CAM maps ``(B, 1, *spatial)``), ``clean_pred``, ``label_kept``,
``moved``, ``topk_intersection``, ``spearman``, ``com_shift`` (pixels), and for the targeted
preset ``target_map`` and ``target_topk``.

References:
    Ghorbani, Abid, Zou, AAAI 2019; Dombrowski et al., NeurIPS 2019; Rasaee & Rivaz, IEEE IUS
    2021; Madry et al., ICLR 2018 (the projected-gradient engine).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from medrobust.attacks.engine import GradientAttack, eval_mode
from medrobust.attacks.objectives.base import ObjectiveOutput, Target
from medrobust.attacks.objectives.explanation import (
    Explain,
    GradCamObjective,
    LossKind,
    TargetStrategy,
)
from medrobust.attacks.presets import ATTACKS
from medrobust.attacks.result import AttackResult
from medrobust.explain.softplus import softplus_relu
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.types import Norm

__all__ = ["ExplanationAttack", "gradcam_flip", "gradcam_kept", "gradcam_targeted"]


class ExplanationAttack(GradientAttack):
    """The gradient engine driving a Grad-CAM objective.

    Differences from :class:`~medrobust.attacks.GradientAttack`:

    * ``labels`` may be class labels ``(B,)`` (validated, not used: the explained class is the
      clean prediction) or, for a targeted objective, target maps ``(B, 1, *spatial)``;
    * optional Softplus smoothing of every ``nn.ReLU`` while the gradient is computed
      (``softplus_beta``); success and the best iterate are always judged on the unmodified
      network, at the cost of a second evaluation per step;
    * the result's ``extra`` holds the maps and map metrics at the returned inputs.

    Args:
        objective: The Grad-CAM objective.
        norm: ``"linf"`` or ``"l2"``.
        eps: Budget (> 0) in the model's input space.
        steps: Gradient steps.
        step_size: Step size; default ``2.5 * eps / steps``.
        random_start: Start from a random point of the ball.
        restarts: Random restarts (for samples not yet successful).
        early_stop: Stop per sample at the first success.
        seed: Seed of the private generator.
        name: Preset name written to the config.
        softplus_beta: If given (> 0), replace ``nn.ReLU`` by ``Softplus(beta)`` for the gradient.

    Raises:
        TypeError: If ``objective`` is not a :class:`GradCamObjective`.
        ValueError: For invalid budgets or step settings.

    References:
        Ghorbani et al., AAAI 2019; Dombrowski et al., NeurIPS 2019 (Softplus smoothing).
    """

    engine = "gradient"
    objective: GradCamObjective

    def __init__(
        self,
        *,
        objective: GradCamObjective,
        norm: Norm | str = Norm.LINF,
        eps: float = 8 / 255,
        steps: int = 20,
        step_size: float | None = None,
        random_start: bool = False,
        restarts: int = 1,
        early_stop: bool = False,
        seed: int = 0,
        name: str = "gradcam-kept",
        softplus_beta: float | None = None,
    ) -> None:
        if not isinstance(objective, GradCamObjective):
            raise TypeError(f"objective must be a GradCamObjective, got {type(objective).__name__}")
        super().__init__(
            objective=objective,
            norm=norm,
            eps=eps,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            restarts=restarts,
            early_stop=early_stop,
            seed=seed,
            name=name,
        )
        if softplus_beta is not None:
            ok = (
                isinstance(softplus_beta, (int, float))
                and not isinstance(softplus_beta, bool)
                and math.isfinite(softplus_beta)
                and softplus_beta > 0
            )
            if not ok:
                raise ValueError(
                    f"softplus_beta must be None or a number > 0, got {softplus_beta!r}"
                )
        self.softplus_beta = None if softplus_beta is None else float(softplus_beta)
        self._target: Target | None = None

    def params(self) -> dict[str, Any]:
        """The engine's hyper-parameters plus ``softplus_beta``."""
        return {**super().params(), "softplus_beta": self.softplus_beta}

    def check_labels(
        self, adapter: ModelAdapter, images: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Class labels ``(B,)``, or target maps for a targeted objective.

        Raises:
            TypeError: If ``labels`` is not a tensor.
            ValueError: For labels out of range or target maps of the wrong shape.
        """
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.is_floating_point():
            self.objective.check_target_maps(labels, images)
            return
        adapter.check_labels(labels.to(images.device), images.shape[0])

    def prepare_target(
        self, adapter: ModelAdapter, images: torch.Tensor, labels: torch.Tensor
    ) -> Target:
        """The objective's target (kept for the measurements added to the result)."""
        target = super().prepare_target(adapter, images, labels)
        self._target = target
        return target

    def evaluate(
        self, model: ModelAdapter, x: torch.Tensor, target: Target, grad: bool
    ) -> tuple[ObjectiveOutput, torch.Tensor | None]:
        """Objective and input gradient; with ``softplus_beta`` the gradient comes from the
        smoothed network and the output (success, loss, prediction) from the unmodified one."""
        if grad and self.softplus_beta is not None:
            with softplus_relu(model, self.softplus_beta):
                _, g = super().evaluate(model, x, target, grad=True)
            out, _ = super().evaluate(model, x, target, grad=False)
            return out, g
        return super().evaluate(model, x, target, grad)

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        region: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch; see :meth:`medrobust.attacks.Attack.__call__` and the class docstring.

        Shape:
            - images: ``(B, C, *spatial)``; labels ``(B,)`` or target maps
              ``(B, 1, *spatial)``; region ``(B or 1, 1 or C, *spatial)``.
        """
        self._target = None
        try:
            result = super().__call__(model, images, labels, region=region)
            target = self._target
            if not isinstance(target, dict):  # pragma: no cover - prepare_target always ran
                raise RuntimeError("the explanation target was not prepared")
            adapter = as_adapter(model)
            with eval_mode(adapter):
                extra = self.objective.measure(adapter, result.x_adv, target)
        finally:
            self._target = None
        result.extra.update(extra)
        return result


def _objective(**kw: Any) -> GradCamObjective:
    return GradCamObjective(**kw)


@ATTACKS.register(
    "gradcam-kept",
    summary="Move the Grad-CAM map while the predicted class is kept (top-k or centre of mass)",
    tags=("explanation",),
)
def gradcam_kept(
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 20,
    step_size: float | None = None,
    loss: LossKind = "topk",
    gamma: float = 1.0,
    layer: str | None = None,
    method: str = "gradcam",
    k: int | float = 0.05,
    topk_threshold: float = 0.5,
    min_shift: float | None = None,
    random_start: bool = False,
    restarts: int = 1,
    early_stop: bool = False,
    softplus_beta: float | None = None,
    second_order: bool = True,
    seed: int = 0,
) -> ExplanationAttack:
    """Label-kept explanation attack (Ghorbani et al. 2019, with Rasaee & Rivaz's class
    preservation): ``loss="topk"`` drops the mass of the clean top-k pixels, ``loss="com"``
    moves the centre of mass; the label of the returned input always equals the clean one."""
    if loss not in ("topk", "com"):
        raise ValueError(
            f"gradcam-kept takes loss='topk' or 'com', got {loss!r}; use gradcam-targeted for "
            "a target map"
        )
    obj = _objective(
        loss=loss,
        label="kept",
        layer=layer,
        method=method,
        k=k,
        gamma=gamma,
        topk_threshold=topk_threshold,
        min_shift=min_shift,
        second_order=second_order,
    )
    return ExplanationAttack(
        objective=obj,
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        restarts=restarts,
        early_stop=early_stop,
        seed=seed,
        name="gradcam-kept",
        softplus_beta=softplus_beta,
    )


@ATTACKS.register(
    "gradcam-targeted",
    summary="Pull the Grad-CAM map toward a target map while the predicted class is kept",
    tags=("explanation",),
)
def gradcam_targeted(
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 20,
    step_size: float | None = None,
    target_map: TargetStrategy = "shift",
    gamma: float = 1.0,
    layer: str | None = None,
    method: str = "gradcam",
    k: int | float = 0.05,
    target_threshold: float = 0.5,
    random_start: bool = False,
    restarts: int = 1,
    early_stop: bool = False,
    softplus_beta: float | None = None,
    second_order: bool = True,
    seed: int = 0,
) -> ExplanationAttack:
    """Targeted explanation attack (Dombrowski et al. 2019) with the label kept. The target is
    the clean map shifted by half the image (``"shift"``), mirrored (``"flip"``), another image's
    map (``"other"``), or maps passed to the attack in place of the labels."""
    obj = _objective(
        loss="target",
        label="kept",
        layer=layer,
        method=method,
        k=k,
        gamma=gamma,
        target_map=target_map,
        target_threshold=target_threshold,
        second_order=second_order,
    )
    return ExplanationAttack(
        objective=obj,
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        restarts=restarts,
        early_stop=early_stop,
        seed=seed,
        name="gradcam-targeted",
        softplus_beta=softplus_beta,
    )


@ATTACKS.register(
    "gradcam-flip",
    summary="Change the predicted class and move the Grad-CAM map",
    tags=("explanation",),
)
def gradcam_flip(
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 20,
    step_size: float | None = None,
    loss: LossKind = "topk",
    flip_weight: float = 1.0,
    confidence: float = 1.0,
    explain: Explain = "predicted",
    layer: str | None = None,
    method: str = "gradcam",
    k: int | float = 0.05,
    topk_threshold: float = 0.5,
    min_shift: float | None = None,
    random_start: bool = False,
    restarts: int = 1,
    early_stop: bool = False,
    softplus_beta: float | None = None,
    second_order: bool = True,
    seed: int = 0,
) -> ExplanationAttack:
    """Label-changing explanation attack: a capped margin away from the clean class plus the map
    term; by default the map compared is the one of the newly predicted class (what a clinician
    would see)."""
    if loss not in ("topk", "com"):
        raise ValueError(f"gradcam-flip takes loss='topk' or 'com', got {loss!r}")
    obj = _objective(
        loss=loss,
        label="changed",
        layer=layer,
        method=method,
        k=k,
        flip_weight=flip_weight,
        confidence=confidence,
        topk_threshold=topk_threshold,
        min_shift=min_shift,
        explain=explain,
        second_order=second_order,
    )
    return ExplanationAttack(
        objective=obj,
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        restarts=restarts,
        early_stop=early_stop,
        seed=seed,
        name="gradcam-flip",
        softplus_beta=softplus_beta,
    )
