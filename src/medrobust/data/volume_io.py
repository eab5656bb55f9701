"""Reading volumes for segmentation: NIfTI files and DICOM series, reoriented to RAS, with
their voxel spacing in millimetres, and 4-D inputs handled only on request.

* Every volume (and its label map) is turned to the closest canonical orientation, RAS+
  (array axis 0 runs to the patient's Right, 1 to Anterior, 2 to Superior), with nibabel's
  ``as_closest_canonical``: a flip or a permutation of axes, never a resampling. So volumes
  stored in LPS, LAS, PSR ... line up, and a slice can be shown the radiologist's way.
* The spacing comes from the header after reorientation, ``(x, y, z)`` in mm.
* A 4-D image (a time series such as fMRI, or several modalities) is refused with its file name
  and shape unless the caller says what the fourth axis is: ``volume_index=t`` reads one volume,
  ``channels=True`` reads the axis as channels.
* DICOM series (a folder) or files are read with pydicom (:func:`medrobust.data.dicom.read_dicom`:
  slices sorted by position, rescale slope/intercept applied); their affine comes from
  ``ImagePositionPatient``/``ImageOrientationPatient``, so a NIfTI label map drawn on the same
  grid lines up after both are reoriented.
* A DICOM-SEG label object is read with highdicom (optional: ``medrobust[dicom-seg]``); its
  segment numbers are the labels, and a SEG that omits empty frames is placed back on the
  image's grid.

References:
    Cox et al., "A (sort of) new image data format standard: NIfTI-1", NeuroImage 22, 2004;
    DICOM PS3.3 C.7.6.2 (image plane module); Brett et al., nibabel (orientation utilities).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "NIFTI_EXTENSIONS",
    "Volume",
    "display_slice",
    "display_spacing",
    "is_dicom_path",
    "is_dicom_seg",
    "is_nifti",
    "load_volume",
    "read_label_map",
    "stem",
]

NIFTI_EXTENSIONS = (".nii.gz", ".nii")


def is_nifti(path: Path) -> bool:
    """Whether ``path`` is a visible ``.nii``/``.nii.gz`` file."""
    return path.is_file() and path.name.endswith(NIFTI_EXTENSIONS) and not path.name.startswith(".")


def is_dicom_path(path: Path) -> bool:
    """Whether ``path`` is a DICOM file (``.dcm``) or a folder (a series)."""
    return path.is_dir() or path.suffix.lower() == ".dcm"


def stem(path: Path) -> str:
    """The file name without ``.nii.gz``/``.nii``/``.dcm``."""
    for ext in (*NIFTI_EXTENSIONS, ".dcm"):
        if path.name.endswith(ext):
            return path.name[: -len(ext)]
    return path.stem if path.is_file() else path.name


#: SOP class of DICOM Segmentation objects (DICOM-SEG).
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def is_dicom_seg(path: Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation object (read from its header only)."""
    if not path.is_file() or is_nifti(path):
        return False
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return False
    return str(ds.get("SOPClassUID", "")) == SEGMENTATION_STORAGE


def _read_seg(path: Path) -> Any:
    """A DICOM-SEG as a nibabel image of its segment numbers (RAS affine), via highdicom."""
    import nibabel as nib

    try:
        import highdicom as hd
    except ImportError as err:
        raise ImportError(
            f"{path} is a DICOM-SEG; reading it needs highdicom: pip install "
            "'medrobust[dicom-seg]' (or pip install highdicom)"
        ) from err
    try:
        seg = hd.seg.segread(str(path))
        vol = seg.get_volume(combine_segments=True, relabel=False)
    except Exception as err:  # highdicom raises many types for unusual objects
        raise ValueError(f"cannot read the DICOM-SEG {path} with highdicom: {err}") from err
    # highdicom's axes are (slice, row, column) in LPS; ours (column, row, slice) in RAS
    affine = np.asarray(vol.affine, dtype=np.float64)[:, [2, 1, 0, 3]]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    return nib.Nifti1Image(np.ascontiguousarray(np.asarray(vol.array).transpose(2, 1, 0)), ras)


