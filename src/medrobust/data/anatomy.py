"""``mni152-tissue``: real brain anatomy with no download, segmented into tissue classes.

nilearn ships the MNI ICBM152 2009 T1 template (skull-stripped) with its grey- and white-matter
probability maps inside the package. :func:`load_mni152_tissue` reads them through
``nilearn.datasets.load_mni152_template`` / ``load_mni152_gm_template`` /
``load_mni152_wm_template`` (no network access) and labels every voxel of the head as

* 0 background (outside the head),
* 1 cerebrospinal fluid (inside the head, neither grey nor white matter),
* 2 grey matter,
* 3 white matter,

by the largest of ``(1 - p_GM - p_WM, p_GM, p_WM)``. :class:`MNI152Tissue` serves it as 2-D
axial slices or 3-D patches. It is one brain: the splits hold different slices (or patches) of
the same template, which is enough for a real-anatomy demonstration, not for a study.

nilearn is an optional dependency (``pip install nilearn``); a clear error says so when it is
missing.

References:
    Fonov et al., "Unbiased average age-appropriate atlases for pediatric studies", NeuroImage
    54(1), 2011, and "Unbiased nonlinear average age-appropriate brain templates from birth to
    adulthood", NeuroImage 47, 2009 (MNI ICBM152 2009); Abraham et al., "Machine learning for
    neuroimaging with scikit-learn", Front. Neuroinform. 8, 2014 (nilearn).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from medrobust.data.base import MedicalDataset, check_split
from medrobust.data.registry import DATASETS
from medrobust.data.volume_io import display_slice, display_spacing
from medrobust.types import Task

__all__ = ["TISSUE_CLASSES", "MNI152Tissue", "TissueVolume", "load_mni152_tissue"]

#: Class names of the tissue label map, in index order.
TISSUE_CLASSES: tuple[str, ...] = ("background", "csf", "grey matter", "white matter")
_HEAD_THRESHOLD = 0.05


@dataclass(frozen=True)
class TissueVolume:
    """The template and its tissue labels.

    Attributes:
        image: Float32 ``(X, Y, Z)`` T1 intensities in ``[0, 1]``, RAS orientation.
        labels: Int64 ``(X, Y, Z)`` tissue classes (see :data:`TISSUE_CLASSES`).
        affine: Float64 ``(4, 4)`` voxel-to-MNI-millimetre matrix.
    """

    image: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    affine: npt.NDArray[np.float64]


def _nilearn_datasets() -> Any:
    try:
        from nilearn import datasets
    except ImportError as err:
        raise ImportError(
            "the real-anatomy example needs nilearn, which ships the MNI152 template: "
            "pip install nilearn"
        ) from err
    return datasets


@functools.lru_cache(maxsize=4)
def _load(resolution: int) -> TissueVolume:
    ds = _nilearn_datasets()
    import nibabel as nib

    # RAS+ (the template already is; made sure of, so that slices display the right way up)
    t1 = nib.as_closest_canonical(ds.load_mni152_template(resolution=resolution))
    gm = nib.as_closest_canonical(ds.load_mni152_gm_template(resolution=resolution))
    wm = nib.as_closest_canonical(ds.load_mni152_wm_template(resolution=resolution))
    image = np.asarray(t1.get_fdata(), dtype=np.float64)
    p_gm = np.clip(np.asarray(gm.get_fdata(), dtype=np.float64), 0, 1)
    p_wm = np.clip(np.asarray(wm.get_fdata(), dtype=np.float64), 0, 1)
    if not (image.shape == p_gm.shape == p_wm.shape):
        raise ValueError(
            f"nilearn's template {image.shape} and tissue maps {p_gm.shape}, {p_wm.shape} differ "
            "in shape"
        )
    lo, hi = float(image.min()), float(image.max())
    image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    head = image > _HEAD_THRESHOLD
    p_csf = np.clip(1.0 - p_gm - p_wm, 0, 1)
    tissue = np.argmax(np.stack([p_csf, p_gm, p_wm]), axis=0) + 1
    labels = np.where(head, tissue, 0).astype(np.int64)
    return TissueVolume(
        image=image.astype(np.float32),
        labels=labels,
        affine=np.asarray(t1.affine, dtype=np.float64),
    )


def load_mni152_tissue(resolution: int = 2) -> TissueVolume:
    """The MNI152 T1 template with its tissue label map, read from nilearn's package files.

    Args:
        resolution: Voxel size in mm (1 is the shipped grid; 2 and more are resampled by
            nilearn).

    Returns:
        A :class:`TissueVolume` (arrays are shared between calls: copy before changing them).

    Raises:
        ImportError: If nilearn is not installed.
        ValueError: For a resolution < 1.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer number of mm >= 1, got {resolution!r}")
    return _load(resolution)


