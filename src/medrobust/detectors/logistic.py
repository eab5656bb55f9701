"""L2-regularised logistic regression in torch (the combiner of the supervised baselines).

The fitted model is two tensors, so a detector score built on it stays differentiable and is
saved with ``torch.save`` like every other detector state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from medrobust.detectors.calibration import standardiser
from medrobust.models.adapter import ModelAdapter

if TYPE_CHECKING:
    from medrobust.detectors.base import Detector

__all__ = [
    "fit_combination",
    "fit_detector_combination",
    "fit_logistic",
    "sign_noise",
    "successful_examples",
]


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, *, c: float = 1.0, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``P(y=1 | x) = sigmoid(x @ w + b)`` by minimising ``0.5 ||w||^2 + c * sum log-loss``.

    The objective is the one of scikit-learn's ``LogisticRegression(C=c)`` (intercept not
    penalised); it is minimised with L-BFGS in float64.

    Args:
        x: Features ``(N, M)`` (standardise them first).
        y: Binary labels ``(N,)`` (0/1 or bool).
        c: Inverse regularisation strength (> 0).
        max_iter: L-BFGS iterations.

    Returns:
        ``(w (M,), b scalar)`` as float32 tensors.

    Raises:
        ValueError: If shapes disagree, values are not finite, ``c <= 0`` or only one class is
            present.

    Shape:
        - x: ``(N, M)``; y: ``(N,)``.

    References:
        Feinman et al., "Detecting Adversarial Samples from Artifacts", 2017 (logistic
        regression on detector features).
    """
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x must be (N, M) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not c > 0:
        raise ValueError(f"c must be > 0, got {c}")
    xd = x.detach().to(torch.float64)
    yd = y.detach().to(torch.float64)
    if not bool(torch.isfinite(xd).all()):
        raise ValueError("logistic regression features contain NaN or infinite values")
    if bool(((yd != 0) & (yd != 1)).any()):
        raise ValueError("logistic regression labels must be 0 or 1")
    if yd.min() == yd.max():
        raise ValueError("logistic regression needs both classes (0 and 1) in the labels")
    w = torch.zeros(xd.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = xd @ w + b
        loss = 0.5 * (w * w).sum() + c * torch.nn.functional.binary_cross_entropy_with_logits(
            z, yd, reduction="sum"
        )
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().to(torch.float32), b.detach().to(torch.float32)


def successful_examples(
    attack: Callable[..., Any],
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """The adversarial examples of ``images`` on which ``attack`` succeeded, batch by batch.

    Args:
        attack: An engine attack (``attack(model, x, y)`` returns an ``AttackResult``).
        model: The attacked model.
        images: Clean images ``(N, C, *spatial)``.
        labels: The labels to move away from ``(N,)`` (the model's own predictions when fitting
            a detector).
        batch_size: Images per attack call.

    Returns:
        ``(M, C, *spatial)`` with ``M <= N``.
    """
    adv: list[torch.Tensor] = []
    for i in range(0, images.shape[0], batch_size):
        res = attack(model, images[i : i + batch_size], labels[i : i + batch_size])
        adv.append(res.x_adv[res.success])
    return torch.cat(adv)


def sign_noise(
    images: torch.Tensor,
    eps: float,
    seed: int,
    clamp: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Noisy negatives: ``clamp(x + eps * s)`` with seeded random signs ``s`` in ``{-1, 1}``.

    References:
        Ma et al., ICLR 2018 (noisy negatives of the LID and KD+BU protocols).
    """
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, images.shape, generator=gen).to(images) * 2 - 1
    return clamp(images + eps * signs)


def fit_combination(
    clean: torch.Tensor, noisy: torch.Tensor, adversarial: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The supervised combination of component scores: standardise on the clean ones, then fit
    a logistic regression of clean and noisy (0) against adversarial (1).

    Args:
        clean: Component scores of clean images ``(N, M)``.
        noisy: Of noisy images ``(N', M)``.
        adversarial: Of adversarial images ``(N'', M)``.

    Returns:
        ``(mu (M,), sigma (M,), w (M,), b ())`` on the device of the scores.
    """
    mu, sigma = standardiser(clean)
    x = torch.cat([clean, noisy, adversarial])
    z = (x - mu) / sigma
    y = torch.cat([torch.zeros(clean.shape[0] + noisy.shape[0]), torch.ones(adversarial.shape[0])])
    w, b = fit_logistic(z.cpu(), y)
    return mu, sigma, w.to(x.device), b.to(x.device)


def fit_detector_combination(
    det: Detector,
    model: ModelAdapter,
    feats: Mapping[str, torch.Tensor],
    logits: torch.Tensor,
    images: torch.Tensor,
) -> int:
    """The supervised protocol of a detector's ``combine="logistic"``: craft adversarial
    examples of the fit images with ``det.fit_attack`` against the model's own predictions,
    add sign-noise negatives, and fit :func:`fit_combination` on the three sets' components.

    Args:
        det: The detector being fitted (its components are already fitted).
        model: The classifier.
        feats: Clean fit features ``{layer: (N, D_l)}``.
        logits: Clean fit logits ``(N, K)``.
        images: Clean fit images ``(N, C, *spatial)``.

    Returns:
        The number of adversarial examples used.

    Raises:
        ValueError: If the attack fooled the model on fewer than 2 images.
    """
    from medrobust.attacks.presets import create_attack

    attack = create_attack(str(det.fit_attack), eps=det.fit_eps, seed=det.seed)
    pred = logits.argmax(dim=1)
    x_adv = successful_examples(attack, model, images, pred, det.batch_size)
    if x_adv.shape[0] < 2:
        raise ValueError(
            f"the fit attack {det.fit_attack!r} at eps={det.fit_eps:.4g} fooled the model on "
            f"{x_adv.shape[0]} clean image(s); the logistic combination needs adversarial "
            "examples: raise fit_eps, or pass fit_attack=None for the unsupervised z-score "
            "combination"
        )
    noisy = sign_noise(images, det.fit_eps, det.seed + 1, model.bounds.clamp)
    clean_comp = det._components_of(model, feats, logits, images)
    keep = det._uses_images()
    nf, nl, ni = det._collect(model, noisy, keep_images=keep, what="noisy")
    af, al, ai = det._collect(model, x_adv, keep_images=keep, what="adversarial")
    noisy_comp = det._components_of(model, nf, nl, ni)
    adv_comp = det._components_of(model, af, al, ai)
    det._mu, det._sigma, det._w, det._b = fit_combination(clean_comp, noisy_comp, adv_comp)
    return int(adv_comp.shape[0])
