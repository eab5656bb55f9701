"""MedMNIST+ (v3): 3-D flags, every size's checksum, ChestMNIST by finding, and custom files in
MedMNIST's format under any name (files written here exactly as MedMNIST writes them)."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import medrobust.data.medmnist as medmnist_module
from medrobust.data import MEDMNIST_INFO, MedMNIST, create_dataset
from medrobust.data.medmnist_info import MEDMNIST_SIZES, MEDMNIST_SIZES_3D, medmnist_url

from .helpers import write_medmnist_npz

FLAGS_2D = {
    "pathmnist",
    "chestmnist",
    "dermamnist",
    "octmnist",
    "pneumoniamnist",
    "retinamnist",
    "breastmnist",
    "bloodmnist",
    "tissuemnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
}
FLAGS_3D = {
    "organmnist3d",
    "nodulemnist3d",
    "adrenalmnist3d",
    "fracturemnist3d",
    "vesselmnist3d",
    "synapsemnist3d",
}


def _write_3d(path: Path, counts: tuple[int, int, int], size: int, classes: int) -> dict:
    """A MedMNIST 3-D file: uint8 volumes (N, D, H, W) and labels (N, 1)."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).astype(np.uint8)[:, None]
    np.savez_compressed(path, **arrays)
    return arrays


def test_the_table_holds_every_flag_and_size_of_medmnist_plus() -> None:
    assert set(MEDMNIST_INFO) == FLAGS_2D | FLAGS_3D
    for flag, info in MEDMNIST_INFO.items():
        want = MEDMNIST_SIZES if flag in FLAGS_2D else MEDMNIST_SIZES_3D
        assert tuple(info.md5) == want and info.spatial_dims == (2 if flag in FLAGS_2D else 3)
        assert all(re.fullmatch(r"[0-9a-f]{32}", d) for d in info.md5.values()), flag
    digests = [d for info in MEDMNIST_INFO.values() for d in info.md5.values()]
    assert len(set(digests)) == len(digests) == 12 * 4 + 6 * 2  # no copy-paste slip
    # two values checked by hand against MedMNIST's published INFO (medmnist 3.0)
    assert MEDMNIST_INFO["nodulemnist3d"].md5[64] == "c47c5b7d457bf6332200d2ea6d64ecd8"
    assert MEDMNIST_INFO["chestmnist"].md5[224] == "45bd33e6f06c3e8cdb481c74a89152aa"
    assert medmnist_url("vesselmnist3d", 64) == (
        "https://zenodo.org/records/10519652/files/vesselmnist3d_64.npz?download=1"
    )


def test_a_3d_flag_reads_volumes(tmp_path: Path) -> None:
    arrays = _write_3d(tmp_path / "organmnist3d_64.npz", (5, 2, 3), 64, 11)
    ds = create_dataset("medmnist", split="train", flag="organmnist3d", size=64, root=tmp_path)
    assert ds.spatial_dims == 3 and ds.in_channels == 1 and ds.num_classes == 11
    assert ds.class_names[0] == "liver" and ds.class_names[10] == "pancreas"  # 3-D order
    item = ds[3]
    assert item["image"].shape == (1, 64, 64, 64) and item["image"].dtype == torch.float32
    np.testing.assert_allclose(item["image"][0].numpy(), arrays["train_images"][3] / 255.0)
    assert int(item["label"]) == 3
    rgb = MedMNIST("organmnist3d", "val", root=tmp_path, size=64, channels=3)
    assert rgb[0]["image"].shape == (3, 64, 64, 64)


def test_a_3d_flag_with_a_2d_file_is_refused(tmp_path: Path) -> None:
    write_medmnist_npz(tmp_path / "nodulemnist3d.npz")  # (N, 28, 28) images
    with pytest.raises(ValueError, match=r"shape \(6, 28, 28\); expected \(N, D, H, W\)"):
        MedMNIST("nodulemnist3d", "train", root=tmp_path)


