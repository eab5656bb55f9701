"""Tests of the MedMNIST loader on small files written in the official ``.npz`` format."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

import medrobust.data.medmnist as medmnist_module
from medrobust.data import MEDMNIST_INFO, MedMNIST, create_dataset

from .helpers import write_medmnist_npz as _write

KEYS = ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")


def test_breastmnist_grey_28(tmp_path: Path) -> None:
    arrays = _write(tmp_path / "breastmnist.npz")
    ds = MedMNIST("breastmnist", split="val", root=tmp_path)
    assert len(ds) == 3
    assert ds.class_names == ["malignant", "normal/benign"]
    assert ds.num_classes == 2 and ds.in_channels == 1 and ds.spatial_dims == 2
    assert ds.task == "classification" and ds.name == "medmnist"
    item = ds[1]
    assert item["image"].shape == (1, 28, 28) and item["image"].dtype == torch.float32
    expected = arrays["val_images"][1].astype(np.float32) / 255.0
    np.testing.assert_allclose(item["image"][0].numpy(), expected, atol=1e-7)
    assert int(item["label"]) == int(arrays["val_labels"][1, 0])
    assert item["label"].dtype == torch.int64 and item["label"].shape == ()
    assert item["id"] == "medmnist/breastmnist/val/00001"
    np.testing.assert_array_equal(ds.targets, arrays["val_labels"][:, 0])


def test_rgb_flag_at_size_64_uses_the_sized_file_name(tmp_path: Path) -> None:
    arrays = _write(tmp_path / "dermamnist_64.npz", size=64, rgb=True, classes=7)
    ds = create_dataset("medmnist", split="test", flag="dermamnist", root=tmp_path, size=64)
    assert ds.in_channels == 3 and ds.num_classes == 7
    assert ds.class_names[4] == "melanoma"
    img = ds[2]["image"]
    assert img.shape == (3, 64, 64)
    expected = arrays["test_images"][2].transpose(2, 0, 1).astype(np.float32) / 255.0
    np.testing.assert_allclose(img.numpy(), expected, atol=1e-7)


def test_channel_conversion(tmp_path: Path) -> None:
    grey = _write(tmp_path / "pneumoniamnist.npz")
    ds = MedMNIST("pneumoniamnist", "train", root=tmp_path, channels=3)
    assert ds.in_channels == 3 and ds.class_names == ["normal", "pneumonia"]
    img = ds[0]["image"]
    assert img.shape == (3, 28, 28)
    torch.testing.assert_close(img[0], img[2])
    np.testing.assert_allclose(img[1].numpy(), grey["train_images"][0] / 255.0, atol=1e-6)
    _write(tmp_path / "bloodmnist.npz", rgb=True, classes=8)
    mono = MedMNIST("bloodmnist", "train", root=tmp_path, channels=1)
    assert mono.in_channels == 1 and mono[0]["image"].shape == (1, 28, 28)


def test_octmnist_class_names(tmp_path: Path) -> None:
    _write(tmp_path / "octmnist.npz", classes=4)
    ds = MedMNIST("OCTMNIST", "train", root=tmp_path)
    assert ds.flag == "octmnist"
    assert ds.class_names == [
        "choroidal neovascularization",
        "diabetic macular edema",
        "drusen",
        "normal",
    ]


def test_missing_file_tells_the_user_to_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"breastmnist_128\.npz not found.*download=True"):
        MedMNIST("breastmnist", "train", root=tmp_path, size=128)
    with pytest.raises(FileNotFoundError, match="--download"):
        MedMNIST("breastmnist", "train", root=tmp_path)


def test_default_root_is_in_the_cache(_isolated_cache: Path) -> None:
    _write(_isolated_cache / "medmnist" / "breastmnist.npz")
    assert len(MedMNIST("breastmnist", "test")) == 4


def test_wrong_keys_are_named(tmp_path: Path) -> None:
    np.savez(
        tmp_path / "breastmnist.npz",
        images=np.zeros((2, 28, 28), np.uint8),
        labels=np.zeros((2, 1)),
    )
    with pytest.raises(
        ValueError, match=r"expected train_images, train_labels.*found images, labels"
    ):
        MedMNIST("breastmnist", "train", root=tmp_path)


def test_multilabel_is_rejected(tmp_path: Path) -> None:
    arrays = _write(tmp_path / "breastmnist.npz")
    arrays["train_labels"] = np.zeros((6, 14), np.uint8)
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(ValueError, match=r"shape \(6, 14\).*multi-label"):
        MedMNIST("breastmnist", "train", root=tmp_path)
    with pytest.raises(ValueError, match="ChestMNIST is multi-label"):
        MedMNIST("chestmnist", "train", root=tmp_path)


def test_labels_outside_the_class_list(tmp_path: Path) -> None:
    arrays = _write(tmp_path / "breastmnist.npz")
    arrays["test_labels"][2, 0] = 5
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(ValueError, match=r"label value\(s\) \[5\] are outside the class list"):
        MedMNIST("breastmnist", "test", root=tmp_path)


def test_nan_in_float_images(tmp_path: Path) -> None:
    arrays = _write(tmp_path / "breastmnist.npz")
    floats = arrays["train_images"].astype(np.float32) / 255.0
    floats[0, 3, 3] = np.nan
    arrays["train_images"] = floats
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(ValueError, match=r"images contain 1 NaN"):
        MedMNIST("breastmnist", "train", root=tmp_path)


def test_wrong_image_shape_and_empty_split(tmp_path: Path) -> None:
    _write(tmp_path / "breastmnist.npz", rgb=True)
    with pytest.raises(
        ValueError, match=r"images have shape \(6, 28, 28, 3\); expected \(N, H, W\)"
    ):
        MedMNIST("breastmnist", "train", root=tmp_path)
    _write(tmp_path / "pneumoniamnist.npz", counts=(2, 0, 1))
    with pytest.raises(ValueError, match="the data set is empty"):
        MedMNIST("pneumoniamnist", "val", root=tmp_path)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "breastmnist.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read MedMNIST file .*breastmnist\.npz"):
        MedMNIST("breastmnist", "train", root=tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"flag": "breastmnst"}, "unknown MedMNIST flag 'breastmnst'. Did you mean 'breastmnist'"),
        (
            {"flag": "organmnist3d", "size": 128},
            r"one of \[28, 64\], got 128 \(organmnist3d is 3-D",
        ),
        ({"size": 32}, r"size must be one of \[28, 64, 128, 224\], got 32"),
        ({"split": "training"}, "unknown split 'training'"),
        ({"channels": 2}, "channels must be None, 1 or 3, got 2"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    _write(tmp_path / "breastmnist.npz")
    args: dict[str, object] = {"flag": "breastmnist", "split": "train", "root": tmp_path}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MedMNIST(**args)  # type: ignore[arg-type]


class _FakeResponse(io.BytesIO):
    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def test_download_writes_the_file_atomically_and_checks_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "served" / "breastmnist.npz"
    _write(source)
    payload = source.read_bytes()
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> _FakeResponse:
        requested.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(medmnist_module.urllib.request, "urlopen", fake_urlopen)
    root = tmp_path / "root"
    # The official checksum does not match our small file: nothing may be saved.
    with pytest.raises(ValueError, match="checksum mismatch"):
        MedMNIST("breastmnist", "train", root=root, download=True)
    assert not (root / "breastmnist.npz").exists()
    assert list(root.iterdir()) == []  # no temporary file left behind
    assert requested == ["https://zenodo.org/records/10519652/files/breastmnist.npz?download=1"]
    # With the matching checksum the file is saved and loaded.
    digest = hashlib.md5(payload, usedforsecurity=False).hexdigest()
    monkeypatch.setitem(MEDMNIST_INFO["breastmnist"].md5, 28, digest)
    ds = MedMNIST("breastmnist", "train", root=root, download=True)
    assert len(ds) == 6 and (root / "breastmnist.npz").read_bytes() == payload
    # An existing file is never downloaded again.
    MedMNIST("breastmnist", "train", root=root, download=True)
    assert len(requested) == 2


def test_download_failure_is_a_connection_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float) -> _FakeResponse:
        raise medmnist_module.urllib.error.URLError("network unreachable")

    monkeypatch.setattr(medmnist_module.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match=r"could not download .*pneumoniamnist_64\.npz"):
        MedMNIST("pneumoniamnist", "train", root=tmp_path, size=64, download=True)


def test_an_array_declaring_more_than_the_machine_holds_is_refused_before_loading(
    tmp_path: Path,
) -> None:
    """A damaged or hostile file may declare terabytes in its header: refuse it before any
    allocation, naming the array and its size."""
    import io
    import zipfile

    import numpy as np
    import pytest

    path = tmp_path / "breastmnist.npz"
    _write(path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**12, 28, 28)}
    )
    forged = header.getvalue()  # magic string and header, no data
    rebuilt = tmp_path / "forged.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(rebuilt, "w") as dst:
        for name in src.namelist():
            data = forged if name == "val_images.npy" else src.read(name)
            dst.writestr(name, data)
    rebuilt.replace(path)
    with pytest.raises(ValueError, match=r"val_images declares shape \(1000000000000, 28, 28\)"):
        MedMNIST("breastmnist", split="val", root=tmp_path)


def test_a_decompression_bomb_png_is_a_clear_error(tmp_path: Path) -> None:
    import pytest
    from PIL import Image

    from medrobust.data.folders import read_image

    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100  # the file is then over twice the limit: a "bomb" to PIL
    try:
        with pytest.raises(ValueError, match=r"cannot decode image file .*bomb.png"):
            read_image(path, channels=1)
    finally:
        Image.MAX_IMAGE_PIXELS = before