@dataclass(frozen=True)
class Volume:
    """A volume in RAS orientation.

    Attributes:
        data: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` values (modality units; not windowed).
        affine: 4x4 voxel-to-world matrix after reorientation (mm).
        spacing: Voxel size along the array axes, ``(x, y, z)`` in mm.
        source_orientation: The axis codes as stored (e.g. ``"LPS"``), before reorientation.
        modality: DICOM ``Modality`` (``"CT"``, ``"MR"``), ``""`` for NIfTI.
    """

    data: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    spacing: tuple[float, float, float]
    source_orientation: str
    modality: str = ""


def _fourth_axis(
    data: npt.NDArray[Any], path: Path, volume_index: int | None, channels: bool
) -> npt.NDArray[Any]:
    """``(X, Y, Z)`` or ``(X, Y, Z, C)`` from a 3-D to 5-D array, the 4th axis only as asked."""
    shape = data.shape
    if data.ndim == 5 and shape[3] == 1:  # NIfTI vector images: (X, Y, Z, 1, C)
        data = data[:, :, :, 0]
    if data.ndim == 4 and data.shape[3] == 1 and volume_index is None:
        return data[..., 0]
    if data.ndim == 3:
        if volume_index not in (None, 0):
            raise ValueError(f"{path.name} is 3-D {shape}; volume_index={volume_index} needs 4-D")
        return data
    if data.ndim != 4:
        raise ValueError(f"{path.name} has shape {shape}; expected (X, Y, Z) or (X, Y, Z, T)")
    if volume_index is not None and channels:
        raise ValueError("give volume_index or channels, not both")
    if volume_index is not None:
        if not 0 <= volume_index < data.shape[3]:
            raise ValueError(
                f"volume_index={volume_index} is outside the {data.shape[3]} volumes of "
                f"{path.name} (shape {shape})"
            )
        return data[..., volume_index]
    if channels:
        return data
    raise ValueError(
        f"{path} is 4-D with shape {shape}: {data.shape[3]} volumes (a time series such as "
        "fMRI, or several modalities). Say what the 4th axis is: volume_index=<t> reads one "
        "volume, channels=true reads the axis as input channels"
    )


def load_volume(
    path: str | os.PathLike[str],
    *,
    volume_index: int | None = None,
    channels: bool = False,
) -> Volume:
    """Read a NIfTI file or a DICOM series/file as a RAS volume with its spacing.

    Args:
        path: ``.nii``/``.nii.gz`` file, ``.dcm`` file or a folder holding one DICOM series.
        volume_index: For a 4-D image: the volume (time point) to read.
        channels: For a 4-D image: read the 4th axis as channels.

    Returns:
        The :class:`Volume` (data ``(X, Y, Z)`` or ``(X, Y, Z, C)``).

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: For unreadable files, a 4-D image without ``volume_index``/``channels``,
            or a DICOM series without position tags.

    Shape:
        - data: ``(X, Y, Z)``, or ``(X, Y, Z, C)`` with ``channels=True``.
    """
    import nibabel as nib

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"volume not found: {p}")
    modality = ""
    if is_dicom_seg(p):
        img: Any = _read_seg(p)
        modality = "SEG"
    elif is_dicom_path(p) and not is_nifti(p):
        from medrobust.data.dicom import read_dicom

        dcm = read_dicom(p)
        if dcm.affine is None:
            raise ValueError(
                f"{p} has no ImagePositionPatient/ImageOrientationPatient: its orientation "
                "is unknown, so a label map cannot be lined up with it"
            )
        arr = dcm.data[None] if dcm.data.ndim == 2 else dcm.data
        img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), dcm.affine)
        modality = dcm.modality
    else:
        try:
            img = nib.load(str(p))
        except Exception as err:  # nibabel raises many types for corrupt files
            raise ValueError(f"cannot read {p} as NIfTI: {err}") from err
    source = "".join(nib.orientations.aff2axcodes(img.affine))
    canonical: Any = nib.as_closest_canonical(img)
    try:
        data = np.asarray(canonical.dataobj)
    except Exception as err:  # nibabel raises many types for truncated data
        raise ValueError(f"cannot read the voxels of {p}: {err}") from err
    data = _fourth_axis(data, p, volume_index, channels)
    zooms = canonical.header.get_zooms()[:3]
    spacing = (float(zooms[0]), float(zooms[1]), float(zooms[2]))
    affine = np.asarray(canonical.affine, dtype=np.float64)
    return Volume(data, affine, spacing, source, modality)


