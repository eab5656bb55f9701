"""Per-sample records of an audit, kept as tensors so a run can checkpoint and resume.

The same records serve every task: per attack and budget, which samples were attacked and
broken, their score after the attack (the task's per-sample metric: 1/0 for a kept/changed label,
the Dice of a segmentation, the map similarity of an explanation) and the perturbation sizes; per
budget, the worst case per sample across the attack list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

_CELL_FIELDS = ("broken", "attacked", "score", "linf", "l2", "l0", "ssim", "psnr")


@dataclass
class CellRecord:
    """Per-sample outcome of one attack at one budget.

    Attributes:
        broken: ``(N,)`` bool, the attack reached its goal inside the budget.
        attacked: ``(N,)`` bool, the sample was attacked (or its adversarial example carried over
            from a smaller budget).
        score: ``(N,)`` float64, the task's score after the attack (NaN where not attacked).
        linf, l2, l0, ssim, psnr: ``(N,)`` float, measured on broken samples (NaN elsewhere);
            ``l0`` counts the changed input values.
        time_s: Seconds spent in the attack.
    """

    broken: torch.Tensor
    attacked: torch.Tensor
    score: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    l0: torch.Tensor
    ssim: torch.Tensor
    psnr: torch.Tensor
    time_s: float = 0.0
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> CellRecord:
        e = torch.empty(0)
        b = torch.empty(0, dtype=torch.bool)
        return cls(
            b, b.clone(), torch.empty(0, dtype=torch.float64), e, e.clone(), e.clone(), e.clone(), e
        )

    @classmethod
    def blank(cls, n: int, *, broken: torch.Tensor, attacked: torch.Tensor) -> CellRecord:
        """A record of ``n`` samples with every measurement NaN."""

        def nan(dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.full((n,), math.nan, dtype=dtype)

        return cls(broken, attacked, nan(torch.float64), nan(), nan(), nan(), nan(), nan())

    def carry_from(self, prev: CellRecord, carried: torch.Tensor) -> None:
        """Copy the measurements of the samples ``carried`` over from a smaller budget."""
        for name in ("score", "linf", "l2", "l0", "ssim", "psnr"):
            getattr(self, name)[carried] = getattr(prev, name)[carried]
        for key, value in prev.extra.items():
            if key not in self.extra:
                self.extra[key] = torch.full_like(value, math.nan)
            self.extra[key][carried] = value[carried]

    def set_extra(self, idx: torch.Tensor, values: dict[str, torch.Tensor], n: int) -> None:
        """Record extra per-sample measurements of the samples ``idx`` (NaN elsewhere)."""
        for key, value in values.items():
            v = value.detach().double().cpu()
            if key not in self.extra:
                self.extra[key] = torch.full((n, *v.shape[1:]), math.nan, dtype=torch.float64)
            self.extra[key][idx] = v

    def append(self, other: CellRecord) -> None:
        """Concatenate another batch's record."""
        n_self, n_other = self.broken.numel(), other.broken.numel()
        for name in _CELL_FIELDS:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))
        self.time_s += other.time_s
        self.extra = _cat_extra(self.extra, n_self, other.extra, n_other)

    def state(self) -> dict[str, Any]:
        """Tensors for a checkpoint (loadable with ``weights_only=True``)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in _CELL_FIELDS}
        out["time_s"] = torch.tensor(self.time_s, dtype=torch.float64)
        out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_state(cls, s: dict[str, Any]) -> CellRecord:
        return cls(
            broken=s["broken"],
            attacked=s["attacked"],
            score=s["score"],
            linf=s["linf"],
            l2=s["l2"],
            l0=s["l0"],
            ssim=s["ssim"],
            psnr=s["psnr"],
            time_s=float(s["time_s"]),
            extra=dict(s.get("extra", {})),
        )


@dataclass
class Records:
    """All per-sample records of an audit.

    Attributes:
        clean: Per-sample tensors of the clean pass, by name (``label`` and ``logits`` for
            classification, ``dice`` for segmentation ...), first axis ``N``.
        eligible: ``(N,)`` bool, the samples the attacks tried to break.
        clean_score: ``(N,)`` float64, the task's clean score.
        cells: ``cells[a][e]``: record of attack ``a`` at budget index ``e``.
        worst_broken_by: ``(E, N)`` int64: index of the attack (in list order) that reached the
            sample's worst score at each budget, or -1 if no attack lowered it.
        worst_score: ``(E, N)`` float64: the worst score per sample across the attack list.
        noise_broken: ``(E, N)`` bool: uniform random noise of that budget broke the sample.
        zero_grad: ``(N,)`` bool: the input gradient of the loss was all zero or not finite.
        extra: Per-sample tensors of the task's own work after each batch (first axis ``N``).
        index: ``(N,)`` int64: each record's position in the whole data set (the loader's order),
            which stays the same however the samples are shared among processes.
        done: The loader positions of the batches already processed (for resume).
    """

    n_attacks: int
    n_eps: int
    clean: dict[str, torch.Tensor] = field(default_factory=dict)
    eligible: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    clean_score: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.float64))
    cells: list[list[CellRecord]] = field(default_factory=list)
    worst_broken_by: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    worst_score: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.float64))
    noise_broken: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    zero_grad: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    done: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cells:
            self.cells = [
                [CellRecord.empty() for _ in range(self.n_eps)] for _ in range(self.n_attacks)
            ]
        if self.worst_broken_by.numel() == 0:
            self.worst_broken_by = torch.empty(self.n_eps, 0, dtype=torch.long)
            self.worst_score = torch.empty(self.n_eps, 0, dtype=torch.float64)
            self.noise_broken = torch.empty(self.n_eps, 0, dtype=torch.bool)

    @property
    def batches_done(self) -> int:
        """Number of loader batches already processed (for resume)."""
        return len(self.done)

    @property
    def n(self) -> int:
        """Number of samples recorded."""
        return int(self.eligible.numel())

    @property
    def labels(self) -> torch.Tensor:
        """``(N,)`` true labels (classification and explanation audits)."""
        return self.clean.get("label", torch.empty(0, dtype=torch.long))

    @property
    def logits(self) -> torch.Tensor:
        """``(N, K)`` clean logits (classification and explanation audits)."""
        return self.clean.get("logits", torch.empty(0))

    @property
    def correct(self) -> torch.Tensor:
        """``(N,)`` bool: clean prediction is right (classification)."""
        if self.n == 0 or "logits" not in self.clean:
            return torch.empty(0, dtype=torch.bool)
        return self.logits.argmax(dim=1) == self.labels

    def broken_any(self, e_i: int) -> torch.Tensor:
        """``(N,)`` bool: some attack of the list broke the sample at budget index ``e_i``."""
        out = torch.zeros(self.n, dtype=torch.bool)
        for row in self.cells:
            out |= row[e_i].broken
        return out

    def add_batch(
        self,
        clean: dict[str, torch.Tensor],
        eligible: torch.Tensor,
        score: torch.Tensor,
        extra: dict[str, torch.Tensor] | None = None,
        index: torch.Tensor | None = None,
    ) -> None:
        """Append a batch's clean record and the task's extra per-sample tensors; ``index``:
        the samples' positions in the data set (default: right after the records so far)."""
        n_new = int(eligible.numel())
        if index is None:
            index = torch.arange(self.n, self.n + n_new)
        self.index = torch.cat([self.index, index.detach().cpu().long()])
        for key, value in clean.items():
            v = value.detach().cpu()
            self.clean[key] = torch.cat([self.clean[key], v]) if key in self.clean else v
        new = {k: v.detach().cpu() for k, v in (extra or {}).items()}
        self.extra = _cat_extra(self.extra, self.n, new, int(eligible.numel()))
        self.eligible = torch.cat([self.eligible, eligible.cpu()])
        self.clean_score = torch.cat([self.clean_score, score.double().cpu()])

    def state(self) -> dict[str, object]:
        """A checkpoint of every record (tensors and plain types only)."""
        return {
            "n_attacks": self.n_attacks,
            "n_eps": self.n_eps,
            "clean": dict(self.clean),
            "eligible": self.eligible,
            "clean_score": self.clean_score,
            "cells": [[c.state() for c in row] for row in self.cells],
            "worst_broken_by": self.worst_broken_by,
            "worst_score": self.worst_score,
            "noise_broken": self.noise_broken,
            "zero_grad": self.zero_grad,
            "extra": dict(self.extra),
            "batches_done": self.batches_done,
            "index": self.index,
            "done": torch.tensor(self.done, dtype=torch.long),
        }

    @classmethod
    def from_state(cls, s: dict[str, object]) -> Records:
        """Rebuild from :meth:`state`.

        Raises:
            ValueError: For a checkpoint without the expected entries.
        """
        cells_state = s.get("cells")
        clean = s.get("clean")
        if not isinstance(cells_state, list) or not isinstance(clean, dict):
            raise ValueError("corrupt evaluation checkpoint: 'cells' or 'clean' is missing")
        r = cls(int(s["n_attacks"]), int(s["n_eps"]))  # type: ignore[call-overload]
        r.clean = clean
        r.cells = [[CellRecord.from_state(c) for c in row] for row in cells_state]
        for name in ("eligible", "clean_score", "worst_broken_by", "worst_score"):
            setattr(r, name, s[name])
        r.noise_broken = s["noise_broken"]  # type: ignore[assignment]
        r.zero_grad = s["zero_grad"]  # type: ignore[assignment]
        r.extra = dict(s.get("extra") or {})  # type: ignore[call-overload]
        index = s.get("index")
        r.index = index if isinstance(index, torch.Tensor) else torch.arange(r.n)
        done = s.get("done")
        r.done = [int(i) for i in done] if isinstance(done, torch.Tensor) else []
        if not r.done:  # a checkpoint of a single process before records knew their batches
            r.done = list(range(int(s["batches_done"])))  # type: ignore[call-overload]
        return r

    @classmethod
    def merge(cls, parts: list[Records]) -> Records:
        """The records of several processes as one, in data-set order (by :attr:`index`).

        Each part holds the records of the batches one process ran; the result is what one
        process running every batch would have recorded (cell times add up).

        Raises:
            ValueError: For parts of different attack lists or budgets, or a sample recorded
                twice.
        """
        if not parts:
            raise ValueError("nothing to merge: no records")
        first = parts[0]
        if any((p.n_attacks, p.n_eps) != (first.n_attacks, first.n_eps) for p in parts):
            raise ValueError("records of different attack lists or budgets cannot be merged")
        out = cls(first.n_attacks, first.n_eps)
        for p in parts:
            if p.n:
                out._extend(p)
            out.done.extend(p.done)
        order = torch.argsort(out.index, stable=True)
        if out.n and bool((out.index[order][1:] == out.index[order][:-1]).any()):
            raise ValueError("a sample was recorded by two processes")
        out._reorder(order)
        out.done.sort()
        return out

    def _extend(self, other: Records) -> None:
        """Append every record of ``other`` (the batches of another process)."""
        self.add_batch(other.clean, other.eligible, other.clean_score, other.extra, other.index)
        for a_i in range(self.n_attacks):
            for e_i in range(self.n_eps):
                self.cells[a_i][e_i].append(other.cells[a_i][e_i])
        for name in ("worst_broken_by", "worst_score", "noise_broken"):
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)], dim=1))
        self.zero_grad = torch.cat([self.zero_grad, other.zero_grad])

    def _reorder(self, order: torch.Tensor) -> None:
        """Put every per-sample tensor in the order ``order`` (a permutation of ``N``)."""
        self.clean = {k: v[order] for k, v in self.clean.items()}
        self.extra = {k: v[order] for k, v in self.extra.items()}
        for name in ("eligible", "clean_score", "zero_grad", "index"):
            setattr(self, name, getattr(self, name)[order])
        for name in ("worst_broken_by", "worst_score", "noise_broken"):
            setattr(self, name, getattr(self, name)[:, order])
        for row in self.cells:
            for cell in row:
                for name in _CELL_FIELDS:
                    setattr(cell, name, getattr(cell, name)[order])
                cell.extra = {k: v[order] for k, v in cell.extra.items()}


