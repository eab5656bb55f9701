"""Detector-aware attacks beyond the penalty sweep of ``pgd-adaptive``: Orthogonal PGD
(Bryniarski et al. 2022) and a feature-matching attack in the spirit of HFC (Yao et al. 2021).

Both run on any fitted detector guarding the model (what
:class:`~medrobust.attacks.objectives.detector.GuardDetector` describes; the feature-matching
attack also reads the detector's layer features and their clean class statistics). Success means
misclassified *and* not flagged, so robust accuracy under them is the guarded system's.

References:
    Bryniarski, Hingun, Pachuca, Wang & Carlini, "Evading Adversarial Example Detection
    Defenses with Orthogonal Projected Gradient Descent", ICLR 2022; Yao et al., "A
    Hierarchical Feature Constraint to Camouflage Medical Adversarial Attacks", MICCAI 2021.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from medrobust.attacks.engine import Attack, Run
from medrobust.attacks.objectives.base import ObjectiveOutput
from medrobust.attacks.objectives.detector import DetectorEvasion, GuardDetector, check_number
from medrobust.attacks.presets import register_attack
from medrobust.attacks.rng import attack_generator, restrict

__all__ = ["FeatureMatchingPGD", "OrthogonalPGD", "classifier_term", "orthogonal_to"]

_MODES = ("orthogonal", "selective")


def classifier_term(
    logits: torch.Tensor, labels: torch.Tensor, loss: str, confidence: float
) -> torch.Tensor:
    """Per-sample classifier loss to maximise: the logit margin (best other minus true, capped
    at ``confidence``) or the cross-entropy.

    Shape:
        - logits: ``(B, K)``; labels: ``(B,)``; output ``(B,)``.
    """
    if loss == "ce":
        return F.cross_entropy(logits, labels, reduction="none")
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return (other.amax(dim=1) - true).clamp(max=confidence)


def orthogonal_to(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a`` minus its projection on ``b``, per sample (``a`` where ``b`` is zero).

    Shape:
        - a, b: ``(B, *)``; output like ``a``.
    """
    af, bf = a.flatten(1), b.flatten(1)
    bb = (bf * bf).sum(dim=1, keepdim=True)
    coef = torch.where(bb > 0, (af * bf).sum(dim=1, keepdim=True) / bb.clamp_min(1e-30), 0.0)
    return (af - coef * bf).view_as(a)


