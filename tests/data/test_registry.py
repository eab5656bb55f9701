"""Tests of the data-set registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from medrobust.data import DATASETS, BusPhantom, create_dataset, list_datasets
from medrobust.data.base import MedicalDataset
from medrobust.registry import UnknownNameError


def test_all_data_sets_are_registered() -> None:
    names = list_datasets()
    assert names == sorted(names)
    assert {"bus-phantom", "busi", "image-folder", "medmnist"} <= set(names)
    assert {"bus-phantom", "busi"} <= set(list_datasets("bus*"))
    assert all(n.startswith("bus") for n in list_datasets("bus*"))
    assert "medmnist" not in list_datasets("bus*")
    assert {"bus-phantom", "busi"} <= set(list_datasets(tag="ultrasound"))
    assert "image-folder" not in list_datasets(tag="ultrasound")
    assert "bus_phantom" in DATASETS
    for entry in DATASETS.entries():
        assert entry.summary, entry.name


def test_create_dataset_builds_the_phantom(tmp_path: Path) -> None:
    ds = create_dataset("bus_phantom", split="val", n=3, size=32, cache_dir=tmp_path)
    assert isinstance(ds, BusPhantom) and isinstance(ds, MedicalDataset)
    assert ds.split == "val" and len(ds) == 3
    assert create_dataset("bus-phantom", n=2, size=32, cache=False).split == "train"


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown dataset 'bus-phantm'\. Did you mean 'bus-phantom'"
    ):
        create_dataset("bus-phantm")
    with pytest.raises(ValueError, match=r"Available: .*bus-phantom.*medmnist"):
        create_dataset("cifar10")


def test_unknown_argument_lists_accepted_ones() -> None:
    with pytest.raises(TypeError, match=r"'sise' \(did you mean 'size'\?\)"):
        create_dataset("bus-phantom", sise=64)


def test_unknown_split_through_the_registry() -> None:
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        create_dataset("bus-phantom", split="valid", n=2, cache=False)
