"""Helpers of the resume tests: a loader that dies mid-run, and metrics without wall clock."""

from __future__ import annotations

from collections.abc import Iterator, Sequence


class Killed(Exception):
    """Raised by :func:`dies_after` in place of a kill."""


def dies_after(batches: Sequence[object], n: int) -> object:
    """A loader over ``batches`` that raises :class:`Killed` when it reaches batch ``n``."""

    class Loader:
        def __len__(self) -> int:
            return len(batches)

        def __iter__(self) -> Iterator[object]:
            for i, b in enumerate(batches):
                if i == n:
                    raise Killed
                yield b

    return Loader()


def numbers(m: object) -> object:
    """``m`` without the fields that depend on the wall clock."""
    if isinstance(m, dict):
        return {k: numbers(v) for k, v in m.items() if k not in ("created", "timing", "time_s")}
    if isinstance(m, list):
        return [numbers(v) for v in m]
    return m
