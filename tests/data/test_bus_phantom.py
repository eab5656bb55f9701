"""Tests of the BusPhantom data set: items, splits, the on-disk cache and the loader helper."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import medrobust.data.bus_phantom as bus_module
from medrobust.data import BusPhantom, generate_bus_phantom, make_loader
from medrobust.types import Task


def test_items_follow_the_batch_convention(tmp_path: Path) -> None:
    ds = BusPhantom("test", n=5, size=64, seed=1, cache_dir=tmp_path)
    assert len(ds) == 5
    item = ds[3]
    assert set(item) == {"image", "label", "mask", "id"}
    assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
    assert item["label"].shape == () and item["label"].dtype == torch.int64
    assert item["mask"].shape == (64, 64) and item["mask"].dtype == torch.int64
    assert item["id"] == "bus-phantom/test/00003"
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert int(item["mask"].sum()) > 0
    assert ds[-1]["id"] == "bus-phantom/test/00004"
    with pytest.raises(IndexError, match="out of range"):
        ds[5]


def test_attributes() -> None:
    ds = BusPhantom("val", n=2, size=32, cache=False)
    assert ds.num_classes == 2
    assert ds.class_names == ["benign", "malignant"]
    assert ds.in_channels == 1 and ds.spatial_dims == 2
    assert ds.task == Task.CLASSIFICATION and ds.task == "classification"
    assert ds.name == "bus-phantom" and ds.split == "val"
    assert ds.has_masks
    assert ds.targets.dtype == np.int64 and ds.targets.shape == (2,)


def test_default_counts() -> None:
    assert BusPhantom("val", size=32, cache=False).targets.shape == (200,)
    assert bus_module.DEFAULT_COUNTS == {"train": 600, "val": 200, "test": 200}


def test_items_equal_the_generator_stream_of_the_split(tmp_path: Path) -> None:
    ds = BusPhantom("train", n=4, size=64, seed=7, cache_dir=tmp_path)
    ref = generate_bus_phantom(4, size=64, seed=7, stream=bus_module.SPLIT_STREAMS["train"])
    for i in range(4):
        np.testing.assert_array_equal(ds[i]["image"].numpy(), ref.images[i])
        np.testing.assert_array_equal(ds[i]["mask"].numpy(), ref.masks[i])
        assert int(ds[i]["label"]) == ref.labels[i]


def test_splits_are_disjoint_and_deterministic(tmp_path: Path) -> None:
    splits = {
        s: BusPhantom(s, n=6, size=32, seed=0, cache_dir=tmp_path) for s in ("train", "val", "test")
    }
    images = {s: torch.stack([d[i]["image"] for i in range(len(d))]) for s, d in splits.items()}
    names = list(images)
    for a in range(3):
        for b in range(a + 1, 3):
            x, y = images[names[a]], images[names[b]]
            # No image of one split equals any image of another.
            dist = (x[:, None] - y[None]).abs().flatten(2).mean(-1)
            assert float(dist.min()) > 0.02
    again = BusPhantom("val", n=6, size=32, seed=0, cache=False)
    torch.testing.assert_close(torch.stack([again[i]["image"] for i in range(6)]), images["val"])


def test_larger_n_extends_a_split() -> None:
    small = BusPhantom("test", n=3, size=32, cache=False)
    large = BusPhantom("test", n=8, size=32, cache=False)
    for i in range(3):
        torch.testing.assert_close(small[i]["image"], large[i]["image"])


def test_unknown_split_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"unknown split 'validation' \(did you mean 'val'\?\)"):
        BusPhantom("validation", n=2, cache=False)
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        BusPhantom("tset", n=2, cache=False)
    with pytest.raises(ValueError, match="n must be >= 1"):
        BusPhantom("train", n=0, cache=False)
    with pytest.raises(TypeError, match="size must be an integer"):
        BusPhantom("train", n=2, size=64.0, cache=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"malignant_fraction must lie in \[0, 1\]"):
        BusPhantom("train", n=2, malignant_fraction=-0.1, cache=False)


# --------------------------------------------------------------------------- cache


def _cache_files(folder: Path) -> list[Path]:
    return sorted((folder / "bus-phantom").glob("*.npz"))


def test_second_load_reads_the_cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = BusPhantom("train", n=4, size=32, seed=2, cache_dir=tmp_path)
    files = _cache_files(tmp_path)
    assert len(files) == 1 and first.cache_path == files[0]
    assert "train" in files[0].name and "v1" in files[0].name

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the generator ran although a valid cache file exists")

    monkeypatch.setattr(bus_module, "generate_bus_phantom", fail)
    second = BusPhantom("train", n=4, size=32, seed=2, cache_dir=tmp_path)
    for i in range(4):
        torch.testing.assert_close(second[i]["image"], first[i]["image"])
        torch.testing.assert_close(second[i]["mask"], first[i]["mask"])
    np.testing.assert_array_equal(second.meta["radius"], first.meta["radius"])


def test_cache_key_covers_every_parameter(tmp_path: Path) -> None:
    BusPhantom("train", n=3, size=32, seed=0, cache_dir=tmp_path)
    BusPhantom("train", n=3, size=32, seed=1, cache_dir=tmp_path)
    BusPhantom("train", n=3, size=32, seed=0, malignant_fraction=0.3, cache_dir=tmp_path)
    BusPhantom("train", n=4, size=32, seed=0, cache_dir=tmp_path)
    BusPhantom("test", n=3, size=32, seed=0, cache_dir=tmp_path)
    assert len(_cache_files(tmp_path)) == 5


def test_corrupt_cache_file_is_regenerated_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = BusPhantom("val", n=3, size=32, seed=5, cache_dir=tmp_path)
    path = _cache_files(tmp_path)[0]
    path.write_bytes(b"this is not a zip archive")
    with caplog.at_level(logging.WARNING, logger="medrobust.data.bus_phantom"):
        again = BusPhantom("val", n=3, size=32, seed=5, cache_dir=tmp_path)
    assert any(
        "regenerating" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records
    )
    for i in range(3):
        torch.testing.assert_close(again[i]["image"], ref[i]["image"])
    # The file was rewritten and is valid again.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medrobust.data.bus_phantom"):
        BusPhantom("val", n=3, size=32, seed=5, cache_dir=tmp_path)
    assert not caplog.records


def test_cache_with_wrong_content_is_regenerated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ref = BusPhantom("val", n=3, size=32, seed=6, cache_dir=tmp_path)
    path = _cache_files(tmp_path)[0]
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["images"] = np.full_like(arrays["images"], np.nan)
    np.savez(path, **arrays)
    with caplog.at_level(logging.WARNING):
        again = BusPhantom("val", n=3, size=32, seed=6, cache_dir=tmp_path)
    assert any("NaN" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(again[0]["image"], ref[0]["image"])


def test_cache_is_written_atomically_and_can_be_disabled(tmp_path: Path) -> None:
    BusPhantom("test", n=2, size=32, cache_dir=tmp_path)
    folder = tmp_path / "bus-phantom"
    assert [p.name for p in folder.iterdir() if p.suffix != ".npz"] == []  # no temp files left
    other = tmp_path / "nocache"
    ds = BusPhantom("test", n=2, size=32, cache_dir=other, cache=False)
    assert ds.cache_path is None and not other.exists()


def test_default_cache_folder_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "env-cache"
    monkeypatch.setenv("MEDROBUST_CACHE", str(target))
    ds = BusPhantom("test", n=2, size=32)
    assert ds.cache_path is not None and ds.cache_path.parent == target / "bus-phantom"
    assert ds.cache_path.exists()


# --------------------------------------------------------------------------- loader


def test_make_loader_stacks_batches_and_is_seeded(tmp_path: Path) -> None:
    ds = BusPhantom("train", n=10, size=32, cache_dir=tmp_path)
    loader = make_loader(ds, batch_size=4, shuffle=True, seed=3)
    assert loader.num_workers == 0
    batches = list(loader)
    assert [b["image"].shape[0] for b in batches] == [4, 4, 2]
    first = batches[0]
    assert first["image"].shape == (4, 1, 32, 32)
    assert first["label"].shape == (4,) and first["label"].dtype == torch.int64
    assert first["mask"].shape == (4, 32, 32)
    assert isinstance(first["id"], list) and len(first["id"]) == 4
    order = [i for b in batches for i in b["id"]]
    assert sorted(order) == sorted(ds[i]["id"] for i in range(10))
    same = [i for b in make_loader(ds, batch_size=4, shuffle=True, seed=3) for i in b["id"]]
    other = [i for b in make_loader(ds, batch_size=4, shuffle=True, seed=4) for i in b["id"]]
    plain = [i for b in make_loader(ds, batch_size=4) for i in b["id"]]
    assert same == order and other != order
    assert plain == [ds[i]["id"] for i in range(10)]


def test_make_loader_rejects_bad_batch_size(tmp_path: Path) -> None:
    ds = BusPhantom("train", n=2, size=32, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        make_loader(ds, batch_size=0)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        make_loader(ds, batch_size=2.0)  # type: ignore[arg-type]