def test_chestmnist_by_finding(tmp_path: Path) -> None:
    arrays = write_medmnist_npz(tmp_path / "chestmnist.npz")
    labels = np.zeros((6, 14), np.uint8)
    labels[[1, 4], 2] = 1  # effusion in images 1 and 4
    labels[:, 0] = 1  # atelectasis everywhere
    arrays["train_labels"] = labels
    np.savez_compressed(tmp_path / "chestmnist.npz", **arrays)
    with pytest.raises(ValueError, match=r"ChestMNIST is multi-label.*finding=.*effusion"):
        MedMNIST("chestmnist", "train", root=tmp_path)
    ds = MedMNIST("chestmnist", "train", root=tmp_path, finding="effusion")
    assert ds.class_names == ["no effusion", "effusion"]
    np.testing.assert_array_equal(ds.targets, [0, 1, 0, 0, 1, 0])
    by_column = MedMNIST("chestmnist", "train", root=tmp_path, finding=0)
    assert by_column.targets.tolist() == [1] * 6
    with pytest.raises(ValueError, match=r"unknown finding 'efusion'"):
        MedMNIST("chestmnist", "train", root=tmp_path, finding="efusion")


def test_a_custom_npz_under_any_name_with_its_class_names(tmp_path: Path) -> None:
    arrays = write_medmnist_npz(tmp_path / "my_scans.npz", classes=3)
    ds = create_dataset(
        "medmnist", split="test", path=str(tmp_path / "my_scans.npz"), class_names="a, b,c"
    )
    assert ds.class_names == ["a", "b", "c"] and ds.flag == "my_scans"
    assert ds[2]["id"] == "medmnist/my_scans/test/00002" and int(ds[2]["label"]) == 2
    np.testing.assert_allclose(ds[0]["image"][0].numpy(), arrays["test_images"][0] / 255.0)
    # the command line gives size=64 to every data set that takes a size: resized, in [0, 1]
    big = MedMNIST(
        split="test", path=tmp_path / "my_scans.npz", class_names=["a", "b", "c"], size=64
    )
    img = big[0]["image"]
    assert img.shape == (1, 64, 64) and float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    # class names from an official flag whose classes the file holds
    two = write_medmnist_npz(tmp_path / "renamed.npz")
    assert two and MedMNIST(
        split="train", path=tmp_path / "renamed.npz", flag="breastmnist"
    ).class_names == [
        "malignant",
        "normal/benign",
    ]


def test_a_custom_3d_npz_and_its_errors(tmp_path: Path) -> None:
    _write_3d(tmp_path / "vols.npz", (3, 2, 2), 16, 2)
    ds = MedMNIST(split="train", path=tmp_path / "vols.npz", class_names="neg,pos")
    assert ds.spatial_dims == 3 and ds[0]["image"].shape == (1, 16, 16, 16)
    with pytest.raises(ValueError, match=r"give the class names of vols\.npz"):
        MedMNIST(split="train", path=tmp_path / "vols.npz")
    with pytest.raises(ValueError, match=r"label value\(s\) \[1\] are outside the class list"):
        MedMNIST(split="train", path=tmp_path / "vols.npz", class_names="only")
    with pytest.raises(FileNotFoundError, match=r"MedMNIST-format file .*nope\.npz not found"):
        MedMNIST(split="train", path=tmp_path / "nope.npz", class_names="a,b")
    with pytest.raises(ValueError, match="class names must be unique"):
        MedMNIST(split="train", path=tmp_path / "vols.npz", class_names="a,a")


class _Response(io.BytesIO):
    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_a_3d_download_is_checked_against_its_own_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = tmp_path / "served.npz"
    _write_3d(served, (2, 1, 1), 28, 2)
    payload = served.read_bytes()
    urls: list[str] = []

    def fake(url: str, timeout: float) -> _Response:
        urls.append(url)
        return _Response(payload)

    monkeypatch.setattr(medmnist_module.urllib.request, "urlopen", fake)
    with pytest.raises(ValueError, match="expected MD5 8755a7e9e05a4d9ce80a24c3e7a256f3"):
        MedMNIST("nodulemnist3d", "train", root=tmp_path / "r", download=True)
    assert urls == ["https://zenodo.org/records/10519652/files/nodulemnist3d.npz?download=1"]
    digest = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    monkeypatch.setitem(MEDMNIST_INFO["nodulemnist3d"].md5, 28, digest)
    ds = MedMNIST("nodulemnist3d", "train", root=tmp_path / "r", download=True)
    assert len(ds) == 2 and ds.spatial_dims == 3
