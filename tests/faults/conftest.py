"""Fixtures of the fault-injection tests: the trained classifier of the explanation tests."""

from tests.explain.conftest import trained_cnn  # noqa: F401 (re-exported fixture)
