"""Segmentation volumes (NIfTI, DICOM series with NIfTI labels) as whole volumes, 2-D slices or
3-D patches, with their spacing and in RAS orientation.

Layouts (:mod:`medrobust.data.volume_layouts`): the Medical Segmentation Decathlon's
``dataset.json`` (class names from its ``labels``, channels from its ``modality``), folders
``imagesTr/`` + ``labelsTr/`` or ``images/`` + ``labels/``, a CSV manifest
``image,label[,subject]``, or lists ``images=[...]``, ``labels=[...]``.

Every volume is reoriented to RAS (:mod:`medrobust.data.volume_io`); slices are returned as a
radiologist looks at them (axial: anterior up, the patient's right on the left). Intensities are
mapped to ``[0, 1]`` per volume through an explicit window (per-volume percentiles by default);
label maps must hold non-negative integers. Splits are by subject, and within each volume when
there are fewer subjects than splits (:mod:`medrobust.data.volume_sampling`).

References:
    Cox et al., "A (sort of) new image data format standard: NIfTI-1", NeuroImage 22, 2004;
    Antonelli et al., "The Medical Segmentation Decathlon", Nature Communications 13, 2022.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from medrobust.data.base import MedicalDataset, check_class_names, parse_names
from medrobust.data.registry import DATASETS
from medrobust.data.volume_io import (
    Volume,
    display_slice,
    display_spacing,
    is_dicom_seg,
    is_nifti,
    load_volume,
    read_label_map,
    stem,
)
from medrobust.data.volume_layouts import Layout, VolumeCase, find_pairs, resolve
from medrobust.data.volume_sampling import block, patch_corners, plan_split
from medrobust.data.windows import Window, apply_window, parse_window
from medrobust.types import Task

logger = logging.getLogger(__name__)

__all__ = ["Decathlon", "NiftiSegmentation", "find_nifti_pairs", "load_nifti"]

#: The default intensity window: per-volume 0.5th and 99.5th percentiles.
DEFAULT_WINDOW = Window("percentile", 0.5, 99.5)
_MODES = ("volume", "slice", "patch")


def load_nifti(path: str | os.PathLike[str]) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Read a NIfTI file with nibabel, as stored (no reorientation).

    Args:
        path: A ``.nii`` or ``.nii.gz`` file.

    Returns:
        ``(data, affine)``: the voxel array (scaled by the header's slope/intercept) and the
        4x4 voxel-to-world matrix.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it cannot be read as NIfTI.
    """
    import nibabel as nib

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"NIfTI file not found: {p}")
    try:
        img: Any = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise ValueError(f"cannot read {p} as NIfTI: {err}") from err
    return np.asarray(data), np.asarray(img.affine, dtype=np.float64)


