"""Tests of the folder data sets (image-folder, BUSI) on small files in the real layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medrobust.data import BUSI, ImageFolder, create_dataset
from medrobust.data.folders import read_image

from .helpers import write_grey_png as _grey
from .helpers import write_mask_png as _mask
from .helpers import write_rgb_png as _rgb


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """root/<class>/ with 10 'cyst' and 10 'solid' images in several formats."""
    root = tmp_path / "folder"
    for i in range(10):
        ext = (".png", ".jpg", ".bmp", ".tif", ".tiff")[i % 5]
        _grey(root / "solid" / f"s{i:02d}{ext}", 200)
        _grey(root / "cyst" / f"c{i:02d}{ext}", 20)
    (root / "cyst" / "notes.txt").write_text("not an image")
    return root


# --------------------------------------------------------------------------- image-folder


def test_image_folder_classes_labels_and_items(folder: Path) -> None:
    ds = ImageFolder(folder, split="train", size=16)
    assert ds.class_names == ["cyst", "solid"]  # alphabetical
    assert ds.num_classes == 2 and ds.in_channels == 1 and ds.spatial_dims == 2
    assert ds.name == "image-folder" and ds.task == "classification"
    assert len(ds) == 14  # 70 % of 10 per class
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (1, 16, 16) and item["image"].dtype == torch.float32
        assert item["label"].dtype == torch.int64
        level = float(item["image"].mean())
        expected = 20 / 255 if int(item["label"]) == 0 else 200 / 255
        assert abs(level - expected) < 0.03  # jpg is lossy
        assert item["id"].startswith("image-folder/train/")
        cls = ds.class_names[int(item["label"])]
        assert item["id"].split("/")[2] == cls


def test_stratified_split_is_disjoint_complete_and_seeded(folder: Path) -> None:
    parts = {s: ImageFolder(folder, split=s, seed=3) for s in ("train", "val", "test")}
    files = {s: set(d.files) for s, d in parts.items()}
    assert [len(files[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    assert not (files["train"] & files["val"] or files["train"] & files["test"])
    assert not files["val"] & files["test"]
    assert len(files["train"] | files["val"] | files["test"]) == 20
    for s, d in parts.items():
        counts = np.bincount(d.targets, minlength=2)
        assert counts[0] == counts[1], s  # stratified
    assert set(ImageFolder(folder, split="test", seed=3).files) == files["test"]
    assert set(ImageFolder(folder, split="test", seed=4).files) != files["test"]
    custom = ImageFolder(folder, split="val", fractions=(0.5, 0.5, 0.0))
    assert len(custom) == 10


def test_rgb_channels_and_16_bit(tmp_path: Path) -> None:
    root = tmp_path / "rgb"
    for i in range(3):
        _rgb(root / "a" / f"{i}.png", (255, 0, 0))
        _rgb(root / "b" / f"{i}.png", (0, 0, 255))
    ds = ImageFolder(root, split="train", size=8, channels=3, fractions=(1.0, 0.0, 0.0))
    item = ds[0]
    assert ds.in_channels == 3 and item["image"].shape == (3, 8, 8)
    torch.testing.assert_close(item["image"].mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]))
    grey = ImageFolder(root, split="train", size=8, channels=1, fractions=(1.0, 0.0, 0.0))[0]
    assert abs(float(grey["image"].mean()) - 0.299) < 0.01  # luminance of pure red
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(path)
    np.testing.assert_allclose(read_image(path, 1), 32768 / 65535, atol=1e-6)


def test_pre_split_layout(tmp_path: Path) -> None:
    root = tmp_path / "presplit"
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for i in range(n):
            _grey(root / split / "benign" / f"{i}.png", 10)
            _grey(root / split / "malignant" / f"{i}.png", 240)
    ds = ImageFolder(root, split="test", size=8)
    assert len(ds) == 4 and ds.class_names == ["benign", "malignant"]
    assert ds[0]["id"] == "image-folder/test/test/benign/0.png"
    partial = tmp_path / "partial"
    _grey(partial / "train" / "x" / "0.png", 1)
    with pytest.raises(ValueError, match="no folder for the 'val' split"):
        ImageFolder(partial, split="val")


def test_image_folder_errors(tmp_path: Path, folder: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no class sub-folders found in .*empty.*\.png"):
        ImageFolder(empty)
    (empty / "benign").mkdir()
    _grey(empty / "malignant" / "0.png", 1)
    with pytest.raises(
        ValueError, match=r"class folder .*benign has no images \(looked for \.png, \.jpg"
    ):
        ImageFolder(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        ImageFolder(folder, split="dev")
    with pytest.raises(ValueError, match="fractions must sum to 1"):
        ImageFolder(folder, fractions=(0.5, 0.1, 0.1))
    with pytest.raises(ValueError, match=r"channels must be 1 \(grey\) or 3 \(RGB\), got 2"):
        ImageFolder(folder, channels=2)
    with pytest.raises(ValueError, match=r"'test' split of .* is empty"):
        ImageFolder(folder, split="test", fractions=(1.0, 0.0, 0.0))


def test_undecodable_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    _grey(root / "a" / "good.png", 5)
    (root / "b").mkdir(parents=True)
    (root / "b" / "bad.png").write_bytes(b"\x89PNG not really")
    ds = ImageFolder(root, split="train", fractions=(1.0, 0.0, 0.0))
    labels = ds.targets.tolist()
    with pytest.raises(ValueError, match=r"cannot decode image file .*bad\.png"):
        ds[labels.index(1)]


# --------------------------------------------------------------------------- BUSI


@pytest.fixture
def busi(tmp_path: Path) -> Path:
    """The BUSI layout with its real file names, including an extra '_mask_1' file."""
    root = tmp_path / "Dataset_BUSI_with_GT"
    for cls, n in (("benign", 5), ("malignant", 5), ("normal", 2)):
        for i in range(1, n + 1):
            stem = f"{cls} ({i})"
            _rgb(root / cls / f"{stem}.png", (90, 90, 90))  # BUSI stores grey as RGB
            box = (5, 5, 15, 12) if cls != "normal" else (0, 0, 0, 0)
            _mask(root / cls / f"{stem}_mask.png", box)
    _mask(root / "benign" / "benign (1)_mask_1.png", (25, 15, 35, 25))
    return root


def test_busi_merges_masks_and_pairs_labels(busi: Path) -> None:
    ds = BUSI(busi, split="train", size=40, fractions=(1.0, 0.0, 0.0))
    assert ds.class_names == ["benign", "malignant"]
    assert len(ds) == 10 and ds.has_masks and ds.name == "busi"
    ids = [ds[i]["id"] for i in range(len(ds))]
    first = ids.index("busi/train/benign/benign (1).png")
    item = ds[first]
    mask = item["mask"]
    assert mask.dtype == torch.int64 and mask.shape == (40, 40)
    assert set(mask.unique().tolist()) == {0, 1}
    # Union of both mask files (resized 40x30 -> 40x40 with nearest neighbours).
    expected = np.zeros((30, 40), bool)
    expected[5:12, 5:15] = True
    expected[15:25, 25:35] = True
    rows = ((np.arange(40) + 0.5) * 30 / 40).astype(int)
    np.testing.assert_array_equal(mask.numpy().astype(bool), expected[rows])
    single = ds[ids.index("busi/train/benign/benign (2).png")]["mask"]
    assert int(single.sum()) < int(mask.sum())
    assert item["image"].shape == (1, 40, 40)
    assert abs(float(item["image"].mean()) - 90 / 255) < 1e-3
    assert sorted(ds.targets.tolist()) == [0] * 5 + [1] * 5


def test_busi_with_normal_and_splits(busi: Path) -> None:
    ds = BUSI(busi, split="train", size=16, include_normal=True, fractions=(1.0, 0.0, 0.0))
    assert ds.class_names == ["benign", "malignant", "normal"]
    assert np.bincount(ds.targets).tolist() == [5, 5, 2]
    normal = [i for i in range(len(ds)) if int(ds[i]["label"]) == 2]
    assert all(int(ds[i]["mask"].sum()) == 0 for i in normal)
    fractions = (0.6, 0.2, 0.2)
    parts = [
        set(BUSI(busi, split=s, seed=1, fractions=fractions).files)
        for s in ("train", "val", "test")
    ]
    assert [len(p) for p in parts] == [6, 2, 2] and len(set.union(*parts)) == 10
    via_registry = create_dataset("busi", split="test", root=busi, seed=1, fractions=fractions)
    assert set(via_registry.files) == parts[2]


def test_busi_errors(busi: Path, tmp_path: Path) -> None:
    (busi / "malignant" / "malignant (3)_mask.png").unlink()
    with pytest.raises(ValueError, match=r"image .*malignant \(3\)\.png has no mask: expected"):
        BUSI(busi)
    with pytest.raises(FileNotFoundError, match=r"BUSI class folder .*benign does not exist"):
        BUSI(tmp_path)
    other = tmp_path / "sizes"
    _grey(other / "benign" / "benign (1).png", 9, size=(20, 20))
    _mask(other / "benign" / "benign (1)_mask.png", (1, 1, 4, 4), size=(10, 10))
    _grey(other / "malignant" / "malignant (1).png", 9, size=(20, 20))
    _mask(other / "malignant" / "malignant (1)_mask.png", (1, 1, 4, 4), size=(20, 20))
    ds = BUSI(other, split="train", fractions=(1.0, 0.0, 0.0))
    with pytest.raises(
        ValueError, match=r"mask .*benign \(1\)_mask\.png has size 10x10 but its image"
    ):
        ds[0]
    empty = tmp_path / "noimages"
    (empty / "benign").mkdir(parents=True)
    (empty / "malignant").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"class folder .*benign has no images \(looked for \.png"):
        BUSI(empty)
