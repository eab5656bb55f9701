"""Networks, the model adapter and checkpoints."""

from medrobust.models.adapter import ModelAdapter, as_adapter

__all__ = ["ModelAdapter", "as_adapter"]
