"""Untargeted segmentation losses that do not waste the budget on pixels already flipped:
SegPGD's correct/wrong reweighting, CosPGD's cosine weighting, and the losses of the SEA
ensemble (Jensen-Shannon divergence, masked cross-entropy, masked balanced cross-entropy).

A plain pixel-wise cross-entropy is dominated, after a few steps, by the pixels that are already
misclassified (their loss grows without bound), so the attack stops flipping new ones. Each loss
here reweights or bounds the per-pixel loss so that the still-correct pixels keep driving the
gradient. Every loss is a :class:`~medrobust.attacks.objectives.segmentation.SegmentationObjective`
(untargeted): masks of class indices ``(B, *spatial)``, logits ``(B, K, *spatial)``, a sample is
broken when its Dice falls below ``broken_fraction`` of its clean Dice, and any engine runs it.

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
    "SegPGDLoss",
    "js_divergence",
    "segpgd_weight",
]

#: The key under which a scheduling engine passes each sample's progress ``t / T`` in ``[0, 1]``
#: to the objective (see :class:`medrobust.attacks.segpgd.ScheduledPGD`).
PROGRESS_KEY = "progress"


class _UntargetedLoss(SegmentationObjective):
    """Base of the losses of this module: untargeted only, one per-pixel map averaged per sample.

    Args:
        broken_fraction: See :class:`SegmentationObjective`.
    """

    def __init__(self, broken_fraction: float = 0.5) -> None:
        super().__init__(False, broken_fraction)

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        """The per-sample loss ``(B,)`` from logits ``(B, K, *spatial)``, the true mask and the
        current prediction ``(B, *spatial)``."""
        raise NotImplementedError  # pragma: no cover - every subclass implements it

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Target) -> ObjectiveOutput:
        z, mask = self.logits_and_mask(model, x, target)
        pred = class_argmax(z)
        loss = self.pixel_loss(z, mask.long(), pred, target)
        return ObjectiveOutput(loss, self.success(pred, target, z.shape[1]), pred, z)


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


@OBJECTIVES.register(
    "segpgd", summary="SegPGD: CE of correct and wrong pixels, reweighted over the iterations"
)
class SegPGDLoss(_UntargetedLoss):
    """SegPGD's loss: ``(1 - lambda) mean_correct-part CE + lambda mean_wrong-part CE``.

    ``L = ((1 - lambda) sum_{i correct} CE_i + lambda sum_{i wrong} CE_i) / N`` over the ``N``
    pixels of a sample, where *correct* means the current prediction equals the true class (the
    split is held constant for the gradient). ``lambda`` grows with the iteration (see
    :func:`segpgd_weight`); an engine that schedules it passes ``target["progress"]``. Other
    engines (APGD, plain PGD) run it with ``lambda = 0``: the cross-entropy of the correct pixels
    only, i.e. :class:`MaskedCrossEntropy` without its normalisation.

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
        correct = (pred == mask).flatten(1).to(ce.dtype)
        progress = torch.zeros(ce.shape[0], dtype=ce.dtype, device=ce.device)
        if isinstance(target, dict) and PROGRESS_KEY in target:
            progress = target[PROGRESS_KEY].to(ce.device, ce.dtype)
        lam = segpgd_weight(progress).unsqueeze(1)
        weights = (1.0 - lam) * correct + lam * (1.0 - correct)
        return (weights * ce).mean(dim=1)


@OBJECTIVES.register(
    "cospgd", summary="CosPGD: pixel CE weighted by the cosine of sigmoid(logits) and the label"
)
class CosPGDLoss(_UntargetedLoss):
    """CosPGD's loss: per-pixel cross-entropy weighted by the cosine similarity between the
    sigmoid of the logits and the one-hot true class, averaged over the pixels.

    ``L = mean_i cos(sigmoid(z_i), e_{y_i}) CE_i`` with ``cos(s, e_y) = s_y / ||s||_2``: pixels
    whose prediction still agrees with the label weigh close to 1, pixels already pushed away
    weigh less, so the budget goes where the segmentation is still right. The weight is part of
    the differentiated loss, as in the authors' formulation.

    Shape:
        - logits: ``(B, K, *spatial)``; mask ``(B, *spatial)``; loss ``(B,)``.

    References:
        Agnihotri et al., ICML 2024, Algorithm 1 (untargeted).
    """

    name = "cospgd"

    def pixel_loss(
        self, z: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, target: Target
    ) -> torch.Tensor:
        s = torch.sigmoid(z)
        s_true = s.gather(1, mask.unsqueeze(1)).squeeze(1)
        cos = s_true / s.norm(dim=1).clamp_min(1e-12)
        return (cos.flatten(1) * _pixel_ce(z, mask)).mean(dim=1)


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
