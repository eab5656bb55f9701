"""NIfTI images and label maps (``.nii`` / ``.nii.gz``), as whole volumes or as 2-D slices.

Layouts understood by :class:`NiftiSegmentation`:

* explicit lists ``images=[...]``, ``labels=[...]`` (paired in order);
* a folder ``root`` with ``imagesTr/`` and ``labelsTr/`` (the Medical Segmentation Decathlon
  layout) or ``images/`` and ``labels/``, paired by file name.

Intensities are mapped to ``[0, 1]`` per volume (percentile window by default, or a fixed
window such as a CT Hounsfield range); label maps must hold non-negative integers. The split is
by volume (patient), deterministic from a seed, so no patient is in two splits.

References:
    Cox et al., "A (sort of) new image data format standard: NIfTI-1", NeuroImage 22, 2004;
    Antonelli et al., "The Medical Segmentation Decathlon", Nature Communications 13, 2022.
"""

from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from medrobust.data.base import MedicalDataset, check_class_names, check_fractions
from medrobust.data.registry import DATASETS
from medrobust.data.windows import Window, apply_window, parse_window
from medrobust.types import Task

logger = logging.getLogger(__name__)

__all__ = ["NiftiSegmentation", "find_nifti_pairs", "load_nifti"]

_EXTENSIONS = (".nii.gz", ".nii")
_FOLDERS = (("imagesTr", "labelsTr"), ("images", "labels"))
#: The default intensity window: per-volume 0.5th and 99.5th percentiles.
DEFAULT_WINDOW = Window("percentile", 0.5, 99.5)


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(_EXTENSIONS) and not path.name.startswith(".")


def _stem(path: Path) -> str:
    for ext in _EXTENSIONS:
        if path.name.endswith(ext):
            return path.name[: -len(ext)]
    return path.stem


def load_nifti(path: str | os.PathLike[str]) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Read a NIfTI file with nibabel.

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


def _shape(path: Path) -> tuple[int, ...]:
    import nibabel as nib

    try:
        img: Any = nib.load(str(path))
        return tuple(int(s) for s in img.shape)
    except Exception as err:  # nibabel raises many types for corrupt files
        raise ValueError(f"cannot read {path} as NIfTI: {err}") from err


def find_nifti_pairs(root: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Pair images and label maps of a folder by file name.

    Args:
        root: A folder with ``imagesTr/`` + ``labelsTr/`` or ``images/`` + ``labels/``.

    Returns:
        Sorted ``(image, label)`` pairs.

    Raises:
        FileNotFoundError: If the folder or its sub-folders are missing.
        ValueError: If an image has no label map (or the other way round) or nothing is found.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"NIfTI folder not found: {base}")
    for img_dir, lab_dir in _FOLDERS:
        if (base / img_dir).is_dir() and (base / lab_dir).is_dir():
            break
    else:
        raise FileNotFoundError(
            f"{base} has neither imagesTr/ + labelsTr/ nor images/ + labels/ sub-folders"
        )
    images = {_stem(p): p for p in (base / img_dir).iterdir() if _is_nifti(p)}
    labels = {_stem(p): p for p in (base / lab_dir).iterdir() if _is_nifti(p)}
    if not images:
        raise ValueError(f"no .nii or .nii.gz images in {base / img_dir}")
    missing = sorted(set(images) - set(labels))
    extra = sorted(set(labels) - set(images))
    if missing:
        raise ValueError(f"image(s) without a label map in {base / lab_dir}: {missing[:5]}")
    if extra:
        raise ValueError(f"label map(s) without an image in {base / img_dir}: {extra[:5]}")
    return [(images[k], labels[k]) for k in sorted(images)]


def _checked_shapes(pairs: list[tuple[Path, Path]]) -> list[tuple[int, ...]]:
    """Shapes of the images, each checked against its label map's."""
    shapes = []
    for img, lab in pairs:
        s_img, s_lab = _shape(img), _shape(lab)
        if len(s_img) not in (3, 4) or len(s_lab) != 3 or s_img[:3] != s_lab:
            raise ValueError(
                f"image {img.name} has shape {s_img} but label map {lab.name} has shape "
                f"{s_lab}; expected (X, Y, Z) or (X, Y, Z, C) images with (X, Y, Z) labels"
            )
        shapes.append(s_img)
    return shapes


