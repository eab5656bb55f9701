"""Decathlon dataset.json, CSV manifests, DICOM images with NIfTI labels, RAS orientation,
spacing and 4-D inputs (files written here with nibabel and pydicom in the real formats)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medrobust.data import create_dataset
from medrobust.data.nifti import Decathlon, NiftiSegmentation
from medrobust.data.volume_io import display_slice, load_volume

from .helpers import write_ct
from .helpers import write_nifti as write

SHAPE = (10, 12, 6)


def _case(root: Path, name: str, value: float, affine: np.ndarray | None = None) -> None:
    img = np.full(SHAPE, value, np.float32)
    img[2:5, 3:7, 1:3] += 500.0
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:5, 3:7, 1:3] = 1
    lab[7, 8, 4] = 2
    write(root / "imagesTr" / f"{name}.nii.gz", img, affine)
    write(root / "labelsTr" / f"{name}.nii.gz", lab, affine)


def _decathlon(root: Path, n: int = 3, v2: bool = False) -> Path:
    for i in range(n):
        _case(root, f"liver_{i:03d}", 10.0 * i)
    write(root / "imagesTs" / "liver_900.nii.gz", np.zeros(SHAPE, np.float32))
    labels = (
        {"background": 0, "liver": 1, "tumour": 2}
        if v2
        else {"0": "background", "1": "liver", "2": "tumour"}
    )
    meta = {
        "name": "Task03_Liver",
        "modality": {"0": "CT"},
        "labels": labels,
        "numTraining": n,
        "numTest": 1,
        "training": [
            {
                "image": f"./imagesTr/liver_{i:03d}.nii.gz",
                "label": f"./labelsTr/liver_{i:03d}.nii.gz",
            }
            for i in range(n)
        ],
        "test": ["./imagesTs/liver_900.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=4))
    return root


def test_decathlon_dataset_json(tmp_path: Path) -> None:
    root = _decathlon(tmp_path / "Task03_Liver")
    ds = create_dataset("decathlon", split="all", root=str(root))
    assert isinstance(ds, Decathlon) and len(ds) == 3
    assert ds.class_names == ["background", "liver", "tumour"] and ds.modality == "ct"
    assert [p.name for p in ds.test_images] == ["liver_900.nii.gz"]
    assert ds[0]["id"] == "liver_000" and int(ds[0]["mask"][7, 8, 4]) == 2
    # nifti reads the same folder through its dataset.json; nnU-Net v2's name -> index labels
    v2 = NiftiSegmentation("all", root=_decathlon(tmp_path / "v2", v2=True) / "dataset.json")
    assert v2.class_names == ["background", "liver", "tumour"]


def test_decathlon_errors(tmp_path: Path) -> None:
    root = _decathlon(tmp_path / "t")
    meta = json.loads((root / "dataset.json").read_text())
    meta["numTraining"] = 5
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="numTraining is 5 but 'training' lists 3 pairs"):
        Decathlon("all", root=root)
    meta["numTraining"] = 3
    meta["training"][1]["label"] = "./labelsTr/missing.nii.gz"
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match=r"lists .*missing\.nii\.gz, which does not exist"):
        Decathlon("all", root=root)
    _case(tmp_path / "plain", "a", 0.0)
    with pytest.raises(FileNotFoundError, match=r"no dataset\.json in .*use 'nifti'"):
        Decathlon("all", root=tmp_path / "plain")
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot read .*dataset\.json as JSON"):
        Decathlon("all", root=root)


def test_a_4d_image_is_refused_unless_told_what_the_4th_axis_is(tmp_path: Path) -> None:
    series = np.stack([np.full(SHAPE, 100.0 * t, np.float32) for t in range(5)], axis=-1)
    series[0, 0, 0, :] = 0.0
    write(tmp_path / "imagesTr" / "bold.nii.gz", series)
    write(tmp_path / "labelsTr" / "bold.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(
        ValueError, match=r"bold\.nii\.gz is 4-D with shape \(10, 12, 6, 5\).*volume_index"
    ):
        NiftiSegmentation("all", root=tmp_path)
    one = NiftiSegmentation("all", root=tmp_path, volume_index=3, window=(0.0, 1000.0))
    assert one.in_channels == 1 and float(one[0]["image"][0, 5, 5, 5]) == pytest.approx(0.3)
    many = NiftiSegmentation("all", root=tmp_path, channels=True, window=(0.0, 1000.0))
    assert many.in_channels == 5 and many[0]["image"].shape == (5, *SHAPE)
    with pytest.raises(ValueError, match=r"volume_index=7 is outside the 5 volumes"):
        load_volume(tmp_path / "imagesTr" / "bold.nii.gz", volume_index=7)


def test_a_multimodal_decathlon_task_reads_its_modalities_as_channels(tmp_path: Path) -> None:
    root = tmp_path / "Task05_Prostate"
    write(
        root / "imagesTr" / "p1.nii.gz",
        np.random.default_rng(0).random((*SHAPE, 2)).astype(np.float32),
    )
    write(root / "labelsTr" / "p1.nii.gz", np.ones(SHAPE, np.uint8))
    meta = {
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ"},
        "numTraining": 1,
        "training": [{"image": "./imagesTr/p1.nii.gz", "label": "./labelsTr/p1.nii.gz"}],
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = Decathlon("all", root=root)
    assert ds.in_channels == 2 and ds.modality == "mri" and ds[0]["image"].shape == (2, *SHAPE)


def test_volumes_are_reoriented_to_ras_with_their_spacing(tmp_path: Path) -> None:
    ras = np.diag([2.0, 3.0, 4.0, 1.0])
    _case(tmp_path / "ras", "a", 0.0, ras)
    # the same anatomy stored LPS: x and y reversed on disk, the affine says so
    lps = np.diag([-2.0, -3.0, 4.0, 1.0])
    lps[:3, 3] = [2.0 * (SHAPE[0] - 1), 3.0 * (SHAPE[1] - 1), 0.0]
    img = load_volume(tmp_path / "ras" / "imagesTr" / "a.nii.gz").data
    lab = load_volume(tmp_path / "ras" / "labelsTr" / "a.nii.gz").data
    write(tmp_path / "lps" / "imagesTr" / "a.nii.gz", img[::-1, ::-1].copy(), lps)
    write(tmp_path / "lps" / "labelsTr" / "a.nii.gz", lab[::-1, ::-1].copy(), lps)
    a = NiftiSegmentation("all", root=tmp_path / "ras")
    b = NiftiSegmentation("all", root=tmp_path / "lps")
    assert b.source_orientations == ["LPS"] and a.source_orientations == ["RAS"]
    assert (
        b.orientation == "RAS" and b.spacing == (2.0, 3.0, 4.0) and b.spacings == [(2.0, 3.0, 4.0)]
    )
    assert torch.equal(a[0]["image"], b[0]["image"]) and torch.equal(a[0]["mask"], b[0]["mask"])
    # axes stored in another order (z, x, y on disk): permuted back, spacing with them
    perm = np.zeros((4, 4))
    perm[0, 1], perm[1, 2], perm[2, 0], perm[3, 3] = 2.0, 3.0, 4.0, 1.0
    write(tmp_path / "zxy" / "imagesTr" / "a.nii.gz", np.transpose(img, (2, 0, 1)).copy(), perm)
    write(tmp_path / "zxy" / "labelsTr" / "a.nii.gz", np.transpose(lab, (2, 0, 1)).copy(), perm)
    c = NiftiSegmentation("all", root=tmp_path / "zxy")
    assert c.spacing == (2.0, 3.0, 4.0) and torch.equal(c[0]["mask"], a[0]["mask"])
    # slices: (row, column) spacing of the displayed plane; item_spacing per item
    axial = NiftiSegmentation("all", root=tmp_path / "lps", mode="slice", axis=2)
    assert axial.spacing == (3.0, 2.0) and axial.item_spacing(0) == (3.0, 2.0)
    sagittal = NiftiSegmentation("all", root=tmp_path / "lps", mode="slice", axis=0)
    assert sagittal.spacing == (4.0, 3.0)


def test_spacing_is_none_when_volumes_differ(tmp_path: Path) -> None:
    _case(tmp_path, "a", 0.0, np.diag([1.0, 1.0, 1.0, 1.0]))
    _case(tmp_path, "b", 0.0, np.diag([1.0, 1.0, 2.5, 1.0]))
    ds = NiftiSegmentation("all", root=tmp_path)
    assert ds.spacing is None and ds.spacings == [(1.0, 1.0, 1.0), (1.0, 1.0, 2.5)]
    assert ds.item_spacing(1) == (1.0, 1.0, 2.5)


def test_slices_are_in_radiological_orientation() -> None:
    vol = np.zeros((5, 6, 3))
    vol[4, 5, 1] = 1.0  # the most right, most anterior voxel of axial slice 1
    vol[0, 0, 2] = 2.0  # left, posterior, superior
    axial = display_slice(vol, 2, 1)
    assert axial.shape == (6, 5) and axial[0, 0] == 1.0  # anterior up, right on the left
    coronal = display_slice(vol, 1, 0)
    assert coronal.shape == (3, 5) and coronal[0, 4] == 2.0  # superior up, left on the right
    sagittal = display_slice(vol[None], 0, 0)
    assert sagittal.shape == (1, 3, 6) and sagittal[0, 0, 5] == 2.0  # superior, posterior right


def test_a_dicom_series_with_a_nifti_label_map_from_a_manifest(tmp_path: Path) -> None:
    hu = np.full((3, 8, 9), -100.0)  # (slice, row, column)
    hu[:, 2:5, 5:8] = 300.0
    for z in range(3):
        write_ct(tmp_path / "ct1" / f"{z}.dcm", hu[z], z=2.0 * z, instance=z + 1)
    # the label map on the DICOM grid as dcm2niix writes it: (column, row, slice), RAS affine
    lab = (np.transpose(hu, (2, 1, 0)) > 0).astype(np.uint8)
    write(tmp_path / "ct1_seg.nii.gz", lab, np.diag([-0.8, -0.7, 2.0, 1.0]))
    (tmp_path / "cases.csv").write_text("image,label,subject\nct1,ct1_seg.nii.gz,patient1\n")
    ds = create_dataset(
        "nifti", split="all", manifest=str(tmp_path / "cases.csv"), window="-200,400"
    )
    item = ds[0]
    assert ds.spacing == pytest.approx((0.8, 0.7, 2.0)) and ds.source_orientations == ["LPS"]
    image, mask = item["image"][0], item["mask"]
    assert image.shape == (9, 8, 3) and int(mask.sum()) == 3 * 3 * 3
    # the bright square (300 HU) is exactly where the label map says: 5/6 of -200..400
    assert torch.allclose(image[mask == 1], torch.tensor(5 / 6))
    assert torch.allclose(image[mask == 0], torch.tensor(1 / 6))
    assert item["id"] == "ct1"


def test_manifest_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("img,seg\na,b\n")
    with pytest.raises(ValueError, match=r"columns image,label .*found \['img', 'seg'\]"):
        NiftiSegmentation("all", manifest=tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("image,label\nx.nii.gz,y.nii.gz\n")
    with pytest.raises(FileNotFoundError, match=r"lists .*x\.nii\.gz, which does not exist"):
        NiftiSegmentation("all", manifest=tmp_path / "gone.csv")
    with pytest.raises(ValueError, match="not both"):
        NiftiSegmentation("all", manifest=tmp_path / "gone.csv", root=tmp_path)


def test_class_names_as_text(tmp_path: Path) -> None:
    _case(tmp_path, "a", 0.0)
    assert NiftiSegmentation("all", root=tmp_path, class_names="bg,liver,tumour").class_names == [
        "bg",
        "liver",
        "tumour",
    ]


def _seg_sources(folder: Path, hu: np.ndarray) -> list:
    """CT slices with the patient and study tags a DICOM-SEG needs, written with pydicom."""
    import pydicom

    out = []
    for z in range(hu.shape[0]):
        path = folder / f"{z}.dcm"
        write_ct(path, hu[z], z=2.0 * z, instance=z + 1)
        ds = pydicom.dcmread(path)
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "p1", "Doe^J", "", ""
        ds.StudyInstanceUID, ds.StudyID, ds.AccessionNumber = "1.2.826.0.1.3", "1", ""
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "", "", ""
        ds.FrameOfReferenceUID, ds.SeriesNumber, ds.SliceThickness = "1.2.826.0.1.9", 1, 2.0
        ds.save_as(path, enforce_file_format=True)
        out.append(ds)
    return out


def test_a_dicom_seg_label_on_a_dicom_series(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom", reason="DICOM-SEG labels need the dicom-seg extra")
    from pydicom.sr.codedict import codes

    hu = np.full((4, 8, 9), -100.0)
    hu[1:3, 2:5, 5:8] = 300.0  # slices 0 and 3 hold no lesion: the SEG omits those frames
    sources = _seg_sources(tmp_path / "images" / "ct1", hu)
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="lesion",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type="MANUAL",
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=(hu > 0).astype(np.uint8),
        segmentation_type="BINARY",
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    (tmp_path / "labels").mkdir()
    seg.save_as(tmp_path / "labels" / "ct1.dcm")
    ds = NiftiSegmentation("all", root=tmp_path, window="-200,400", class_names="bg,lesion")
    image, mask = ds[0]["image"][0], ds[0]["mask"]
    assert image.shape == mask.shape == (9, 8, 4) and int(mask.sum()) == 2 * 3 * 3
    # placed on the image grid: the label covers exactly the bright voxels
    assert torch.allclose(image[mask == 1], torch.tensor(5 / 6))
    assert torch.allclose(image[mask == 0], torch.tensor(1 / 6))
