"""NIfTI images and label maps, in volume and slice modes (files written here with nibabel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.data import create_dataset
from medrobust.data.nifti import NiftiSegmentation, find_nifti_pairs, load_nifti

from .helpers import make_nifti_folder as make_folder
from .helpers import write_nifti as write


def test_load_nifti_round_trip(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    write(tmp_path / "a.nii", data, aff)
    out, affine = load_nifti(tmp_path / "a.nii")
    assert np.array_equal(out, data) and np.allclose(affine, aff)
    with pytest.raises(FileNotFoundError, match=r"missing\.nii\.gz"):
        load_nifti(tmp_path / "missing.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.nii\.gz as NIfTI"):
        load_nifti(tmp_path / "bad.nii.gz")


def test_volume_mode(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    ds = create_dataset("nifti", split="all", root=str(root), pad_multiple=4)
    assert isinstance(ds, NiftiSegmentation)
    assert len(ds) == 4 and ds.spatial_dims == 3 and ds.in_channels == 1
    assert ds.class_names == ["background", "class 1", "class 2"]
    item = ds[1]
    assert item["image"].shape == (1, 12, 12, 8)  # padded to multiples of 4
    assert item["mask"].shape == (12, 12, 8) and item["mask"].dtype == torch.int64
    assert item["id"] == "case01"
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert int(item["mask"][6, 6, 4]) == 2 and int(item["mask"][11, 11, 7]) == 0
    # per-volume percentile window: every volume spans [0, 1] whatever its scale
    assert float(ds[0]["image"].max()) == pytest.approx(1.0)
    assert float(ds[3]["image"].min()) == pytest.approx(0.0)


def test_slice_mode_and_window(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    ds = NiftiSegmentation("all", root=root, mode="slice", axis=2)
    assert len(ds) == 4 * 6 and ds.spatial_dims == 2
    item = ds[1]
    # radiological display: rows = anterior..posterior (-y), columns = right..left (-x)
    assert item["image"].shape == (1, 12, 10) and item["id"] == "case00/z:1"
    assert int(item["label"]) == 1 and int(ds[0]["label"]) == 0
    fg = NiftiSegmentation("all", root=root, mode="slice", axis=2, skip_empty=True)
    assert len(fg) == 4 * 2 + 2 * 1  # slices 1-2 everywhere, slice 4 in the odd cases
    win = NiftiSegmentation("all", root=root, window=(0.0, 1000.0), class_names=["bg", "a", "b"])
    raw, _ = load_nifti(root / "imagesTr" / "case00.nii.gz")
    expected = np.clip(raw / 1000.0, 0, 1)
    assert np.allclose(win[0]["image"][0].numpy(), expected, atol=1e-6)
    axis0 = NiftiSegmentation("all", root=root, mode="slice", axis=0)
    assert axis0[0]["image"].shape == (1, 6, 12) and len(axis0) == 40  # (-z, -y)


def test_split_by_volume(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n=6)
    parts = {
        s: NiftiSegmentation(s, root=root, fractions=(0.5, 0.25, 0.25), seed=1)
        for s in ("train", "val", "test")
    }
    ids = {s: {d[i]["id"] for i in range(len(d))} for s, d in parts.items()}
    assert sum(len(v) for v in ids.values()) == 6
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"])
    again = NiftiSegmentation("train", root=root, fractions=(0.5, 0.25, 0.25), seed=1)
    assert {again[i]["id"] for i in range(len(again))} == ids["train"]


def test_explicit_lists_and_errors(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d", n=2)
    imgs = sorted((root / "imagesTr").iterdir())
    labs = sorted((root / "labelsTr").iterdir())
    ds = NiftiSegmentation("all", images=imgs, labels=labs)
    assert len(ds) == 2
    write(tmp_path / "e" / "imagesTr" / "x.nii.gz", np.zeros((4, 4, 4), np.float32))
    write(tmp_path / "e" / "labelsTr" / "x.nii.gz", np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"image x.nii.gz has shape \(4, 4, 4\) but label map"):
        NiftiSegmentation("all", root=tmp_path / "e")
    write(tmp_path / "f" / "imagesTr" / "y.nii.gz", np.zeros((4, 4, 4), np.float32))
    write(tmp_path / "f" / "labelsTr" / "y.nii.gz", np.full((4, 4, 4), 0.5, np.float32))
    with pytest.raises(ValueError, match=r"y\.nii\.gz holds non-integer values"):
        NiftiSegmentation("all", root=tmp_path / "f")
    with pytest.raises(ValueError, match="lists only 2 classes"):
        NiftiSegmentation("all", root=root, class_names=["bg", "a"])
    with pytest.raises(FileNotFoundError, match="imagesTr"):
        NiftiSegmentation("all", root=tmp_path)
    write(tmp_path / "g" / "imagesTr" / "z.nii.gz", np.zeros((4, 4, 4), np.float32))
    (tmp_path / "g" / "labelsTr").mkdir()
    with pytest.raises(ValueError, match="without a label map"):
        find_nifti_pairs(tmp_path / "g")
    with pytest.raises(ValueError, match="holds no volume"):
        NiftiSegmentation("val", root=root, fractions=(1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="mode must be 'volume', 'slice' or 'patch'"):
        NiftiSegmentation("all", root=root, mode="patches")
    with pytest.raises(ValueError, match=r"either root .* or images \+ labels .*not both"):
        NiftiSegmentation("all", root=root, images=imgs, labels=labs)


def test_volume_cache_holds_cache_volumes(tmp_path: Path) -> None:
    ds = NiftiSegmentation("all", root=make_folder(tmp_path / "c"))
    first = ds[0]["image"]
    for i in range(1, 4):
        ds[i]
    assert len(ds._cache) == NiftiSegmentation.cache_volumes == 2
    ds.cache_volumes = 1
    ds[0]
    assert list(ds._cache) == [0]
    assert torch.equal(ds[0]["image"], first)
    with pytest.raises(TypeError):
        NiftiSegmentation("all", str(tmp_path / "c"))  # type: ignore[call-arg]  # keyword-only
