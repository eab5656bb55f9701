"""Data sets for medrobust: the embedded ``bus-phantom``, MedMNIST, image folders and BUSI.

Every data set yields batch-convention dictionaries ``{"image", "label", "mask"?, "id"}`` and
carries ``num_classes``, ``class_names``, ``in_channels``, ``spatial_dims``, ``task`` and ``name``.

Example:
    >>> from medrobust.data import create_dataset, make_loader
    >>> test = create_dataset("bus-phantom", split="test", size=64)
    >>> loader = make_loader(test, batch_size=32, shuffle=False, seed=0)
"""

from medrobust.data import anatomy, dicom, nifti, volumes  # noqa: F401 (register data sets)
from medrobust.data._phantom.scanner import SCANNERS, Scanner
from medrobust.data.base import (
    SPLITS,
    ArrayDataset,
    MedicalDataset,
    make_loader,
    stratified_split,
)
from medrobust.data.bus_phantom import BusPhantom
from medrobust.data.cache import default_cache_dir
from medrobust.data.folders import BUSI, IMAGE_EXTENSIONS, ImageFolder
from medrobust.data.medmnist import MEDMNIST_INFO, MedMNIST
from medrobust.data.phantom import GENERATOR_VERSION, PhantomArrays, generate_bus_phantom
from medrobust.data.registry import DATASETS, create_dataset, list_datasets

__all__ = [
    "BUSI",
    "DATASETS",
    "GENERATOR_VERSION",
    "IMAGE_EXTENSIONS",
    "MEDMNIST_INFO",
    "SCANNERS",
    "SPLITS",
    "ArrayDataset",
    "BusPhantom",
    "ImageFolder",
    "MedMNIST",
    "MedicalDataset",
    "PhantomArrays",
    "Scanner",
    "create_dataset",
    "default_cache_dir",
    "generate_bus_phantom",
    "list_datasets",
    "make_loader",
    "stratified_split",
]
