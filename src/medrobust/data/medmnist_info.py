"""What medrobust knows about every MedMNIST+ (v3) flag: class names, channels, dims, checksums.

The table follows MedMNIST's published ``INFO`` (medmnist 3.x, Zenodo record 10519652): the
twelve 2-D flags come at 28, 64, 128 and 224 pixels, the six 3-D flags at 28 and 64 voxels. The
MD5 of every official file is listed so that a download is verified before it is kept.

References:
    Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
    image classification", Scientific Data 10, 41, 2023; Doerrich et al., "Rethinking model
    prototyping through the MedMNIST+ dataset collection", Scientific Reports 15, 2025.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MEDMNIST_INFO",
    "MEDMNIST_SIZES",
    "MEDMNIST_SIZES_3D",
    "MedMNISTInfo",
    "medmnist_filename",
    "medmnist_url",
]

#: Image sizes the 2-D flags are published in.
MEDMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)
#: Volume sizes the 3-D flags are published in.
MEDMNIST_SIZES_3D: tuple[int, ...] = (28, 64)
#: The Zenodo record of MedMNIST v3 (MedMNIST+), which holds every flag at every size.
ZENODO = "https://zenodo.org/records/10519652/files"


@dataclass(frozen=True)
class MedMNISTInfo:
    """What medrobust knows about one MedMNIST flag.

    Attributes:
        class_names: Label ``k`` is ``class_names[k]`` (as in MedMNIST's ``INFO``).
        channels: 1 (grey) or 3 (RGB).
        task: MedMNIST's task description (``"multi-label, binary-class"`` for ChestMNIST).
        md5: MD5 checksum of the official file for each size.
        spatial_dims: 2 for images ``(N, H, W[, 3])``, 3 for volumes ``(N, D, H, W)``.
    """

    class_names: tuple[str, ...]
    channels: int
    task: str
    md5: dict[int, str]
    spatial_dims: int = 2

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sizes this flag is published in."""
        return MEDMNIST_SIZES if self.spatial_dims == 2 else MEDMNIST_SIZES_3D


def _md5(*digests: str) -> dict[int, str]:
    sizes = MEDMNIST_SIZES if len(digests) == 4 else MEDMNIST_SIZES_3D
    return dict(zip(sizes, digests, strict=True))


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
_MC, _BC = "multi-class", "binary-class"

#: Every MedMNIST+ flag (class names, channels, dims and checksums as published by MedMNIST).
MEDMNIST_INFO: dict[str, MedMNISTInfo] = {
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
        _MC,
        _md5(
            "a8b06965200029087d5bd730944a56c1",
            "55aa9c1e0525abe5a6b9d8343a507616",
            "ac42d08fb904d92c244187169d1fd1d9",
            "2c51a510bcdc9cf8ddb2af93af1eadec",
        ),
    ),
    "chestmnist": MedMNISTInfo(
        (
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ),
        1,
        "multi-label, binary-class",
        _md5(
            "02c8a6516a18b556561a56cbdd36c4a8",
            "9de6cd0b934ebb5b7426cfba5efbae16",
            "db107e5590b27930b62dbaf558aebee3",
            "45bd33e6f06c3e8cdb481c74a89152aa",
        ),
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
        _MC,
        _md5(
            "0744692d530f8e62ec473284d019b0c7",
            "b70a2f5635c6199aeaa28c31d7202e1f",
            "2defd784463fa5243564e855ed717de1",
            "8974907d8e169bef5f5b96bc506ae45d",
        ),
    ),
    "octmnist": MedMNISTInfo(
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        1,
        _MC,
        _md5(
            "c68d92d5b585d8d81f7112f81e2d0842",
            "e229e9440236b774d9f0dfef9d07bdaf",
            "0a97e76651ace45c5d943ee3f65b63ae",
            "abc493b6d529d5de7569faaef2773ba3",
        ),
    ),
    "pneumoniamnist": MedMNISTInfo(
        ("normal", "pneumonia"),
        1,
        _BC,
        _md5(
            "28209eda62fecd6e6a2d98b1501bb15f",
            "8f4eceb4ccffa70c672198ea285246c6",
            "05b46931834c231683c68f40c47b2971",
            "d6a3c71de1b945ea11211b03746c1fe1",
        ),
    ),
    "retinamnist": MedMNISTInfo(
        ("0", "1", "2", "3", "4"),
        3,
        "ordinal-regression",
        _md5(
            "bd4c0672f1bba3e3a89f0e4e876791e4",
            "afda852cc34dcda56f86ad2b2457dbcc",
            "e48e916a24454daf90583d4e6efb1a18",
            "eae7e3b6f3fcbda4ae613ebdcbe35348",
        ),
    ),
    "breastmnist": MedMNISTInfo(
        ("malignant", "normal/benign"),
        1,
        _BC,
        _md5(
            "750601b1f35ba3300ea97c75c52ff8f6",
            "742edef2a1fd1524b2efff4bd7ba9364",
            "363e4b3f8d712e9b5de15470a2aaadf1",
            "b56378a6eefa9fed602bb16d192d4c8b",
        ),
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
        _MC,
        _md5(
            "7053d0359d879ad8a5505303e11de1dc",
            "2b94928a2ae4916078ca51e05b6b800b",
            "adace1e0ed228fccda1f39692059dd4c",
            "b718ff6835fcbdb22ba9eacccd7b2601",
        ),
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
        _MC,
        _md5(
            "ebe78ee8b05294063de985d821c1c34b",
            "123ece2eba09d0aa5d698fda57103344",
            "61b955355d7425a89687b06cca3ce0c2",
            "b077128c4a949f0a4eb01517f9037b9c",
        ),
    ),
    "organamnist": MedMNISTInfo(
        _ORGANS,
        1,
        _MC,
        _md5(
            "68e3f8846a6bd62f0c9bf841c0d9eacc",
            "2dcccc29b88e6da5a01161ef20cda288",
            "eeae80d0a227a8d099027e1b3cfd3b60",
            "50747347e05c87dd3aaf92c49f9f3170",
        ),
    ),
    "organcmnist": MedMNISTInfo(
        _ORGANS,
        1,
        _MC,
        _md5(
            "b9ceb9546e10131b32923c5bbeaea2b1",
            "3ce34a8724ea6f548e6db4744d03b6a9",
            "773c1f009daa3fe5d9a2a201b2a7ed94",
            "050f5e875dc056f6768abf94ec9995d1",
        ),
    ),
    "organsmnist": MedMNISTInfo(
        _ORGANS,
        1,
        _MC,
        _md5(
            "9ab87b696fb54e2a387ebe992d6ed5f1",
            "53a6d115339d874c25e309a994ff46d3",
            "ded0c5fa01a95dc4978b956f613e9b8e",
            "b354719e553fbbb2513d5533f52a4cb1",
        ),
    ),
    # ---- 3-D flags: volumes (N, D, H, W), uint8
    "organmnist3d": MedMNISTInfo(
        (
            "liver",
            "kidney-right",
            "kidney-left",
            "femur-right",
            "femur-left",
            "bladder",
            "heart",
            "lung-right",
            "lung-left",
            "spleen",
            "pancreas",
        ),
        1,
        _MC,
        _md5("a0c5a1ff56af4f155c46d46fbb45a2fe", "58a2205adf14a9d0a189cb06dc78bf10"),
        spatial_dims=3,
    ),
    "nodulemnist3d": MedMNISTInfo(
        ("benign", "malignant"),
        1,
        _BC,
        _md5("8755a7e9e05a4d9ce80a24c3e7a256f3", "c47c5b7d457bf6332200d2ea6d64ecd8"),
        spatial_dims=3,
    ),
    "adrenalmnist3d": MedMNISTInfo(
        ("normal", "hyperplasia"),
        1,
        _BC,
        _md5("bbd3c5a5576322bc4cdfea780653b1ce", "17721accfe9fb005146a47d33bc54b2f"),
        spatial_dims=3,
    ),
    "fracturemnist3d": MedMNISTInfo(
        ("buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"),
        1,
        _MC,
        _md5("6aa7b0143a6b42da40027a9dda61302f", "f01d7e6316aedf4210da0da5b7437b42"),
        spatial_dims=3,
    ),
    "vesselmnist3d": MedMNISTInfo(
        ("vessel", "aneurysm"),
        1,
        _BC,
        _md5("b41fd4f7e7e2feedddb201585ecafa1b", "6bb274a8846e1097066dcd64e2c4520f"),
        spatial_dims=3,
    ),
    "synapsemnist3d": MedMNISTInfo(
        ("inhibitory synapse", "excitatory synapse"),
        1,
        _BC,
        _md5("1235b78a3cd6280881dd7850a78eadb6", "43bd14ebf3af9d3dd072446fedc14d5e"),
        spatial_dims=3,
    ),
}


def medmnist_filename(flag: str, size: int) -> str:
    """The official file name: ``{flag}.npz`` at size 28, ``{flag}_{size}.npz`` otherwise."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_url(flag: str, size: int) -> str:
    """The official download URL of a MedMNIST file (Zenodo record 10519652)."""
    return f"{ZENODO}/{medmnist_filename(flag, size)}?download=1"
