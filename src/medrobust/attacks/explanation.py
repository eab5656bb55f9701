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
:class:`~medrobust.attacks.AttackResult` like every attack. The objective does everything
specific to explanations (label or target-map checks, Softplus gradients, the map metrics in
``result.extra``), so any engine (APGD included) runs it too.

Success semantics differ from classification attacks, so the presets carry the task
tag ``"explanation"`` (and not ``"classification"``): ``result.success`` is "the map moved past the
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

from typing import Any

from medrobust.attacks.engine import GradientAttack
from medrobust.attacks.objectives.explanation import GradCamObjective
from medrobust.attacks.presets import ObjectiveChoice, register_attack
from medrobust.types import Norm

__all__ = ["ExplanationAttack", "gradcam_flip", "gradcam_kept", "gradcam_targeted"]

_GRADCAM = ObjectiveChoice("gradcam", {"gradcam": GradCamObjective}, "explanation")


class ExplanationAttack(GradientAttack):
    """The gradient engine with the defaults of explanation attacks, driving a Grad-CAM objective.

    ``labels`` may be class labels ``(B,)`` (validated, not used: the explained class is the
    clean prediction) or, for a targeted objective, target maps ``(B, 1, *spatial)``; the result's
    ``extra`` holds the maps and map metrics at the returned inputs (both from the objective).

    Args:
        objective: The Grad-CAM objective.
        norm: ``"linf"`` or ``"l2"``.
        eps: Budget (> 0) in the model's input space.
        steps: Gradient steps.
        step_size: Step size; default ``2.5 * eps / steps``.
        random_start: Start from a random point of the ball.
        restarts: Random restarts (for samples not yet successful).
        early_stop: Stop per sample at the first success.
        keep_best: Return the best iterate per sample (default).
        seed: Seed of the private generator.
        name: Preset name written to the config.

    Raises:
        TypeError: If ``objective`` is not a :class:`GradCamObjective`.
        ValueError: For invalid budgets or step settings.

    References:
        Ghorbani et al., AAAI 2019; Dombrowski et al., NeurIPS 2019.
    """

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
        keep_best: bool = True,
        seed: int = 0,
        name: str = "gradcam-kept",
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
            keep_best=keep_best,
            seed=seed,
            name=name,
        )

    def params(self) -> dict[str, Any]:
        """The engine's hyper-parameters plus the objective's ``softplus_beta``."""
        return {**super().params(), "softplus_beta": self.objective.softplus_beta}


def _map_loss(preset: str, kw: dict[str, Any], hint: str = "") -> None:
    loss = kw.get("loss", "topk")
    if loss not in ("topk", "com"):
        raise ValueError(f"{preset} takes loss='topk' or 'com', got {loss!r}{hint}")


@register_attack(
    "gradcam-kept",
    ExplanationAttack,
    _GRADCAM,
    kind="iterative",
    task="explanation",
    extras=("gradient",),
    fixed=("label", "flip_weight", "confidence", "target_map", "target_threshold", "explain"),
    summary="Move the Grad-CAM map while the predicted class is kept (top-k or centre of mass)",
)
def gradcam_kept(kw: dict[str, Any]) -> dict[str, Any]:
    """Label-kept explanation attack (Ghorbani et al. 2019, with Rasaee & Rivaz's class
    preservation): ``loss="topk"`` drops the mass of the clean top-k pixels, ``loss="com"``
    moves the centre of mass; the label of the returned input always equals the clean one."""
    _map_loss("gradcam-kept", kw, "; use gradcam-targeted for a target map")
    return {**kw, "label": "kept"}


@register_attack(
    "gradcam-targeted",
    ExplanationAttack,
    _GRADCAM,
    kind="iterative",
    task="explanation",
    extras=("gradient", "targeted"),
    fixed=("loss", "label", "topk_threshold", "min_shift", "flip_weight", "confidence", "explain"),
    summary="Pull the Grad-CAM map toward a target map while the predicted class is kept",
)
def gradcam_targeted(kw: dict[str, Any]) -> dict[str, Any]:
    """Targeted explanation attack (Dombrowski et al. 2019) with the label kept. The target is
    the clean map shifted by half the image (``"shift"``), mirrored (``"flip"``), another image's
    map (``"other"``), or maps passed to the attack in place of the labels."""
    return {**kw, "loss": "target", "label": "kept"}


@register_attack(
    "gradcam-flip",
    ExplanationAttack,
    _GRADCAM,
    kind="iterative",
    task="explanation",
    extras=("gradient",),
    fixed=("label", "gamma", "target_map", "target_threshold"),
    summary="Change the predicted class and move the Grad-CAM map",
)
def gradcam_flip(kw: dict[str, Any]) -> dict[str, Any]:
    """Label-changing explanation attack: a capped margin away from the clean class plus the map
    term; by default the map compared is the one of the newly predicted class (what a clinician
    would see)."""
    _map_loss("gradcam-flip", kw)
    return {**kw, "label": "changed"}
