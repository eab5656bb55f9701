"""Per-sample records of an evaluation, kept as tensors so a run can checkpoint and resume."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class CellRecord:
    """Per-sample outcome of one attack at one budget.

    Attributes:
        broken: ``(N,)`` bool, the attack found an adversarial example inside the budget.
        attacked: ``(N,)`` bool, the sample was attacked (or its adversarial example carried over
            from a smaller budget).
        linf, l2, ssim, psnr: ``(N,)`` float, measured on broken samples (NaN elsewhere).
        time_s: Seconds spent in the attack.
    """

    broken: torch.Tensor
    attacked: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    ssim: torch.Tensor
    psnr: torch.Tensor
    time_s: float = 0.0

    @classmethod
    def empty(cls) -> CellRecord:
        e = torch.empty(0)
        b = torch.empty(0, dtype=torch.bool)
        return cls(b, b.clone(), e, e.clone(), e.clone(), e.clone())

    def append(self, other: CellRecord) -> None:
        """Concatenate another batch's record."""
        for name in ("broken", "attacked", "linf", "l2", "ssim", "psnr"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.time_s += other.time_s

    def state(self) -> dict[str, torch.Tensor]:
        """Tensors for a checkpoint (loadable with ``weights_only=True``)."""
        return {
            "broken": self.broken,
            "attacked": self.attacked,
            "linf": self.linf,
            "l2": self.l2,
            "ssim": self.ssim,
            "psnr": self.psnr,
            "time_s": torch.tensor(self.time_s, dtype=torch.float64),
        }

    @classmethod
    def from_state(cls, s: dict[str, torch.Tensor]) -> CellRecord:
        return cls(
            s["broken"],
            s["attacked"],
            s["linf"],
            s["l2"],
            s["ssim"],
            s["psnr"],
            float(s["time_s"]),
        )


@dataclass
class Records:
    """All per-sample records of an evaluation.

    Attributes:
        labels: ``(N,)`` int64 true labels.
        logits: ``(N, K)`` clean logits.
        cells: ``cells[a][e]``: record of attack ``a`` at budget index ``e``.
        worst_broken_by: ``(E, N)`` int64: index of the first attack (in suite order) that broke
            the sample at each budget, or -1.
        noise_broken: ``(E, N)`` bool: uniform random noise of that budget changed the prediction.
        zero_grad: ``(N,)`` bool: the input gradient of the loss was all zero or not finite.
        batches_done: Number of loader batches already processed (for resume).
    """

    n_attacks: int
    n_eps: int
    labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    logits: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    cells: list[list[CellRecord]] = field(default_factory=list)
    worst_broken_by: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    noise_broken: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    zero_grad: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    batches_done: int = 0

    def __post_init__(self) -> None:
        if not self.cells:
            self.cells = [
                [CellRecord.empty() for _ in range(self.n_eps)] for _ in range(self.n_attacks)
            ]
        if self.worst_broken_by.numel() == 0:
            self.worst_broken_by = torch.empty(self.n_eps, 0, dtype=torch.long)
            self.noise_broken = torch.empty(self.n_eps, 0, dtype=torch.bool)

    @property
    def n(self) -> int:
        """Number of samples recorded."""
        return int(self.labels.numel())

    @property
    def correct(self) -> torch.Tensor:
        """``(N,)`` bool: clean prediction is right."""
        if self.n == 0:
            return torch.empty(0, dtype=torch.bool)
        return self.logits.argmax(dim=1) == self.labels

    def state(self) -> dict[str, object]:
        """A checkpoint of every record (tensors and plain types only)."""
        return {
            "n_attacks": self.n_attacks,
            "n_eps": self.n_eps,
            "labels": self.labels,
            "logits": self.logits,
            "cells": [[c.state() for c in row] for row in self.cells],
            "worst_broken_by": self.worst_broken_by,
            "noise_broken": self.noise_broken,
            "zero_grad": self.zero_grad,
            "batches_done": self.batches_done,
        }

    @classmethod
    def from_state(cls, s: dict[str, object]) -> Records:
        cells_state = s["cells"]
        if not isinstance(cells_state, list):
            raise ValueError("corrupt evaluation checkpoint: 'cells' is not a list")
        r = cls(int(s["n_attacks"]), int(s["n_eps"]))  # type: ignore[call-overload]
        r.labels = s["labels"]  # type: ignore[assignment]
        r.logits = s["logits"]  # type: ignore[assignment]
        r.cells = [[CellRecord.from_state(c) for c in row] for row in cells_state]
        r.worst_broken_by = s["worst_broken_by"]  # type: ignore[assignment]
        r.noise_broken = s["noise_broken"]  # type: ignore[assignment]
        r.zero_grad = s["zero_grad"]  # type: ignore[assignment]
        r.batches_done = int(s["batches_done"])  # type: ignore[call-overload]
        return r


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score 95% confidence interval of a proportion ``successes / n``.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when ``n == 0``.
    """
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))
