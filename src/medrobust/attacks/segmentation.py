"""Attacks on segmentation models: ASMA and DAG engines, and PGD/APGD on dense losses.

All of them run through the one engine (:class:`~medrobust.attacks.engine.Attack`): the same
input validation, eval-mode handling, :class:`~medrobust.attacks.engine.BestTracker` and
:class:`~medrobust.attacks.result.AttackResult`. They are batched: every sample of a batch has
its own step multiplier, active set and stopping point.

Calling convention::

    attack = medrobust.create_attack("asma")            # or "dag", "asma-bounded"
    result = attack(model, images, target_masks)         # targeted: toward the target masks
    attack = medrobust.create_attack("pgd-seg", eps=4/255)  # or "apgd-seg"
    result = attack(model, images, masks)                # untargeted: away from the true masks

Masks are class indices ``(B, *spatial)`` matching the model's output. ``result.extra`` holds
``"target_iou"`` and ``"pixel_accuracy"`` (agreement with the target) for targeted attacks and
``"dice"`` and ``"pixel_accuracy"`` (against the true mask) for untargeted ones; ASMA adds its
final ``"multiplier"``. Success semantics are those of
:mod:`medrobust.attacks.objectives.segmentation`.

References:
    Ozbulak, Van Messem, De Neve, MICCAI 2019 (ASMA); Xie et al., ICCV 2017 (DAG); Paschali et
    al., MICCAI 2018; Madry et al., ICLR 2018 (PGD); Croce & Hein, ICML 2020 (APGD).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from medrobust.attacks.apgd import APGD
from medrobust.attacks.engine import Attack, BestTracker, GradientAttack, _check_positive
from medrobust.attacks.objectives.base import ObjectiveOutput, Target, index_target
from medrobust.attacks.objectives.segmentation import (
    ASMALoss,
    DAGLoss,
    class_argmax,
    create_segmentation_objective,
    pixel_agreement,
    sample_dice,
    target_iou,
)
from medrobust.attacks.presets import ATTACKS
from medrobust.attacks.result import AttackResult
from medrobust.attacks.threat import ThreatModel
from medrobust.models.adapter import ModelAdapter, as_adapter
from medrobust.models.segmentation import DEFAULT_MAX_VOXELS, check_volume_size
from medrobust.types import Norm

__all__ = [
    "ASMA",
    "DAG",
    "SegmentationAPGD",
    "SegmentationAttack",
    "SegmentationPGD",
]

_TINY = 1e-12


def _rows(region: torch.Tensor | None, idx: torch.Tensor) -> torch.Tensor | None:
    if region is None or region.shape[0] == 1:
        return region
    return region[idx]


def _per_sample_norm(t: torch.Tensor, norm: Norm) -> torch.Tensor:
    flat = t.flatten(1)
    n = flat.abs().amax(dim=1) if norm is Norm.LINF else flat.norm(p=2, dim=1)
    return n.view(-1, *([1] * (t.ndim - 1)))


class SegmentationAttack(Attack):
    """Base of attacks on segmentation models: validates masks instead of labels, refuses
    volumes too large without sliding windows, and adds per-sample mask metrics to the result.

    Attributes:
        max_voxels: Largest ``B * prod(spatial)`` attacked without sliding windows (see
            :func:`medrobust.models.segmentation.check_volume_size`); set to None to turn the
            check off.
    """

    tasks: tuple[str, ...] = ("segmentation",)
    max_voxels: int | None = DEFAULT_MAX_VOXELS

    @property
    def targeted(self) -> bool:
        """Whether the attack drives the prediction toward given target masks."""
        return bool(self.objective.targeted)

    def check_labels(
        self, adapter: ModelAdapter, images: torch.Tensor, labels: torch.Tensor
    ) -> None:
        """Validate masks: integer class indices ``(B, *spatial)`` in ``[0, K)``.

        The exact spatial size is checked against the model's output by the objective (a
        network with valid convolutions predicts a smaller map than its input).

        Raises:
            TypeError: If ``labels`` is not a tensor.
            ValueError: For a wrong dtype, rank, batch size or unknown classes, or a batch too
                large to segment without sliding windows.
        """
        name = "target masks" if self.targeted else "masks"
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
            raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
        b, nd = images.shape[0], adapter.spatial_dims
        if labels.ndim != nd + 1 or labels.shape[0] != b:
            hint = ""
            if labels.ndim == nd + 2 and labels.shape[1] == 1:
                hint = "; drop the channel dimension (mask.squeeze(1))"
            elif labels.ndim == 1:
                hint = "; these look like class labels: segmentation attacks need masks"
            raise ValueError(
                f"{name} must have shape (B, *spatial) = ({b}, {', '.join(['*'] * nd)}) for "
                f"images of shape {tuple(images.shape)}, got {tuple(labels.shape)}{hint}"
            )
        k = adapter.num_classes
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            bad = torch.unique(labels[(labels < 0) | (labels >= k)])[:10].tolist()
            raise ValueError(
                f"{name} contain class(es) {bad} unknown to the model, which has {k} classes "
                f"(0..{k - 1})"
            )
        check_volume_size(adapter, images, self.max_voxels)

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        region: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch; see :meth:`Attack.__call__` (``labels`` are masks here).

        Shape:
            - images: ``(B, C, *spatial)``; masks ``(B, *spatial)``; region
              ``(B or 1, 1 or C, *spatial)``.
        """
        result = super().__call__(model, images, labels, region=region)
        adapter = as_adapter(model)
        masks = labels.to(result.pred_adv.device)
        pred = result.pred_adv
        if masks.shape == pred.shape:
            k = adapter.num_classes
            agreement = pixel_agreement(pred, masks).to(images.dtype)
            if self.targeted:
                result.extra["target_iou"] = target_iou(pred, masks, k).to(images.dtype)
            else:
                result.extra["dice"] = sample_dice(pred, masks, k).to(images.dtype)
            result.extra["pixel_accuracy"] = agreement
        return result


