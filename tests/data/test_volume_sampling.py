"""Splits by subject (and within one volume when there are too few) and seeded patches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from medrobust.data.nifti import NiftiSegmentation
from medrobust.data.volume_sampling import block, patch_corners, plan_split

from .helpers import write_nifti as write


def _volume(root: Path, name: str, shape: tuple[int, int, int] = (16, 16, 20)) -> None:
    rng = np.random.default_rng(len(name))
    write(root / "imagesTr" / f"{name}.nii.gz", rng.random(shape).astype(np.float32))
    lab = np.zeros(shape, np.uint8)
    lab[6:9, 6:9, 4:15] = 1  # a small structure: 99 of 5120 voxels
    write(root / "labelsTr" / f"{name}.nii.gz", lab)


def _ids(ds: NiftiSegmentation) -> set[str]:
    return {ds[i]["id"] for i in range(len(ds))}


def test_one_volume_is_split_within_itself_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _volume(tmp_path, "brain")
    with caplog.at_level(logging.WARNING):
        parts = {
            s: NiftiSegmentation(s, root=tmp_path, mode="slice") for s in ("train", "val", "test")
        }
    assert "only 1 subject(s) for 3 splits" in caplog.text and "optimistic" in caplog.text
    slices = {s: sorted(int(i.split(":")[1]) for i in _ids(d)) for s, d in parts.items()}
    # contiguous blocks along z (20 slices, 0.7/0.15/0.15): 14, 3, 3 slices, disjoint
    assert slices == {"train": list(range(14)), "val": [14, 15, 16], "test": [17, 18, 19]}
    assert all(d.split_within for d in parts.values())
    with pytest.raises(ValueError, match=r"cannot be split by whole volumes: use mode='slice'"):
        NiftiSegmentation("train", root=tmp_path)


def test_enough_subjects_never_leak_across_splits(tmp_path: Path) -> None:
    for i in range(5):
        _volume(tmp_path / "d", f"scan{i}", (8, 8, 6))
    rows = ["image,label,subject"]
    for i in range(5):  # scans 0+1 and 2+3 are the same patients
        rows.append(f"d/imagesTr/scan{i}.nii.gz,d/labelsTr/scan{i}.nii.gz,p{i // 2}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    parts = {
        s: NiftiSegmentation(s, manifest=tmp_path / "m.csv", fractions=(0.4, 0.3, 0.3))
        for s in ("train", "val", "test")
    }
    subjects = {s: {c.subject for c in d.cases} for s, d in parts.items()}
    assert all(len(v) == 1 for v in subjects.values())  # 3 subjects, one per split
    assert len(set.union(*subjects.values())) == 3 and not any(
        d.split_within for d in parts.values()
    )
    for d in parts.values():  # a patient's scans go together
        assert len(d.cases) == {"p0": 2, "p1": 2, "p2": 1}[next(iter(d.cases)).subject]
    with pytest.raises(ValueError, match="holds no volume"):
        NiftiSegmentation("val", manifest=tmp_path / "m.csv", fractions=(1.0, 0.0, 0.0))


def test_split_plans() -> None:
    assert plan_split(["a", "b"], "val", (0.7, 0.15, 0.15), 0).within  # 2 subjects, 3 splits
    two = [plan_split(["a", "b"], s, (0.5, 0.5, 0.0), 0) for s in ("train", "val")]
    assert not two[0].within and sorted(two[0].volumes + two[1].volumes) == [0, 1]
    forced = plan_split(["a", "b", "c", "d"], "train", (0.5, 0.25, 0.25), 0, by="within")
    assert forced.within and forced.volumes == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="split_by must be one of"):
        plan_split(["a"], "train", (1.0, 0.0, 0.0), 0, by="patient")
    assert block(10, "test", (0.6, 0.2, 0.2)) == (8, 10)
    with pytest.raises(ValueError, match="split 'val' gets no slice"):
        block(1, "val", (0.7, 0.15, 0.15))


def test_balanced_patches_find_a_small_structure_random_ones_rarely_do(tmp_path: Path) -> None:
    _volume(tmp_path, "brain")
    kw = {"root": tmp_path, "mode": "patch", "patch_size": 4, "patches_per_volume": 40}
    bal = NiftiSegmentation("all", sampling="balanced", **kw)
    rnd = NiftiSegmentation("all", sampling="random", **kw)
    assert len(bal) == 40 and bal.spatial_dims == 3 and bal[0]["image"].shape == (1, 4, 4, 4)
    assert (
        bal.patch_size == (4, 4, 4) and NiftiSegmentation("all", root=tmp_path).patch_size is None
    )
    fg_bal = [int(bal[i]["label"]) for i in range(40)]
    fg_rnd = [int(rnd[i]["label"]) for i in range(40)]
    assert fg_bal[0::2] == [1] * 20  # every foreground-centred patch holds the structure
    assert sum(fg_rnd) < 15  # uniform patches mostly miss it (the structure is 2% of voxels)
    again = NiftiSegmentation("all", sampling="balanced", **kw)
    assert _ids(again) == _ids(bal)  # fixed by the seed
    other = NiftiSegmentation("all", sampling="balanced", seed=1, **kw)
    assert _ids(other) != _ids(bal)
    corner = [int(c) for c in bal[3]["id"].split("@")[1].split(",")]
    assert all(0 <= c <= s - 4 for c, s in zip(corner, (16, 16, 20), strict=True))


def test_patches_of_one_volume_split_within_it_do_not_overlap(tmp_path: Path) -> None:
    _volume(tmp_path, "brain")
    kw = {"root": tmp_path, "mode": "patch", "patch_size": (8, 8, 3), "patches_per_volume": 12}
    z = {}
    for s in ("train", "val", "test"):
        ds = NiftiSegmentation(s, **kw)
        z[s] = {int(i.split("@")[1].split(",")[2]) for i in _ids(ds)}
    assert max(z["train"]) + 3 <= 14 and min(z["val"]) >= 14 and max(z["val"]) + 3 <= 17
    assert min(z["test"]) >= 17
    with pytest.raises(ValueError, match="a patch of 4 voxels does not fit along z in"):
        NiftiSegmentation("val", root=tmp_path, mode="patch", patch_size=4)


def test_a_volume_smaller_than_the_patch_is_padded(tmp_path: Path) -> None:
    _volume(tmp_path, "tiny", (6, 6, 6))
    ds = NiftiSegmentation("all", root=tmp_path, mode="patch", patch_size=8, patches_per_volume=2)
    assert ds[0]["image"].shape == (1, 8, 8, 8) and ds[0]["mask"].shape == (8, 8, 8)
    with pytest.raises(ValueError, match="sampling must be 'random' or 'balanced'"):
        NiftiSegmentation("all", root=tmp_path, mode="patch", sampling="posneg")
    with pytest.raises(ValueError, match="patch_size must be an integer or three integers"):
        NiftiSegmentation("all", root=tmp_path, mode="patch", patch_size=(8, 8))


def test_patch_corners_directly() -> None:
    lab = np.zeros((10, 10, 10), np.int64)
    lab[9, 9, 9] = 1
    corners = patch_corners(
        lab, (4, 4, 4), 4, region=[(0, 10)] * 3, balanced=True, seed=0, stream=0
    )
    assert corners[0] == (6, 6, 6) and corners[2] == (6, 6, 6)  # clipped to hold the voxel


def test_an_unknown_option_gets_a_did_you_mean(tmp_path: Path) -> None:
    _volume(tmp_path, "a", (6, 6, 6))
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['patch_szie'\].*'patch_size'"):
        NiftiSegmentation("all", root=tmp_path, patch_szie=8)
    with pytest.raises(ValueError, match="patches_per_volume must be an integer >= 1, got 0"):
        NiftiSegmentation("all", root=tmp_path, mode="patch", patches_per_volume=0)
