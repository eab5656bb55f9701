"""Fixtures of the reporting tests."""

from __future__ import annotations

from typing import Any

import pytest
from reporting_samples import make_examples, make_metrics

from medrobust.reporting import ExampleImages


@pytest.fixture
def metrics() -> dict[str, Any]:
    return make_metrics()


@pytest.fixture
def examples() -> list[ExampleImages]:
    return make_examples()
