"""Where the volumes and label maps of a segmentation data set are: four layouts.

* **Decathlon** (``dataset.json`` beside ``imagesTr/`` and ``labelsTr/``): the Medical
  Segmentation Decathlon's description, whose ``training`` list pairs images and labels,
  ``labels`` names the classes (``{"0": "background", "1": "liver"}``, or nnU-Net v2's
  ``{"background": 0, "liver": 1}``), ``modality`` (or ``channel_names``) names the input
  channels, ``numTraining`` counts the pairs and ``test`` lists unlabelled images.
* **Folders**: ``imagesTr/`` + ``labelsTr/`` or ``images/`` + ``labels/``, paired by name;
  an image may be a NIfTI file, a ``.dcm`` file or a DICOM series folder, a label a NIfTI file
  or a DICOM-SEG ``.dcm`` (read with highdicom, an optional dependency).
* **CSV manifest**: columns ``image,label`` and optionally ``subject`` (several volumes of one
  patient share a subject and are never split apart); paths relative to the CSV's folder.
* **Lists**: ``images=[...]``, ``labels=[...]`` paired in order.

References:
    Antonelli et al., "The Medical Segmentation Decathlon", Nature Communications 13, 2022;
    Isensee et al., "nnU-Net", Nature Methods 18, 2021 (the v2 ``dataset.json`` variant).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medrobust.data.volume_io import is_dicom_path, is_nifti, stem

__all__ = ["Layout", "VolumeCase", "find_pairs", "read_decathlon", "read_manifest", "resolve"]

_FOLDERS = (("imagesTr", "labelsTr"), ("images", "labels"))


@dataclass(frozen=True)
class VolumeCase:
    """One image and its label map.

    Attributes:
        image: NIfTI file, ``.dcm`` file or DICOM series folder.
        label: NIfTI label map (or DICOM-SEG) on the image's grid.
        subject: Patient the volume belongs to (volumes of one subject stay in one split).
    """

    image: Path
    label: Path
    subject: str


@dataclass
class Layout:
    """A resolved layout.

    Attributes:
        cases: The labelled volumes, sorted as listed (folders: by name).
        class_names: Class names the layout declares (Decathlon ``labels``), else None.
        modality: ``"ct"``, ``"mri"``, ... when the layout says, else ``"any"``.
        channel_names: Names of the input channels (Decathlon ``modality``), may be empty.
        test_images: Unlabelled images (Decathlon ``test``), not part of any split.
        description: What was read, for messages.
    """

    cases: list[VolumeCase]
    class_names: list[str] | None = None
    modality: str = "any"
    channel_names: list[str] = field(default_factory=list)
    test_images: list[Path] = field(default_factory=list)
    description: str = ""


def _entry(path: Path) -> bool:
    return not path.name.startswith(".") and (is_nifti(path) or is_dicom_path(path))


def find_pairs(root: str | os.PathLike[str]) -> list[VolumeCase]:
    """Pair images and label maps of a folder by name.

    Args:
        root: A folder with ``imagesTr/`` + ``labelsTr/`` or ``images/`` + ``labels/``.

    Returns:
        Sorted cases (each volume its own subject).

    Raises:
        FileNotFoundError: If the folder or its sub-folders are missing.
        ValueError: If an image has no label map (or the other way round) or nothing is found.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"volume folder not found: {base}")
    for img_dir, lab_dir in _FOLDERS:
        if (base / img_dir).is_dir() and (base / lab_dir).is_dir():
            break
    else:
        raise FileNotFoundError(
            f"{base} has neither imagesTr/ + labelsTr/ nor images/ + labels/ sub-folders "
            "(nor a dataset.json)"
        )
    images = {stem(p): p for p in (base / img_dir).iterdir() if _entry(p)}
    labels = {
        stem(p): p
        for p in (base / lab_dir).iterdir()
        if is_nifti(p) or (p.is_file() and p.suffix.lower() == ".dcm")  # NIfTI or DICOM-SEG
    }
    if not images:
        raise ValueError(f"no NIfTI images, .dcm files or DICOM series in {base / img_dir}")
    missing = sorted(set(images) - set(labels))
    extra = sorted(set(labels) - set(images))
    if missing:
        raise ValueError(f"image(s) without a label map in {base / lab_dir}: {missing[:5]}")
    if extra:
        raise ValueError(f"label map(s) without an image in {base / img_dir}: {extra[:5]}")
    return [VolumeCase(images[k], labels[k], k) for k in sorted(images)]


def _modality(names: Sequence[str]) -> str:
    kinds = set()
    for n in names:
        low = n.lower()
        kinds.add("ct" if low == "ct" else "mri" if low.startswith(("mr", "t1", "t2")) else "")
        if low in ("flair", "adc", "dwi"):
            kinds.add("mri")
    kinds.discard("")
    return kinds.pop() if len(kinds) == 1 else "any"


