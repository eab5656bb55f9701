"""Helpers shared by the data tests: writers of small files in the real formats, and regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def posterior_region(masks: np.ndarray, pad: int) -> np.ndarray:
    """Boolean ``(N, H, W)``: the lesion, its margin and everything below it in its columns.

    The box spans the lesion's columns widened by ``pad`` pixels on each side, from ``pad`` pixels
    above the lesion's top to the bottom of the image (the posterior acoustic region).
    """
    n, h, w = masks.shape
    region = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        rows, cols = np.nonzero(masks[i])
        top = max(0, rows.min() - pad)
        left, right = max(0, cols.min() - pad), min(w, cols.max() + pad + 1)
        region[i, top:, left:right] = True
    return region


# --------------------------------------------------------------------------- file writers


def write_grey_png(path: Path, value: int, size: tuple[int, int] = (40, 30)) -> None:
    """A uniform 8-bit grey image of ``(width, height)``; the suffix picks the format."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8), mode="L").save(path)


def write_rgb_png(
    path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)
) -> None:
    """A uniform RGB image of ``(width, height)``."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[...] = color
    Image.fromarray(arr, mode="RGB").save(path)


def write_mask_png(
    path: Path, box: tuple[int, int, int, int], size: tuple[int, int] = (40, 30)
) -> None:
    """A BUSI-style mask: 0/255 PNG with the rectangle (left, top, right, bottom) set."""
    from PIL import Image

    arr = np.zeros((size[1], size[0]), np.uint8)
    left, top, right, bottom = box
    arr[top:bottom, left:right] = 255
    Image.fromarray(arr, mode="L").save(path)


def write_medmnist_npz(
    path: Path,
    counts: tuple[int, int, int] = (6, 3, 4),
    size: int = 28,
    rgb: bool = False,
    classes: int = 2,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a MedMNIST-format file: uint8 images (N, H, W[, 3]) and labels (N, 1)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).astype(np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    """A NIfTI-1 file (``.nii`` or ``.nii.gz``) written with nibabel."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))


def make_nifti_folder(root: Path, n: int = 4, shape: tuple[int, int, int] = (10, 12, 6)) -> Path:
    """A Decathlon-layout folder (``imagesTr``/``labelsTr``) of ``n`` volumes with labels 0-2."""
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.normal(100.0 * (i + 1), 20.0, size=shape).astype(np.float32)
        lab = np.zeros(shape, dtype=np.uint8)
        lab[2:5, 3:7, 1:3] = 1
        if i % 2:
            lab[6:8, 6:9, 4] = 2
        write_nifti(root / "imagesTr" / f"case{i:02d}.nii.gz", img)
        write_nifti(root / "labelsTr" / f"case{i:02d}.nii.gz", lab)
    return root


def make_decathlon(root: Path, n: int = 3) -> Path:
    """A Medical Segmentation Decathlon task folder: imagesTr/labelsTr and its dataset.json."""
    import json

    make_nifti_folder(root, n=n)
    meta = {
        "name": "Task00_Test",
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "organ", "2": "lesion"},
        "numTraining": n,
        "training": [
            {"image": f"./imagesTr/case{i:02d}.nii.gz", "label": f"./labelsTr/case{i:02d}.nii.gz"}
            for i in range(n)
        ],
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=4))
    return root


def write_ct(
    path: Path,
    hu: np.ndarray,
    *,
    z: float = 0.0,
    series: str = "1.2.3.4",
    instance: int = 1,
    window: tuple[float, float] | None = (40.0, 400.0),
) -> None:
    """A CT slice stored as uint16 with RescaleIntercept -1024, position z mm."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.InstanceNumber = "CT", series, instance
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.8]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def dicom_slice(value: float, shape: tuple[int, int] = (12, 10)) -> np.ndarray:
    """A uniform slice of ``value`` HU."""
    return np.full(shape, value, dtype=np.float64)


def make_dicom_classes(root: Path, series: bool) -> None:
    """Two classes of five CT files (or three-slice series) each: ``root/<class>/...``."""
    for k, (cls, hu) in enumerate((("normal", -50.0), ("lesion", 150.0))):
        for i in range(5):
            value = dicom_slice(hu + 10 * i)
            if series:
                for s in range(3):
                    write_ct(
                        root / cls / f"p{i}" / f"{s}.dcm", value, z=2.0 * s, series=f"1.{k}.{i}"
                    )
            else:
                write_ct(root / cls / f"{i}.dcm", value)
