"""The ``bus-phantom`` data set: deterministic splits of the simulated breast-ultrasound phantom."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from medrobust.data._phantom.scanner import Scanner, parse_scanner
from medrobust.data.base import MedicalDataset, check_split
from medrobust.data.cache import atomic_save_npz, default_cache_dir
from medrobust.data.phantom import (
    GENERATOR_VERSION,
    PhantomArrays,
    _check_int,
    generate_bus_phantom,
)
from medrobust.types import Task

logger = logging.getLogger(__name__)

#: Default number of images per split.
DEFAULT_COUNTS: dict[str, int] = {"train": 600, "val": 200, "test": 200}
#: Generator stream of each split (``generate_bus_phantom(stream=...)``); streams never overlap.
SPLIT_STREAMS: dict[str, int] = {"train": 1, "val": 2, "test": 3}


class BusPhantom(MedicalDataset):
    """Simulated B-mode breast ultrasound, benign (0) vs malignant (1), with lesion masks.

    The embedded default data set: no download, generated deterministically from a seed by
    :func:`~medrobust.data.generate_bus_phantom` and cached on disk. Each split draws from its own
    generator stream (train 1, val 2, test 3), so splits never share an image, and image ``i`` of
    a split depends only on ``(seed, split, i)``: a larger ``n`` extends a split without changing
    its first images.

    Items are ``{"image": float32 (1, H, W) in [0, 1], "label": int64 scalar,
    "mask": int64 (H, W) lesion mask, "id": "bus-phantom/<split>/<index:05d>"}``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        n: Number of images; default 600 for train, 200 for val and 200 for test.
        size: Side length in pixels (>= 32); 64, 128 and 224 are typical.
        seed: Non-negative seed of the whole data set.
        malignant_fraction: Fraction of malignant images, in ``[0, 1]``.
        cache_dir: Cache folder; default ``$MEDROBUST_CACHE`` or ``~/.cache/medrobust``. Files go
            to ``<cache_dir>/bus-phantom/``.
        cache: Read and write the cache (False: always generate, never write).
        scanner: Acquisition settings for a shifted test set: a name of
            :data:`~medrobust.data.SCANNERS` (``"shifted"``, ``"blurry"``,
            ``"sparse-speckle"``, ``"bright"``, ``"deep-attenuation"``), a mapping of
            ``psf_width``, ``density``, ``gain_db``, ``attenuation_db``, or None (the default
            scanner). Same tissue and lesions, imaged differently (Paschali et al.'s
            generalizability axis).

    Raises:
        ValueError: For an unknown split or an argument out of range.
        TypeError: For an argument of the wrong type.

    References:
        Wagner et al., "Statistics of speckle in ultrasound B-scans", IEEE Trans. Sonics Ultrason.
        30(3), 1983; Stavros et al., Radiology 196(1), 1995.
    """

    name = "bus-phantom"
    modality = "ultrasound"
    in_channels = 1
    spatial_dims = 2
    task = Task.CLASSIFICATION
    has_masks = True

    def __init__(
        self,
        split: str = "train",
        n: int | None = None,
        size: int = 128,
        seed: int = 0,
        malignant_fraction: float = 0.5,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool = True,
        scanner: str | Mapping[str, Any] | Scanner | None = None,
    ) -> None:
        self.split = check_split(split)
        self.class_names = ["benign", "malignant"]
        count = _check_int("n", DEFAULT_COUNTS[self.split] if n is None else n, minimum=1)
        self.size = _check_int("size", size, minimum=32)
        self.seed = _check_int("seed", seed, minimum=0)
        if isinstance(malignant_fraction, bool) or not isinstance(malignant_fraction, (int, float)):
            raise TypeError(
                "malignant_fraction must be a float in [0, 1], "
                f"got {type(malignant_fraction).__name__}"
            )
        if not 0.0 <= float(malignant_fraction) <= 1.0:
            raise ValueError(f"malignant_fraction must lie in [0, 1], got {malignant_fraction!r}")
        self.malignant_fraction = float(malignant_fraction)
        self.scanner = parse_scanner(scanner)
        self.params: dict[str, Any] = {
            "dataset": self.name,
            "generator_version": GENERATOR_VERSION,
            "split": self.split,
            "stream": SPLIT_STREAMS[self.split],
            "n": count,
            "size": self.size,
            "seed": self.seed,
            "malignant_fraction": self.malignant_fraction,
        }
        if not self.scanner.is_default:  # the default keeps the cache names of earlier versions
            self.params["scanner"] = self.scanner.to_dict()
        self.cache_path: Path | None = None
        if cache:
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            self.cache_path = root / "bus-phantom" / _cache_name(self.params)
        arrays = self._load_or_generate()
        self.meta: dict[str, npt.NDArray[np.float64]] = arrays.meta
        self._images = torch.from_numpy(arrays.images)
        self._masks = torch.from_numpy(arrays.masks)
        self._labels = torch.from_numpy(arrays.labels)

    def _generate(self) -> PhantomArrays:
        p = self.params
        return generate_bus_phantom(
            p["n"], p["size"], p["seed"], p["malignant_fraction"], stream=p["stream"],
            scanner=self.scanner,
        )  # fmt: skip

    def _load_or_generate(self) -> PhantomArrays:
        path = self.cache_path
        if path is not None and path.exists():
            try:
                arrays = _read_cache(path, self.params)
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                logger.warning(
                    "bus-phantom cache file %s is unreadable or does not match (%s); "
                    "regenerating it",
                    path,
                    err,
                )
            else:
                logger.debug("read bus-phantom %s split from %s", self.split, path)
                return arrays
        arrays = self._generate()
        if path is not None:
            try:
                atomic_save_npz(path, _to_cache(arrays, self.params))
            except OSError as err:
                logger.warning("could not write the bus-phantom cache file %s: %s", path, err)
        return arrays

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        """All labels, int64 ``(N,)``."""
        out: npt.NDArray[np.int64] = self._labels.numpy().copy()
        return out

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        return {
            "image": self._images[i],
            "label": self._labels[i],
            "mask": self._masks[i].to(torch.int64),
            "id": f"{self.name}/{self.split}/{i:05d}",
        }


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _cache_name(params: dict[str, Any]) -> str:
    digest = hashlib.sha256(_key(params).encode()).hexdigest()[:16]
    return (
        f"{params['split']}-n{params['n']}-{params['size']}px-seed{params['seed']}"
        f"-v{params['generator_version']}-{digest}.npz"
    )


def _to_cache(arrays: PhantomArrays, params: dict[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {
        "images": arrays.images,
        "masks": arrays.masks,
        "labels": arrays.labels,
        "cache_key": np.array(_key(params)),
    }
    out.update({f"meta_{k}": v for k, v in arrays.meta.items()})
    return out


def _read_cache(path: Path, params: dict[str, Any]) -> PhantomArrays:
    """Read and verify a cache file; any mismatch raises ``ValueError``."""
    n, size = params["n"], params["size"]
    with np.load(path, allow_pickle=False) as data:
        key = str(data["cache_key"])
        if key != _key(params):
            raise ValueError(f"the file was written for other parameters ({key})")
        images = np.asarray(data["images"])
        masks = np.asarray(data["masks"])
        labels = np.asarray(data["labels"])
        meta = {k[5:]: np.asarray(data[k]) for k in data.files if k.startswith("meta_")}
    checks = [
        (images.shape == (n, 1, size, size) and images.dtype == np.float32, "images"),
        (masks.shape == (n, size, size) and masks.dtype == np.uint8, "masks"),
        (labels.shape == (n,) and labels.dtype == np.int64, "labels"),
    ]
    for ok, what in checks:
        if not ok:
            raise ValueError(f"{what} have the wrong shape or dtype")
    if not np.all(np.isfinite(images)) or images.min() < 0.0 or images.max() > 1.0:
        raise ValueError("images contain NaN or values outside [0, 1]")
    if labels.min() < 0 or labels.max() > 1:
        raise ValueError("labels outside {0, 1}")
    return PhantomArrays(
        images=images,
        masks=masks,
        labels=labels,
        meta=meta,
        seed=params["seed"],
        size=size,
        stream=params["stream"],
    )
