"""L2-regularised logistic regression in torch (the combiner of the supervised baselines).

The fitted model is two tensors, so a detector score built on it stays differentiable and is
saved with ``torch.save`` like every other detector state.
"""

from __future__ import annotations

import torch

__all__ = ["fit_logistic"]


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