def _on_grid(
    data: npt.NDArray[Any], vol: Volume, grid: tuple[tuple[int, ...], npt.NDArray[np.float64]]
) -> npt.NDArray[Any]:
    """Place a label block (a DICOM-SEG that omits empty frames covers fewer slices) into the
    image grid ``(shape, affine)``; both must share orientation and spacing."""
    shape, affine = grid
    if tuple(data.shape) == tuple(shape) and np.allclose(vol.affine, affine, atol=1e-3):
        return data
    if not np.allclose(vol.affine[:3, :3], affine[:3, :3], atol=1e-3):
        raise ValueError(
            "the label map's voxel axes or spacing differ from the image's; expected a label "
            "map on the image grid"
        )
    offset = np.linalg.solve(affine[:3, :3], vol.affine[:3, 3] - affine[:3, 3])
    start = np.rint(offset).astype(int)
    stop = start + np.asarray(data.shape)
    if np.abs(offset - start).max() > 1e-2 or (start < 0).any() or (stop > np.asarray(shape)).any():
        raise ValueError(
            f"the label map (shape {data.shape}, at voxel {offset.round(2).tolist()} of the "
            f"image) does not lie on the image grid of shape {tuple(shape)}"
        )
    out = np.zeros(shape, dtype=data.dtype)
    out[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = data
    return out


def read_label_map(
    path: Path, grid: tuple[tuple[int, ...], npt.NDArray[np.float64]] | None = None
) -> tuple[npt.NDArray[np.int64], Volume]:
    """A label map in RAS orientation, checked: non-negative integers, 3-D.

    Args:
        path: A NIfTI label map, or a DICOM-SEG (read with highdicom: segment numbers become
            the labels).
        grid: ``(shape, affine)`` of the image in RAS: a DICOM-SEG covering only some slices
            is placed into it.

    Raises:
        ValueError: For non-integer, negative or non-3-D labels, or a DICOM-SEG off the grid.
    """
    vol = load_volume(path)
    data = vol.data
    if data.ndim != 3:
        raise ValueError(f"label map {path.name} has shape {data.shape}; expected (X, Y, Z)")
    if data.dtype.kind == "f":
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            raise ValueError(f"label map {path.name} holds non-integer values")
    elif data.dtype.kind not in "iub":
        raise ValueError(f"label map {path.name} has unsupported dtype {data.dtype}")
    out = data.astype(np.int64)
    if out.size and out.min() < 0:
        raise ValueError(f"label map {path.name} holds negative labels (min {out.min()})")
    if grid is not None and vol.modality == "SEG":
        out = _on_grid(out, vol, grid)
    return out, vol


def display_slice(volume: npt.NDArray[Any], axis: int, index: int) -> npt.NDArray[Any]:
    """One slice of a RAS volume as a radiologist looks at it.

    Axial (``axis=2``): anterior at the top, the patient's right on the viewer's left;
    coronal (``axis=1``): superior at the top, right on the left; sagittal (``axis=0``):
    superior at the top, anterior on the left.

    Args:
        volume: ``(X, Y, Z)`` or channel-first ``(C, X, Y, Z)`` (spatial axes last).
        axis: The slice axis of the RAS volume (0, 1 or 2).
        index: The slice.

    Returns:
        ``(rows, cols)`` or ``(C, rows, cols)``.
    """
    lead = volume.ndim - 3
    plane = np.take(volume, index, axis=lead + axis)
    # the two remaining RAS axes (u, v) become rows = -v, cols = -u: axial (X, Y) gives
    # A at the top and R at the left, coronal (X, Z) S at the top and R at the left,
    # sagittal (Y, Z) S at the top and A at the left
    a, b = lead, lead + 1
    return np.flip(np.swapaxes(plane, a, b), axis=(a, b))


def display_spacing(spacing: tuple[float, float, float], axis: int) -> tuple[float, float]:
    """The ``(row, column)`` spacing of :func:`display_slice`'s slices."""
    rest = [s for k, s in enumerate(spacing) if k != axis]
    return (rest[1], rest[0])
