"""MR107 warns, naming the class and the fixes, when the model predicts one class for every
clean sample while the labels hold several (models/diagnostics.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch
from torch import nn

from medrobust.evaluation import evaluate
from medrobust.models import ModelAdapter


class _Biased(nn.Module):
    """A linear classifier whose bias makes class ``favoured`` win unless ``gain`` is large."""

    def __init__(self, favoured: int, gain: float) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 2)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[1] = gain
            self.linear.bias.zero_()
            self.linear.bias[favoured] = 100.0 if gain == 0 else 0.0
            if gain:
                self.linear.bias[1] = -gain * 8.0  # class 1 when the mean pixel exceeds 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear(x.flatten(1))
        return out


def _batches() -> list[dict[str, Any]]:
    labels = torch.tensor([0, 1] * 8)
    images = (torch.rand(16, 1, 4, 4) * 0.2 + 0.1 + 0.6 * labels.reshape(-1, 1, 1, 1)).clamp(0, 1)
    return [{"image": images, "label": labels}]


def _mr107(model: nn.Module) -> dict[str, Any]:
    adapter = ModelAdapter(model, num_classes=2, class_names=["benign", "malignant"])
    result = evaluate(adapter, _batches(), attacks=["fgsm"], eps=[1 / 255], probe_samples=0)
    return next(c for c in result.metrics["checks"] if c["code"] == "MR107")


def test_one_predicted_class_is_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        row = _mr107(_Biased(favoured=1, gain=0.0))
    assert row["status"] == "warn"
    assert "predicts class 1 ('malignant') for all 16 clean samples" in row["message"]
    assert "BatchNorm" in row["message"] and "--class-weights balanced" in row["message"]
    assert any("predicts class 1" in r.getMessage() for r in caplog.records)


def test_a_model_that_predicts_both_classes_passes() -> None:
    row = _mr107(_Biased(favoured=0, gain=10.0))
    assert row["status"] == "pass" and "predicts" not in row["message"]
