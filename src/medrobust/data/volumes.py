"""``volume-phantom``: simulated 3-D volumes with several structures and their label maps.

Each volume holds, deterministically from ``(seed, stream, index)``:

1. **organ** (class 1): a randomly rotated ellipsoid with a smooth textured interior;
2. **cavity** (class 2): a darker ellipsoid inside the organ (a ventricle or a lumen);
3. **vessel** (class 3): a bright tube of random radius along a curved (quadratic Bézier) path
   that crosses the volume;
4. **lesion** (class 4): a small sphere inside the organ, brighter or darker than the organ,
   present in about half of the volumes (the item's ``label`` says whether).

The intensities are blurred by a Gaussian point-spread function (partial-volume effect),
modulated by a smooth bias field, corrupted by Rician noise and clipped to ``[0, 1]``, so the
volumes look like a coarse MR acquisition. Later structures overwrite earlier ones in the
label map (lesion over vessel over cavity over organ).

References:
    Gudbjartsson & Patz, MRM 34(6), 1995 (Rician noise); Sled et al., IEEE TMI 17(1), 1998
    (smooth intensity non-uniformity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from medrobust.data.base import MedicalDataset, check_split
from medrobust.data.registry import DATASETS
from medrobust.types import Task

__all__ = ["VOLUME_CLASSES", "VolumeArrays", "VolumePhantom", "generate_volume_phantom"]

#: Class names of the label maps, in index order.
VOLUME_CLASSES: tuple[str, ...] = ("background", "organ", "cavity", "vessel", "lesion")
#: Default number of volumes per split.
DEFAULT_COUNTS: dict[str, int] = {"train": 48, "val": 16, "test": 16}
#: Generator stream of each split; streams never overlap.
SPLIT_STREAMS: dict[str, int] = {"train": 1, "val": 2, "test": 3}


@dataclass(frozen=True)
class VolumeArrays:
    """Arrays of a generated ``volume-phantom`` set.

    Attributes:
        images: Float32 ``(N, 1, S, S, S)`` in ``[0, 1]``.
        masks: Uint8 ``(N, S, S, S)`` label maps with classes 0..4 (see :data:`VOLUME_CLASSES`).
        labels: Int64 ``(N,)``: 1 where the volume has a lesion.
    """

    images: npt.NDArray[np.float32]
    masks: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _rotation(rng: np.random.Generator) -> npt.NDArray[np.float64]:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _smooth_field(rng: np.random.Generator, size: int, coarse: int) -> npt.NDArray[np.float64]:
    """A smooth random field in about [-1, 1] (coarse Gaussian grid, trilinear upsampling)."""
    grid = rng.normal(size=(coarse,) * 3)
    t = torch.from_numpy(grid)[None, None]
    up = torch.nn.functional.interpolate(t, size=(size,) * 3, mode="trilinear", align_corners=True)
    field: npt.NDArray[np.float64] = up[0, 0].numpy()
    return field / (np.abs(field).max() + 1e-12)


def _ellipsoid(
    coords: npt.NDArray[np.float64],
    centre: npt.NDArray[np.float64],
    radii: npt.NDArray[np.float64],
    rot: npt.NDArray[np.float64],
) -> npt.NDArray[np.bool_]:
    local = (coords - centre) @ rot
    return np.asarray(((local / radii) ** 2).sum(axis=-1) <= 1.0)


def _tube(size: int, pts: npt.NDArray[np.float64], radius_vox: float) -> npt.NDArray[np.bool_]:
    """Voxels within ``radius_vox`` of a quadratic Bézier curve (control points in [-1, 1]):
    the curve is drawn densely into a voxel grid and grown by a Euclidean distance transform."""
    from scipy.ndimage import distance_transform_edt

    t = np.linspace(0.0, 1.0, 8 * size)[:, None]
    curve = (1 - t) ** 2 * pts[0] + 2 * (1 - t) * t * pts[1] + t**2 * pts[2]
    vox = np.clip(np.floor((curve + 1) / 2 * size), 0, size - 1).astype(np.int64)
    line = np.zeros((size,) * 3, dtype=bool)
    line[vox[:, 0], vox[:, 1], vox[:, 2]] = True
    return np.asarray(distance_transform_edt(~line) <= radius_vox)


def _blur(vol: npt.NDArray[np.float64], sigma: float) -> npt.NDArray[np.float64]:
    from scipy.ndimage import gaussian_filter

    return np.asarray(gaussian_filter(vol, sigma=sigma, mode="nearest"))


def _one_volume(
    rng: np.random.Generator, size: int, lesion: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    ax = (np.arange(size) + 0.5) / size * 2 - 1
    coords = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1)
    mask = np.zeros((size,) * 3, dtype=np.uint8)
    # organ
    rot = _rotation(rng)
    centre = rng.uniform(-0.12, 0.12, size=3)
    radii = rng.uniform(0.5, 0.78, size=3)
    organ = _ellipsoid(coords, centre, radii, rot)
    mask[organ] = 1
    # cavity inside the organ
    c_rot = _rotation(rng)
    c_centre = centre + rng.uniform(-0.25, 0.25, size=3) * radii
    c_radii = radii * rng.uniform(0.3, 0.5, size=3)
    cavity = _ellipsoid(coords, c_centre, c_radii, c_rot) & organ
    mask[cavity] = 2
    # vessel: a tube crossing the volume along a curved path
    start = rng.uniform(-0.9, 0.9, size=3)
    start[rng.integers(3)] = -1.0
    end = -start + rng.uniform(-0.3, 0.3, size=3)
    mid = rng.uniform(-0.5, 0.5, size=3)
    vessel = _tube(size, np.stack([start, mid, end]), rng.uniform(1.2, 2.2))
    mask[vessel] = 3
    # lesion inside the organ, away from the cavity
    if lesion:
        inside = np.argwhere(organ & ~cavity & ~vessel)
        pick = inside[rng.integers(len(inside))] if len(inside) else np.array([size // 2] * 3)
        l_centre = coords[tuple(pick)]
        l_radius = rng.uniform(2.0, 3.5) * 2 / size
        sphere = ((coords - l_centre) ** 2).sum(axis=-1) <= l_radius**2
        mask[sphere & organ] = 4
    # intensities
    levels = {
        0: rng.uniform(0.03, 0.08),
        1: rng.uniform(0.40, 0.52),
        2: rng.uniform(0.15, 0.25),
        3: rng.uniform(0.78, 0.90),
        4: rng.choice([rng.uniform(0.62, 0.72), rng.uniform(0.22, 0.30)]),
    }
    vol = np.zeros((size,) * 3, dtype=np.float64)
    for cls, level in levels.items():
        vol[mask == cls] = level
    vol += 0.05 * _smooth_field(rng, size, 5) * (mask == 1)
    vol = _blur(vol, sigma=rng.uniform(0.5, 0.9))
    vol *= 1.0 + 0.12 * _smooth_field(rng, size, 3)
    sigma = rng.uniform(0.02, 0.045)
    n1 = rng.normal(scale=sigma, size=vol.shape)
    n2 = rng.normal(scale=sigma, size=vol.shape)
    vol = np.sqrt((vol + n1) ** 2 + n2**2)
    return np.clip(vol, 0.0, 1.0).astype(np.float32), mask


def generate_volume_phantom(
    n: int,
    size: int = 32,
    seed: int = 0,
    *,
    stream: int = 0,
    start: int = 0,
    lesion_fraction: float = 0.5,
) -> VolumeArrays:
    """Simulate ``n`` volumes with organ, cavity, vessel and (in some) lesion label maps.

    Volume ``i`` depends only on ``(seed, stream, start + i)``, so a larger ``n`` extends a set
    without changing its first volumes.

    Args:
        n: Number of volumes (>= 1).
        size: Side length in voxels (>= 16).
        seed: Non-negative seed.
        stream: Non-negative stream (the data set uses one per split).
        start: Index of the first volume.
        lesion_fraction: Probability that a volume has a lesion, in ``[0, 1]``.

    Returns:
        A :class:`VolumeArrays`.

    Raises:
        TypeError: For non-integer counts or seeds.
        ValueError: For values out of range.

    Shape:
        - images: ``(n, 1, size, size, size)``; masks ``(n, size, size, size)``; labels ``(n,)``.
    """
    n = _check_int("n", n, 1)
    size = _check_int("size", size, 16)
    seed = _check_int("seed", seed, 0)
    stream = _check_int("stream", stream, 0)
    start = _check_int("start", start, 0)
    if isinstance(lesion_fraction, bool) or not isinstance(lesion_fraction, (int, float)):
        raise TypeError(f"lesion_fraction must be a number, got {lesion_fraction!r}")
    if not 0.0 <= float(lesion_fraction) <= 1.0:
        raise ValueError(f"lesion_fraction must lie in [0, 1], got {lesion_fraction}")
    images = np.zeros((n, 1, size, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size, size), dtype=np.uint8)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        ss = np.random.SeedSequence(seed, spawn_key=(stream, start + i))
        rng = np.random.Generator(np.random.PCG64(ss))
        has_lesion = bool(rng.uniform() < lesion_fraction)
        images[i, 0], masks[i] = _one_volume(rng, size, has_lesion)
        labels[i] = int((masks[i] == 4).any())
    return VolumeArrays(images=images, masks=masks, labels=labels)


class VolumePhantom(MedicalDataset):
    """Simulated 3-D volumes with five-class label maps (see :func:`generate_volume_phantom`).

    Items are ``{"image": float32 (1, S, S, S) in [0, 1], "label": int64 (1 if a lesion is
    present), "mask": int64 (S, S, S) with classes background, organ, cavity, vessel, lesion,
    "id": "volume-phantom/<split>/<index:05d>"}``. ``class_names`` are the mask classes, so a
    segmentation model built from the data set has one output per structure.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (streams 1, 2, 3: never overlapping).
        n: Number of volumes (default 48 / 16 / 16).
        size: Side length in voxels (>= 16; 32 trains in seconds, 64 is more detailed).
        seed: Non-negative seed of the data set.
        lesion_fraction: Probability that a volume has a lesion.

    Raises:
        ValueError: For an unknown split or values out of range.
        TypeError: For arguments of the wrong type.
    """

    name = "volume-phantom"
    in_channels = 1
    spatial_dims = 3
    task = Task.SEGMENTATION
    has_masks = True

    def __init__(
        self,
        split: str = "train",
        n: int | None = None,
        size: int = 32,
        seed: int = 0,
        lesion_fraction: float = 0.5,
    ) -> None:
        self.split = check_split(split)
        self.class_names = list(VOLUME_CLASSES)
        count = DEFAULT_COUNTS[self.split] if n is None else n
        arrays = generate_volume_phantom(
            count, size, seed, stream=SPLIT_STREAMS[self.split], lesion_fraction=lesion_fraction
        )
        self.size = int(size)
        self.seed = int(seed)
        self._images = torch.from_numpy(arrays.images)
        self._masks = torch.from_numpy(arrays.masks)
        self._labels = torch.from_numpy(arrays.labels)

    @property
    def targets(self) -> npt.NDArray[np.int64]:
        """Lesion presence of every volume, int64 ``(N,)``."""
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


DATASETS.register(
    "volume-phantom",
    summary="Simulated 3-D volumes: organ, cavity, vessel and lesion label maps (embedded)",
    tags=("segmentation", "3d", "embedded"),
)(VolumePhantom)
