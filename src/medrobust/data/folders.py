"""Folder-layout data sets: a generic ``root/<class>/<image>`` folder and the BUSI layout.

Both read images lazily with Pillow, convert them to float32 ``[0, 1]`` channel-first tensors and
resize them to a square ``size`` with antialiased bilinear interpolation (masks: nearest). When
the root has no ``train``/``val``/``test`` sub-folders, a deterministic stratified split is drawn
from a seed.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from medrobust.data.base import (
    MedicalDataset,
    check_class_names,
    check_fractions,
    check_split,
    stratified_split,
)
from medrobust.data.windows import Window, apply_window, coverage, parse_window, warn_coverage
from medrobust.types import Task

logger = logging.getLogger(__name__)

#: File extensions read as images (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Names accepted for the split sub-folders of a pre-split layout.
_SPLIT_FOLDERS: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
#: BUSI mask files: "<image stem>_mask.png" and extra masks "<image stem>_mask_1.png", ...
_MASK_RE = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<extra>\d+))?$")


# --------------------------------------------------------------------------- reading


def read_image(
    path: str | os.PathLike[str], channels: int, window: Window | None = None
) -> npt.NDArray[np.float32]:
    """Decode an image file to float32 ``(C, H, W)`` in ``[0, 1]``.

    Without a window, 8-bit images are scaled by 1/255, 16-bit ones by 1/65535 and
    floating-point ones must already lie in ``[0, 1]``. With a window (see
    :mod:`medrobust.data.windows`) the stored values (0-255, 0-65535 or the floats) are mapped
    so that the window becomes ``[0, 1]``. ``channels=1`` converts colour images to luminance;
    ``channels=3`` converts grey images to RGB.

    Args:
        path: Image file.
        channels: 1 (grey) or 3 (RGB).
        window: The intensity window, or None for the scaling by the stored type.

    Returns:
        The image.

    Raises:
        ValueError: If the file cannot be decoded (the message names the file), or a
            floating-point image read without a window has values outside ``[0, 1]``.
        FileNotFoundError: If the file does not exist.

    Shape:
        - returns: ``(channels, H, W)``.
    """
    _check_channels(channels)
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            arr = _to_float(img, channels, path, window)
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot decode image file {path}: {err}") from err
    return arr


_WIDE = {"I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I;16N": np.uint16}


def _to_float(
    img: Image.Image, channels: int, path: Path, window: Window | None = None
) -> npt.NDArray[np.float32]:
    mode = img.mode
    if mode in (*_WIDE, "I", "F"):
        stored = np.dtype(_WIDE.get(mode, np.int32 if mode == "I" else np.float32))
        raw = np.asarray(img, dtype=np.float64)
        if window is not None:
            grey, _ = apply_window(raw, window, stored_dtype=stored, source=str(path))
        elif mode == "F":
            if not np.all(np.isfinite(raw)) or raw.min() < 0.0 or raw.max() > 1.0:
                raise ValueError(
                    f"floating-point image {path} must be finite and inside [0, 1], "
                    f"found values in [{np.nanmin(raw):.4g}, {np.nanmax(raw):.4g}]; give a "
                    "window (e.g. window='p0.5,p99.5' or '--window low,high')"
                )
            grey = raw.astype(np.float32)
        else:
            grey = (raw / 65535.0).astype(np.float32)
        arr = grey[None] if channels == 1 else np.repeat(grey[None], 3, axis=0)
    else:
        converted = np.asarray(img.convert("L" if channels == 1 else "RGB"))
        raw8 = converted[None] if channels == 1 else converted.transpose(2, 0, 1)
        if window is not None:
            arr, _ = apply_window(raw8, window, stored_dtype=np.dtype(np.uint8), source=str(path))
        else:
            arr = raw8.astype(np.float32) / 255.0
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0), dtype=np.float32)


def read_mask(path: str | os.PathLike[str]) -> npt.NDArray[np.bool_]:
    """Decode a mask image to a boolean ``(H, W)`` array (foreground = grey level > 127).

    Raises:
        ValueError: If the file cannot be decoded (the message names the file).
    """
    grey = read_image(path, channels=1)[0]
    return np.asarray(grey > 0.5)


def resize_image(image: npt.NDArray[np.float32], size: int) -> torch.Tensor:
    """Resize ``(C, H, W)`` to ``(C, size, size)`` with antialiased bilinear interpolation.

    Shape:
        - image: ``(C, H, W)``; returns ``(C, size, size)`` float32 in ``[0, 1]``.
    """
    t = torch.from_numpy(image)
    if t.shape[-2:] != (size, size):
        t = F.interpolate(
            t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    return t.clamp_(0.0, 1.0)


def resize_mask(mask: npt.NDArray[np.bool_], size: int) -> torch.Tensor:
    """Resize a boolean ``(H, W)`` mask to int64 ``(size, size)`` with nearest neighbours."""
    t = torch.from_numpy(mask.astype(np.float32))
    if t.shape != (size, size):
        t = F.interpolate(t[None, None], size=(size, size), mode="nearest-exact")[0, 0]
    return (t > 0.5).to(torch.int64)


def _check_channels(channels: object) -> None:
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"size must be an integer, got {type(size).__name__}")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    return int(size)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


def _normalise_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    if not exts:
        raise ValueError("extensions must name at least one file extension, e.g. ('.png',)")
    return exts


# --------------------------------------------------------------------------- scanning


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
    )


def _check_root(root: str | os.PathLike[str] | None) -> Path:
    if root is None:
        raise ValueError("root is required: the folder that holds the class sub-folders")
    path = Path(root).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data folder {path} does not exist")
    if not path.is_dir():
        raise ValueError(f"data folder {path} is not a folder")
    return path


def _split_folders(root: Path) -> dict[str, Path]:
    """The split sub-folders of a pre-split root (empty if the root is not pre-split)."""
    return {
        s: root / name
        for s, names in _SPLIT_FOLDERS.items()
        for name in names
        if (root / name).is_dir()
    }


def _split_folder(root: Path, split: str) -> Path | None:
    """``root/<split>`` if the root is pre-split (has any split sub-folder), else None.

    Raises:
        ValueError: If the root is pre-split but has no folder for ``split``.
    """
    present = _split_folders(root)
    if not present:
        return None
    if split not in present:
        raise ValueError(
            f"{root} is split into sub-folders {sorted(p.name for p in present.values())} but has "
            f"no folder for the {split!r} split (expected one of {list(_SPLIT_FOLDERS[split])})"
        )
    return present[split]


@dataclass(frozen=True)
class _Item:
    path: Path
    label: int
    masks: tuple[Path, ...] = ()


class _FolderDataset(MedicalDataset):
    """Common machinery: a list of files with labels, read lazily."""

    def __init__(
        self, items: list[_Item], size: int, channels: int, root: Path, window: object = None
    ) -> None:
        self._items = items
        self.size = size
        self.in_channels = channels
        self.root = root
        self.window = parse_window(window)
        self.intensity = self._probe_intensity()

    def _probe_intensity(self, n: int = 8) -> dict[str, Any]:
        """The window and the share of ``[0, 1]`` that the first ``n`` images occupy (a
        warning below :data:`~medrobust.data.windows.COVERAGE_WARNING`)."""
        probe = []
        for it in self._items[:n]:
            try:
                probe.append(read_image(it.path, self.in_channels, self.window))
            except ValueError:
                continue  # an undecodable file is reported when its item is read
        share = coverage(probe) if probe else 1.0
        warn_coverage(share, f"{self.name} {self.root} ({self.split})", self.window)
        window = self.window.to_dict() if self.window else {"kind": "dtype", "spec": None}
        return {"window": window, "coverage": round(share, 4)}

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        """All labels, int64 ``(N,)``."""
        return np.array([it.label for it in self._items], dtype=np.int64)

    @property
    def files(self) -> list[Path]:
        """The image file of every item."""
        return [it.path for it in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def _item_id(self, item: _Item) -> str:
        try:
            rel = item.path.relative_to(self.root).as_posix()
        except ValueError:
            rel = item.path.name
        return f"{self.name}/{self.split}/{rel}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._items[self._check_index(index)]
        image = read_image(item.path, self.in_channels, self.window)
        out: dict[str, Any] = {
            "image": resize_image(image, self.size),
            "label": torch.tensor(item.label, dtype=torch.int64),
            "id": self._item_id(item),
        }
        if self.has_masks:
            out["mask"] = resize_mask(self._read_masks(item, image.shape[-2:]), self.size)
        return out

    def _read_masks(self, item: _Item, shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
        mask = np.zeros(shape, dtype=bool)
        for path in item.masks:
            m = read_mask(path)
            if m.shape != tuple(shape):
                raise ValueError(
                    f"mask {path} has size {m.shape[1]}x{m.shape[0]} but its image {item.path} "
                    f"has size {shape[1]}x{shape[0]}"
                )
            mask |= m
        return mask


def _select_split(
    items: list[_Item], split: str, fractions: Sequence[float], seed: int
) -> list[_Item]:
    idx = stratified_split([it.label for it in items], fractions, seed)[split]
    return [items[i] for i in idx]


class ImageFolder(_FolderDataset):
    """Images in class sub-folders: ``root/<class_name>/*.png|jpg|bmp|tif``.

    Classes are the sub-folder names sorted alphabetically (label ``k`` = ``class_names[k]``).
    If ``root`` has ``train``/``val``/``test`` sub-folders (each with the class sub-folders), they
    are used as the splits; otherwise a deterministic stratified split is drawn from ``seed``.

    Args:
        root: The data folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: Images are resized to ``size x size``.
        channels: 1 (grey) or 3 (RGB).
        seed: Seed of the stratified split.
        fractions: ``(train, val, test)`` fractions of the stratified split.
        extensions: File extensions read as images.
        window: Intensity window of the stored values (``"0,2200"``, ``"p0.5,p99.5"``, a
            preset, see :mod:`medrobust.data.windows`); default: scale by the stored type
            (1/255, 1/65535), with a warning when the images occupy little of ``[0, 1]``.

    Attributes:
        intensity: The window used and the share of ``[0, 1]`` the first images occupy
            (recorded in the model card and the metrics).

    Raises:
        FileNotFoundError: If ``root`` does not exist.
        ValueError: For an unknown split, no class sub-folders, a class folder with no images,
            an empty split or bad arguments.
    """

    name = "image-folder"
    task = Task.CLASSIFICATION
    has_masks = False

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        size: int = 128,
        channels: int = 1,
        seed: int = 0,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        window: str | Sequence[float] | None = None,
    ) -> None:
        self.split = check_split(split)
        size = _check_size(size)
        _check_channels(channels)
        seed = _check_seed(seed)
        check_fractions(fractions)
        exts = _normalise_extensions(extensions)
        base = _check_root(root)
        pre_split = _split_folder(base, self.split)
        folder = pre_split if pre_split is not None else base
        if pre_split is not None:
            class_names = sorted(
                {d.name for sf in _split_folders(base).values() for d in _visible_dirs(sf)}
            )
        else:
            class_names = [d.name for d in _visible_dirs(base)]
        if not class_names:
            raise ValueError(
                f"no class sub-folders found in {folder}; expected the layout "
                f"{folder}/<class_name>/<image files with extension {', '.join(exts)}>"
            )
        self.class_names = check_class_names(class_names, str(base))
        items: list[_Item] = []
        for label, cls in enumerate(self.class_names):
            cls_dir = folder / cls
            if not cls_dir.is_dir():
                continue  # a class absent from this split of a pre-split layout
            files = _image_files(cls_dir, exts)
            if not files and pre_split is None:
                raise ValueError(
                    f"class folder {cls_dir} has no images (looked for {', '.join(exts)})"
                )
            items += [_Item(f, label) for f in files]
        if not items:
            raise ValueError(f"no images found under {folder} (looked for {', '.join(exts)})")
        if pre_split is None:
            items = _select_split(items, self.split, fractions, seed)
            if not items:
                raise ValueError(
                    f"the {self.split!r} split of {base} is empty with fractions {fractions!r}; "
                    "add images or change the fractions"
                )
        super().__init__(items, size, channels, base, window)


class BUSI(_FolderDataset):
    """The Breast Ultrasound Images data set (BUSI) in its published folder layout.

    Layout: ``root/benign/benign (1).png`` with its mask ``root/benign/benign (1)_mask.png``;
    some images have extra masks (``benign (1)_mask_1.png``, ...), which are merged (union) into
    one mask. Likewise ``root/malignant/`` and ``root/normal/`` (normal images have empty masks).
    Items carry ``"mask"``: the lesion mask resized with nearest neighbours.

    Args:
        root: The BUSI folder (``Dataset_BUSI_with_GT``), or one with ``train``/``val``/``test``
            sub-folders each in that layout.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: Images and masks are resized to ``size x size``.
        channels: 1 (grey) or 3 (RGB).
        include_normal: Also load ``normal`` images (class 2); default benign (0) vs
            malignant (1), the convention of ``bus-phantom``.
        seed: Seed of the stratified split.
        fractions: ``(train, val, test)`` fractions of the stratified split.
        window: Intensity window of the stored values (see :class:`ImageFolder`).

    Raises:
        FileNotFoundError: If ``root`` or a class folder does not exist.
        ValueError: For an unknown split, a class folder with no images, a benign or malignant
            image without a mask, or bad arguments.

    References:
        Al-Dhabyani et al., "Dataset of breast ultrasound images", Data in Brief 28, 2020.
    """

    name = "busi"
    modality = "ultrasound"
    task = Task.CLASSIFICATION
    has_masks = True

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        split: str = "train",
        size: int = 128,
        channels: int = 1,
        include_normal: bool = False,
        seed: int = 0,
        fractions: Sequence[float] = (0.7, 0.1, 0.2),
        window: str | Sequence[float] | None = None,
    ) -> None:
        self.split = check_split(split)
        size = _check_size(size)
        _check_channels(channels)
        seed = _check_seed(seed)
        check_fractions(fractions)
        base = _check_root(root)
        pre_split = _split_folder(base, self.split)
        folder = pre_split if pre_split is not None else base
        self.class_names = ["benign", "malignant"] + (["normal"] if include_normal else [])
        items: list[_Item] = []
        for label, cls in enumerate(self.class_names):
            cls_dir = folder / cls
            if not cls_dir.is_dir():
                raise FileNotFoundError(
                    f"BUSI class folder {cls_dir} does not exist; expected {folder}/benign, "
                    f"{folder}/malignant" + (f" and {folder}/normal" if include_normal else "")
                )
            items += _busi_items(cls_dir, label, require_masks=cls != "normal")
        if pre_split is None:
            items = _select_split(items, self.split, fractions, seed)
            if not items:
                raise ValueError(
                    f"the {self.split!r} split of {base} is empty with fractions {fractions!r}"
                )
        super().__init__(items, size, channels, base, window)


def _busi_items(folder: Path, label: int, require_masks: bool) -> list[_Item]:
    """Pair every BUSI image in ``folder`` with its mask file(s)."""
    files = _image_files(folder, IMAGE_EXTENSIONS)
    images: dict[str, Path] = {}
    masks: dict[str, list[tuple[int, Path]]] = {}
    for f in files:
        match = _MASK_RE.match(f.stem)
        if match is None:
            images[f.stem] = f
        else:
            extra = int(match.group("extra")) if match.group("extra") else 0
            masks.setdefault(match.group("stem"), []).append((extra, f))
    if not images:
        raise ValueError(
            f"class folder {folder} has no images (looked for {', '.join(IMAGE_EXTENSIONS)}, "
            "excluding '*_mask*' files)"
        )
    for stem in sorted(set(masks) - set(images)):
        logger.warning("mask file(s) for %r in %s have no matching image; ignored", stem, folder)
    items = []
    for stem, path in sorted(images.items()):
        found = tuple(p for _, p in sorted(masks.get(stem, [])))
        if not found and require_masks:
            raise ValueError(
                f"image {path} has no mask: expected {folder / (stem + '_mask.png')} (BUSI layout)"
            )
        items.append(_Item(path, label, found))
    return items
