"""Class weights for imbalanced sets (training/balance.py, Recipe.set_class_weights)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from medrobust.models import create_model, load_checkpoint
from medrobust.training import TrainConfig, create_recipe, fit
from medrobust.training.balance import balanced_weights, class_counts, resolve_class_weights


class _Imbalanced(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """30 images of class 0 and 10 of class 1 (class 1 brighter)."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.tensor([0] * 30 + [1] * 10)
        self.images = (
            torch.rand(40, 1, 8, 8, generator=g) * 0.5 + 0.3 * self.labels.reshape(-1, 1, 1, 1)
        ).clamp(0, 1)

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": self.labels[i]}


def test_balanced_weights_are_inverse_frequencies() -> None:
    assert balanced_weights([30, 10]) == pytest.approx([40 / 60, 40 / 20])
    assert balanced_weights([5, 5, 5]) == pytest.approx([1.0, 1.0, 1.0])
    assert balanced_weights([4, 0]) == [0.5, 0.0]  # a class without labels gets 0
    with pytest.raises(ValueError, match="has none"):
        balanced_weights([0, 0])


def test_class_counts_read_items_subsets_and_loaders() -> None:
    ds = _Imbalanced()
    assert class_counts(ds, 2) == [30, 10]
    assert class_counts(Subset(ds, list(range(25, 40))), 2) == [5, 10]
    assert class_counts(DataLoader(ds, batch_size=4), 3) == [30, 10, 0]
    with pytest.raises(ValueError, match=r"must be in \[0, 0\] for a 1-class"):
        class_counts(ds, 1)


def test_resolve_class_weights() -> None:
    ds = _Imbalanced()
    clf = create_model("small-cnn", num_classes=2, width=4, seed=0)
    out = resolve_class_weights("balanced", ds, clf)
    assert out == {"spec": "balanced", "weights": pytest.approx([2 / 3, 2.0]), "counts": [30, 10]}
    assert resolve_class_weights((1.0, 3.0), ds, clf) == {"spec": "explicit", "weights": [1, 3]}
    assert resolve_class_weights(None, ds, clf) is None
    with pytest.raises(ValueError, match="has 3 entries but the model has 2 classes"):
        resolve_class_weights((1.0, 2.0, 3.0), ds, clf)
    seg = create_model("unet", num_classes=2, seed=0, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match="give one weight per class instead"):
        resolve_class_weights("balanced", ds, seg)


def test_config_validates_and_round_trips_class_weights() -> None:
    assert TrainConfig(class_weights="Balanced").class_weights == "balanced"
    cfg = TrainConfig(class_weights=[1, 2.5])
    assert cfg.class_weights == (1.0, 2.5)
    assert cfg.to_dict()["class_weights"] == [1.0, 2.5]
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="'balanced' or a list of numbers"):
        TrainConfig(class_weights="inverse")
    with pytest.raises(ValueError, match="non-negative and not all zero"):
        TrainConfig(class_weights=[1, -1])
    with pytest.raises(ValueError, match="non-negative and not all zero"):
        TrainConfig(class_weights=[0, 0])
    with pytest.raises(TypeError, match="class_weights must be"):
        TrainConfig(class_weights=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="given twice"):
        TrainConfig(class_weights="balanced", recipe_params={"class_weights": [1, 2]})
    with pytest.raises(ValueError, match="batchnorm_check must be one of"):
        TrainConfig(batchnorm_check="fix")


def test_training_minimises_the_weighted_loss(tmp_path: Path) -> None:
    """One step over the whole set: the logged loss is the weighted cross-entropy of the
    initial model, and the card records the weights with the label counts."""
    ds = _Imbalanced()
    cfg = TrainConfig(
        epochs=1, batch_size=40, lr=1e-6, class_weights="balanced", batchnorm_check="off"
    )
    result = fit(create_model("small-cnn", num_classes=2, width=4, seed=3), ds, ds, cfg, tmp_path)
    ref = create_model("small-cnn", num_classes=2, width=4, seed=3)
    ref.train()
    with torch.no_grad():
        logits = ref(ds.images)
    w = torch.tensor([2 / 3, 2.0])
    weighted = float(F.cross_entropy(logits, ds.labels, weight=w))
    plain = float(F.cross_entropy(logits, ds.labels))
    assert abs(weighted - plain) > 1e-3  # the test can tell them apart
    assert result.history[0]["train_loss"] == pytest.approx(weighted, rel=1e-4)
    card = load_checkpoint(result.best_checkpoint)[1]
    assert card.training.class_weights == {
        "spec": "balanced",
        "weights": pytest.approx([2 / 3, 2.0]),
        "counts": [30, 10],
    }
    assert "class weights | balanced: [0.667, 2]" in (tmp_path / "model_card.md").read_text()


@pytest.mark.parametrize("name", ["standard", "pgd-at", "fgsm-at", "fast-at", "trades", "ssat"])
def test_every_cross_entropy_recipe_weights_its_loss(name: str) -> None:
    ds = _Imbalanced()
    model = create_model("small-cnn", num_classes=2, width=4, seed=0)
    batch = {"image": ds.images[20:36], "label": ds.labels[20:36]}
    params: dict[str, Any] = {"steps": 1} if name in ("pgd-at", "trades") else {}
    if name == "fast-at":
        params["guard"] = False

    def loss(weights: list[float] | None) -> float:
        net = copy.deepcopy(model)  # train-mode passes move the BatchNorm statistics
        recipe = create_recipe(name, **params)
        if name == "ssat":
            recipe.set_unlabelled(ds)
        if weights is not None:
            recipe.set_class_weights(weights)
        recipe.setup(net, generator=torch.Generator().manual_seed(0))
        net.train()
        with torch.no_grad():
            value, _ = recipe.loss(net, batch, step=0, epoch=1)
        return float(value)

    plain, ones, skewed = loss(None), loss([1.0, 1.0]), loss([1.0, 10.0])
    assert ones == pytest.approx(plain, rel=1e-5)
    assert abs(skewed - plain) > 1e-4


def test_recipes_without_a_cross_entropy_refuse_weights() -> None:
    with pytest.raises(ValueError, match="recipe 'gce' does not take class weights"):
        create_recipe("gce").set_class_weights([1.0, 2.0])
