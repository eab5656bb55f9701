"""MedMNIST (v2/v3, 2-D) from its official ``.npz`` files.

A file ``{flag}.npz`` (28 x 28) or ``{flag}_{size}.npz`` (64, 128, 224) holds the arrays
``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images`` and
``test_labels``; images are uint8 ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB), labels are
``(N, 1)``. Files are only downloaded (from the official Zenodo record) when ``download=True``.

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medrobust.data.base import ArrayDataset, check_split
from medrobust.data.cache import atomic_write_bytes, default_cache_dir

logger = logging.getLogger(__name__)

#: Image sizes MedMNIST is published in.
MEDMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)
#: The Zenodo record of MedMNIST v3 (MedMNIST+), which holds every flag at every size.
_ZENODO = "https://zenodo.org/records/10519652/files"
#: Keys every MedMNIST ``.npz`` file holds.
NPZ_KEYS: tuple[str, ...] = (
    "train_images",
    "train_labels",
    "val_images",
    "val_labels",
    "test_images",
    "test_labels",
)


@dataclass(frozen=True)
class MedMNISTInfo:
    """What medrobust knows about one MedMNIST flag.

    Attributes:
        class_names: Label ``k`` is ``class_names[k]`` (as in MedMNIST's ``INFO``).
        channels: 1 (grey) or 3 (RGB).
        task: MedMNIST's task description.
        md5: MD5 checksum of the official file for each size.
    """

    class_names: tuple[str, ...]
    channels: int
    task: str
    md5: dict[int, str]


_ORGANS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)

#: The 2-D MedMNIST flags (class names, channels and checksums as published by MedMNIST).
MEDMNIST_INFO: dict[str, MedMNISTInfo] = {
    "breastmnist": MedMNISTInfo(
        ("malignant", "normal/benign"),
        1,
        "binary-class",
        {
            28: "750601b1f35ba3300ea97c75c52ff8f6",
            64: "742edef2a1fd1524b2efff4bd7ba9364",
            128: "363e4b3f8d712e9b5de15470a2aaadf1",
            224: "b56378a6eefa9fed602bb16d192d4c8b",
        },
    ),
    "pneumoniamnist": MedMNISTInfo(
        ("normal", "pneumonia"),
        1,
        "binary-class",
        {
            28: "28209eda62fecd6e6a2d98b1501bb15f",
            64: "8f4eceb4ccffa70c672198ea285246c6",
            128: "05b46931834c231683c68f40c47b2971",
            224: "d6a3c71de1b945ea11211b03746c1fe1",
        },
    ),
    "dermamnist": MedMNISTInfo(
        (
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        3,
        "multi-class",
        {
            28: "0744692d530f8e62ec473284d019b0c7",
            64: "b70a2f5635c6199aeaa28c31d7202e1f",
            128: "2defd784463fa5243564e855ed717de1",
            224: "8974907d8e169bef5f5b96bc506ae45d",
        },
    ),
    "octmnist": MedMNISTInfo(
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        1,
        "multi-class",
        {
            28: "c68d92d5b585d8d81f7112f81e2d0842",
            64: "e229e9440236b774d9f0dfef9d07bdaf",
            128: "0a97e76651ace45c5d943ee3f65b63ae",
            224: "abc493b6d529d5de7569faaef2773ba3",
        },
    ),
    "pathmnist": MedMNISTInfo(
        (
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        3,
        "multi-class",
        {
            28: "a8b06965200029087d5bd730944a56c1",
            64: "55aa9c1e0525abe5a6b9d8343a507616",
            128: "ac42d08fb904d92c244187169d1fd1d9",
            224: "2c51a510bcdc9cf8ddb2af93af1eadec",
        },
    ),
    "bloodmnist": MedMNISTInfo(
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes (myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        3,
        "multi-class",
        {
            28: "7053d0359d879ad8a5505303e11de1dc",
            64: "2b94928a2ae4916078ca51e05b6b800b",
            128: "adace1e0ed228fccda1f39692059dd4c",
            224: "b718ff6835fcbdb22ba9eacccd7b2601",
        },
    ),
    "retinamnist": MedMNISTInfo(
        ("0", "1", "2", "3", "4"),
        3,
        "ordinal-regression",
        {
            28: "bd4c0672f1bba3e3a89f0e4e876791e4",
            64: "afda852cc34dcda56f86ad2b2457dbcc",
            128: "e48e916a24454daf90583d4e6efb1a18",
            224: "eae7e3b6f3fcbda4ae613ebdcbe35348",
        },
    ),
    "tissuemnist": MedMNISTInfo(
        (
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ),
        1,
        "multi-class",
        {
            28: "ebe78ee8b05294063de985d821c1c34b",
            64: "123ece2eba09d0aa5d698fda57103344",
            128: "61b955355d7425a89687b06cca3ce0c2",
            224: "b077128c4a949f0a4eb01517f9037b9c",
        },
    ),
    "organamnist": MedMNISTInfo(
        _ORGANS,
        1,
        "multi-class",
        {
            28: "68e3f8846a6bd62f0c9bf841c0d9eacc",
            64: "2dcccc29b88e6da5a01161ef20cda288",
            128: "eeae80d0a227a8d099027e1b3cfd3b60",
            224: "50747347e05c87dd3aaf92c49f9f3170",
        },
    ),
    "organcmnist": MedMNISTInfo(
        _ORGANS,
        1,
        "multi-class",
        {
            28: "b9ceb9546e10131b32923c5bbeaea2b1",
            64: "3ce34a8724ea6f548e6db4744d03b6a9",
            128: "773c1f009daa3fe5d9a2a201b2a7ed94",
            224: "050f5e875dc056f6768abf94ec9995d1",
        },
    ),
    "organsmnist": MedMNISTInfo(
        _ORGANS,
        1,
        "multi-class",
        {
            28: "9ab87b696fb54e2a387ebe992d6ed5f1",
            64: "53a6d115339d874c25e309a994ff46d3",
            128: "ded0c5fa01a95dc4978b956f613e9b8e",
            224: "b354719e553fbbb2513d5533f52a4cb1",
        },
    ),
}

#: Flags that exist in MedMNIST but that this loader does not support yet, and why.
_UNSUPPORTED: dict[str, str] = {
    "chestmnist": "ChestMNIST is multi-label (14 findings per image); only single-label "
    "classification is supported for now",
}


def medmnist_filename(flag: str, size: int) -> str:
    """The official file name: ``{flag}.npz`` for 28 x 28, ``{flag}_{size}.npz`` otherwise."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_url(flag: str, size: int) -> str:
    """The official download URL of a MedMNIST file (Zenodo record 10519652)."""
    return f"{_ZENODO}/{medmnist_filename(flag, size)}?download=1"


class MedMNIST(ArrayDataset):
    """A 2-D MedMNIST data set read from its official ``.npz`` file.

    Items are ``{"image": float32 (C, size, size) in [0, 1], "label": int64 scalar,
    "id": "medmnist/<flag>/<split>/<index:05d>"}``. Class names follow MedMNIST's ``INFO``
    (e.g. BreastMNIST: 0 = malignant, 1 = normal/benign).

    Args:
        flag: The MedMNIST flag, e.g. ``"breastmnist"``, ``"pneumoniamnist"``, ``"dermamnist"``,
            ``"octmnist"`` (see :data:`MEDMNIST_INFO`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: Folder holding the ``.npz`` files; default ``<cache>/medmnist``.
        size: 28, 64, 128 or 224.
        download: Download the file from Zenodo if it is missing (never otherwise).
        channels: ``None`` keeps the flag's channels; 3 repeats grey images to RGB; 1 converts
            RGB to luminance.

    Raises:
        ValueError: For an unknown or unsupported flag, split or size; wrong keys in the file;
            multi-label labels; NaN values; labels outside the class list.
        FileNotFoundError: If the file is missing and ``download`` is False.

    References:
        Yang et al., Scientific Data 10, 41, 2023.
    """

    def __init__(
        self,
        flag: str = "breastmnist",
        split: str = "train",
        root: str | os.PathLike[str] | None = None,
        size: int = 28,
        download: bool = False,
        channels: int | None = None,
    ) -> None:
        split = check_split(split)
        key = _check_flag(flag)
        info = MEDMNIST_INFO[key]
        if isinstance(size, bool) or size not in MEDMNIST_SIZES:
            raise ValueError(f"MedMNIST size must be one of {list(MEDMNIST_SIZES)}, got {size!r}")
        if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        folder = Path(root).expanduser() if root is not None else default_cache_dir() / "medmnist"
        path = folder / medmnist_filename(key, size)
        if not path.exists():
            if not download:
                raise FileNotFoundError(
                    f"MedMNIST file {path} not found. Pass download=True (command line: "
                    f"--download) to fetch it from {medmnist_url(key, size)}, or put the "
                    "official file there"
                )
            download_medmnist(key, size, folder)
        images, labels = _read_npz(path, split, info, size)
        if channels is not None and channels != images.shape[1]:
            images = _convert_channels(images, channels)
        self.flag = key
        self.path = path
        super().__init__(
            images,
            labels,
            list(info.class_names),
            name="medmnist",
            split=split,
            ids=[f"medmnist/{key}/{split}/{i:05d}" for i in range(images.shape[0])],
        )


def _check_flag(flag: object) -> str:
    if not isinstance(flag, str):
        raise TypeError(f"flag must be a string such as 'breastmnist', got {type(flag).__name__}")
    key = flag.strip().lower()
    if key in _UNSUPPORTED:
        raise ValueError(f"MedMNIST flag {flag!r} is not supported: {_UNSUPPORTED[key]}")
    if key not in MEDMNIST_INFO:
        close = difflib.get_close_matches(key, list(MEDMNIST_INFO), n=2, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        if key.endswith("3d"):
            hint += " 3-D MedMNIST volumes are not supported by this loader."
        raise ValueError(
            f"unknown MedMNIST flag {flag!r}.{hint} Supported: {', '.join(sorted(MEDMNIST_INFO))}"
        )
    return key


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
    path: Path, split: str, info: MedMNISTInfo, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read one split of a MedMNIST file as ``(N, C, H, W)`` images and labels, validated."""
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
    expected = (size, size) if info.channels == 1 else (size, size, info.channels)
    if images.ndim < 3 or images.shape[1:] != expected:
        shape = "(N, H, W)" if info.channels == 1 else f"(N, H, W, {info.channels})"
        raise ValueError(
            f"{source}: images have shape {images.shape}; expected {shape} with H = W = {size}"
        )
    # Channel-last -> channel-first (a view, no copy).
    images = images.transpose(0, 3, 1, 2) if images.ndim == 4 else images[:, None]
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(
            f"{source}: labels have shape {labels.shape} ({labels.shape[1]} labels per image, "
            "multi-label); only single-label classification is supported for now"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{source}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


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
        flag: A supported flag (see :data:`MEDMNIST_INFO`).
        size: 28, 64, 128 or 224.
        root: Destination folder.

    Returns:
        The downloaded file.

    Raises:
        ValueError: For an unknown flag or size, or a checksum mismatch.
        ConnectionError: If the download fails.
    """
    key = _check_flag(flag)
    if size not in MEDMNIST_SIZES:
        raise ValueError(f"MedMNIST size must be one of {list(MEDMNIST_SIZES)}, got {size!r}")
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
