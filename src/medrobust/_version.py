"""The package version, in one place (read by the metrics header, model cards and the CLI)."""

__version__ = "0.1.0"