def _decathlon_classes(labels: Any, file: Path) -> list[str]:
    """Class names from ``labels``: ``{"0": "bg", ...}`` (MSD) or ``{"bg": 0, ...}`` (v2)."""
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{file}: 'labels' must be a non-empty mapping, got {labels!r}")
    try:
        if all(isinstance(v, int) for v in labels.values()):  # nnU-Net v2: name -> index
            by_index = {int(v): str(k) for k, v in labels.items()}
        else:
            by_index = {int(k): str(v) for k, v in labels.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(
            f'{file}: \'labels\' must map indices to names ({{"0": "background"}}), got {labels!r}'
        ) from err
    if sorted(by_index) != list(range(len(by_index))):
        raise ValueError(f"{file}: 'labels' must number the classes 0..K-1, got {sorted(by_index)}")
    return [by_index[k] for k in range(len(by_index))]


def read_decathlon(root: str | os.PathLike[str]) -> Layout:
    """Read a Medical Segmentation Decathlon ``dataset.json`` (a file or its folder).

    Raises:
        FileNotFoundError: For a missing ``dataset.json`` or a listed file that is missing.
        ValueError: For a malformed description, or ``numTraining`` disagreeing with the list.
    """
    path = Path(root)
    file = path / "dataset.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"Decathlon description not found: {file}")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {file} as JSON: {err}") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("training"), list):
        raise ValueError(f"{file} has no 'training' list of {{'image', 'label'}} pairs")
    base = file.parent
    cases = []
    for k, entry in enumerate(meta["training"]):
        if not isinstance(entry, dict) or not {"image", "label"} <= set(entry):
            raise ValueError(f"{file}: training[{k}] must have 'image' and 'label', got {entry!r}")
        image, label = base / str(entry["image"]), base / str(entry["label"])
        for p in (image, label):
            if not p.exists():
                raise FileNotFoundError(f"{file} lists {p}, which does not exist")
        cases.append(VolumeCase(image, label, stem(image)))
    if not cases:
        raise ValueError(f"{file}: the 'training' list is empty")
    n = meta.get("numTraining")
    if n is not None and int(n) != len(cases):
        raise ValueError(f"{file}: numTraining is {n} but 'training' lists {len(cases)} pairs")
    channels = meta.get("modality", meta.get("channel_names", {})) or {}
    channel_names = [str(channels[k]) for k in sorted(channels, key=int)] if channels else []
    tests = [base / str(t["image"] if isinstance(t, dict) else t) for t in meta.get("test", [])]
    return Layout(
        cases,
        _decathlon_classes(meta.get("labels"), file),
        _modality(channel_names),
        channel_names,
        tests,
        f"{file} ({meta.get('name', 'Decathlon')})",
    )


def read_manifest(table: str | os.PathLike[str]) -> Layout:
    """Read a CSV manifest with columns ``image,label[,subject]``.

    Raises:
        FileNotFoundError: For a missing CSV or a listed path that is missing.
        ValueError: For missing columns or an empty table.
    """
    file = Path(table)
    if not file.is_file():
        raise FileNotFoundError(f"manifest {file} does not exist")
    with file.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = set(reader.fieldnames or ())
    if not {"image", "label"} <= columns:
        raise ValueError(
            f"{file} must have the columns image,label (and optionally subject); "
            f"found {sorted(columns)}"
        )
    if not rows:
        raise ValueError(f"{file} lists no volume")
    cases = []
    for r in rows:
        image, label = file.parent / r["image"], file.parent / r["label"]
        for p in (image, label):
            if not p.exists():
                raise FileNotFoundError(f"{file} lists {p}, which does not exist")
        subject = (r.get("subject") or "").strip() or stem(image)
        cases.append(VolumeCase(image, label, subject))
    return Layout(cases, description=str(file))


def resolve(
    root: str | os.PathLike[str] | None,
    images: Sequence[str | os.PathLike[str]] | None,
    labels: Sequence[str | os.PathLike[str]] | None,
    manifest: str | os.PathLike[str] | None,
) -> Layout:
    """The layout from exactly one of ``root`` (a ``dataset.json`` is read when present),
    ``manifest`` or ``images`` + ``labels``.

    Raises:
        ValueError: Unless exactly one source is given, or for unequal lists.
        FileNotFoundError: For missing files.
    """
    given = [root is not None, manifest is not None, images is not None or labels is not None]
    if sum(given) != 1:
        raise ValueError(
            "give either root (a folder or dataset.json), manifest (a CSV) or images + labels "
            "(lists of files), not both"
            if sum(given) > 1
            else "give root (a folder or dataset.json), manifest (a CSV) or both images and "
            "labels (lists of files)"
        )
    if root is not None:
        p = Path(root)
        if p.name == "dataset.json" or (p / "dataset.json").is_file():
            return read_decathlon(p)
        return Layout(find_pairs(p), description=str(p))
    if manifest is not None:
        return read_manifest(manifest)
    if images is None or labels is None:
        raise ValueError("give both images and labels (lists of files)")
    imgs, labs = [Path(p) for p in images], [Path(p) for p in labels]
    if len(imgs) != len(labs) or not imgs:
        raise ValueError(
            "images and labels must be non-empty lists of equal length, got "
            f"{len(imgs)} and {len(labs)}"
        )
    for p in (*imgs, *labs):
        if not p.exists():
            raise FileNotFoundError(f"volume file not found: {p}")
    cases = [VolumeCase(i, lab, stem(i)) for i, lab in zip(imgs, labs, strict=True)]
    return Layout(cases, description="images/labels lists")
