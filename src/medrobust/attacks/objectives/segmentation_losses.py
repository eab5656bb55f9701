"""Segmentation losses that do not waste the budget on pixels already flipped: SegPGD's
correct/wrong reweighting and CosPGD's cosine weighting (untargeted or toward a target mask), and
the untargeted losses of the SEA ensemble (Jensen-Shannon divergence, masked cross-entropy,
masked balanced cross-entropy, masked spherical loss).

A plain pixel-wise cross-entropy is dominated, after a few steps, by the pixels that are already
misclassified (their loss grows without bound), so the attack stops flipping new ones. Each loss
here reweights or bounds the per-pixel loss so that the still-correct pixels keep driving the
gradient. Every loss is a :class:`~medrobust.attacks.objectives.segmentation.SegmentationObjective`:
masks of class indices ``(B, *spatial)``, logits ``(B, K, *spatial)``; untargeted, a sample is
broken when its Dice falls below ``broken_fraction`` of its clean Dice; targeted (SegPGD and
CosPGD with ``targeted=True``), it succeeds when at most ``1 - success_fraction`` of the pixels
that had to change still disagree with the target mask. Any engine runs them.

References:
    Gu, Zhao, Tresp, Torr, "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating
    and Boosting Segmentation Robustness", ECCV 2022.
    Agnihotri, Jung, Keuper, "CosPGD: an efficient white-box adversarial attack for pixel-wise
    prediction tasks", ICML 2024.
    Croce, Singh, Hein, "Towards Reliable Evaluation and Fast Training of Robust Semantic
    Segmentation Models", ECCV 2024 (SEA).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medrobust.attacks.objectives.base import OBJECTIVES, ObjectiveOutput, Target
from medrobust.attacks.objectives.segmentation import SegmentationObjective, class_argmax

__all__ = [
    "PROGRESS_KEY",
    "CosPGDLoss",
    "JensenShannonLoss",
    "MaskedBalancedCE",
    "MaskedCrossEntropy",
    "MaskedSphericalLoss",
    "SegPGDLoss",
    "js_divergence",
    "segpgd_weight",
]

#: The key under which a scheduling engine passes each sample's progress ``t / T`` in ``[0, 1]``
#: to the objective (see :class:`medrobust.attacks.segpgd.ScheduledPGD`).
PROGRESS_KEY = "progress"


class _PixelLoss(SegmentationObjective):
    """Base of the losses of this module: one per-pixel map reduced per sample, to be maximised.

    Args:
        targeted: Attack toward the given mask (the subclass decides what it maximises then).
        broken_fraction: Untargeted success, see :class:`SegmentationObjective`.
        success_fraction: Targeted success, see :class:`SegmentationObjective`.
    """

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        """The per-sample loss ``(B,)`` to maximise, from logits ``(B, K, *spatial)``, the
        (true or target) mask and the current prediction ``(B, *spatial)``."""
        raise NotImplementedError  # pragma: no cover - every subclass implements it

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        z, mask = self.logits_and_mask(model, x, target)
        pred = class_argmax(z)
        loss = self.pixel_loss(z, mask.long(), pred, target)
        return ObjectiveOutput(loss, self.success(pred, target, z.shape[1]), pred, z)


class _UntargetedLoss(_PixelLoss):
    """Base of the SEA losses: untargeted only.

    Args:
        broken_fraction: See :class:`SegmentationObjective`.
    """

    def __init__(self, broken_fraction: float = 0.5) -> None:
        super().__init__(False, broken_fraction)


def _pixel_ce(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy flattened to ``(B, N)``."""
    return F.cross_entropy(z, mask, reduction="none").flatten(1)


def segpgd_weight(progress: torch.Tensor) -> torch.Tensor:
    """SegPGD's weight of the misclassified pixels, ``lambda = progress / 2``.

    Gu et al. use ``lambda_t = (t - 1) / (2 T)`` at step ``t = 1..T``: the engine passes
    ``progress = (t - 1) / T``, so the attack starts on the correct pixels only and ends with
    both sets weighted almost equally.

    Shape:
        - progress: ``(B,)`` in ``[0, 1]``; output the same.
    """
    return progress.clamp(0.0, 1.0) / 2.0


