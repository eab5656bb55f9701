"""MedMNIST+ (v3, 2-D and 3-D) from its official ``.npz`` files, and custom files in its format.

A file ``{flag}.npz`` (28) or ``{flag}_{size}.npz`` (64, 128, 224 for 2-D; 64 for 3-D) holds
the arrays ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``
and ``test_labels``; images are uint8 ``(N, H, W)`` (grey), ``(N, H, W, 3)`` (RGB) or
``(N, D, H, W)`` (3-D), labels are ``(N, 1)`` (``(N, 14)`` for the multi-label ChestMNIST).
Files are only downloaded (from the official Zenodo record, MD5 verified) when
``download=True``; a custom file in the same format is read from ``path=`` with its own
``class_names``.

References:
    Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
    image classification", Scientific Data 10, 41, 2023.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medrobust.data.base import ArrayDataset, check_split, parse_names
from medrobust.data.cache import atomic_write_bytes, default_cache_dir
from medrobust.data.medmnist_info import (
    MEDMNIST_INFO,
    MEDMNIST_SIZES,
    MEDMNIST_SIZES_3D,
    MedMNISTInfo,
    medmnist_filename,
    medmnist_url,
)

__all__ = [
    "MEDMNIST_INFO",
    "MEDMNIST_SIZES",
    "MEDMNIST_SIZES_3D",
    "NPZ_KEYS",
    "MedMNIST",
    "MedMNISTInfo",
    "download_medmnist",
    "medmnist_filename",
    "medmnist_url",
]

logger = logging.getLogger(__name__)

#: Keys every MedMNIST ``.npz`` file holds.
NPZ_KEYS: tuple[str, ...] = (
    "train_images",
    "train_labels",
    "val_images",
    "val_labels",
    "test_images",
    "test_labels",
)


class MedMNIST(ArrayDataset):
    """A MedMNIST+ data set (2-D or 3-D) read from an official ``.npz`` file, or a custom file
    in the same format.

    Items are ``{"image": float32 (C, size, size) or (C, size, size, size) in [0, 1],
    "label": int64 scalar, "id": "medmnist/<flag>/<split>/<index:05d>"}``. Class names follow
    MedMNIST's ``INFO`` (e.g. BreastMNIST: 0 = malignant, 1 = normal/benign) or ``class_names``.

    Args:
        flag: The MedMNIST flag (see :data:`MEDMNIST_INFO`): 2-D ``"breastmnist"``,
            ``"pneumoniamnist"``, ``"chestmnist"`` (with ``finding``), ... or 3-D
            ``"organmnist3d"``, ``"nodulemnist3d"``, ...; default ``"breastmnist"``. With
            ``path``, an optional source of class names.
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: Folder holding the official files; default ``<cache>/medmnist``.
        size: Official files: 28, 64, 128 or 224 (2-D), 28 or 64 (3-D); default 28. Custom
            file: the images are resized to it (default: kept as stored).
        download: Download the official file from Zenodo if it is missing (never otherwise);
            its MD5 is checked before it is kept.
        channels: ``None`` keeps the file's channels; 3 repeats grey images to RGB; 1 converts
            RGB to luminance.
        path: A custom ``.npz`` in MedMNIST's format (keys ``train_images``, ``train_labels``,
            ``val_*``, ``test_*``), under any name: images uint8 (or float in [0, 1])
            ``(N, H, W)``, ``(N, H, W, 3)`` (2-D) or ``(N, D, H, W)`` (3-D), labels ``(N, 1)``.
        class_names: Names of the classes of a custom file (a list or ``"a,b,c"``).
        finding: For multi-label files (ChestMNIST): the finding (name or column index) to
            classify against its absence; the classes become ``no <finding>``, ``<finding>``.

    Raises:
        ValueError: For an unknown flag, split or size; wrong keys or shapes in the file;
            multi-label labels without ``finding``; NaN values; labels outside the class list;
            a custom file without class names.
        FileNotFoundError: If the file is missing and ``download`` is False.

    References:
        Yang et al., Scientific Data 10, 41, 2023.
    """

    def __init__(
        self,
        flag: str | None = None,
        split: str = "train",
        root: str | os.PathLike[str] | None = None,
        size: int | None = None,
        download: bool = False,
        channels: int | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        class_names: str | Sequence[str] | None = None,
        finding: str | int | None = None,
    ) -> None:
        split = check_split(split)
        if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        key = _check_flag(flag if flag is not None else "breastmnist") if path is None else None
        if path is not None and flag is not None:
            key = _check_flag(flag)
        info = MEDMNIST_INFO[key] if key is not None else None
        if path is not None:
            file = Path(path).expanduser()
            if not file.is_file():
                raise FileNotFoundError(f"MedMNIST-format file {file} not found")
            names = parse_names(class_names) if class_names is not None else None
            if names is None and info is None:
                raise ValueError(
                    f"give the class names of {file.name} with class_names=a,b,c (or the "
                    "flag whose classes it holds, flag=breastmnist)"
                )
            resize = _check_int_size(size)
        else:
            assert key is not None and info is not None  # set above when path is None
            size = _check_size(key, info, size)
            if info.task.startswith("multi-label") and finding is None:
                raise ValueError(
                    f"MedMNIST flag {key!r}: ChestMNIST is multi-label ({len(info.class_names)} "
                    "findings per image); pass finding=<name> to classify one finding against "
                    f"its absence, one of: {', '.join(info.class_names)}"
                )
            folder = Path(root).expanduser() if root is not None else default_cache_dir()
            file = _official_file(key, size, folder, root is None, download)
            names, resize = None, None
        images, labels, dims = _read_npz(file, split, info if path is None else None)
        names = list(names or (info.class_names if info is not None else ()))
        labels, names = _pick_finding(labels, names, finding, f"{file.name} ({split})")
        if channels is not None and channels != images.shape[1]:
            images = _convert_channels(images, channels)
        self.flag = key if key is not None else file.stem
        self.path = file
        self._resize = resize if resize is not None and resize != images.shape[-1] else None
        super().__init__(
            images,
            labels,
            names,
            name="medmnist",
            split=split,
            ids=[f"medmnist/{self.flag}/{split}/{i:05d}" for i in range(images.shape[0])],
            spatial_dims=dims,
        )

    def _image(self, i: int) -> torch.Tensor:
        image = super()._image(i)
        if self._resize is None:
            return image
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        size = (self._resize,) * self.spatial_dims
        out = F.interpolate(image[None], size=size, mode=mode, align_corners=False)[0]
        return out.clamp_(0.0, 1.0)


def _check_flag(flag: object) -> str:
    if not isinstance(flag, str):
        raise TypeError(f"flag must be a string such as 'breastmnist', got {type(flag).__name__}")
    key = flag.strip().lower()
    if key not in MEDMNIST_INFO:
        close = difflib.get_close_matches(key, list(MEDMNIST_INFO), n=2, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown MedMNIST flag {flag!r}.{hint} Known: {', '.join(sorted(MEDMNIST_INFO))}"
        )
    return key


def _check_int_size(size: object) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an integer >= 4, got {size!r}")
    return size


def _check_size(key: str, info: MedMNISTInfo, size: object) -> int:
    if size is None:
        return 28
    if isinstance(size, bool) or size not in info.sizes:
        raise ValueError(
            f"MedMNIST size must be one of {list(info.sizes)}, got {size!r} ({key} is "
            f"{info.spatial_dims}-D; 2-D flags: {list(MEDMNIST_SIZES)}, "
            f"3-D flags: {list(MEDMNIST_SIZES_3D)})"
        )
    return int(size)


def _official_file(key: str, size: int, folder: Path, default: bool, download: bool) -> Path:
    """The official file of ``key`` at ``size`` in ``folder`` (``<cache>/medmnist`` by
    default), downloaded (checksum verified) when missing and ``download`` is set."""
    folder = folder / "medmnist" if default else folder
    path = folder / medmnist_filename(key, size)
    if not path.exists():
        if not download:
            raise FileNotFoundError(
                f"MedMNIST file {path} not found. Pass download=True (command line: "
                f"--download) to fetch it from {medmnist_url(key, size)}, or put the "
                "official file there"
            )
        download_medmnist(key, size, folder)
    return path


def _pick_finding(
    labels: np.ndarray, names: list[str], finding: str | int | None, source: str
) -> tuple[np.ndarray, list[str]]:
    """Single-label labels and class names: a multi-label ``(N, K)`` array is reduced to the
    column of ``finding`` (binary: absent, present)."""
    multi = labels.ndim == 2 and labels.shape[1] > 1
    if finding is None:
        if multi:
            raise ValueError(
                f"{source}: labels have shape {labels.shape} ({labels.shape[1]} labels per "
                "image, multi-label); pass finding=<name or column> to classify one finding"
            )
        return labels, names
    if not multi:
        raise ValueError(f"{source}: finding={finding!r} needs multi-label (N, K) labels")
    k = labels.shape[1]
    if isinstance(finding, int) and not isinstance(finding, bool) and 0 <= finding < k:
        col = int(finding)
    elif isinstance(finding, str) and len(names) == k and finding in names:
        col = names.index(finding)
    else:
        raise ValueError(
            f"{source}: unknown finding {finding!r}; expected a column 0..{k - 1} or one of "
            f"{names if len(names) == k else '(no finding names given)'}"
        )
    title = names[col] if len(names) == k else f"finding {col}"
    return labels[:, col].astype(np.int64), [f"no {title}", title]


def _memory_bytes() -> int | None:
    """This machine's physical memory in bytes, if the system says."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_declared_size(data: np.lib.npyio.NpzFile, key: str, path: Path) -> None:
    """Refuse an array whose header declares more bytes than this machine's memory, before
    anything is allocated (a hostile or damaged file could declare terabytes).

    Raises:
        ValueError: Naming the file, the array, its declared shape and size, and the memory.
    """
    archive = data.zip
    if archive is None:  # a closed archive: nothing to check
        return
    try:
        with archive.open(f"{key}.npy") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (KeyError, OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"cannot read the header of {key} in {path}: {err}") from err
    need = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
    have = _memory_bytes()
    if have is not None and need > have:
        raise ValueError(
            f"{path}: {key} declares shape {tuple(shape)} of {np.dtype(dtype)}, "
            f"{need / 2**30:.4g} GiB, more than this machine's memory ({have / 2**30:.3g} GiB); "
            "the file is damaged or not a MedMNIST file"
        )


