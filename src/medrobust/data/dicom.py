"""DICOM images for classification: single files (2-D) and series folders (3-D), read with
pydicom.

A series folder holds the slices of one series; they are sorted by their position along the
slice normal (``ImagePositionPatient`` projected on the cross product of the two
``ImageOrientationPatient`` directions; ``InstanceNumber`` when positions are absent), and the
stored values are mapped to modality units (Hounsfield units for CT) by the rescale slope and
intercept (``pydicom.pixels.apply_modality_lut``). Intensities then go through an explicit
window (:mod:`medrobust.data.windows`: ``"ct-abdomen"``, ``"-160,240"``, ``"header"`` for the
file's own ``WindowCenter``/``WindowWidth``, default per-image percentiles).

Layouts understood by :class:`DicomClassification`: ``root/<class>/<file.dcm | series folder>``,
or a CSV file with columns ``path,label`` (paths relative to the CSV's folder).

References:
    DICOM PS3.3 C.7.6.2 (image plane: position and orientation), C.11.1 (modality LUT:
    rescale slope/intercept), C.11.2 (VOI LUT: window center/width); Mason, "SU-E-T-33:
    pydicom", Medical Physics 38, 2011.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from medrobust.data.base import (
    MedicalDataset,
    check_class_names,
    check_fractions,
    check_split,
    stratified_split,
)
from medrobust.data.registry import DATASETS
from medrobust.data.windows import Window, apply_window, parse_window
from medrobust.types import Task

logger = logging.getLogger(__name__)

__all__ = ["DicomClassification", "DicomImage", "read_dicom"]

#: Default window: per-image 0.5th and 99.5th percentiles.
DEFAULT_WINDOW = Window("percentile", 0.5, 99.5)


@dataclass(frozen=True)
class DicomImage:
    """A decoded DICOM file or series.

    Attributes:
        data: Values in modality units, float64 ``(H, W)`` or ``(Z, H, W)``.
        spacing: Voxel spacing in mm, ``(row, column)`` or ``(slice, row, column)``.
        modality: The ``Modality`` tag (``"CT"``, ``"MR"``, ...), ``""`` when absent.
        window: ``(low, high)`` from the first file's ``WindowCenter``/``WindowWidth``, or None.
        affine: 4x4 voxel-to-world matrix in RAS millimetres (NIfTI's convention) of the array
            transposed to ``(column, row, slice)``, from ``ImagePositionPatient`` and
            ``ImageOrientationPatient`` (DICOM's LPS axes flipped to RAS); None when the files
            do not say where they are.
    """

    data: npt.NDArray[np.float64]
    spacing: tuple[float, ...]
    modality: str
    window: tuple[float, float] | None
    affine: npt.NDArray[np.float64] | None = None


def _read(path: Path, pixels: bool = True) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError) as err:
        raise ValueError(f"cannot read {path} as DICOM: {err}") from err


def _values(ds: Any, path: Path) -> npt.NDArray[np.float64]:
    from pydicom.pixels import apply_modality_lut

    try:
        raw = ds.pixel_array
    except Exception as err:  # pydicom raises many types for missing or compressed pixels
        raise ValueError(f"cannot decode the pixels of {path}: {err}") from err
    return np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)


def _header_window(ds: Any) -> tuple[float, float] | None:
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None

    def first(v: Any) -> float:
        return float(v[0]) if isinstance(v, Sequence) and not isinstance(v, str) else float(v)

    c, w = first(ds.WindowCenter), first(ds.WindowWidth)
    return (c - w / 2, c + w / 2) if w > 0 else None


def _position(ds: Any) -> float | None:
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return None
    o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    normal = np.cross(o[:3], o[3:])
    return float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=np.float64)))


def _affine(ds: Any, spacing: tuple[float, ...]) -> npt.NDArray[np.float64] | None:
    """The RAS affine of ``(column, row, slice)`` voxel indices (DICOM PS3.3 C.7.6.2.1.1)."""
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        return None
    o = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    row_dir, col_dir = o[:3], o[3:]  # along a row (column index grows), down a column
    step, dr, dc = spacing if len(spacing) == 3 else (1.0, *spacing)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = np.cross(row_dir, col_dir) * step
    lps[:3, 3] = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


def read_dicom(path: str | os.PathLike[str]) -> DicomImage:
    """Read one DICOM file (2-D, or 3-D if multi-frame) or a series folder (3-D).

    Args:
        path: A file, or a folder holding the files of one series (other files are refused).

    Returns:
        The image in modality units with its spacing, modality and stored window.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: For unreadable files, a folder with no DICOM file or with several series,
            or slices of different sizes.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"DICOM path not found: {p}")
    if p.is_file():
        ds = _read(p)
        data = _values(ds, p)
        spacing = tuple(float(s) for s in ds.get("PixelSpacing", [1.0, 1.0]))
        modality = str(ds.get("Modality", ""))
        return DicomImage(data, spacing, modality, _header_window(ds), _affine(ds, spacing))
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    if not files:
        raise ValueError(f"series folder {p} holds no files")
    headers = [(f, _read(f, pixels=False)) for f in files]
    series = {str(h.get("SeriesInstanceUID", "")) for _, h in headers}
    if len(series) > 1:
        raise ValueError(f"folder {p} mixes {len(series)} series ({sorted(series)[:3]}...)")
    positions = [_position(h) for _, h in headers]
    if all(v is not None for v in positions):
        order = np.argsort(np.asarray(positions, dtype=np.float64), kind="stable")
    else:
        order = np.argsort([int(h.get("InstanceNumber", i)) for i, (_, h) in enumerate(headers)])
    slices = []
    first = _read(headers[int(order[0])][0])
    for i in order:
        f = headers[int(i)][0]
        ds = first if int(i) == int(order[0]) else _read(f)
        slices.append(_values(ds, f))
    if len({s.shape for s in slices}) != 1:
        raise ValueError(
            f"the slices of {p} have different sizes: {sorted({s.shape for s in slices})}"
        )
    pos = [v for v in positions if v is not None]
    step = float(np.median(np.diff(sorted(pos)))) if len(pos) > 1 else 1.0
    row, col = (float(s) for s in first.get("PixelSpacing", [1.0, 1.0]))
    spacing = (step, row, col)
    modality = str(first.get("Modality", ""))
    volume = np.stack(slices)
    return DicomImage(volume, spacing, modality, _header_window(first), _affine(first, spacing))


def _is_item(path: Path) -> bool:
    return not path.name.startswith(".") and (path.is_dir() or path.suffix.lower() in (".dcm", ""))


class DicomClassification(MedicalDataset):
    """DICOM files or series with one class label each.

    Items are ``{"image": float32 (1, size, size) for files or (1, size, size, size) for
    series, in [0, 1], "label": int64, "id": "<relative path>"}``; every item must have the
    same number of dimensions.

    Args:
        root: Folder with one sub-folder per class, each holding ``.dcm`` files or series folders.
        csv: Instead of class folders: a CSV with columns ``path,label``.
        split: ``"train"``, ``"val"`` or ``"test"`` (stratified, seeded).
        size: Side length the images (volumes) are resized to.
        window: Intensity window (:func:`~medrobust.data.windows.parse_window`), e.g.
            ``"ct-abdomen"`` or ``"header"``; default per-image percentiles 0.5-99.5.
        seed: Seed of the split.
        fractions: ``(train, val, test)`` fractions.

    Attributes:
        intensity: The window used (recorded in the model card and metrics).

    Raises:
        FileNotFoundError: For a missing root, CSV or listed path.
        ValueError: For an empty layout, a CSV without ``path,label``, mixed 2-D and 3-D
            items, unreadable DICOM or an empty split.
    """

    name = "dicom"
    task = Task.CLASSIFICATION

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        csv: str | os.PathLike[str] | None = None,
        size: int = 64,
        window: str | Sequence[float] | None = None,
        seed: int = 0,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
    ) -> None:
        self.split = check_split(split)
        check_fractions(fractions)
        if isinstance(size, bool) or not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an integer >= 8, got {size!r}")
        self.size = size
        self.window = parse_window(window) or DEFAULT_WINDOW
        self.intensity = {"window": self.window.to_dict()}
        items, names, self.base = self._layout(root, csv)
        self.class_names = check_class_names(names, str(self.base))
        idx = stratified_split([lab for _, lab in items], fractions, seed)[self.split]
        self._items = [items[i] for i in idx]
        if not self._items:
            raise ValueError(f"the {self.split!r} split of {self.base} is empty")
        dims = {2 if p.is_file() else 3 for p, _ in items}
        if len(dims) != 1:
            raise ValueError(
                f"{self.base} mixes single DICOM files (2-D) and series folders (3-D); "
                "keep one kind per data set"
            )
        self.spatial_dims = dims.pop()

    @staticmethod
    def _layout(
        root: str | os.PathLike[str] | None, table: str | os.PathLike[str] | None
    ) -> tuple[list[tuple[Path, int]], list[str], Path]:
        if table is not None:
            file = Path(table)
            if not file.is_file():
                raise FileNotFoundError(f"label CSV {file} does not exist")
            with file.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            if not rows or not {"path", "label"} <= set(rows[0]):
                raise ValueError(f"{file} must have the columns 'path' and 'label'")
            names = sorted({r["label"] for r in rows})
            items = [(file.parent / r["path"], names.index(r["label"])) for r in rows]
            for p, _ in items:
                if not p.exists():
                    raise FileNotFoundError(f"{file} lists {p}, which does not exist")
            return items, names, file.parent
        if root is None:
            raise ValueError("give root (class folders) or csv (a path,label table)")
        base = Path(root)
        if not base.is_dir():
            raise FileNotFoundError(f"DICOM folder {base} does not exist")
        names = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
        items = [
            (p, k) for k, c in enumerate(names) for p in sorted((base / c).iterdir()) if _is_item(p)
        ]
        if not items:
            raise ValueError(f"no DICOM files or series under {base}/<class>/")
        return items, names, base

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        """All labels, int64 ``(N,)``."""
        return np.array([lab for _, lab in self._items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self._items[self._check_index(index)]
        img = read_dicom(path)
        if img.data.ndim != self.spatial_dims:
            raise ValueError(f"{path} is {img.data.ndim}-D; the data set is {self.spatial_dims}-D")
        values, _ = apply_window(img.data, self.window, header=img.window, source=str(path))
        t = torch.from_numpy(values)[None, None]
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        t = F.interpolate(t, size=(self.size,) * self.spatial_dims, mode=mode, align_corners=False)
        return {
            "image": t[0].clamp_(0.0, 1.0),
            "label": torch.tensor(label, dtype=torch.int64),
            "id": path.relative_to(self.base).as_posix(),
        }


DATASETS.register(
    "dicom",
    summary="DICOM files (2-D) or series folders (3-D) in class folders or a path,label CSV",
    tags=("classification", "2d", "3d", "folder"),
)(DicomClassification)