class SegmentationPGD(SegmentationAttack, GradientAttack):
    """PGD (or BIM/FGSM) on a dense segmentation loss: :class:`GradientAttack`'s loop with a
    segmentation objective and mask validation (arguments as :class:`GradientAttack`).

    References:
        Madry et al., ICLR 2018; Arnab, Miksik, Torr, "On the Robustness of Semantic
        Segmentation Models to Adversarial Attacks", CVPR 2018.
    """


class SegmentationAPGD(SegmentationAttack, APGD):
    """APGD on a dense segmentation loss (arguments as :class:`APGD`).

    References:
        Croce & Hein, ICML 2020.
    """


# --------------------------------------------------------------------------------------------
# ASMA
# --------------------------------------------------------------------------------------------
_NORMALIZE = {None: None, "none": None, "linf": Norm.LINF, "l2": Norm.L2}


class ASMA(SegmentationAttack):
    """Adaptive Segmentation Mask Attack: targeted, minimal perturbation, batched.

    Each iteration ascends ``J = L_pred - w ||X - X_0||^2`` (:class:`ASMALoss`) by
    ``X~_{n+1} = X_n + rho_n d_n``, with ``d_n`` the raw gradient (``normalize=None``, as in the
    paper) or the gradient normalised per sample to unit Linf or L2 norm. The IoU between the
    prediction at ``X~_{n+1}`` (before clamping) and the target sets the next multiplier
    ``rho_{n+1} = beta IoU_{n+1} + tau`` (``rho_0 = tau``), then ``X_{n+1}`` is ``X~_{n+1}``
    clipped to the bounds (and, with ``eps``, projected onto the ball: the budget-bounded
    variant). Every sample has its own multiplier.

    The best iterate per sample is kept: success first, then the most pixels agreeing with the
    target, then the smaller L2 perturbation. The result's ``loss`` is that score,
    ``(#agreeing pixels + 0.5 / (1 + ||delta||_2)) / #pixels`` (about the pixel accuracy against
    the target); ``J`` itself is not comparable across iterations because its adaptive mask
    shrinks. ``result.extra["multiplier"]`` holds the last multiplier of each sample.

    Args:
        steps: Iterations (2501 in the paper).
        tau: Base multiplier; default ``1e-7`` for raw gradients (the paper's), ``1/255`` of
            the input range for ``"linf"`` and that times ``sqrt(#elements)`` for ``"l2"``.
        beta: IoU-driven part of the multiplier; default ``1e-6`` (raw), ``4/255`` of the range
            (``"linf"``), times ``sqrt(#elements)`` for ``"l2"``.
        normalize: ``None`` (raw gradient, the paper; ``tau``/``beta`` then depend on the model
            and image size), ``"linf"`` or ``"l2"`` (the step's norm is the multiplier).
        eps: Optional budget: project every iterate onto the ``norm`` ball of this radius.
        norm: Norm of that ball (and of the reported minimal perturbation).
        distance_weight: Weight of the distance term (1 in the paper).
        success_fraction: Targeted success rule (see
            :class:`~medrobust.attacks.objectives.segmentation.SegmentationObjective`).
        early_stop: Stop a sample once it succeeds (the paper runs every iteration, which also
            lets the distance term shrink the perturbation).
        seed: Seed (the attack draws no random numbers; kept for the common interface).
        name: Name in the result's config.

    References:
        Ozbulak, Van Messem, De Neve, MICCAI 2019.
    """

    engine = "asma"

    def __init__(
        self,
        *,
        steps: int = 300,
        tau: float | None = None,
        beta: float | None = None,
        normalize: str | None = "linf",
        eps: float | None = None,
        norm: Norm | str = Norm.LINF,
        distance_weight: float = 1.0,
        success_fraction: float = 0.99,
        early_stop: bool = False,
        seed: int = 0,
        name: str = "asma",
    ) -> None:
        super().__init__(
            objective=ASMALoss(distance_weight=distance_weight, success_fraction=success_fraction),
            norm=norm,
            eps=eps,
            seed=seed,
        )
        _check_positive("steps", steps, integer=True)
        key = normalize.lower() if isinstance(normalize, str) else normalize
        if key not in _NORMALIZE:
            raise ValueError(f"normalize must be None, 'linf' or 'l2', got {normalize!r}")
        for label, value in (("tau", tau), ("beta", beta)):
            if value is not None and not (
                isinstance(value, (int, float)) and math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"{label} must be a finite number >= 0 or None, got {value!r}")
        if tau is not None and beta is not None and tau + beta <= 0:
            raise ValueError("tau + beta must be > 0, or the attack never moves")
        self.steps = int(steps)
        self.normalize: Norm | None = _NORMALIZE[key]
        self.tau = None if tau is None else float(tau)
        self.beta = None if beta is None else float(beta)
        self.early_stop = bool(early_stop)
        self.name = name
        self._multiplier: torch.Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "tau": self.tau,
            "beta": self.beta,
            "normalize": None if self.normalize is None else self.normalize.value,
            "early_stop": self.early_stop,
        }

    def multipliers(self, model: ModelAdapter, x: torch.Tensor) -> tuple[float, float]:
        """The resolved ``(tau, beta)`` for this model's input range and this input size."""
        if self.normalize is None:
            tau, beta = 1e-7, 1e-6
        else:
            scale = model.bounds.width / 255.0
            if self.normalize is Norm.L2:
                scale *= math.sqrt(x[0].numel())
            tau, beta = 1.0 * scale, 4.0 * scale
        return (
            tau if self.tau is None else self.tau,
            beta if self.beta is None else self.beta,
        )

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        if self.normalize is None:
            return g
        return g / (_per_sample_norm(g, self.normalize) + _TINY)

    def evaluate(
        self, model: ModelAdapter, x: torch.Tensor, target: Target, grad: bool
    ) -> tuple[ObjectiveOutput, torch.Tensor | None]:
        """The gradient of ``J``, with the tracking score (see the class docstring) as loss."""
        out, g = super().evaluate(model, x, target, grad)
        if not isinstance(target, dict):  # pragma: no cover - prepare always builds a dict
            raise TypeError("ASMA needs the dict target of ASMALoss.prepare")
        mask = target["mask"]
        agree = (out.pred == mask).flatten(1).sum(dim=1).to(x.dtype)
        l2 = (x.detach() - target["x0"]).flatten(1).norm(dim=1)
        score = (agree + 0.5 / (1.0 + l2)) / float(mask[0].numel())
        return ObjectiveOutput(score, out.success, out.pred, out.logits), g

    def _run(
        self,
        model: ModelAdapter,
        x: torch.Tensor,
        target: Target,
        threat: ThreatModel,
        region: torch.Tensor | None,
        best: BestTracker,
    ) -> None:
        if not isinstance(target, dict):  # pragma: no cover - prepare always builds a dict
            raise TypeError("ASMA needs the dict target of ASMALoss.prepare")
        b, k = x.shape[0], model.num_classes
        mask = target["mask"]
        view = (-1,) + (1,) * (x.ndim - 1)
        tau, beta = self.multipliers(model, x)
        rho = torch.full((b,), tau, dtype=x.dtype, device=x.device)
        pending = torch.zeros(b, dtype=torch.bool, device=x.device)
        xt = x.clone()
        idx = torch.arange(b, device=x.device)
        if self.early_stop:
            idx = idx[~best.success]
        for _ in range(self.steps):
            if idx.numel() == 0:
                break
            ta = index_target(target, idx)
            xa = xt[idx]
            out, g = self.evaluate(model, xa, ta, grad=True)
            best.update(idx, xa, out)
            self._settle(rho, pending, idx, out.pred, ta, tau, beta, k)
            if g is None:  # pragma: no cover - evaluate(grad=True) always returns a gradient
                raise RuntimeError("gradient was requested but not computed")
            if self.early_stop:
                keep = ~out.success
                idx, xa, g, ta = (
                    idx[keep],
                    xa[keep],
                    g[keep],
                    index_target(ta, keep.nonzero().flatten()),
                )
                if idx.numel() == 0:
                    break
            ra = _rows(region, idx)
            if ra is not None:
                g = g * ra
            x_tilde = xa + rho[idx].view(view) * self._direction(g)
            x0 = x[idx]
            x_next = x0 + threat.project(x0, x_tilde - x0, ra)
            best.steps[idx] += 1
            changed = (x_next != x_tilde).flatten(1).any(dim=1)
            if bool(changed.any()):  # IoU before clamping needs its own forward pass
                rows = changed.nonzero().flatten()
                with torch.no_grad():
                    pred = class_argmax(model(x_tilde[rows]))
                iou = target_iou(pred, mask[idx][rows], k).to(x.dtype)
                rho[idx[rows]] = beta * iou + tau
            pending[idx] = ~changed  # unchanged rows: the next forward pass sees X~ itself
            xt[idx] = x_next
        if idx.numel():
            ta = index_target(target, idx)
            out, _ = self.evaluate(model, xt[idx], ta, grad=False)
            best.update(idx, xt[idx], out)
            self._settle(rho, pending, idx, out.pred, ta, tau, beta, k)
        self._multiplier = rho

    @staticmethod
    def _settle(
        rho: torch.Tensor,
        pending: torch.Tensor,
        idx: torch.Tensor,
        pred: torch.Tensor,
        ta: Target,
        tau: float,
        beta: float,
        k: int,
    ) -> None:
        """Set the multiplier of rows whose IoU waited for this forward pass."""
        if not isinstance(ta, dict):  # pragma: no cover
            raise TypeError("ASMA needs the dict target of ASMALoss.prepare")
        wait = pending[idx]
        if bool(wait.any()):
            iou = target_iou(pred[wait], ta["mask"][wait], k).to(rho.dtype)
            rho[idx[wait]] = beta * iou + tau
            pending[idx[wait]] = False

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        region: torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack a batch toward the target masks ``labels``; see :class:`SegmentationAttack`."""
        self._multiplier = None
        result = super().__call__(model, images, labels, region=region)
        if self._multiplier is not None:
            result.extra["multiplier"] = self._multiplier.detach().clone()
        self._multiplier = None
        return result


# --------------------------------------------------------------------------------------------
# DAG
# --------------------------------------------------------------------------------------------
class DAG(SegmentationAttack):
    """Dense Adversary Generation: targeted, active set of pixels not yet fooled, normalised
    steps, early stop; batched.

    Each iteration takes the gradient ``r_m`` of :class:`DAGLoss` over the active set (pixels
    whose prediction differs from the target), normalises it per sample to norm ``gamma``
    (``norm="linf"``: Xie et al.; ``"l2"``: the CAMP implementation) and adds it to the input,
    which is then clipped to the bounds (and, with ``eps``, projected onto that ball). A sample
    stops when fewer than ``1 - success_fraction`` of its initially wrong pixels remain (with
    ``success_fraction=1``: once every target pixel is flipped) or its gradient vanishes.

    Args:
        steps: Maximum iterations (200 in Xie et al., 20 in the CAMP code).
        gamma: Norm of each step; default ``0.5/255`` of the input range for Linf (Xie et
            al.'s 0.5 on the 0-255 scale) and ``0.07`` of the range for L2 (CAMP's default).
        norm: ``"linf"`` or ``"l2"``: the norm of the step (and of ``eps``).
        eps: Optional budget (None: minimal perturbation, only the bounds constrain it).
        success_fraction: The stop rule (0.99: fewer than 1% of the target pixels remain).
        seed: Seed (no random numbers are drawn; kept for the common interface).
        name: Name in the result's config.

    References:
        Xie et al., ICCV 2017; Paschali et al., MICCAI 2018.
    """

    engine = "dag"

    def __init__(
        self,
        *,
        steps: int = 200,
        gamma: float | None = None,
        norm: Norm | str = Norm.LINF,
        eps: float | None = None,
        success_fraction: float = 0.99,
        seed: int = 0,
        name: str = "dag",
    ) -> None:
        super().__init__(
            objective=DAGLoss(success_fraction=success_fraction), norm=norm, eps=eps, seed=seed
        )
        _check_positive("steps", steps, integer=True)
        if gamma is not None:
            _check_positive("gamma", gamma)
        self.steps = int(steps)
        self.gamma = None if gamma is None else float(gamma)
        self.name = name

    def params(self) -> dict[str, Any]:
        return {"steps": self.steps, "gamma": self.gamma}

    def step_norm(self, model: ModelAdapter) -> float:
        """The resolved ``gamma`` for this model's input range."""
        if self.gamma is not None:
            return self.gamma
        w = model.bounds.width
        return 0.5 / 255.0 * w if self.norm is Norm.LINF else 0.07 * w

    def _run(
        self,
        model: ModelAdapter,
        x: torch.Tensor,
        target: Target,
        threat: ThreatModel,
        region: torch.Tensor | None,
        best: BestTracker,
    ) -> None:
        gamma = self.step_norm(model)
        xt = x.clone()
        idx = (~best.success).nonzero().flatten()
        evaluated = True
        for _ in range(self.steps):
            if idx.numel() == 0:
                return
            ta = index_target(target, idx)
            out, g = self.evaluate(model, xt[idx], ta, grad=True)
            best.update(idx, xt[idx], out)
            if g is None:  # pragma: no cover
                raise RuntimeError("gradient was requested but not computed")
            ra = _rows(region, idx)
            if ra is not None:
                g = g * ra
            nrm = _per_sample_norm(g, self.norm)
            keep = ~out.success & (nrm.flatten() > 0)
            if not bool(keep.all()):
                idx, g, nrm = idx[keep], g[keep], nrm[keep]
                ra = _rows(region, idx)
            if idx.numel() == 0:
                return
            x0 = x[idx]
            step = gamma * g / nrm
            xt[idx] = x0 + threat.project(x0, xt[idx] + step - x0, ra)
            best.steps[idx] += 1
            evaluated = False
        if not evaluated and idx.numel():
            ta = index_target(target, idx)
            out, _ = self.evaluate(model, xt[idx], ta, grad=False)
            best.update(idx, xt[idx], out)


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------
@ATTACKS.register(
    "asma",
    summary="ASMA: targeted minimal-perturbation segmentation attack with adaptive multiplier",
    tags=("segmentation", "targeted", "minimal"),
)
def asma(
    *,
    steps: int = 300,
    tau: float | None = None,
    beta: float | None = None,
    normalize: str | None = "linf",
    eps: float | None = None,
    norm: str = "linf",
    distance_weight: float = 1.0,
    success_fraction: float = 0.99,
    early_stop: bool = False,
    seed: int = 0,
) -> Attack:
    """ASMA (Ozbulak et al. 2019) toward target masks; ``normalize=None, tau=1e-7, beta=1e-6,
    steps=2501`` reproduces the paper's raw-gradient update."""
    return ASMA(
        steps=steps,
        tau=tau,
        beta=beta,
        normalize=normalize,
        eps=eps,
        norm=norm,
        distance_weight=distance_weight,
        success_fraction=success_fraction,
        early_stop=early_stop,
        seed=seed,
        name="asma",
    )