def _read_npz(
    path: Path, split: str, info: MedMNISTInfo | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Read one split of a MedMNIST-format file, validated: ``(images, labels, spatial_dims)``
    with channel-first images ``(N, C, H, W)`` or ``(N, 1, D, H, W)``.

    ``info`` (an official flag) fixes the expected shape; without it (a custom file) the shape
    says: ``(N, H, W)`` grey and ``(N, H, W, 3)`` RGB images, ``(N, D, H, W)`` volumes.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"cannot read MedMNIST file {path}: {err}") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not an .npz archive; expected keys {', '.join(NPZ_KEYS)}")
    with data:
        found = sorted(data.files)
        missing = [k for k in NPZ_KEYS if k not in found]
        if missing:
            raise ValueError(
                f"{path} has the wrong keys: expected {', '.join(NPZ_KEYS)}; found "
                f"{', '.join(found) or '(none)'} (missing {', '.join(missing)})"
            )
        for key in (f"{split}_images", f"{split}_labels"):
            check_declared_size(data, key, path)
        try:
            images = np.asarray(data[f"{split}_images"])
            labels = np.asarray(data[f"{split}_labels"])
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise ValueError(f"cannot read the {split} arrays of {path}: {err}") from err
    source = f"{path.name} ({split})"
    if info is not None:
        dims, channels = info.spatial_dims, info.channels
        side = images.shape[1] if images.ndim > 1 else -1
        expected: tuple[int, ...] = (side,) * dims + ((channels,) if channels > 1 else ())
        if images.ndim < 3 or images.shape[1:] != expected:
            layout = {2: "(N, H, W)", 3: "(N, D, H, W)"}[dims]
            if channels > 1:
                layout = f"(N, H, W, {channels})"
            raise ValueError(f"{source}: images have shape {images.shape}; expected {layout}")
    elif images.ndim == 3 or (images.ndim == 4 and images.shape[3] in (1, 3)):
        dims = 2
    elif images.ndim == 4:
        dims = 3
    else:
        raise ValueError(
            f"{source}: images have shape {images.shape}; expected (N, H, W), (N, H, W, 3) "
            "(2-D) or (N, D, H, W) (3-D)"
        )
    # channel-last -> channel-first (a view, no copy)
    images = images.transpose(0, 3, 1, 2) if dims == 2 and images.ndim == 4 else images[:, None]
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(f"{source}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels, dims


def _convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Grey -> RGB by repetition, RGB -> grey by ITU-R BT.601 luminance (keeps the dtype)."""
    if channels == 3:
        return np.repeat(images, 3, axis=1)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[None, :, None, None]
    grey = (images.astype(np.float32) * weights).sum(axis=1, keepdims=True)
    if images.dtype == np.uint8:
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.clip(grey, 0.0, 1.0)


def download_medmnist(flag: str, size: int, root: str | os.PathLike[str]) -> Path:
    """Download an official MedMNIST file into ``root`` (atomically, checksum verified).

    Args:
        flag: A flag of :data:`MEDMNIST_INFO`.
        size: 28, 64, 128 or 224 (2-D flags); 28 or 64 (3-D flags).
        root: Destination folder.

    Returns:
        The downloaded file.

    Raises:
        ValueError: For an unknown flag or size, or a checksum mismatch.
        ConnectionError: If the download fails.
    """
    key = _check_flag(flag)
    size = _check_size(key, MEDMNIST_INFO[key], size)
    dest = Path(root).expanduser() / medmnist_filename(key, size)
    url = medmnist_url(key, size)
    logger.info("downloading %s to %s", url, dest)
    digest = hashlib.md5(usedforsecurity=False)

    def chunks() -> Iterator[bytes]:
        with urllib.request.urlopen(url, timeout=60) as response:
            while True:
                block = response.read(1 << 20)
                if not block:
                    return
                digest.update(block)
                yield block

    expected = MEDMNIST_INFO[key].md5.get(size)

    def verify() -> None:
        if expected is not None and digest.hexdigest() != expected:
            raise ValueError(
                f"checksum mismatch for {url}: expected MD5 {expected}, got "
                f"{digest.hexdigest()}; nothing was saved, try again"
            )

    try:
        atomic_write_bytes(dest, chunks(), check=verify)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise ConnectionError(f"could not download {url}: {err}") from err
    return dest