def _cos_to_label(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per pixel, the cosine between the class vector ``v`` and the one-hot ``mask``:
    ``v_y / ||v||_2``.

    Shape:
        - v: ``(B, K, *spatial)``; mask ``(B, *spatial)``; output ``(B, *spatial)``.
    """
    return v.gather(1, mask.unsqueeze(1)).squeeze(1) / v.norm(dim=1).clamp_min(1e-12)


def _progress(target: Target, like: torch.Tensor) -> torch.Tensor:
    """``target["progress"]`` ``(B,)`` where a scheduling engine set it, else zeros."""
    if isinstance(target, dict) and PROGRESS_KEY in target:
        return target[PROGRESS_KEY].to(like.device, like.dtype)
    return torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)


@OBJECTIVES.register(
    "segpgd", summary="SegPGD: CE of correct and wrong pixels, reweighted over the iterations"
)
class SegPGDLoss(_PixelLoss):
    """SegPGD's loss: the pixel cross-entropy split into two sets weighted ``1 - lambda`` and
    ``lambda``, with ``lambda`` growing over the iterations (see :func:`segpgd_weight`).

    Untargeted (away from the true mask ``y``), maximised:
    ``L = ((1 - lambda) sum_{i correct} CE_i(y) + lambda sum_{i wrong} CE_i(y)) / N``, where
    *correct* means the current prediction equals ``y`` at pixel ``i``.

    Targeted (toward the target mask ``t``), the cross-entropy to ``t`` is descended (this
    objective returns its negation): ``L_t = ((1 - lambda) sum_{i not at t} CE_i(t) + lambda
    sum_{i at t} CE_i(t)) / N``: the pixels that do not predict their target class yet weigh
    ``1 - lambda``, those already at the target ``lambda``, with the same schedule. This is the
    targeted form of Gu et al.'s reweighting as the CosPGD authors' reference code implements
    it (``segpgd_scale(..., targeted=True)`` in github.com/shashankskagnihotri/cospgd).

    In both the split is held constant for the gradient and ``N`` counts every pixel. An engine
    that schedules ``lambda`` passes ``target["progress"]``; other engines (APGD, plain PGD)
    run it with ``lambda = 0``: untargeted, the cross-entropy of the correct pixels only (i.e.
    :class:`MaskedCrossEntropy`); targeted, the cross-entropy of the pixels not yet at target.

    Args:
        targeted: Attack toward the given mask.
        broken_fraction: Untargeted success, see :class:`SegmentationObjective`.
        success_fraction: Targeted success, see :class:`SegmentationObjective`.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Gu et al., ECCV 2022, Eq. 4 and the schedule of Sec. 3.3.
    """

    name = "segpgd"

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        ce = _pixel_ce(z, mask)
        agree = (pred == mask).flatten(1).to(ce.dtype)  # correct / already at the target
        lam = segpgd_weight(_progress(target, ce)).unsqueeze(1)
        if self.targeted:
            weights = (1.0 - lam) * (1.0 - agree) + lam * agree
            return -(weights * ce).mean(dim=1)
        weights = (1.0 - lam) * agree + lam * (1.0 - agree)
        return (weights * ce).mean(dim=1)


@OBJECTIVES.register(
    "cospgd", summary="CosPGD: pixel CE weighted by the cosine between the prediction and the mask"
)
class CosPGDLoss(_PixelLoss):
    """CosPGD's loss: the per-pixel cross-entropy weighted by a cosine similarity between the
    prediction and the one-hot mask, averaged over the pixels.

    Untargeted (maximised): ``L = mean_i cos(sigmoid(z_i), e_{y_i}) CE_i(y)`` with
    ``cos(s, e_y) = s_y / ||s||_2``: pixels whose prediction still agrees with the label weigh
    close to 1, pixels already pushed away weigh less, so the budget goes where the
    segmentation is still right. The weight is part of the differentiated loss, as in Algorithm
    1 of the paper.

    Targeted (descended; this objective returns the negation):
    ``L_t = mean_i (1 - cos(softmax(z_i), e_{t_i})) CE_i(t)``: pixels far from their target
    class weigh most, pixels that already agree with the target fade out. This follows the
    authors' reference implementation of the targeted attack (``cospgd_scale(...,
    targeted=True)`` in github.com/shashankskagnihotri/cospgd: softmax of the logits, cosine to
    the one-hot target, ``1 - cos`` as the weight, the weight detached from the gradient, and a
    step against the gradient).

    Args:
        targeted: Attack toward the given mask.
        broken_fraction: Untargeted success, see :class:`SegmentationObjective`.
        success_fraction: Targeted success, see :class:`SegmentationObjective`.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Agnihotri, Jung, Keuper, ICML 2024, Algorithm 1 (and the reference code for the
        targeted weight).
    """

    name = "cospgd"

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        ce = _pixel_ce(z, mask)
        if self.targeted:
            cos = _cos_to_label(torch.softmax(z.detach(), dim=1), mask)
            return -((1.0 - cos).flatten(1) * ce).mean(dim=1)
        cos = _cos_to_label(torch.sigmoid(z), mask)
        return (cos.flatten(1) * ce).mean(dim=1)


def js_divergence(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel Jensen-Shannon divergence (natural log) between ``softmax(z)`` and the one-hot
    mask, in ``[0, log 2]``.

    With ``p = softmax(z)``, ``q = e_y`` and ``m = (p + q) / 2``:
    ``JS = KL(p || m) / 2 + KL(q || m) / 2``, where ``KL(q || m) = -log m_y``.

    Shape:
        - z: ``(B, K, *spatial)``; mask ``(B, *spatial)``; output ``(B, *spatial)``.
    """
    logp = torch.log_softmax(z, dim=1)
    p = logp.exp()
    q = F.one_hot(mask, z.shape[1]).movedim(-1, 1).to(p.dtype)
    m = (p + q) / 2.0
    logm = torch.log(m.clamp_min(1e-30))
    kl_pm = (p * (logp - logm)).sum(dim=1)
    kl_qm = -(q * logm).sum(dim=1)
    return 0.5 * (kl_pm + kl_qm)


