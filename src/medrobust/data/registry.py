"""The data-set registry: ``create_dataset(name, split, **kwargs)`` and ``list_datasets()``.

Registered names:

* ``bus-phantom``: the embedded simulated breast-ultrasound phantom (no download);
* ``medmnist``: 2-D MedMNIST from its official ``.npz`` files (``flag=...``);
* ``image-folder``: images in ``root/<class_name>/`` folders;
* ``busi``: the Breast Ultrasound Images data set in its published layout, with masks.
"""

from __future__ import annotations

from typing import Any

from medrobust.data.base import MedicalDataset
from medrobust.data.bus_phantom import BusPhantom
from medrobust.data.folders import BUSI, ImageFolder
from medrobust.data.medmnist import MedMNIST
from medrobust.registry import Registry

#: All data sets by name.
DATASETS: Registry[MedicalDataset] = Registry("dataset")

DATASETS.register(
    "bus-phantom",
    summary="Simulated B-mode breast ultrasound, benign vs malignant, with lesion masks (embedded)",
    tags=("classification", "segmentation", "2d", "ultrasound", "embedded"),
)(BusPhantom)
DATASETS.register(
    "medmnist",
    summary="MedMNIST 2-D data sets from the official .npz files (flag=breastmnist, ...)",
    tags=("classification", "2d"),
)(MedMNIST)
DATASETS.register(
    "image-folder",
    summary="Images in root/<class_name>/ folders (png, jpg, bmp, tif)",
    tags=("classification", "2d", "folder"),
)(ImageFolder)
DATASETS.register(
    "busi",
    summary="Breast Ultrasound Images (BUSI) folder layout with merged lesion masks",
    tags=("classification", "segmentation", "2d", "ultrasound", "folder"),
)(BUSI)


def create_dataset(name: str, split: str = "train", **kwargs: Any) -> MedicalDataset:
    """Build a registered data set.

    Example:
        >>> test = create_dataset("bus-phantom", split="test", size=64)
        >>> test.class_names
        ['benign', 'malignant']

    Args:
        name: Registered name (see :func:`list_datasets`); ``_`` and ``-`` are interchangeable.
        split: ``"train"``, ``"val"`` or ``"test"``.
        **kwargs: Arguments of the data set (e.g. ``size``, ``root``, ``flag``).

    Returns:
        The data set.

    Raises:
        medrobust.registry.UnknownNameError: For an unknown name (the message suggests close
            names).
        TypeError: For an argument the data set does not accept (the message lists the
            accepted ones).
        ValueError: For an unknown split or an invalid argument value.
    """
    return DATASETS.create(name, split=split, **kwargs)


def list_datasets(pattern: str = "*", tag: str | None = None) -> list[str]:
    """Names of the registered data sets matching a shell-style pattern (and a tag, if given).

    Example:
        >>> list_datasets("bus*")
        ['bus-phantom', 'busi']
    """
    return DATASETS.list(pattern, tag=tag)
