"""Shared fixtures of these tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Run on one intra-op thread: on a shared, oversubscribed CPU OpenMP spin-waiting makes
    multi-threaded convolutions of tiny tensors up to 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