@ATTACKS.register(
    "asma-bounded",
    summary="ASMA projected onto an eps-ball (budget-bounded variant)",
    tags=("segmentation", "targeted"),
)
def asma_bounded(
    *,
    eps: float = 8 / 255,
    norm: str = "linf",
    steps: int = 100,
    tau: float | None = None,
    beta: float | None = None,
    normalize: str | None = "linf",
    distance_weight: float = 1.0,
    success_fraction: float = 0.99,
    early_stop: bool = True,
    seed: int = 0,
) -> Attack:
    """ASMA whose iterates are projected onto the ``norm`` ball of radius ``eps``."""
    return ASMA(
        steps=steps,
        tau=tau,
        beta=beta,
        normalize=normalize,
        eps=eps,
        norm=norm,
        distance_weight=distance_weight,
        success_fraction=success_fraction,
        early_stop=early_stop,
        seed=seed,
        name="asma-bounded",
    )


@ATTACKS.register(
    "dag",
    summary="DAG: targeted dense adversary generation with an active set and normalised steps",
    tags=("segmentation", "targeted", "minimal"),
)
def dag(
    *,
    steps: int = 200,
    gamma: float | None = None,
    norm: str = "linf",
    eps: float | None = None,
    success_fraction: float = 0.99,
    seed: int = 0,
) -> Attack:
    """DAG (Xie et al. 2017); ``norm="l2", gamma=0.07, steps=20`` is the CAMP variant."""
    return DAG(
        steps=steps,
        gamma=gamma,
        norm=norm,
        eps=eps,
        success_fraction=success_fraction,
        seed=seed,
        name="dag",
    )


