"""Fixtures of the pipeline tests (shared with the command tests)."""

from tests.cli.conftest import explain_checkpoint, trained_cnn  # noqa: F401 (fixtures)
