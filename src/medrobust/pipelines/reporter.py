"""The progress callbacks a pipeline reports to (the command line drives rich bars with them).

This module imports no torch, so the command line can build a reporter before a job starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Reporter", "set_threads"]

logger = logging.getLogger(__name__)


@dataclass
class Reporter:
    """Callbacks a pipeline reports progress to.

    Attributes:
        train: Receives :class:`medrobust.training.TrainEvent` objects.
        evaluate: Receives the audit's progress events (``stage``, ``batch``, ``n_batches``,
            ``attack``, ``eps``).
        message: Receives one-line status messages.
    """

    train: Callable[[Any], None] | None = None
    evaluate: Callable[[Any], None] | None = None
    message: Callable[[str], None] | None = None

    def say(self, text: str) -> None:
        """Send a one-line status message to ``message`` and to the log.

        Args:
            text: The message.
        """
        if self.message:
            self.message(text)
        logger.info(text)


def set_threads(n: int | None) -> None:
    """Set torch's intra-op CPU threads (``None`` keeps torch's default).

    Args:
        n: The number of threads, at least 1, or None.

    Raises:
        ValueError: If ``n`` is smaller than 1.
    """
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--threads must be >= 1, got {n}")
    import torch

    torch.set_num_threads(n)