@ATTACKS.register(
    "pgd-seg",
    summary="PGD on pixel-wise cross-entropy or soft Dice of a segmentation (untargeted)",
    tags=("segmentation", "untargeted"),
)
def pgd_seg(
    *,
    eps: float = 4 / 255,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    objective: str = "ce",
    targeted: bool = False,
    success_dice: float = 0.5,
    success_fraction: float = 0.99,
    early_stop: bool = False,
    seed: int = 0,
) -> Attack:
    """PGD on ``objective`` ``"ce"`` (pixel-wise cross-entropy) or ``"dice"`` (soft Dice).
    Without early stop every sample runs all steps, so the Dice it reports is the lowest the
    attack reaches rather than the first one below ``success_dice``."""
    return SegmentationPGD(
        objective=create_segmentation_objective(
            objective,
            targeted=targeted,
            success_dice=success_dice,
            success_fraction=success_fraction,
        ),
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        restarts=restarts,
        early_stop=early_stop,
        seed=seed,
        name="pgd-seg",
    )


@ATTACKS.register(
    "apgd-seg",
    summary="APGD on pixel-wise cross-entropy or soft Dice of a segmentation (untargeted)",
    tags=("segmentation", "untargeted"),
)
def apgd_seg(
    *,
    eps: float = 4 / 255,
    norm: str = "linf",
    steps: int = 20,
    restarts: int = 1,
    objective: str = "ce",
    targeted: bool = False,
    success_dice: float = 0.5,
    success_fraction: float = 0.99,
    early_stop: bool = False,
    seed: int = 0,
) -> Attack:
    """APGD (Croce & Hein 2020) on ``objective`` ``"ce"`` or ``"dice"``."""
    return SegmentationAPGD(
        objective=create_segmentation_objective(
            objective,
            targeted=targeted,
            success_dice=success_dice,
            success_fraction=success_fraction,
        ),
        norm=norm,
        eps=eps,
        steps=steps,
        restarts=restarts,
        early_stop=early_stop,
        seed=seed,
        name="apgd-seg",
    )
