"""The one result type every attack returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttackResult:
    """What an attack produced for one batch.

    Attributes:
        x_adv: Adversarial inputs, same shape, dtype and device as the clean inputs.
        success: ``(B,)`` bool, True where the attack's goal is met at ``x_adv`` (for untargeted
            classification: the prediction differs from the label).
        loss: ``(B,)`` objective value at ``x_adv`` (higher means a stronger attack).
        linf: ``(B,)`` L-infinity norm of ``x_adv - x``.
        l2: ``(B,)`` L2 norm of ``x_adv - x`` over all non-batch dimensions.
        l0: ``(B,)`` int64 count of the elements of ``x_adv`` that differ from ``x`` (channels
            counted separately), for every attack (the budget of L0 attacks such as JSMA).
        steps: ``(B,)`` int64 iterations (gradient steps or queries) spent on each sample.
        pred_adv: Predictions at ``x_adv``: ``(B,)`` for classification, ``(B, *spatial)`` for
            segmentation.
        config: The resolved attack configuration (name, engine, objective, norm, eps, ...).
        extra: Attack-specific per-sample tensors (e.g. ``"iou"`` for targeted segmentation).
        evaluated: None when ``success``, ``loss`` and ``pred_adv`` were computed at every
            ``x_adv`` (every attack by default). Otherwise a ``(B,)`` bool tensor, False for the
            samples whose ``x_adv`` was returned without evaluating it (an attack run with
            ``need_success=False``, as adversarial training does): there ``success`` is False
            *because it was not checked*, ``loss`` is NaN and ``pred_adv`` is -1, and the
            objective's task metrics are left out of ``extra``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    loss: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    l0: torch.Tensor
    steps: torch.Tensor
    pred_adv: torch.Tensor
    config: dict[str, Any]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    evaluated: torch.Tensor | None = None

    @property
    def success_known(self) -> bool:
        """Whether ``success`` was checked for every sample (see ``evaluated``)."""
        return self.evaluated is None

    @property
    def success_rate(self) -> float:
        """Fraction of samples where the attack succeeded.

        Raises:
            RuntimeError: If success was not checked for some samples (``need_success=False``).
        """
        if self.evaluated is not None:
            raise RuntimeError(
                f"success was not evaluated for {int((~self.evaluated).sum())} of {len(self)} "
                "samples (the attack ran with need_success=False); run it with "
                "need_success=True to get a success rate"
            )
        return float(self.success.float().mean()) if self.success.numel() else float("nan")

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])
