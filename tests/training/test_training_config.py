"""Tests of TrainConfig validation."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from medrobust.registry import UnknownNameError
from medrobust.training import TrainConfig


def test_defaults_are_valid_and_round_trip() -> None:
    cfg = TrainConfig()
    assert cfg.monitor_mode == "min"
    assert TrainConfig(monitor="val_auc").monitor_mode == "max"
    full = TrainConfig(
        epochs=4,
        optimizer="SGD",
        scheduler="multistep",
        milestones=[2, 3],  # type: ignore[arg-type]
        recipe_params={"label_smoothing": 0.1},
        patience=2,
        max_grad_norm=1.0,
    )
    assert full.optimizer == "sgd" and full.milestones == (2, 3)
    data = full.to_dict()
    assert data["milestones"] == [2, 3]
    assert TrainConfig.from_dict(data) == full


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs must be >= 1"),
        ({"epochs": True}, TypeError, "epochs must be an int"),
        ({"epochs": 2.0}, TypeError, "epochs must be an int"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"lr": float("nan")}, ValueError, "lr must be finite"),
        ({"lr": "0.1"}, TypeError, "lr must be a number"),
        ({"optimizer": "rmsprop"}, ValueError, "optimizer must be one of"),
        ({"momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\)"),
        ({"weight_decay": -1e-4}, ValueError, "weight_decay must be >= 0"),
        ({"scheduler": "linear"}, ValueError, "scheduler must be one of"),
        ({"scheduler": "multistep"}, ValueError, "needs milestones"),
        ({"milestones": (3, 2)}, ValueError, "strictly increasing"),
        ({"milestones": 3}, TypeError, "milestones must be a list"),
        ({"gamma": 0.0}, ValueError, r"gamma must be in \(0, 1\]"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"device": "gpu0"}, ValueError, "device must be 'cpu', 'cuda'"),
        ({"device": 0}, TypeError, "device must be a string"),
        ({"monitor": "accuracy"}, ValueError, "monitor must name a metric"),
        ({"monitor": "train_accuracy"}, ValueError, "only training metric"),
        ({"patience": 0}, ValueError, "patience must be >= 1"),
        ({"recipe": ""}, ValueError, "recipe must be a registered"),
        ({"recipe_params": {"x": object()}}, TypeError, "plain values"),
        ({"recipe_params": [1]}, TypeError, "recipe_params must be a dict"),
        ({"max_grad_norm": 0.0}, ValueError, "max_grad_norm must be > 0"),
        ({"num_workers": -1}, ValueError, "num_workers must be >= 0"),
    ],
)
def test_invalid_values(kwargs: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        TrainConfig(**kwargs)


def test_unknown_recipe_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'standard'"):
        TrainConfig(recipe="standrd")


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"'learning_rate'.*'epoch' \(did you mean 'epochs'\?\)"):
        TrainConfig.from_dict({"learning_rate": 0.1, "epoch": 3})
    with pytest.raises(TypeError, match="must be a dict"):
        TrainConfig.from_dict([1])  # type: ignore[arg-type]


def test_resolve_device() -> None:
    assert TrainConfig(device="cpu").resolve_device() == torch.device("cpu")
    auto = TrainConfig(device="auto").resolve_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            TrainConfig(device="cuda").resolve_device()
