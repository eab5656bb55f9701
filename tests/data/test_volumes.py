"""The 3-D ``volume-phantom``: deterministic volumes with several structures and label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medrobust.data import create_dataset, make_loader
from medrobust.data.volumes import VOLUME_CLASSES, VolumePhantom, generate_volume_phantom
from medrobust.types import Task


def test_shapes_ranges_and_structures() -> None:
    a = generate_volume_phantom(6, size=24, seed=0)
    assert a.images.shape == (6, 1, 24, 24, 24) and a.images.dtype == np.float32
    assert a.masks.shape == (6, 24, 24, 24) and a.labels.shape == (6,)
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    for i in range(6):
        present = set(np.unique(a.masks[i]).tolist())
        assert {0, 1, 2, 3} <= present  # organ, cavity and vessel are always there
        assert (4 in present) == bool(a.labels[i])
    # the structures differ in brightness: vessel > organ > cavity (mean over volumes)
    means = {
        c: np.mean([a.images[i, 0][a.masks[i] == c].mean() for i in range(6)]) for c in (1, 2, 3)
    }
    assert means[3] > means[1] > means[2]


def test_deterministic_and_prefix_stable() -> None:
    a = generate_volume_phantom(4, size=16, seed=3)
    b = generate_volume_phantom(4, size=16, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    c = generate_volume_phantom(2, size=16, seed=3)
    assert np.array_equal(c.images, a.images[:2])
    d = generate_volume_phantom(2, size=16, seed=3, start=2)
    assert np.array_equal(d.masks, a.masks[2:])
    e = generate_volume_phantom(4, size=16, seed=4)
    assert not np.array_equal(e.masks, a.masks)
    assert generate_volume_phantom(8, size=16, lesion_fraction=0.0).labels.sum() == 0
    assert generate_volume_phantom(8, size=16, lesion_fraction=1.0).labels.sum() == 8


def test_dataset_items_and_registry() -> None:
    ds = create_dataset("volume-phantom", split="val", n=3, size=16)
    assert isinstance(ds, VolumePhantom)
    assert ds.task is Task.SEGMENTATION and ds.spatial_dims == 3 and ds.has_masks
    assert ds.class_names == list(VOLUME_CLASSES) and ds.num_classes == 5
    item = ds[1]
    assert item["image"].shape == (1, 16, 16, 16) and item["image"].dtype == torch.float32
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (16, 16, 16)
    assert item["id"] == "volume-phantom/val/00001"
    assert int(item["label"]) == int((item["mask"] == 4).any())
    train = VolumePhantom("train", n=3, size=16)
    assert not torch.equal(train[0]["image"], ds[0]["image"])  # splits never overlap
    batch = next(iter(make_loader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 1, 16, 16, 16) and batch["mask"].shape == (2, 16, 16, 16)
    assert ds.targets.tolist() == [int(ds[i]["label"]) for i in range(3)]


def test_errors() -> None:
    with pytest.raises(ValueError, match="size must be >= 16"):
        generate_volume_phantom(1, size=8)
    with pytest.raises(ValueError, match="lesion_fraction"):
        generate_volume_phantom(1, lesion_fraction=2.0)
    with pytest.raises(TypeError, match="n must be an integer"):
        generate_volume_phantom(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown split"):
        VolumePhantom("validation")


def test_trains_with_dice_ce(tmp_path: object) -> None:
    from pathlib import Path

    from medrobust.models import create_model
    from medrobust.training import TrainConfig, fit

    train = VolumePhantom("train", n=4, size=16)
    val = VolumePhantom("val", n=2, size=16)
    model = create_model(
        "unet",
        num_classes=5,
        spatial_dims=3,
        channels=(4, 8),
        strides=(2,),
        num_res_units=0,
        seed=0,
        class_names=list(VOLUME_CLASSES),
    )
    cfg = TrainConfig(epochs=1, batch_size=2, monitor="val_dice")
    res = fit(model, train, val, cfg, Path(str(tmp_path)) / "run")
    assert "val_dice" in res.history[0] and res.best_checkpoint.is_file()
