"""The files of a saved detector, and the image batches detectors read.

A fitted detector is saved as a folder with ``detector.json`` (format, name, parameters,
threshold, layers, input shape, feature sizes, model description) and ``state.pt`` (a dict of
tensors only, loadable with ``torch.load(..., weights_only=True)``). Both files are written
atomically. This module reads and writes those files; rebuilding the detector from them is
:func:`medrobust.detectors.load_detector`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medrobust._utils.io import atomic_torch_save, write_json_atomic

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "META_FILE",
    "STATE_FILE",
    "iter_images",
    "read_detector_files",
    "write_detector_files",
]

FORMAT = "medrobust-detector"
FORMAT_VERSION = 1
META_FILE = "detector.json"
STATE_FILE = "state.pt"


def iter_images(data: Any, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Image batches from a tensor, a data set, a data loader or any iterable of batches.

    Batches may be dicts with ``"image"`` (labels are ignored), tuples ``(images, ...)`` or
    tensors; a ``(N, C, *spatial)`` tensor is cut into batches of ``batch_size``; a map-style
    data set is batched by a plain :class:`~torch.utils.data.DataLoader`.

    Raises:
        TypeError: For a batch of another kind.
    """
    if isinstance(data, torch.Tensor):
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size]
        return
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    if not isinstance(data, Iterable):
        raise TypeError(
            f"expected images as a tensor, a data set or a data loader, got {type(data).__name__}"
        )
    for batch in data:
        if isinstance(batch, Mapping):
            if "image" not in batch:
                raise TypeError(f"a batch dict needs an 'image' key, got keys {sorted(batch)}")
            yield batch["image"]
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            yield batch[0]
        elif isinstance(batch, torch.Tensor):
            yield batch
        else:
            raise TypeError(
                "batches must be dicts with 'image', tuples (images, ...) or tensors, got "
                f"{type(batch).__name__}"
            )


def write_detector_files(
    path: str | os.PathLike[str], meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
) -> Path:
    """Write a detector folder: ``state.pt`` (the tensors, on the CPU) then ``detector.json``.

    Args:
        path: The folder (created if missing).
        meta: The description; ``format`` and ``version`` are added.
        tensors: The fitted state.

    Returns:
        The folder.

    Raises:
        NotADirectoryError: If ``path`` exists and is not a folder.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({k: v.detach().cpu() for k, v in tensors.items()}, folder / STATE_FILE)
    write_json_atomic(folder / META_FILE, {"format": FORMAT, "version": FORMAT_VERSION, **meta})
    return folder


def read_detector_files(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check a detector folder written by :func:`write_detector_files`.

    Args:
        path: The folder holding ``detector.json`` and ``state.pt``.

    Returns:
        ``(meta, tensors)``.

    Raises:
        FileNotFoundError: If the folder or one of its files is missing.
        ValueError: If the files are not a medrobust detector of this format version, or the
            state file is damaged.
    """
    folder = Path(path)
    meta_path, state_path = folder / META_FILE, folder / STATE_FILE
    for p in (meta_path, state_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} does not exist; a saved detector is a folder with {META_FILE} and "
                f"{STATE_FILE}"
            )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a medrobust detector file")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has detector format version {meta.get('version')!r}; this medrobust "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        tensors = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise ValueError(
            f"{state_path} is corrupt or not a weights-only file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(tensors, dict) or not all(
        isinstance(v, torch.Tensor) for v in tensors.values()
    ):
        raise ValueError(f"{state_path} must hold a dict of tensors")
    return meta, tensors
