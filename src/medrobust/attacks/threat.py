"""Threat models: where a perturbation may go (an Lp ball, the input bounds, a region mask)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medrobust.attacks.rng import AnyGenerator, rand, randn
from medrobust.types import Bounds, Norm

_TINY = 1e-12


def sample_norm(t: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample Linf or L2 norm over all non-batch dimensions, shaped ``(B, 1, ..., 1)`` to
    broadcast against ``t``.

    Shape:
        - t: ``(B, *)``; output ``(B, 1, ..., 1)`` of the same rank.
    """
    flat = t.flatten(1)
    n = flat.abs().amax(dim=1) if norm is Norm.LINF else flat.norm(p=2, dim=1)
    return n.view(-1, *([1] * (t.ndim - 1)))


@dataclass
class ThreatModel:
    """An Lp ball of radius ``eps`` around the clean input, intersected with the input bounds and,
    optionally, restricted to a region.

    Args:
        norm: ``Norm.LINF`` or ``Norm.L2``.
        eps: Radius of the ball in the model's documented input space (> 0; ``math.inf`` for a
            threat model bounded only by the input range).
        bounds: Valid input range.
        region: Optional 0/1 (or bool) tensor broadcastable to the input; the perturbation is zero
            wherever it is 0 (e.g. a lesion mask or a field of view).

    Shape:
        - region: ``(B or 1, 1 or C, *spatial)``.
    """

    norm: Norm
    eps: float
    bounds: Bounds
    region: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.norm = Norm.parse(self.norm)
        if not isinstance(self.eps, (int, float)) or math.isnan(self.eps) or self.eps <= 0:
            raise ValueError(f"eps must be a number > 0 (math.inf: unbounded), got {self.eps!r}")
        self.eps = float(self.eps)

    def check_region(self, x: torch.Tensor) -> torch.Tensor | None:
        """Validate the region against an input batch and return it as a float mask.

        Raises:
            ValueError: If the region cannot broadcast to ``x`` or is empty for some sample.
        """
        if self.region is None:
            return None
        r = self.region
        if r.ndim != x.ndim:
            raise ValueError(
                f"region mask must have rank {x.ndim} like the images (B, C, *spatial), "
                f"got shape {tuple(r.shape)} for images of shape {tuple(x.shape)}"
            )
        for i, (rs, xs) in enumerate(zip(r.shape, x.shape, strict=True)):
            if rs not in (1, xs):
                raise ValueError(
                    f"region mask of shape {tuple(r.shape)} does not broadcast to images of shape "
                    f"{tuple(x.shape)} (dimension {i})"
                )
        r = r.to(device=x.device, dtype=x.dtype)
        if bool(((r != 0) & (r != 1)).any()):
            raise ValueError("region mask must contain only 0 and 1")
        empty = r.flatten(1).sum(dim=1) == 0
        if bool(empty.any()):
            raise ValueError(
                f"region mask is empty for sample(s) {empty.nonzero().flatten().tolist()[:10]}: "
                "the attack could not change anything there"
            )
        return r

    def random_init(
        self, x: torch.Tensor, generator: AnyGenerator, region: torch.Tensor | None
    ) -> torch.Tensor:
        """A random perturbation inside the ball (uniform in the Linf cube; for L2 a uniformly
        random direction with radius ``eps * U``), already projected.

        Raises:
            ValueError: For an unbounded threat model (no ball to sample from).
        """
        if math.isinf(self.eps):
            raise ValueError("a random start needs a finite eps")
        if self.norm is Norm.LINF:
            u = rand(generator, x.shape, device=x.device, dtype=x.dtype)
            delta = (2 * u - 1) * self.eps
        else:
            g = randn(generator, x.shape, device=x.device, dtype=x.dtype)
            if region is not None:
                g = g * region
            r = rand(generator, (x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)
            delta = g / (sample_norm(g, Norm.L2) + _TINY) * self.eps * r
        return self.project(x, delta, region)

    def ascent_direction(self, grad: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
        """The steepest-ascent direction of unit norm for this norm (sign for Linf, normalised
        gradient for L2), zero outside the region."""
        if region is not None:
            grad = grad * region
        if self.norm is Norm.LINF:
            return grad.sign()
        return grad / (sample_norm(grad, Norm.L2) + _TINY)

    def project(
        self, x: torch.Tensor, delta: torch.Tensor, region: torch.Tensor | None
    ) -> torch.Tensor:
        """Project ``delta`` onto the ball, the region and the bounds (``x + delta`` valid)."""
        if region is not None:
            delta = delta * region
        if self.norm is Norm.LINF:
            delta = delta.clamp(-self.eps, self.eps)
        else:
            n = sample_norm(delta, Norm.L2)
            delta = delta * torch.clamp(self.eps / (n + _TINY), max=1.0)
        return self.bounds.clamp(x + delta) - x

    def describe(self) -> dict[str, object]:
        """JSON-serialisable description."""
        return {
            "norm": self.norm.value,
            "eps": self.eps,
            "bounds": [self.bounds.low, self.bounds.high],
            "region": self.region is not None,
        }
