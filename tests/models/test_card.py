"""Tests of the model card: validation, round trips, Markdown."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from torch import nn

from medrobust.models import DataInfo, ModelAdapter, ModelCard, TrainingInfo, create_model


def _card(**overrides: Any) -> ModelCard:
    values: dict[str, Any] = {
        "architecture": "small-cnn",
        "architecture_kwargs": {"width": 4, "sizes": (1, 2)},
        "num_classes": 2,
        "in_channels": 1,
        "spatial_dims": 2,
        "class_names": ["benign", "malignant"],
        "bounds": (0.0, 1.0),
        "mean": 0.5,
        "std": [0.25],
        "data": {"name": "busi-phantom", "split_sizes": {"train": 10}, "image_size": [64, 64]},
        "training": TrainingInfo(epochs=3, optimizer="adam", lr=1e-3, recipe="standard"),
        "metrics": {"val_accuracy": 0.75, "val_auc": float("nan")},
        "notes": "demo",
    }
    values.update(overrides)
    return ModelCard(**values)


def test_round_trip_is_exact_and_json_clean() -> None:
    card = _card()
    data = card.to_dict()
    text = json.dumps(data, allow_nan=False)  # plain JSON, NaN turned into None
    again = ModelCard.from_dict(json.loads(text))
    assert again == card
    assert data["card_version"] == 1
    assert data["architecture_kwargs"] == {"width": 4, "sizes": [1, 2]}  # tuples -> lists
    assert data["metrics"] == {"val_accuracy": 0.75, "val_auc": None}
    assert data["mean"] == [0.5] and data["bounds"] == [0.0, 1.0]
    assert isinstance(again.data, DataInfo) and again.data.name == "busi-phantom"
    assert again.training.epochs == 3


def test_defaults_fill_version_and_time() -> None:
    card = ModelCard(architecture="resnet18", num_classes=3)
    assert card.medrobust_version
    assert card.created[:2] == "20" and "T" in card.created
    assert card.task == "classification"


@pytest.mark.parametrize(
    ("mutate", "exc", "match"),
    [
        (lambda d: d.update(colour="red"), ValueError, r"unknown key\(s\) \['colour'\]"),
        (
            lambda d: d.pop("architecture"),
            ValueError,
            r"missing required key\(s\) \['architecture'\]",
        ),
        (lambda d: d.update(num_classes="2"), TypeError, "num_classes must be an int"),
        (lambda d: d.update(num_classes=0), ValueError, "num_classes must be >= 1"),
        (lambda d: d.update(spatial_dims=4), ValueError, "spatial_dims must be 1, 2 or 3"),
        (lambda d: d.update(task="detection"), ValueError, "task must be one of"),
        (lambda d: d.update(bounds=[1.0, 0.0]), ValueError, "low < high"),
        (lambda d: d.update(bounds=[0.0]), ValueError, r"bounds must be \[low, high\]"),
        (lambda d: d.update(class_names=["a"]), ValueError, "class_names has 1 entries"),
        (lambda d: d.update(std=[0.0]), ValueError, "std must be positive"),
        (lambda d: d.update(mean=[0.1, 0.2, 0.3]), ValueError, "mean must have 1 or"),
        (lambda d: d["data"].update(rows=3), ValueError, r"'data' has unknown key"),
        (lambda d: d["data"].update(seed="x"), TypeError, "data.seed must be an int"),
        (lambda d: d["training"].update(lr="fast"), TypeError, "training.lr must be a number"),
        (lambda d: d.update(metrics={"acc": "high"}), TypeError, "metrics.acc must be a number"),
        (lambda d: d.update(architecture_kwargs={"f": object()}), TypeError, "plain values"),
        (lambda d: d.update(created="yesterday"), ValueError, "ISO-8601"),
        (lambda d: d.update(card_version=2), ValueError, "card version 2 is not supported"),
    ],
)
def test_from_dict_validates(mutate: Any, exc: type[Exception], match: str) -> None:
    data = _card().to_dict()
    mutate(data)
    with pytest.raises(exc, match=match):
        ModelCard.from_dict(data)


def test_from_dict_rejects_non_dict() -> None:
    with pytest.raises(TypeError, match="must be a dict"):
        ModelCard.from_dict([("architecture", "x")])  # type: ignore[arg-type]


def test_markdown_mentions_the_essentials() -> None:
    md = _card().to_markdown()
    assert md.startswith("# Model card: small-cnn")
    for text in ("busi-phantom", "benign, malignant", "| val_accuracy | 0.75 |", "| val_auc | – |"):
        assert text in md
    assert "## Notes" in md and "demo" in md


def test_from_model_reads_the_adapter() -> None:
    model = create_model(
        "small-cnn",
        num_classes=3,
        in_channels=2,
        width=2,
        mean=[0.1, 0.2],
        std=0.5,
        class_names=["a", "b", "c"],
        bounds=(-1.0, 1.0),
    )
    card = ModelCard.from_model(model, metrics={"val_loss": 0.1})
    assert card.architecture == "small-cnn"
    assert card.architecture_kwargs == {"width": 2}
    assert (card.num_classes, card.in_channels, card.spatial_dims) == (3, 2, 2)
    assert card.mean == pytest.approx([0.1, 0.2]) and card.std == [0.5]
    assert card.bounds == [-1.0, 1.0]
    assert card.class_names == ["a", "b", "c"]
    assert card.metrics == {"val_loss": 0.1}


def test_from_model_needs_architecture_for_foreign_adapters() -> None:
    adapter = ModelAdapter(nn.Linear(4, 2), num_classes=2)
    with pytest.raises(ValueError, match=r"was not built by medrobust\.models\.create_model"):
        ModelCard.from_model(adapter)
    card = ModelCard.from_model(adapter, architecture="my-linear")
    assert card.architecture == "my-linear"
    with pytest.raises(TypeError, match="unknown model card field"):
        ModelCard.from_model(adapter, architecture="x", colour="red")
    with pytest.raises(TypeError, match="must be a ModelAdapter"):
        ModelCard.from_model(nn.Linear(2, 2))


def test_nan_metric_becomes_none() -> None:
    card = _card(metrics={"val_auc": math.nan, "val_loss": math.inf})
    assert card.metrics == {"val_auc": None, "val_loss": None}