def find_nifti_pairs(root: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Pair images and label maps of a folder by name (see
    :func:`medrobust.data.volume_layouts.find_pairs`)."""
    return [(c.image, c.label) for c in find_pairs(root)]


def _image_header(
    path: Path, volume_index: int | None, channels: bool
) -> tuple[int, tuple[int, ...] | None]:
    """Channels and RAS spatial shape of an image from its header only (a 4-D image without
    an option is refused here, before anything is decoded); shape None for DICOM."""
    if not is_nifti(path):
        return 1, None  # DICOM: one channel, shape known once read
    import nibabel as nib

    from medrobust.data.volume_io import _fourth_axis

    try:
        header: Any = nib.load(str(path))
        shape = tuple(int(s) for s in header.shape)
        ornt = nib.orientations.io_orientation(header.affine)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise ValueError(f"cannot read {path} as NIfTI: {err}") from err
    view = _fourth_axis(
        np.broadcast_to(np.zeros((), np.uint8), shape), path, volume_index, channels
    )
    ras = [0, 0, 0]
    for axis in range(3):
        ras[int(ornt[axis, 0])] = shape[axis]
    return (int(view.shape[3]) if view.ndim == 4 else 1), tuple(ras)


#: The options of a volume data set beyond its layout, window, split and seed (their defaults).
OPTIONS: dict[str, Any] = {
    "axis": 2,
    "skip_empty": False,
    "pad_multiple": 1,
    "split_by": "auto",
    "patch_size": 32,
    "patches_per_volume": 8,
    "sampling": "balanced",
    "volume_index": None,
    "channels": False,
}


@dataclass(frozen=True)
class _Options:
    mode: str
    axis: int
    skip_empty: bool
    patch: tuple[int, int, int]
    patches: int
    balanced: bool
    pad_multiple: int
    split_by: str
    volume_index: int | None
    channels: bool


def _int(kw: dict[str, Any], key: str, minimum: int) -> int:
    v = kw[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum}, got {v!r}")
    return v


def _check_options(mode: str, given: dict[str, Any]) -> _Options:
    """The options, checked: unknown names get a did-you-mean ``TypeError``."""
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        import difflib

        known = sorted({*OPTIONS, *_NAMED})
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise TypeError(
            f"unknown argument(s) {unknown} for the volume data set.{hint} Accepted: "
            f"{', '.join(known)}"
        )
    kw = {**OPTIONS, **given}
    if mode not in _MODES:
        raise ValueError(f"mode must be 'volume', 'slice' or 'patch', got {mode!r}")
    if kw["axis"] not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {kw['axis']!r}")
    size = kw["patch_size"]
    patch = (size,) * 3 if isinstance(size, int) else tuple(size)
    if len(patch) != 3 or not all(isinstance(p, int) and p >= 1 for p in patch):
        raise ValueError(f"patch_size must be an integer or three integers >= 1, got {size!r}")
    if kw["sampling"] not in ("random", "balanced"):
        raise ValueError(f"sampling must be 'random' or 'balanced', got {kw['sampling']!r}")
    index = kw["volume_index"]
    return _Options(
        mode,
        int(kw["axis"]),
        bool(kw["skip_empty"]),
        (int(patch[0]), int(patch[1]), int(patch[2])),
        _int(kw, "patches_per_volume", 1),
        kw["sampling"] == "balanced",
        _int(kw, "pad_multiple", 1),
        str(kw["split_by"]),
        None if index is None else _int(kw, "volume_index", 0),
        bool(kw["channels"]),
    )


_NAMED: tuple[str, ...] = ("root", "images", "labels", "manifest", "mode", "window")
_NAMED += ("class_names", "fractions", "seed")


class NiftiSegmentation(MedicalDataset):
    """Volumes with label maps as whole volumes, 2-D slices or 3-D patches.

    Items are ``{"image": float32 (C, *spatial) in [0, 1], "label": int64 (1 if the item has
    any foreground), "mask": int64 (*spatial), "id": "<stem>", "<stem>/<axis>:<i>" or
    "<stem>/patch<k>@x,y,z"}``. Volumes are in RAS orientation; slices are in radiological
    display orientation (rows, columns) (:func:`~medrobust.data.volume_io.display_slice`).

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        root: Folder with ``dataset.json`` (Decathlon), ``imagesTr/`` + ``labelsTr/`` or
            ``images/`` + ``labels/``; or a ``dataset.json`` file.
        images: Image files or DICOM series folders (instead of ``root``).
        labels: Label-map files, paired with ``images`` in order.
        manifest: A CSV with columns ``image,label[,subject]`` (instead of ``root``).
        mode: ``"volume"``, ``"slice"`` or ``"patch"``.
        window: Intensity window mapped to ``[0, 1]``
            (:func:`~medrobust.data.windows.parse_window`).
        class_names: Names of the label classes (a list or ``"bg,liver,tumour"``); default the
            Decathlon ``labels``, else ``background``, ``class 1``, ...
        fractions: ``(train, val, test)`` fractions of the subjects (or of each volume's slices).
        seed: Seed of the split and of the patch sampler.
        **options: Any of (defaults in :data:`OPTIONS`):
        axis: Slice axis of the RAS volume (0 sagittal, 1 coronal, 2 axial) in slice mode; the
            axis along which volumes are cut when a split is made within subjects.
        skip_empty: In slice mode, drop slices whose label map is all background.
        pad_multiple: Zero-pad every spatial dim of an item up to a multiple of this.
        split_by: ``"auto"`` (by subject when there are enough, else within subjects),
            ``"subject"`` or ``"within"``.
        patch_size: Patch size in patch mode (an integer or three).
        patches_per_volume: Patches drawn per volume in patch mode (fixed by the seed).
        sampling: ``"balanced"`` (alternately foreground- and background-centred) or
            ``"random"`` (uniform) patches.
        volume_index: For 4-D images (fMRI, time series): the volume to read.
        channels: For 4-D images: read the 4th axis as channels (set by a Decathlon
            ``dataset.json`` with several modalities).

    Attributes:
        spacing: Voxel spacing of the items in mm, one value per spatial dim of an item
            (``(x, y, z)`` for volumes and patches, ``(row, column)`` for slices), or None when
            the volumes of the split differ (see ``spacings``).
        spacings: RAS ``(x, y, z)`` spacing in mm of every volume of the split.
        orientation: ``"RAS"`` (every volume is reoriented to it).
        patch_size: ``(x, y, z)`` of the patches in patch mode, else None (a model trained on
            patches and run on whole volumes can be told apart).
        source_orientations: The stored axis codes of every volume (e.g. ``"LPS"``).
        split_within: True when the split is a block of every volume (too few subjects).
        test_images: A Decathlon's unlabelled ``test`` images (not part of any split).
        intensity: The window used (recorded in the model card and metrics).

    Raises:
        FileNotFoundError: For missing files or folders.
        ValueError: For unreadable files, image/label shape mismatches, non-integer or negative
            labels, labels outside ``class_names``, a 4-D image without ``volume_index`` or
            ``channels``, an empty split or invalid arguments.
    """

    name = "nifti"
    task = Task.SEGMENTATION
    has_masks = True
    cache_volumes = 2

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | os.PathLike[str] | None = None,
        images: Sequence[str | os.PathLike[str]] | None = None,
        labels: Sequence[str | os.PathLike[str]] | None = None,
        manifest: str | os.PathLike[str] | None = None,
        mode: str = "volume",
        window: str | Sequence[float] | None = None,
        class_names: str | Sequence[str] | None = None,
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        **options: Any,
    ) -> None:
        if split not in ("train", "val", "test", "all"):
            raise ValueError(f"unknown split {split!r}; expected 'train', 'val', 'test' or 'all'")
        self.split = split
        self.opts = _check_options(mode, options)
        self.mode, self.axis, self.pad_multiple = mode, self.opts.axis, self.opts.pad_multiple
        self.spatial_dims = 2 if mode == "slice" else 3
        self.patch_size = self.opts.patch if mode == "patch" else None
        self.window = parse_window(window) or DEFAULT_WINDOW
        self.intensity = {"window": self.window.to_dict()}
        layout = self._layout(root, images, labels, manifest)
        volume_index, channels = self.opts.volume_index, self.opts.channels
        if len(layout.channel_names) > 1 and volume_index is None:
            channels = True  # the Decathlon description says what the 4th axis is
        self._read = {"volume_index": volume_index, "channels": channels}
        self.modality, self.test_images = layout.modality, list(layout.test_images)
        heads = [_image_header(c.image, volume_index, channels) for c in layout.cases]
        counts = {h[0] for h in heads}
        if len(counts) != 1:
            raise ValueError(f"the images have different channel counts: {sorted(counts)}")
        self.in_channels = counts.pop()
        subjects = [c.subject for c in layout.cases]
        plan = plan_split(subjects, split, fractions, seed, self.opts.split_by)
        if plan.within and mode == "volume":
            raise ValueError(
                f"{len(layout.cases)} volume(s) of {len({c.subject for c in layout.cases})} "
                "subject(s) cannot be split by whole volumes: use mode='slice' or mode='patch' "
                "(the split is then made within each volume), or split='all'"
            )
        self.split_within = plan.within
        self.cases: list[VolumeCase] = [layout.cases[i] for i in plan.volumes]
        self.pairs = [(c.image, c.label) for c in self.cases]
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._index: list[tuple[int, int, tuple[int, ...]]] = []
        shapes = [h[1] for h in heads]
        max_label, infos = self._scan(layout.cases, shapes, set(plan.volumes), (plan, seed))
        self.class_names = self._class_names(class_names or layout.class_names, max_label)
        self.spacings = [info.spacing for info in infos]
        self.source_orientations = [info.source_orientation for info in infos]
        self.orientation = "RAS"
        self.spacing = self._item_spacing()
        if not self._index:
            what = "slice with foreground" if self.opts.skip_empty else "item"
            raise ValueError(f"no {what} in split {self.split!r}")

    @staticmethod
    def _layout(
        root: str | os.PathLike[str] | None,
        images: Sequence[str | os.PathLike[str]] | None,
        labels: Sequence[str | os.PathLike[str]] | None,
        manifest: str | os.PathLike[str] | None,
    ) -> Layout:
        return resolve(root, images, labels, manifest)

    def _grown(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The spatial shape after padding small volumes up to the patch (patch mode)."""
        if self.mode != "patch":
            return shape
        return tuple(max(s, p) for s, p in zip(shape, self.opts.patch, strict=True))

    def _scan(
        self,
        cases: list[VolumeCase],
        shapes: list[tuple[int, ...] | None],
        chosen: set[int],
        sampling: tuple[Any, int],
    ) -> tuple[int, list[Volume]]:
        """Read every label map once: its shape checked against the image's, the largest label
        (all cases, so that every split agrees on the classes) and, for the split's volumes,
        their items."""
        plan, seed = sampling
        max_label, infos = 0, []  # type: tuple[int, list[Volume]]
        for i, case in enumerate(cases):
            grid = None
            if is_dicom_seg(case.label):  # a DICOM-SEG may cover only some of the slices
                image = load_volume(case.image, **self._read)  # type: ignore[arg-type]
                grid = (image.data.shape[:3], image.affine)
            lab, info = read_label_map(case.label, grid)
            if shapes[i] is not None and shapes[i] != lab.shape:
                raise ValueError(
                    f"image {case.image.name} has shape {shapes[i]} but label map "
                    f"{case.label.name} has shape {lab.shape} (both in RAS orientation); "
                    "expected the same grid"
                )
            max_label = max(max_label, int(lab.max(initial=0)))
            if i not in chosen:
                continue
            v = len(infos)
            infos.append(info)
            self._add_items(v, lab, plan, seed)
        return max_label, infos

    def _add_items(self, v: int, lab: npt.NDArray[np.int64], plan: Any, seed: int) -> None:
        o, ax = self.opts, self.axis
        region = [(0, s) for s in self._grown(lab.shape)]
        if plan.within:
            region[ax] = block(lab.shape[ax], self.split, plan.fractions)
        if self.mode == "volume":
            self._index.append((v, -1, ()))
        elif self.mode == "slice":
            lo, hi = region[ax]
            keep = list(range(lo, hi))
            if o.skip_empty:
                fg = np.asarray(np.moveaxis(lab, ax, 0).reshape(lab.shape[ax], -1).any(axis=1))
                keep = [s for s in keep if bool(fg[s])]
            self._index += [(v, int(s), ()) for s in keep]
        else:
            grown = np.zeros(self._grown(lab.shape), dtype=np.int64)
            grown[tuple(slice(0, s) for s in lab.shape)] = lab
            corners = patch_corners(
                grown,
                o.patch,
                o.patches,
                region=region,
                balanced=o.balanced,
                seed=seed,
                stream=v,
            )
            self._index += [(v, k, c) for k, c in enumerate(corners)]

    def _class_names(self, names: str | Sequence[str] | None, max_label: int) -> list[str]:
        if names is None:
            names = ["background", *(f"class {c}" for c in range(1, max(max_label, 1) + 1))]
        checked = parse_names(names) if isinstance(names, str) else list(names)
        out = check_class_names(checked, f"{self.name} ({self.split})")
        if max_label >= len(out):
            raise ValueError(
                f"the label maps hold class {max_label} but class_names lists only "
                f"{len(out)} classes ({out})"
            )
        return out

    def _item_spacing(self) -> tuple[float, ...] | None:
        if not self.spacings:
            return None
        first = np.asarray(self.spacings[0])
        if any(not np.allclose(s, first, rtol=1e-4) for s in self.spacings):
            return None
        sp = self.spacings[0]
        return display_spacing(sp, self.axis) if self.mode == "slice" else tuple(sp)

    def item_spacing(self, index: int) -> tuple[float, ...]:
        """The spacing in mm of item ``index``'s spatial dims (rows, columns for slices)."""
        v = self._index[self._check_index(index)][0]
        sp = self.spacings[v]
        return display_spacing(sp, self.axis) if self.mode == "slice" else tuple(sp)

    def _normalise(self, data: npt.NDArray[Any], name: str) -> npt.NDArray[np.float32]:
        arr = np.asarray(data)
        if self.window.kind == "percentile":
            lo, hi = (float(v) for v in np.percentile(arr, [self.window.low, self.window.high]))
            if hi <= lo:  # a nearly constant volume: its whole range
                window = Window("fixed", float(arr.min()), float(arr.max()) + 1e-12)
                return apply_window(arr, window, source=f"image {name}")[0]
        return apply_window(arr, self.window, source=f"image {name}")[0]

    def _volume(self, v: int) -> tuple[torch.Tensor, torch.Tensor]:
        if v in self._cache:
            self._cache.move_to_end(v)
            return self._cache[v]
        img_path, lab_path = self.pairs[v]
        vol = load_volume(img_path, **self._read)  # type: ignore[arg-type]
        label, _ = read_label_map(lab_path, (vol.data.shape[:3], vol.affine))
        data = vol.data if vol.data.ndim == 4 else vol.data[..., None]
        if data.shape[:3] != label.shape:
            raise ValueError(
                f"image {img_path.name} has shape {data.shape[:3]} but label map "
                f"{lab_path.name} has shape {label.shape} (both in RAS orientation); expected "
                "the same grid"
            )
        if int(label.max(initial=0)) >= self.num_classes:
            raise ValueError(
                f"label map {lab_path.name} holds class {int(label.max())} but there are "
                f"{self.num_classes} classes"
            )
        image = torch.from_numpy(np.moveaxis(self._normalise(data, img_path.name), -1, 0).copy())
        mask = torch.from_numpy(label)
        grow = self._grown(tuple(label.shape))
        if grow != tuple(label.shape):
            pads: list[int] = []
            for s, g in zip(reversed(label.shape), reversed(grow), strict=True):
                pads += [0, g - s]
            image, mask = torch.nn.functional.pad(image, pads), torch.nn.functional.pad(mask, pads)
        self._cache[v] = (image, mask)
        while len(self._cache) > max(1, int(self.cache_volumes)):
            self._cache.popitem(last=False)
        return image, mask

    def _pad(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.pad_multiple
        if m == 1:
            return image, mask
        pads: list[int] = []
        for s in reversed(mask.shape):
            pads += [0, (-s) % m]
        return torch.nn.functional.pad(image, pads), torch.nn.functional.pad(mask, pads)

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        """Foreground presence of every item, int64 ``(N,)`` (reads every label map)."""
        return np.array([int(self[i]["label"]) for i in range(len(self))], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        v, s, corner = self._index[self._check_index(index)]
        image, mask = self._volume(v)
        name = stem(self.pairs[v][0])
        if self.mode == "slice":
            image = torch.from_numpy(display_slice(image.numpy(), self.axis, s).copy())
            mask = torch.from_numpy(display_slice(mask.numpy(), self.axis, s).copy())
            item_id = f"{name}/{'xyz'[self.axis]}:{s}"
        elif self.mode == "patch":
            box = tuple(slice(c, c + p) for c, p in zip(corner, self.opts.patch, strict=True))
            full = (slice(None), *box)
            image, mask = image[full], mask[box]
            item_id = f"{name}/patch{s}@{','.join(str(c) for c in corner)}"
        else:
            item_id = name
        image, mask = self._pad(image.contiguous(), mask.contiguous())
        return {
            "image": image.to(torch.float32),
            "label": torch.tensor(int(bool((mask > 0).any())), dtype=torch.int64),
            "mask": mask.to(torch.int64),
            "id": item_id,
        }


class Decathlon(NiftiSegmentation):
    """A Medical Segmentation Decathlon task folder read through its ``dataset.json``.

    The same data set as :class:`NiftiSegmentation` with ``root`` required to hold (or be) a
    ``dataset.json``: class names from its ``labels``, the channels from its ``modality``
    (several modalities: the 4-D images' 4th axis is read as channels), ``modality`` set from
    it (``CT`` -> ``"ct"``, MR sequences -> ``"mri"``), its ``test`` images in ``test_images``.
    All other arguments are :class:`NiftiSegmentation`'s.

    Raises:
        FileNotFoundError: If there is no ``dataset.json``.
    """

    name = "decathlon"

    def __init__(self, split: str = "train", *, root: str | os.PathLike[str], **kwargs: Any):
        p = Path(root)
        if not (p.name == "dataset.json" and p.is_file()) and not (p / "dataset.json").is_file():
            raise FileNotFoundError(
                f"no dataset.json in {p}: the decathlon data set reads a Medical Segmentation "
                "Decathlon task folder (use 'nifti' for plain imagesTr/labelsTr folders)"
            )
        super().__init__(split, root=root, **kwargs)


DATASETS.register(
    "nifti",
    summary="NIfTI/DICOM volumes + NIfTI label maps (folders, dataset.json, CSV manifest): "
    "volumes, 2-D slices or 3-D patches, RAS, spacing kept",
    tags=("segmentation", "2d", "3d", "folder"),
)(NiftiSegmentation)
DATASETS.register(
    "decathlon",
    summary="Medical Segmentation Decathlon task folder (dataset.json, imagesTr/labelsTr)",
    tags=("segmentation", "2d", "3d", "folder"),
)(Decathlon)