class _DetectorAttack(Attack):
    """Shared set-up of the detector-aware engines: the evasion objective (targets, checks,
    success = misclassified and unflagged) and the loop settings."""

    def __init__(
        self,
        *,
        detector: GuardDetector | None = None,
        steps: int = 50,
        step_size: float | None = None,
        random_start: bool = False,
        margin: float = 0.1,
        loss: str = "margin",
        confidence: float = 1.0,
        name: str = "attack",
        **kwargs: Any,
    ) -> None:
        objective = DetectorEvasion(detector, margin=margin, loss=loss, confidence=confidence)
        super().__init__(objective=objective, **kwargs)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        self.steps = steps
        eps = self.eps if self.eps is not None else 1.0
        self.step_size = (
            2.5 * eps / steps if step_size is None else check_number("step_size", step_size)
        )
        self.random_start = bool(random_start)
        self.detector: GuardDetector = objective.detector
        self.margin, self.loss, self.confidence = margin, loss, confidence
        self.name = name

    def params(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "random_start": self.random_start,
        }

    def _direction(self, xg: torch.Tensor, y: torch.Tensor) -> tuple[ObjectiveOutput, Any]:
        """The objective output at ``xg`` (detached) and the ascent direction."""
        raise NotImplementedError

    def _run(self, run: Run) -> dict[str, torch.Tensor] | None:
        model, x, target, threat, region, best = run.unpack()
        if model is not self.detector.model:
            raise ValueError(
                f"attack {self.name!r} must run on the model the detector guards (the same "
                "ModelAdapter object that was passed to detector.fit)"
            )
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"attack {self.name!r} expects a label tensor as target")
        idx = (~best.success).nonzero().flatten()
        if idx.numel() == 0:
            return None
        xa, ya, ra = x[idx], target[idx], region
        if ra is not None and ra.shape[0] > 1:
            ra = ra[idx]
        gen = restrict(attack_generator(self.seed, x.device), idx)
        delta = threat.random_init(xa, gen, ra) if self.random_start else torch.zeros_like(xa)
        for t in range(self.steps + 1):
            with torch.enable_grad():
                xg = (xa + delta).detach().requires_grad_(True)
                out, direction = self._direction(xg, ya)
            best.update(idx, xg.detach(), out)
            keep = ~out.success
            if t == self.steps or not bool(keep.any()):
                break
            best.steps[idx] += 1
            if not bool(keep.all()):
                rows = keep.nonzero().flatten()
                idx, xa, delta, direction = idx[rows], xa[rows], delta[rows], direction[rows]
                ya = ya[rows]
                ra = ra[rows] if ra is not None and ra.shape[0] > 1 else ra
            step = self.step_size * threat.ascent_direction(direction, ra)
            delta = threat.project(xa, delta + step, ra)
        return None

    def _evasion(
        self, logits: torch.Tensor, score: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(classifier term, detector excess, success)`` of one evaluation."""
        det = self.detector
        cls = classifier_term(logits, y, self.loss, self.confidence)
        excess = (score - det.threshold) / det.score_scale + self.margin
        success = (logits.argmax(dim=1) != y) & (score.detach() <= det.threshold)
        return cls, excess, success


class OrthogonalPGD(_DetectorAttack):
    """Orthogonal PGD on a classifier + detector pair (Bryniarski et al. 2022).

    Per step and sample, with ``g_c`` the gradient of the classifier loss and ``g_d`` that of
    the detector score: while the classifier is not yet fooled, step along ``g_c`` with its
    component along ``g_d`` removed (fool the classifier without raising the score); once it
    is fooled but the input is still flagged, step along ``-g_d`` with its component along
    ``g_c`` removed (lower the score without undoing the misclassification).
    ``mode="selective"`` uses the raw gradient of the unmet constraint instead. The best
    iterate per sample is kept (success first, then the highest ``classifier term - excess``).

    Args:
        detector: The fitted detector guarding the model.
        mode: ``"orthogonal"`` or ``"selective"``.
        steps: Gradient steps.
        step_size: Step size; default ``2.5 * eps / steps``.
        random_start: Start from a random point of the ball.
        margin: Aim this many clean-score standard deviations under the threshold.
        loss: Classifier term, ``"margin"`` or ``"ce"``.
        confidence: Cap of the margin term.
        **kwargs: ``norm``, ``eps``, ``seed`` (see :class:`~medrobust.attacks.Attack`).

    References:
        Bryniarski et al., ICLR 2022.
    """

    engine = "orthogonal-pgd"

    def __init__(
        self,
        *,
        detector: GuardDetector | None = None,
        mode: str = "orthogonal",
        steps: int = 50,
        step_size: float | None = None,
        random_start: bool = False,
        margin: float = 0.1,
        loss: str = "margin",
        confidence: float = 1.0,
        name: str = "orthogonal-pgd",
        **kwargs: Any,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        self.mode = mode
        super().__init__(
            detector=detector,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            margin=margin,
            loss=loss,
            confidence=confidence,
            name=name,
            **kwargs,
        )

    def params(self) -> dict[str, Any]:
        return {**super().params(), "mode": self.mode}

    def _direction(self, xg: torch.Tensor, y: torch.Tensor) -> tuple[ObjectiveOutput, Any]:
        logits, score = self.detector.logits_and_score(xg)
        cls, excess, success = self._evasion(logits, score, y)
        g_c = torch.autograd.grad(cls.sum(), xg, retain_graph=True)[0]
        g_d = torch.autograd.grad(score.sum(), xg)[0]
        if self.mode == "orthogonal":
            g_c, g_d = orthogonal_to(g_c, g_d), orthogonal_to(g_d, g_c)
        fooled = (logits.argmax(dim=1) != y).view(-1, *([1] * (xg.ndim - 1)))
        direction = torch.where(fooled, -g_d, g_c)
        value = (cls - F.relu(excess)).detach()
        pred = logits.argmax(dim=1).detach()
        return ObjectiveOutput(value, success.detach(), pred, logits.detach()), direction


class FeatureMatchingPGD(_DetectorAttack):
    """A feature-matching attack in the spirit of HFC (Yao et al. 2021).

    Ascends ``classifier term - weight * relu(excess) - beta * match``, where ``match`` is the
    mean over the detector's layers of the squared standardised distance of the adversarial
    features to the clean mean of the *target* class (the most likely wrong class of the
    clean input): the adversarial features are pulled inside the target class's feature
    distribution at the layers the detector reads, which is what hides them from density
    detectors (KD, LID, Mahalanobis, UAD). A detector that reads no layer (feature squeezing)
    leaves only the evasion terms. The best iterate per sample is the one with the highest
    total objective among the successful ones (else among all).

    Args:
        detector: The fitted detector guarding the model (with ``layer_features`` and
            ``feature_statistics``).
        beta: Weight of the feature-matching term (>= 0).
        weight: Weight of the detector-score penalty (>= 0).
        steps, step_size, random_start, margin, loss, confidence: As :class:`OrthogonalPGD`.
        **kwargs: ``norm``, ``eps``, ``seed``.

    Raises:
        TypeError: For a detector without layer features.

    References:
        Yao, Zhou, Mao, Zhou & Rueckert, "A Hierarchical Feature Constraint to Camouflage
        Medical Adversarial Attacks", MICCAI 2021.
    """

    engine = "feature-matching"

    def __init__(
        self,
        *,
        detector: GuardDetector | None = None,
        beta: float = 1.0,
        weight: float = 1.0,
        steps: int = 50,
        step_size: float | None = None,
        random_start: bool = False,
        margin: float = 0.1,
        loss: str = "margin",
        confidence: float = 1.0,
        name: str = "feature-matching",
        **kwargs: Any,
    ) -> None:
        self.beta = check_number("beta", beta)
        self.weight = check_number("weight", weight)
        super().__init__(
            detector=detector,
            steps=steps,
            step_size=step_size,
            random_start=random_start,
            margin=margin,
            loss=loss,
            confidence=confidence,
            name=name,
            **kwargs,
        )
        for member in ("layer_features", "feature_statistics"):
            if not callable(getattr(self.detector, member, None)):
                raise TypeError(
                    f"the feature-matching attack needs a detector with {member}(); "
                    f"{type(self.detector).__name__} has none"
                )

    def params(self) -> dict[str, Any]:
        return {**super().params(), "beta": self.beta, "weight": self.weight}

    def _match(self, xg: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        stats = self.detector.feature_statistics()  # type: ignore[attr-defined]
        if not stats:
            return torch.zeros(xg.shape[0], device=xg.device, dtype=xg.dtype)
        feats = self.detector.layer_features(xg)  # type: ignore[attr-defined]
        terms = []
        for name, (means, std) in stats.items():
            z = (feats[name] - means.to(xg)[target]) / std.to(xg)
            terms.append(z.pow(2).mean(dim=1))
        return torch.stack(terms, dim=1).mean(dim=1)

    def _direction(self, xg: torch.Tensor, y: torch.Tensor) -> tuple[ObjectiveOutput, Any]:
        logits, score = self.detector.logits_and_score(xg)
        cls, excess, success = self._evasion(logits, score, y)
        masked = logits.detach().masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
        target = masked.argmax(dim=1)
        value = cls - self.weight * F.relu(excess)
        total = value - self.beta * self._match(xg, target) if self.beta > 0 else value
        (grad,) = torch.autograd.grad(total.sum(), xg)
        pred = logits.argmax(dim=1).detach()
        return ObjectiveOutput(total.detach(), success.detach(), pred, logits.detach()), grad


@register_attack(
    "orthogonal-pgd",
    OrthogonalPGD,
    kind="iterative",
    task="detection",
    extras=("gradient", "adaptive"),
    summary="Orthogonal PGD (Bryniarski et al.): classifier and detector gradients, each "
    "projected orthogonal to the other, on a detector-guarded classifier",
)
def orthogonal_pgd(kw: dict[str, Any]) -> dict[str, Any]:
    """Orthogonal PGD; ``detector`` (fitted) is required. See :class:`OrthogonalPGD`."""
    return kw


@register_attack(
    "feature-matching",
    FeatureMatchingPGD,
    kind="iterative",
    task="detection",
    extras=("gradient", "adaptive"),
    summary="HFC-style feature matching (Yao et al.): pull the adversarial features to the "
    "target class's clean statistics at the detector's layers",
)
def feature_matching(kw: dict[str, Any]) -> dict[str, Any]:
    """Feature-matching attack; ``detector`` (fitted) is required. See
    :class:`FeatureMatchingPGD`."""
    return kw
