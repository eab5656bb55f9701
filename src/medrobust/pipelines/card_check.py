"""The model card against the data of an audit: channels, dimensions, classes and spacing.

:func:`medrobust.pipelines.audit.check_input_size` compares the input size; this module checks
the rest of what the card records about the data the model was trained on:

* spatial dimensions and channels must agree (the model cannot run otherwise): an error that
  names both;
* classifiers: a data set with more classes than the model is an error (its labels cannot be
  predicted); class names that differ (class index ``i`` would mean two things) are an error
  unless ``allow_class_mismatch``; fewer classes in the data than in the model get a note
  (a data set's class names are those of its image labels, so segmenters skip this check;
  their mask values are checked batch by batch by the audit);
* a voxel spacing that differs from the card's (when both record one): an error unless
  ``allow_size_mismatch`` (a lesion of 10 mm covers another number of voxels, and HD95 in
  mm would compare different scales).

What was allowed is returned as records for the run's config.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from medrobust.pipelines.config import CheckpointAudit

__all__ = ["check_card_data"]

logger = logging.getLogger(__name__)


def _names(values: Sequence[str] | None) -> list[str] | None:
    return None if not values else [str(v).strip().lower() for v in values]


def _classes(settings: CheckpointAudit, card: Any, ds: Any) -> list[dict[str, Any]]:
    """Class count and names of a classifier's card against the data set's labels."""
    k_model = int(card.num_classes)
    k_data = getattr(ds, "num_classes", None)
    src = f"data set {settings.data!r}"
    if k_data is None:
        return []
    k_data = int(k_data)
    if k_data > k_model:
        raise ValueError(
            f"{src} has {k_data} classes but the model predicts {k_model} (model card): its "
            f"labels up to {k_data - 1} cannot be predicted; audit it on data with the model's "
            "classes"
        )
    out: list[dict[str, Any]] = []
    model_names, data_names = _names(card.class_names), _names(getattr(ds, "class_names", None))
    if model_names and data_names and model_names[: len(data_names)] != data_names:
        message = (
            f"the model's classes are {list(card.class_names)} (model card) but {src}'s are "
            f"{list(ds.class_names)}: a class index would mean different things"
        )
        if not settings.allow_class_mismatch:
            raise ValueError(
                f"{message}; give the data the model's class order, or pass "
                "--allow-class-mismatch to audit it anyway"
            )
        out.append({"kind": "classes", "message": message})
    if k_data < k_model:
        out.append(
            {
                "kind": "classes",
                "message": f"{src} holds {k_data} of the model's {k_model} classes",
            }
        )
    return out


def _spacing(settings: CheckpointAudit, card: Any, ds: Any) -> list[dict[str, Any]]:
    """Voxel spacing of the card against the data set's (when both record one)."""
    trained = card.data.spacing
    data = getattr(ds, "spacing", None)
    if not trained or data is None:
        return []
    data = [float(s) for s in data]
    same = len(data) == len(trained) and all(
        math.isclose(a, b, rel_tol=1e-3) for a, b in zip(data, trained, strict=True)
    )
    if same:
        return []
    message = (
        f"the model was trained on voxels of {trained} mm (model card) but data set "
        f"{settings.data!r} has {data} mm"
    )
    if not settings.allow_size_mismatch:
        raise ValueError(
            f"{message}: structures would cover other numbers of voxels than in training; "
            "resample the data to the trained spacing, or pass --allow-size-mismatch to audit "
            "it anyway"
        )
    return [{"kind": "spacing", "message": message, "trained": trained, "data": data}]


def check_card_data(
    settings: CheckpointAudit, card: Any, task: str, ds: Any = None
) -> list[dict[str, Any]]:
    """Check what the model card records about the training data against the audit's data.

    Args:
        settings: The audit settings (data set name, ``allow_class_mismatch``,
            ``allow_size_mismatch``).
        card: The model card.
        task: The model's task.
        ds: The audit's data set (its first item, ``num_classes``, ``class_names`` and
            ``spacing`` are read); built from ``settings`` when None.

    Returns:
        Records ``{"kind", "message", ...}`` of allowed mismatches and notes (also logged).

    Raises:
        ValueError: For another number of spatial dims or channels; for a classifier, more
            classes in the data than the model predicts or other class names (without
            ``allow_class_mismatch``); another spacing (without ``allow_size_mismatch``).
    """
    if ds is None:
        from medrobust.data import create_dataset

        ds = create_dataset(settings.data, split=settings.split, **settings.data_params)
    image = ds[0]["image"]
    dims, channels = int(image.ndim) - 1, int(image.shape[0])
    src = f"data set {settings.data!r} ({settings.split})"
    if dims != card.spatial_dims:
        raise ValueError(
            f"the model is {card.spatial_dims}-D (model card) but {src} gives {dims}-D inputs "
            f"of shape {tuple(image.shape)}; audit it on {card.spatial_dims}-D data"
        )
    if channels != card.in_channels:
        raise ValueError(
            f"the model takes {card.in_channels}-channel inputs (model card) but {src} gives "
            f"{channels} channel(s) (shape {tuple(image.shape)}); convert the data to "
            f"{card.in_channels} channel(s) (e.g. the data set's channels parameter) or audit a "
            "model trained on this data"
        )
    # a data set's class names are those of its image labels, which a segmenter does not
    # predict (its mask values are checked batch by batch by the audit)
    out = _classes(settings, card, ds) if task != "segmentation" else []
    out += _spacing(settings, card, ds)
    for record in out:
        logger.warning("%s", record["message"])
    return out