@OBJECTIVES.register("sea-js", summary="SEA: Jensen-Shannon divergence to the one-hot label")
class JensenShannonLoss(_UntargetedLoss):
    """The Jensen-Shannon divergence between the predicted distribution and the one-hot label,
    averaged over the pixels: bounded by ``log 2`` per pixel, so flipped pixels cannot dominate.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Croce, Singh, Hein, ECCV 2024 (SEA), Sec. 3.
    """

    name = "sea-js"

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        return js_divergence(z, mask).flatten(1).mean(dim=1)


@OBJECTIVES.register("sea-mce", summary="SEA: cross-entropy of the still-correct pixels only")
class MaskedCrossEntropy(_UntargetedLoss):
    """Masked cross-entropy: the cross-entropy of the pixels whose prediction is still correct
    (the mask held constant for the gradient), divided by the number of pixels. Once a pixel
    is flipped it leaves the loss, so the attack moves on to the next one.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Croce, Singh, Hein, ECCV 2024 (SEA), Sec. 3.
    """

    name = "sea-mce"

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        ce = _pixel_ce(z, mask)
        correct = (pred == mask).flatten(1).to(ce.dtype)
        return (correct * ce).mean(dim=1)


@OBJECTIVES.register(
    "sea-mbce", summary="SEA: class-balanced cross-entropy of the still-correct pixels"
)
class MaskedBalancedCE(_UntargetedLoss):
    """Masked balanced cross-entropy: the cross-entropy of the still-correct pixels, each pixel
    weighted by ``1 / (K_s n_c)`` where ``n_c`` is the number of pixels of its true class ``c``
    in the sample's mask and ``K_s`` the number of classes present in it. Every class then
    carries the same total weight, so a small lesion is attacked as hard as the background that
    surrounds it.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Croce, Singh, Hein, ECCV 2024 (SEA), Sec. 3 (balanced and masked losses).
    """

    name = "sea-mbce"

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        ce = _pixel_ce(z, mask)
        flat = mask.flatten(1)
        k = z.shape[1]
        counts = F.one_hot(flat, k).sum(dim=1).to(ce.dtype)  # (B, K)
        present = (counts > 0).sum(dim=1, keepdim=True).to(ce.dtype)
        weight = 1.0 / (counts.gather(1, flat) * present)
        correct = (pred == mask).flatten(1).to(ce.dtype)
        return (weight * correct * ce).sum(dim=1)


@OBJECTIVES.register(
    "sea-msph", summary="SEA: masked spherical loss, unit-sphere logit of the still-correct pixels"
)
class MaskedSphericalLoss(_UntargetedLoss):
    """Masked spherical loss: the logits of each pixel projected onto the unit sphere, and the
    coordinate of the true class, ``u_y / ||u||_2 = <u / ||u||_2, e_y>``, pushed down on the
    pixels that are still correctly classified (the mask held constant for the gradient),
    averaged over the pixels.

    ``L = mean_i -1{argmax u_i = y_i} u_{i, y_i} / ||u_i||_2`` (maximised). Projecting onto the
    sphere makes the loss blind to the scale of the logits, so the attack cannot lower it by
    shrinking every logit (which leaves the prediction unchanged), and its value per pixel is
    bounded in ``[-1, 1]``; the mask drops flipped pixels as in :class:`MaskedCrossEntropy`.
    The gradient flows through the normalisation.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Croce, Singh, Hein, ECCV 2024 (SEA; arXiv 2306.12941v2), the masked spherical loss of
        the SEA ensemble. The definition follows the authors' code (github.com/nmndeep/
        robust-segmentation, loss ``mask-norm-corrlog-avg``, one of the four losses of their
        SEA runs); the stored copy of the paper consulted here ended before its loss section.
    """

    name = "sea-msph"

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        u_true = _cos_to_label(z, mask).flatten(1)
        correct = (pred == mask).flatten(1).to(u_true.dtype)
        return -(correct * u_true).mean(dim=1)