def _bbox(mask: npt.NDArray[np.bool_], multiple: int) -> tuple[slice, ...]:
    """The bounding box of ``mask``, grown to a multiple of ``multiple`` per axis."""
    out = []
    for ax in range(mask.ndim):
        other = tuple(i for i in range(mask.ndim) if i != ax)
        idx = np.flatnonzero(mask.any(axis=other))
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        length = -(-(hi - lo) // multiple) * multiple
        extra = length - (hi - lo)
        lo = max(0, lo - extra // 2)
        out.append(slice(lo, lo + length))
    return tuple(out)


def _pad_to(arr: npt.NDArray[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    pads = [(0, max(0, s - a)) for a, s in zip(arr.shape, shape, strict=True)]
    return np.pad(arr, pads)


class MNI152Tissue(MedicalDataset):
    """Real anatomy without download: the MNI152 brain template segmented into background,
    CSF, grey and white matter (see :func:`load_mni152_tissue`).

    The template is in RAS orientation; slices are served as a radiologist looks at them
    (:func:`~medrobust.data.volume_io.display_slice`) and ``spacing`` holds the voxel size in
    mm of the items' spatial dims. Slice mode serves axial slices (``axis=2``) that contain
    brain, cropped to the brain's
    bounding box and padded to a multiple of ``multiple``; slices are dealt to the splits in
    turn (of every 5 consecutive slices, 3 train, 1 val, 1 test). Volume mode serves
    non-overlapping cubic patches of side ``patch`` that contain brain, dealt to the splits by
    a seeded permutation in the same proportions; with ``patch=None`` it serves the whole
    cropped brain as one item in every split (for sliding-window evaluation).

    Items are ``{"image": float32 (1, *spatial) in [0, 1], "label": int64 (1 if the item holds
    white matter), "mask": int64 (*spatial), "id": "mni152/<mode>/<index>"}``.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        mode: ``"slice"`` or ``"volume"``.
        resolution: Voxel size in mm (2 by default; 4 gives small volumes for quick runs).
        axis: Slice axis in slice mode (2: axial).
        patch: Patch side in volume mode (None: the whole brain).
        multiple: Pad spatial sizes to a multiple of this (16 suits the zoo's UNets).
        seed: Seed of the patch split.

    Raises:
        ImportError: If nilearn is not installed.
        ValueError: For invalid arguments or an empty split.
    """

    name = "mni152-tissue"
    modality = "mri"
    in_channels = 1
    task = Task.SEGMENTATION
    has_masks = True

    def __init__(
        self,
        split: str = "train",
        mode: str = "slice",
        resolution: int = 2,
        axis: int = 2,
        patch: int | None = 32,
        multiple: int = 16,
        seed: int = 0,
    ) -> None:
        self.split = check_split(split)
        if mode not in ("slice", "volume"):
            raise ValueError(f"mode must be 'slice' or 'volume', got {mode!r}")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
        for label, value in (("multiple", multiple), ("seed", seed)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or value < (1 if label == "multiple" else 0)
            ):
                raise ValueError(
                    f"{label} must be a non-negative integer (multiple >= 1), got {value!r}"
                )
        if patch is not None and (
            isinstance(patch, bool) or not isinstance(patch, int) or patch < 8
        ):
            raise ValueError(f"patch must be an integer >= 8 or None, got {patch!r}")
        vol = load_mni152_tissue(resolution)
        self.class_names = list(TISSUE_CLASSES)
        self.mode = mode
        self.spatial_dims = 2 if mode == "slice" else 3
        box = _bbox(vol.labels > 0, multiple)
        shape = tuple(s.stop - s.start for s in box)
        image = _pad_to(vol.image[box], shape)
        labels = _pad_to(vol.labels[box], shape)
        items: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], str]] = []
        spacing = tuple(float(v) for v in np.sqrt((vol.affine[:3, :3] ** 2).sum(axis=0)))
        if mode == "slice":  # in radiological display orientation (anterior up, right left)
            lab_s = np.moveaxis(labels, axis, 0)
            keep = [i for i in range(lab_s.shape[0]) if lab_s[i].any()]
            part = {"train": (0, 1, 2), "val": (3,), "test": (4,)}[self.split]
            for j, i in enumerate(keep):
                if j % 5 in part:
                    img2, lab2 = display_slice(image, axis, i), display_slice(labels, axis, i)
                    items.append((img2[None], lab2, f"mni152/{'xyz'[axis]}:{i}"))
            self.spacing: tuple[float, ...] | None = display_spacing(
                (spacing[0], spacing[1], spacing[2]), axis
            )
        else:
            self.spacing = spacing
        if mode == "volume" and patch is None:
            items.append((image[None], labels, "mni152/brain"))
        elif mode == "volume" and patch is not None:
            grid = [range(0, s - patch + 1, patch) for s in shape]
            corners = [
                (a, b, c)
                for a in grid[0]
                for b in grid[1]
                for c in grid[2]
                if labels[a : a + patch, b : b + patch, c : c + patch].any()
            ]
            order = np.random.Generator(np.random.PCG64(seed)).permutation(len(corners))
            part = {"train": (0, 1, 2), "val": (3,), "test": (4,)}[self.split]
            for j, o in enumerate(order):
                if j % 5 in part:
                    a, b, c = corners[int(o)]
                    sl = (slice(a, a + patch), slice(b, b + patch), slice(c, c + patch))
                    items.append((image[sl][None], labels[sl], f"mni152/patch:{a},{b},{c}"))
        if not items:
            raise ValueError(
                f"split {split!r} of mni152-tissue is empty (mode {mode!r}, patch {patch}); "
                "use a smaller patch or a finer resolution"
            )
        self._images = torch.from_numpy(np.stack([it[0] for it in items]).astype(np.float32))
        self._masks = torch.from_numpy(np.stack([it[1] for it in items]).astype(np.int64))
        self._ids = [it[2] for it in items]
        self.affine = vol.affine

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        """White-matter presence of every item, int64 ``(N,)``."""
        flat = self._masks.flatten(1)
        out: npt.NDArray[np.int64] = (flat == 3).any(dim=1).long().numpy()
        return out

    def __len__(self) -> int:
        return int(self._images.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        mask = self._masks[i]
        return {
            "image": self._images[i],
            "label": torch.tensor(int(bool((mask == 3).any())), dtype=torch.int64),
            "mask": mask,
            "id": self._ids[i],
        }


DATASETS.register(
    "mni152-tissue",
    summary="Real brain anatomy (MNI152 template shipped by nilearn): CSF/GM/WM segmentation",
    tags=("segmentation", "2d", "3d", "mri", "embedded"),
)(MNI152Tissue)