def _split_volumes(n: int, split: str, fractions: Sequence[float], seed: int) -> list[int]:
    """Sorted indices of the volumes of ``split``: a seeded permutation cut by ``fractions``."""
    if split == "all":
        chosen = list(range(n))
    else:
        fr = check_fractions(fractions)
        order = np.random.Generator(np.random.PCG64(seed)).permutation(n)
        n_train = math.floor(fr[0] * n + 0.5)
        n_val = min(n - n_train, math.floor(fr[1] * n + 0.5))
        cut = {
            "train": order[:n_train],
            "val": order[n_train : n_train + n_val],
            "test": order[n_train + n_val :],
        }[split]
        chosen = sorted(int(i) for i in cut)
    if not chosen:
        raise ValueError(
            f"split {split!r} holds no volume ({n} volume(s), fractions "
            f"{tuple(fractions)}); use split='all' or other fractions"
        )
    return chosen


class NiftiSegmentation(MedicalDataset):
    """NIfTI volumes with label maps, in volume mode (3-D items) or slice mode (2-D items).

    Items are ``{"image": float32 (C, *spatial) in [0, 1], "label": int64 (1 if the item has
    any foreground), "mask": int64 (*spatial), "id": "<file stem>" or "<file stem>/<axis>:<i>"}``.
    A 4-D image is read as channels last (``X, Y, Z, C``).

    Args:
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        root: Folder with ``imagesTr/`` + ``labelsTr/`` or ``images/`` + ``labels/``.
        images: Image files (instead of ``root``).
        labels: Label-map files, paired with ``images`` in order.
        mode: ``"volume"`` or ``"slice"``.
        axis: Slice axis (0, 1 or 2) in slice mode.
        skip_empty: In slice mode, drop slices whose label map is all background.
        window: Intensity window mapped to ``[0, 1]``: ``(low, high)`` or ``"-160,240"`` (HU),
            a preset (``"ct-abdomen"``), ``"p1,p99"`` (see :mod:`medrobust.data.windows`);
            default: the per-volume 0.5th and 99.5th percentiles.
        class_names: Names of the label classes; default ``background``, ``class 1``, ... up to
            the largest label found.
        fractions: ``(train, val, test)`` fractions of the volumes.
        seed: Seed of the split.
        pad_multiple: Zero-pad every spatial dim up to a multiple of this (e.g. 16 for UNets).

    Attributes:
        cache_volumes: Decoded volumes kept in memory at once (a class attribute: set it on the
            instance or a subclass to trade memory for speed).

    Raises:
        FileNotFoundError: For missing files or folders.
        ValueError: For unreadable files, image/label shape mismatches, non-integer or negative
            labels, labels outside ``class_names``, an empty split or invalid arguments.
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
        mode: str = "volume",
        axis: int = 2,
        skip_empty: bool = False,
        window: str | Sequence[float] | None = None,
        class_names: Sequence[str] | None = None,
        fractions: Sequence[float] = (0.7, 0.15, 0.15),
        seed: int = 0,
        pad_multiple: int = 1,
    ) -> None:
        if split not in ("train", "val", "test", "all"):
            raise ValueError(f"unknown split {split!r}; expected 'train', 'val', 'test' or 'all'")
        self.split = split
        if mode not in ("volume", "slice"):
            raise ValueError(f"mode must be 'volume' or 'slice', got {mode!r}")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        if isinstance(pad_multiple, bool) or not isinstance(pad_multiple, int) or pad_multiple < 1:
            raise ValueError(f"pad_multiple must be an integer >= 1, got {pad_multiple!r}")
        self.window = parse_window(window) or DEFAULT_WINDOW
        self.intensity = {"window": self.window.to_dict()}
        pairs = self._pairs(root, images, labels)
        self.mode, self.axis = mode, int(axis)
        self.pad_multiple = int(pad_multiple)
        self.spatial_dims = 3 if mode == "volume" else 2
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        shapes = _checked_shapes(pairs)
        channels = {s[3] if len(s) == 4 else 1 for s in shapes}
        if len(channels) != 1:
            raise ValueError(f"the images have different channel counts: {sorted(channels)}")
        self.in_channels = channels.pop()
        chosen = _split_volumes(len(pairs), split, fractions, seed)
        self.pairs = [pairs[i] for i in chosen]
        # classes from every volume, so that all splits agree on them
        self.class_names = self._check_labels(class_names, pairs)
        self._index = self._items([shapes[i] for i in chosen], skip_empty)

    def _check_labels(
        self, class_names: Sequence[str] | None, pairs: list[tuple[Path, Path]]
    ) -> list[str]:
        """The class names, checked against the largest label of all label maps (every split
        gets the same classes, even when a class is absent from one of them)."""
        max_label = 0
        for _, lab in pairs:
            max_label = max(max_label, int(self._read_label(lab).max(initial=0)))
        if class_names is None:
            class_names = ["background", *(f"class {c}" for c in range(1, max(max_label, 1) + 1))]
        names = check_class_names(class_names, f"nifti ({self.split})")
        if max_label >= len(names):
            raise ValueError(
                f"the label maps hold class {max_label} but class_names lists only "
                f"{len(names)} classes ({names})"
            )
        return names

    def _items(self, shapes: list[tuple[int, ...]], skip_empty: bool) -> list[tuple[int, int]]:
        """``(volume, slice)`` of every item (slice ``-1`` for a whole volume)."""
        index: list[tuple[int, int]] = []
        for v, (_, lab) in enumerate(self.pairs):
            if self.mode == "volume":
                index.append((v, -1))
                continue
            n_slices = shapes[v][self.axis]
            if skip_empty:
                lmap = self._read_label(lab)
                fg = np.moveaxis(lmap, self.axis, 0).reshape(n_slices, -1).any(axis=1)
                index += [(v, int(i)) for i in np.flatnonzero(fg)]
            else:
                index += [(v, i) for i in range(n_slices)]
        if not index:
            raise ValueError(f"no slice with foreground in split {self.split!r} (skip_empty=True)")
        return index

    @staticmethod
    def _pairs(
        root: str | os.PathLike[str] | None,
        images: Sequence[str | os.PathLike[str]] | None,
        labels: Sequence[str | os.PathLike[str]] | None,
    ) -> list[tuple[Path, Path]]:
        if root is not None:
            if images is not None or labels is not None:
                raise ValueError("give either root or images + labels, not both")
            return find_nifti_pairs(root)
        if images is None or labels is None:
            raise ValueError("give root (a folder) or both images and labels (lists of files)")
        imgs, labs = [Path(p) for p in images], [Path(p) for p in labels]
        if len(imgs) != len(labs) or not imgs:
            raise ValueError(
                "images and labels must be non-empty lists of equal length, got "
                f"{len(imgs)} and {len(labs)}"
            )
        for p in (*imgs, *labs):
            if not p.is_file():
                raise FileNotFoundError(f"NIfTI file not found: {p}")
        return list(zip(imgs, labs, strict=True))

    @staticmethod
    def _read_label(path: Path) -> npt.NDArray[np.int64]:
        data, _ = load_nifti(path)
        if data.dtype.kind == "f":
            if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
                raise ValueError(f"label map {path.name} holds non-integer values")
        elif data.dtype.kind not in "iub":
            raise ValueError(f"label map {path.name} has unsupported dtype {data.dtype}")
        out = data.astype(np.int64)
        if out.size and out.min() < 0:
            raise ValueError(f"label map {path.name} holds negative labels (min {out.min()})")
        return out

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
        data, _ = load_nifti(img_path)
        if data.ndim == 3:
            data = data[..., None]
        image = np.moveaxis(self._normalise(data, img_path.name), -1, 0)
        label = self._read_label(lab_path)
        if int(label.max(initial=0)) >= self.num_classes:
            raise ValueError(
                f"label map {lab_path.name} holds class {int(label.max())} but there are "
                f"{self.num_classes} classes"
            )
        out = (torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(label))
        self._cache[v] = out
        while len(self._cache) > max(1, int(self.cache_volumes)):
            self._cache.popitem(last=False)
        return out

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
        i = self._check_index(index)
        v, s = self._index[i]
        image, mask = self._volume(v)
        stem = _stem(self.pairs[v][0])
        if s >= 0:
            image = image.select(self.axis + 1, s)
            mask = mask.select(self.axis, s)
            item_id = f"{stem}/{'xyz'[self.axis]}:{s}"
        else:
            item_id = stem
        image, mask = self._pad(image.contiguous(), mask.contiguous())
        return {
            "image": image.to(torch.float32),
            "label": torch.tensor(int(bool((mask > 0).any())), dtype=torch.int64),
            "mask": mask.to(torch.int64),
            "id": item_id,
        }


DATASETS.register(
    "nifti",
    summary="NIfTI images + label maps (imagesTr/labelsTr folders), volumes or 2-D slices",
    tags=("segmentation", "2d", "3d", "folder"),
)(NiftiSegmentation)
