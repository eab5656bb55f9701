"""The sliding-window settings of a segmentation audit: the window size and the options of
:func:`medrobust.models.segmentation.sliding_window` that the audit of a saved segmenter passes
on (command line: ``--roi-size``, ``--sw-batch-size``, ``--overlap``, ``--window-checkpoint``,
``--max-memory``), checked when they are made, before any data set, model or attack runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["SlidingWindowOptions", "as_window"]


@dataclass(frozen=True)
class SlidingWindowOptions:
    """How a segmenter is run (and attacked) by sliding windows.

    Options left at None keep :func:`~medrobust.models.segmentation.sliding_window`'s
    defaults (4 windows per call, overlap 0.25, no checkpointing, the device's free memory).

    Attributes:
        roi_size: The window size, one int for every spatial axis or one per axis.
        sw_batch_size: Windows per network call.
        overlap: Overlap of neighbouring windows, in ``[0, 0.99]``.
        checkpoint: Gradient checkpointing per window batch during attacks (the backward pass
            recomputes each window batch instead of keeping its activations).
        max_memory: Bytes an attack step may use, or a size such as ``"6GiB"`` (stored in
            bytes); a volume estimated to need more is refused with a
            :class:`~medrobust.models.window_memory.VolumeMemoryError`.

    Raises:
        ValueError: For an invalid window size or option (the segmenter's own checks).
        TypeError: For options of the wrong type.
    """

    roi_size: int | tuple[int, ...]
    sw_batch_size: int | None = None
    overlap: float | None = None
    checkpoint: bool | None = None
    max_memory: int | str | None = None

    def __post_init__(self) -> None:
        from torch import nn

        from medrobust.models.segmentation import SlidingWindowSegmenter

        roi = self.roi_size
        if not isinstance(roi, int | bool) and isinstance(roi, Sequence):
            object.__setattr__(self, "roi_size", tuple(roi))
        # the segmenter's own checks, on a placeholder network; max_memory comes back in bytes
        probe = SlidingWindowSegmenter(nn.Identity(), self.roi_size, **self.options())
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", probe.max_memory)

    def options(self) -> dict[str, Any]:
        """The options that are set, as keyword arguments of ``sliding_window``."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "roi_size" and getattr(self, f.name) is not None
        }

    def to_dict(self) -> dict[str, Any]:
        """The window size and the options that are set (for ``config.yaml``)."""
        roi = self.roi_size if isinstance(self.roi_size, int) else list(self.roi_size)
        return {"roi_size": roi, **self.options()}


def as_window(
    window: int | Sequence[int] | SlidingWindowOptions | None,
) -> SlidingWindowOptions | None:
    """``window`` as :class:`SlidingWindowOptions`: a bare window size gets the defaults.

    Raises:
        ValueError: For an invalid window size.
    """
    if window is None or isinstance(window, SlidingWindowOptions):
        return window
    return SlidingWindowOptions(window if isinstance(window, int) else tuple(window))
