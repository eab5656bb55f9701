"""Tests of the data side of the training loop (training/batches.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from medrobust.defenses import create_recipe
from medrobust.models import create_model
from medrobust.training import TrainConfig
from medrobust.training.batches import LoaderSetup, check_mask, prepare_batch, split_labelled


def test_loader_setup_seeds_the_shuffle_and_gives_the_generator_back(toy: type) -> None:
    data = toy(16, seed=0)
    gen = torch.Generator().manual_seed(1)
    setup = LoaderSetup(TrainConfig(batch_size=4), gen)
    built = setup.build(data, train=True)
    assert built.batch_size == 4 and built.generator is gen
    given = DataLoader(data, batch_size=4, shuffle=True)
    assert setup.build(given, train=True) is given
    assert given.sampler.generator is gen  # type: ignore[attr-defined]
    setup.restore()
    assert given.sampler.generator is None  # type: ignore[attr-defined]
    own = torch.Generator().manual_seed(3)
    setup.build(DataLoader(data, batch_size=4, shuffle=True, generator=own), train=True)
    assert setup.loader_generators == [own]
    with pytest.raises(ValueError, match=r"has batch_size 8 but config\.batch_size is 4"):
        setup.build(DataLoader(data, batch_size=8), train=True)
    with pytest.raises(ValueError, match="the val loader is empty"):
        setup.build(toy(0, seed=0), train=False)
    with pytest.raises(TypeError, match="train_loader must be a torch DataLoader or Dataset"):
        setup.build([1, 2], train=True)  # type: ignore[arg-type]


def test_split_labelled_feeds_only_recipes_that_use_unlabelled_data(toy: type) -> None:
    data = toy(20, seed=0)
    half = TrainConfig(labelled_fraction=0.5, recipe="ssat")
    train, rest = split_labelled(data, None, half, create_recipe("ssat"), seed=0)
    assert len(train) + len(rest) == 20 and len(train) == 10  # type: ignore[arg-type]
    extra = TensorDataset(torch.rand(3, 1, 16, 16))
    _, both = split_labelled(data, extra, half, create_recipe("ssat"), seed=0)
    assert len(both) == 13  # type: ignore[arg-type]
    plain = TrainConfig(labelled_fraction=0.5)
    train, rest = split_labelled(data, None, plain, create_recipe("standard"), seed=0)
    assert len(train) == 10 and rest is None  # type: ignore[arg-type]
    assert split_labelled(data, None, TrainConfig(), create_recipe("standard"), 0)[0] is data
    with pytest.raises(TypeError, match="needs the training set as a map-style Dataset"):
        split_labelled(DataLoader(data), None, plain, create_recipe("standard"), seed=0)


def test_prepare_batch_checks_keys_labels_and_masks() -> None:
    clf = create_model("small-cnn", num_classes=2, width=2, seed=0)
    x = torch.rand(2, 1, 16, 16)
    out = prepare_batch({"image": x, "label": torch.tensor([0, 1]), "id": "a"}, clf, x.device, "b")
    assert out["id"] == "a" and torch.equal(out["image"], x)
    with pytest.raises(TypeError, match="b is a tuple; data sets must yield dicts"):
        prepare_batch((x,), clf, x.device, "b")
    with pytest.raises(ValueError, match=r"b lacks key\(s\) \['label'\]"):
        prepare_batch({"image": x}, clf, x.device, "b")
    with pytest.raises(ValueError, match="labels of the b"):
        prepare_batch({"image": x, "label": torch.tensor([0, 5])}, clf, x.device, "b")
    with pytest.raises(ValueError, match=r"integer class-index tensors, got torch\.float32"):
        check_mask(torch.zeros(2, 16, 16), x, 2, "b")
    with pytest.raises(ValueError, match=r"must have shape \(2, 16, 16\), got \(2, 8, 8\)"):
        check_mask(torch.zeros(2, 8, 8, dtype=torch.long), x, 2, "b")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\] for a 2-class model"):
        check_mask(torch.full((2, 16, 16), 2), x, 2, "b")
