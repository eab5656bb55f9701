"""DICOM files and series written with pydicom (issue 14, item 1): rescale to HU, sorting by
position, windows, class folders and CSV labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medrobust.data import create_dataset
from medrobust.data.dicom import read_dicom

from .helpers import dicom_slice as _slice
from .helpers import make_dicom_classes, write_ct

pydicom = pytest.importorskip("pydicom")


def test_single_file_in_hounsfield_units(tmp_path: Path) -> None:
    hu = np.linspace(-1000, 1000, 120).reshape(12, 10).round()
    write_ct(tmp_path / "a.dcm", hu)
    img = read_dicom(tmp_path / "a.dcm")
    np.testing.assert_allclose(img.data, hu)
    assert img.modality == "CT" and img.spacing == (0.7, 0.8) and img.window == (-160.0, 240.0)


def test_series_sorted_by_position(tmp_path: Path) -> None:
    # file names and instance numbers in the wrong order; positions decide
    for name, z, value in (("c", 5.0, 300.0), ("a", 10.0, 600.0), ("b", 0.0, -100.0)):
        write_ct(tmp_path / "s" / f"{name}.dcm", _slice(value), z=z, instance=int(z))
    img = read_dicom(tmp_path / "s")
    assert img.data.shape == (3, 12, 10)
    assert [float(img.data[i, 0, 0]) for i in range(3)] == [-100.0, 300.0, 600.0]
    assert img.spacing == (5.0, 0.7, 0.8)
    write_ct(tmp_path / "s" / "other.dcm", _slice(0.0), series="9.9", z=20.0)
    with pytest.raises(ValueError, match="mixes 2 series"):
        read_dicom(tmp_path / "s")
    (tmp_path / "bad.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.dcm as DICOM"):
        read_dicom(tmp_path / "bad.dcm")
    with pytest.raises(FileNotFoundError):
        read_dicom(tmp_path / "missing")


def test_class_folders_of_files_with_a_ct_window(tmp_path: Path) -> None:
    make_dicom_classes(tmp_path / "d", series=False)
    ds = create_dataset(
        "dicom", root=str(tmp_path / "d"), window="ct-abdomen", size=8, fractions=(1.0, 0.0, 0.0)
    )
    assert ds.class_names == ["lesion", "normal"] and len(ds) == 10 and ds.spatial_dims == 2
    item = ds[int(np.flatnonzero(ds.targets == 1)[0])]
    assert item["image"].shape == (1, 8, 8)
    # -50 HU in the abdomen window [-160, 240] -> 110 / 400
    assert float(item["image"].mean()) == pytest.approx(110 / 400, abs=1e-5)
    assert ds.intensity["window"]["spec"] == "ct-abdomen"  # type: ignore[attr-defined]
    header = create_dataset(
        "dicom", root=str(tmp_path / "d"), window="header", size=8, fractions=(1.0, 0.0, 0.0)
    )
    assert float(header[0]["image"].mean()) == pytest.approx(
        (float(read_dicom(tmp_path / "d" / "lesion" / "0.dcm").data[0, 0]) + 160) / 400, abs=1e-5
    )


def test_series_folders_and_a_csv(tmp_path: Path) -> None:
    make_dicom_classes(tmp_path / "d", series=True)
    ds = create_dataset("dicom", root=str(tmp_path / "d"), size=8, split="train")
    assert ds.spatial_dims == 3 and ds[0]["image"].shape == (1, 8, 8, 8)
    table = tmp_path / "d" / "labels.csv"
    rows = [f"{cls}/p{i},{cls}" for cls in ("lesion", "normal") for i in range(5)]
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    by_csv = create_dataset("dicom", csv=str(table), size=8, fractions=(1.0, 0.0, 0.0))
    assert len(by_csv) == 10 and by_csv.class_names == ["lesion", "normal"]
    (tmp_path / "bad.csv").write_text("file,class\nx,y\n")
    with pytest.raises(ValueError, match="columns 'path' and 'label'"):
        create_dataset("dicom", csv=str(tmp_path / "bad.csv"))
    write_ct(tmp_path / "d" / "lesion" / "single.dcm", _slice(0.0))
    with pytest.raises(ValueError, match="mixes single DICOM files"):
        create_dataset("dicom", root=str(tmp_path / "d"))
