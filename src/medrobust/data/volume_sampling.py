"""Splits by subject, and within a subject when there are too few; seeded patch sampling.

Splits: the subjects (patients) are shuffled with a seeded generator and cut by the fractions,
so no subject is in two splits; every split with a non-zero fraction gets at least one subject
when there are enough. With fewer subjects than such splits (one or two volumes), each volume
is cut instead into contiguous blocks along an axis (train first, then val, then test), so a
single volume can be trained on; this says so with a warning, because the splits then share the
patient and scores are optimistic.

Patches: ``n`` patch corners per volume from a generator seeded by ``(seed, volume)``:
``"random"`` corners are uniform over the allowed region; ``"balanced"`` patches alternate
between a centre drawn from the foreground voxels (label > 0) and one drawn from the background,
as MONAI's ``RandCropByPosNegLabel`` with ``pos = neg = 1`` does, but deterministic.

References:
    Cardoso et al., "MONAI: An open-source framework for deep learning in healthcare", 2022
    (positive/negative patch sampling); Kamnitsas et al., "Efficient multi-scale 3D CNN ...
    for brain lesion segmentation", Medical Image Analysis 36, 2017 (class-balanced patches).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medrobust.data.base import check_fractions

logger = logging.getLogger(__name__)

__all__ = ["SPLIT_BY", "SplitPlan", "block", "patch_corners", "plan_split"]

#: How a split is made: by subject, within subjects, or by subject when there are enough.
SPLIT_BY: tuple[str, ...] = ("auto", "subject", "within")
_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class SplitPlan:
    """The volumes of a split, and whether each is cut into blocks.

    Attributes:
        volumes: Indices of the cases in the split (sorted).
        within: True when the split is a block of every volume (too few subjects).
        fractions: The ``(train, val, test)`` fractions (used to cut the blocks).
    """

    volumes: list[int]
    within: bool
    fractions: tuple[float, float, float]


def _counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """``n`` items cut by ``fractions`` (largest remainder), each non-zero fraction getting at
    least one item when ``n`` allows."""
    exact = [f * n for f in fractions]
    counts = [math.floor(e) for e in exact]
    for k in sorted(range(3), key=lambda k: -(exact[k] - counts[k]))[: n - sum(counts)]:
        counts[k] += 1
    for k in range(3):
        while fractions[k] > 0 and counts[k] == 0:
            donor = max(range(3), key=lambda j: counts[j])
            if counts[donor] <= 1:
                break
            counts[donor] -= 1
            counts[k] += 1
    return counts


def plan_split(
    subjects: Sequence[str], split: str, fractions: Sequence[float], seed: int, by: str = "auto"
) -> SplitPlan:
    """Which volumes belong to ``split``.

    Args:
        subjects: Subject of every case (cases of one subject stay together).
        split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        fractions: ``(train, val, test)``.
        seed: Seed of the subject permutation.
        by: ``"subject"``, ``"within"`` or ``"auto"`` (by subject when every split with a
            non-zero fraction can get a subject, else within subjects).

    Returns:
        The :class:`SplitPlan`.

    Raises:
        ValueError: For an unknown ``by`` or a split that holds no subject.
    """
    fr = check_fractions(fractions)
    if by not in SPLIT_BY:
        raise ValueError(f"split_by must be one of {list(SPLIT_BY)}, got {by!r}")
    everything = list(range(len(subjects)))
    if split == "all":
        return SplitPlan(everything, False, fr)
    groups = list(dict.fromkeys(subjects))
    needed = sum(f > 0 for f in fr)
    if by == "within" or (by == "auto" and len(groups) < needed):
        if by == "auto":
            logger.warning(
                "only %d subject(s) for %d splits: each volume is cut into contiguous blocks "
                "(train, val, test) instead, so the splits share the patient and scores are "
                "optimistic; give at least %d subjects for a split by subject (split_by='within' "
                "chooses this cut explicitly, without this warning)",
                len(groups),
                needed,
                needed,
            )
        return SplitPlan(everything, True, fr)
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(groups))
    n_train, n_val, _ = _counts(len(groups), fr)
    cut = {"train": order[:n_train], "val": order[n_train : n_train + n_val]}
    cut["test"] = order[n_train + n_val :]
    chosen = {groups[int(i)] for i in cut[split]}
    volumes = [i for i, s in enumerate(subjects) if s in chosen]
    if not volumes:
        raise ValueError(
            f"split {split!r} holds no volume ({len(groups)} subject(s), fractions "
            f"{tuple(fractions)}); use split='all', other fractions or split_by='within'"
        )
    return SplitPlan(volumes, False, fr)


def block(length: int, split: str, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """The contiguous block ``[lo, hi)`` of ``length`` slices that ``split`` gets.

    Raises:
        ValueError: If the split gets no slice.
    """
    n_train, n_val, _ = _counts(length, fractions)
    lo, hi = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, length),
    }[split]
    if hi <= lo:
        raise ValueError(
            f"split {split!r} gets no slice of a volume with {length} slices (fractions "
            f"{fractions})"
        )
    return lo, hi


def _centre_corner(
    centre: npt.NDArray[np.int64], patch: Sequence[int], region: Sequence[tuple[int, int]]
) -> tuple[int, ...]:
    return tuple(
        int(np.clip(c - p // 2, lo, hi - p))
        for c, p, (lo, hi) in zip(centre, patch, region, strict=True)
    )


def patch_corners(
    label: npt.NDArray[np.int64],
    patch: Sequence[int],
    n: int,
    *,
    region: Sequence[tuple[int, int]],
    balanced: bool,
    seed: int,
    stream: int,
) -> list[tuple[int, ...]]:
    """Corners of ``n`` patches inside ``region``, drawn from a seeded generator.

    Args:
        label: The label map ``(X, Y, Z)`` (foreground: label > 0).
        patch: Patch size per axis (each <= the region's extent).
        n: Number of patches.
        region: ``[lo, hi)`` per axis that the patches must lie in.
        balanced: Alternate foreground- and background-centred patches (else uniform).
        seed: Seed of the data set.
        stream: The volume's index (each volume has its own generator).

    Returns:
        ``n`` corners (lower index of the patch per axis).

    Raises:
        ValueError: If the patch does not fit in the region.
    """
    for p, (lo, hi), ax in zip(patch, region, "xyz", strict=False):
        if hi - lo < p:
            raise ValueError(
                f"a patch of {p} voxels does not fit along {ax} in [{lo}, {hi}) "
                "(a block of a volume cut within its subject, or a small volume): use smaller "
                "patches or more volumes"
            )
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream,))))
    inside = np.zeros(label.shape, dtype=bool)
    inside[tuple(slice(lo, hi) for lo, hi in region)] = True
    pools: list[npt.NDArray[np.int64]] = []
    if balanced:
        fg = label > 0
        pools = [np.argwhere(fg & inside), np.argwhere(~fg & inside)]
        if len(pools[0]) == 0:
            logger.info("no foreground in the sampling region: uniform patches instead")
    corners: list[tuple[int, ...]] = []
    for k in range(n):
        pool = pools[k % 2] if balanced else np.empty((0, 3), np.int64)
        if len(pool):
            corners.append(_centre_corner(pool[rng.integers(len(pool))], patch, region))
        else:
            corners.append(
                tuple(
                    int(rng.integers(lo, hi - p + 1))
                    for p, (lo, hi) in zip(patch, region, strict=True)
                )
            )
    return corners
