"""What the training loop reports: progress events while it runs and the result at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ProgressCallback", "TrainEvent", "TrainResult"]


@dataclass(frozen=True)
class TrainEvent:
    """A progress event sent to the ``progress`` callback of :func:`fit`.

    Attributes:
        kind: ``"start"``, ``"step"`` (a training step finished), ``"val_step"`` (a
            validation batch finished), ``"epoch_end"`` or ``"end"``.
        epoch: Current epoch (1-based; the last finished epoch for ``"start"``/``"end"``).
        epochs: Total epochs of the run.
        step: Batch index within the epoch (1-based) for step events, else 0.
        total_steps: Batches per epoch of the current phase (0 if the loader has no length).
        loss: Loss of the step, or the epoch's mean training loss; None where not defined.
        metrics: The epoch's record for ``"epoch_end"``/``"end"``, the recipe's statistics for
            ``"step"``, else empty.
    """

    kind: str
    epoch: int
    epochs: int
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        run_dir: The run folder.
        best_checkpoint: ``best.pt`` (load it with :func:`medrobust.models.load_checkpoint`).
        last_checkpoint: ``last.pt``.
        history_path: ``history.json``.
        history: Per-epoch records (``epoch``, ``lr``, ``train_*``, ``val_*``, ``time_s``).
        monitor: The monitored metric.
        best_epoch: Epoch (1-based) of ``best.pt``.
        best_score: Its monitored value (None if undefined).
        epochs_run: Epochs finished in total (over resumed sessions).
        stopped_early: Whether the patience ran out.
        wall_time_s: Training wall time over all sessions.
        batchnorm: The BatchNorm check of ``best.pt`` after training (its model card's
            ``training.batchnorm``), or None when not checked.
        warnings: Warnings of the checks after training (BatchNorm running statistics that
            failed, one predicted class on validation).
    """

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history_path: Path
    history: list[dict[str, Any]]
    monitor: str
    best_epoch: int
    best_score: float | None
    epochs_run: int
    stopped_early: bool
    wall_time_s: float
    batchnorm: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()

    @property
    def best_metrics(self) -> dict[str, Any]:
        """The history record of the best epoch."""
        return dict(self.history[self.best_epoch - 1])


ProgressCallback = Callable[[TrainEvent], None]
"""The type of the ``progress`` callback of :func:`medrobust.training.fit`."""