def _cat_extra(
    a: dict[str, torch.Tensor], n_a: int, b: dict[str, torch.Tensor], n_b: int
) -> dict[str, torch.Tensor]:
    """Concatenate two dicts of per-sample tensors; a key missing on one side is NaN there."""
    out = {}
    for key in dict.fromkeys([*a, *b]):
        like = a.get(key, b.get(key))
        assert like is not None
        left = a.get(key)
        right = b.get(key)
        if left is None:
            left = _nan_like(like, n_a)
        if right is None:
            right = _nan_like(like, n_b)
        out[key] = torch.cat([left, right.to(left.dtype)])
    return out


def _nan_like(like: torch.Tensor, n: int) -> torch.Tensor:
    fill = math.nan if like.is_floating_point() else 0
    return torch.full((n, *like.shape[1:]), fill, dtype=like.dtype)


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


def finite_mean(t: torch.Tensor | None, keep: torch.Tensor | None = None) -> float | None:
    """Mean of the finite values of ``t`` (where ``keep``), in ``t``'s dtype; None if there
    are none (or no tensor)."""
    if t is None:
        return None
    v = (t if keep is None else t[keep]).flatten()
    v = v[torch.isfinite(v)]
    return float(v.mean()) if v.numel() else None


def rate_with_ci(hits: int, n: int) -> tuple[float | None, list[float]]:
    """``hits / n`` (None when ``n == 0``) with its Wilson 95% interval."""
    lo, hi = wilson_interval(hits, n)
    return (hits / n if n else None), [lo, hi]
