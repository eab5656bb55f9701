"""Loading a saved detector and attaching it to a model, with checks that it is the right one.

A detector folder (see :mod:`medrobust.detectors.io`) records the model it was fitted for
(``num_classes``, ``in_channels``, ``spatial_dims``) and the feature size of every layer it
reads; :func:`load_detector` refuses a model that differs in any of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from medrobust.attacks.engine import eval_mode
from medrobust.detectors.base import Detector, create_detector
from medrobust.detectors.features import capture_features, model_device
from medrobust.detectors.io import read_detector_files
from medrobust.models.adapter import ModelAdapter

__all__ = ["check_saved_model", "load_detector"]


def check_saved_model(model: ModelAdapter, meta: Mapping[str, Any]) -> None:
    """Check that ``model`` is the kind of model a saved detector was fitted for.

    Args:
        model: The classifier to attach.
        meta: The saved description (``model``, ``layers``, ``input_shape``,
            ``feature_dims``).

    Raises:
        ValueError: If the number of classes, channels or spatial dimensions differ, or a layer
            the detector reads has another feature size (one forward pass of a constant probe).
    """
    saved = meta.get("model") or {}
    now = model.describe()
    for key in ("num_classes", "in_channels", "spatial_dims"):
        if saved.get(key) != now.get(key):
            raise ValueError(
                f"the detector was fitted for a model with {key}={saved.get(key)!r}, but this "
                f"model has {key}={now.get(key)!r}"
            )
    layers = [str(n) for n in meta["layers"]]
    shape = [int(s) for s in meta["input_shape"]]
    probe = torch.full((1, *shape), model.bounds.low, device=model_device(model))
    with torch.no_grad(), eval_mode(model), capture_features(model, layers) as cap:
        model(probe)
    for name, dim in meta["feature_dims"].items():
        got = int(cap.features[str(name)].shape[1])
        if got != int(dim):
            raise ValueError(
                f"layer {name!r} of this model has {got} features, but the detector was fitted "
                f"on {dim}: it belongs to another model"
            )


def load_detector(path: str | os.PathLike[str], model: ModelAdapter) -> Detector:
    """Load a detector saved with :meth:`Detector.save` and attach it to ``model``.

    Args:
        path: The folder holding ``detector.json`` and ``state.pt``.
        model: The classifier it was fitted for.

    Returns:
        The fitted detector.

    Raises:
        FileNotFoundError: If the folder or one of its files is missing.
        TypeError: If ``model`` is not a ModelAdapter.
        ValueError: If the files are not a medrobust detector, or the model does not match the
            one the detector was fitted for (task, classes, channels, feature sizes).
    """
    meta, tensors = read_detector_files(path)
    detector = create_detector(str(meta["name"]), **dict(meta.get("params") or {}))
    model = detector.check_model(model)
    check_saved_model(model, meta)
    detector.load_fitted(model, meta, tensors)
    return detector
