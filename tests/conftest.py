"""Test-wide settings: single-threaded torch (the tiny models of the tests run faster without
intra-op threads, and results do not depend on the thread count), offline, CPU only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
