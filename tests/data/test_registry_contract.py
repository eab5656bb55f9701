"""Every registered data set keeps the batch convention: a new entry cannot escape it.

The tests iterate over :data:`medrobust.data.DATASETS`. Each registered name needs a small,
offline builder in :data:`BUILDERS` (the real-format loaders read files written here in exactly
their published formats), so registering a data set without one fails
:func:`test_every_registered_data_set_has_a_builder`. Every item must then follow the documented
convention of :mod:`medrobust.data.base`: ``{"image": float32 (C, *spatial) in [0, 1], "label":
int64 scalar, "mask": int64 (*spatial) where the data set has masks, "id": str}``, with the
attributes agreeing with the registry's tags.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import medrobust.data
from medrobust.data import DATASETS, create_dataset, list_datasets, make_loader
from medrobust.data.base import MedicalDataset
from medrobust.types import Task

from .helpers import (
    make_decathlon,
    make_dicom_classes,
    make_nifti_folder,
    write_grey_png,
    write_mask_png,
    write_medmnist_npz,
    write_rgb_png,
)

Builder = Callable[[Path], MedicalDataset]


def _image_folder(root: Path) -> Path:
    for i in range(6):
        write_grey_png(root / "cyst" / f"c{i}.png", 30 + i)
        write_grey_png(root / "solid" / f"s{i}.jpg", 200 - i)
    return root


def _busi(root: Path) -> Path:
    for cls in ("benign", "malignant", "normal"):
        for i in range(1, 4):
            write_rgb_png(root / cls / f"{cls} ({i}).png", (60 + 10 * i,) * 3)
            box = (0, 0, 0, 0) if cls == "normal" else (4 + i, 5, 15 + i, 14)
            write_mask_png(root / cls / f"{cls} ({i})_mask.png", box)
    return root


#: Small offline variants of every registered data set (one per supported mode).
BUILDERS: dict[str, dict[str, Builder]] = {
    "bus-phantom": {
        "test": lambda tmp: create_dataset(
            "bus-phantom", split="test", n=3, size=32, cache_dir=tmp / "cache"
        ),
    },
    "busi": {
        "with-normal": lambda tmp: create_dataset(
            "busi",
            split="train",
            root=str(_busi(tmp / "Dataset_BUSI_with_GT")),
            size=24,
            include_normal=True,
            fractions=(1.0, 0.0, 0.0),
        ),
    },
    "decathlon": {
        "patch": lambda tmp: create_dataset(
            "decathlon",
            split="train",
            root=str(make_decathlon(tmp / "Task00_Test", n=3)),
            mode="patch",
            patch_size=4,
            patches_per_volume=2,
        ),
    },
    "dicom": {
        "files": lambda tmp: (
            make_dicom_classes(tmp / "dcm", series=False),
            create_dataset("dicom", root=str(tmp / "dcm"), size=8, window="ct-abdomen"),
        )[1],
        "series": lambda tmp: (
            make_dicom_classes(tmp / "dcm", series=True),
            create_dataset("dicom", root=str(tmp / "dcm"), size=8, split="test"),
        )[1],
    },
    "image-folder": {
        "rgb": lambda tmp: create_dataset(
            "image-folder",
            split="train",
            root=str(_image_folder(tmp / "folder")),
            size=20,
            channels=3,
        ),
    },
    "medmnist": {
        "breastmnist": lambda tmp: (
            write_medmnist_npz(tmp / "breastmnist.npz"),
            create_dataset("medmnist", split="val", flag="breastmnist", root=str(tmp)),
        )[1],
    },
    "mni152-tissue": {
        "slice": lambda tmp: create_dataset("mni152-tissue", split="val", resolution=4, patch=16),
        "volume": lambda tmp: create_dataset(
            "mni152-tissue", split="test", mode="volume", resolution=4, patch=16
        ),
    },
    "nifti": {
        "volume": lambda tmp: create_dataset(
            "nifti", split="all", root=str(make_nifti_folder(tmp / "nii", n=2)), pad_multiple=4
        ),
        "slice": lambda tmp: create_dataset(
            "nifti", split="all", root=str(make_nifti_folder(tmp / "nii", n=2)), mode="slice"
        ),
    },
    "volume-phantom": {
        "val": lambda tmp: create_dataset("volume-phantom", split="val", n=2, size=16),
    },
}

CASES = [(name, variant) for name, variants in BUILDERS.items() for variant in variants]


def test_every_registered_data_set_has_a_builder() -> None:
    registered = set(list_datasets())
    assert registered == set(BUILDERS), (
        f"registered without a contract builder: {sorted(registered - set(BUILDERS))}; "
        f"builders of unregistered names: {sorted(set(BUILDERS) - registered)}"
    )


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{v}" for n, v in CASES])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, MedicalDataset]:
    name, variant = request.param
    if name == "mni152-tissue":
        pytest.importorskip("nilearn", reason="mni152-tissue reads nilearn's bundled template")
    return name, BUILDERS[name][variant](tmp_path_factory.mktemp(f"{name}-{variant}"))


def test_attributes_agree_with_the_registry(built: tuple[str, MedicalDataset]) -> None:
    name, ds = built
    tags = set(DATASETS.get(name).tags)
    assert isinstance(ds, MedicalDataset) and ds.name == name
    assert isinstance(ds.task, Task) and ds.task.value in tags
    assert f"{ds.spatial_dims}d" in tags
    assert ds.has_masks == ("segmentation" in tags)
    assert len(ds) > 0 and ds.in_channels >= 1
    assert ds.num_classes == len(ds.class_names) >= 2
    assert all(isinstance(c, str) and c for c in ds.class_names)


def _check_item(item: dict[str, Any], ds: MedicalDataset) -> None:
    expected = {"image", "label", "id"} | ({"mask"} if ds.has_masks else set())
    assert set(item) == expected
    image, label = item["image"], item["label"]
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32
    assert image.ndim == 1 + ds.spatial_dims and image.shape[0] == ds.in_channels
    assert torch.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
    assert label.dtype == torch.int64 and label.shape == ()
    assert 0 <= int(label) < ds.num_classes
    if ds.has_masks:
        mask = item["mask"]
        assert mask.dtype == torch.int64 and mask.shape == image.shape[1:]
        assert int(mask.min()) >= 0 and int(mask.max()) < ds.num_classes
    assert isinstance(item["id"], str) and item["id"]


def test_items_follow_the_batch_convention(built: tuple[str, MedicalDataset]) -> None:
    _, ds = built
    n = min(len(ds), 4)
    items = [ds[i] for i in range(n)]
    for item in items:
        _check_item(item, ds)
    assert len({item["id"] for item in items}) == n
    targets = ds.targets
    assert targets.dtype == np.int64 and targets.shape == (len(ds),)
    assert targets[:n].tolist() == [int(item["label"]) for item in items]
    assert torch.equal(ds[-1]["image"], ds[len(ds) - 1]["image"])


def test_a_loader_batches_the_items(built: tuple[str, MedicalDataset]) -> None:
    _, ds = built
    batch = next(iter(make_loader(ds, batch_size=2, shuffle=False, seed=0)))
    b = min(2, len(ds))
    first = ds[0]
    assert batch["image"].shape == (b, *first["image"].shape)
    assert batch["label"].shape == (b,) and batch["label"].dtype == torch.int64
    assert len(batch["id"]) == b
    if ds.has_masks:
        assert batch["mask"].shape == (b, *first["mask"].shape)


@pytest.mark.parametrize("name", medrobust.data.__all__)
def test_public_api_is_documented(name: str) -> None:
    obj = getattr(medrobust.data, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        doc = obj.__doc__ or ""  # not inspect.getdoc: it falls back to the base class's
        assert doc.strip() and not doc.startswith(f"{obj.__name__}("), f"{name} is undocumented"
