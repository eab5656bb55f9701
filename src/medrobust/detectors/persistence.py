"""Describing, saving and restoring a fitted detector (the bodies of :meth:`Detector.describe`,
:meth:`Detector.save` and :meth:`Detector.load_fitted`).

A fitted detector is its factory parameters, its calibration (threshold, clean calibration
scores, the combination ``mu``/``sigma``/``w``/``b``) and the statistics of its components; the
files are written by :func:`~medrobust.detectors.io.write_detector_files`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medrobust._version import __version__
from medrobust.detectors.calibration import check_fraction
from medrobust.detectors.features import model_device
from medrobust.detectors.io import write_detector_files
from medrobust.models.adapter import ModelAdapter
from medrobust.types import NotFittedError

if TYPE_CHECKING:
    from medrobust.detectors.base import Detector

__all__ = ["describe_detector", "restore_fitted", "save_detector"]


def describe_detector(det: Detector) -> dict[str, Any]:
    """A JSON-serialisable description: name, parameters and, once fitted, the threshold, the
    nominal ``fpr``, the share of calibration scores above the threshold
    (``calibration_fpr``), the layers, components, combination and fit sizes."""
    out: dict[str, Any] = {"name": det.name, "params": det.params(), "fitted": det.fitted}
    if det.fitted:
        cal = det.calibration_scores
        out.update(
            {
                "threshold": det.threshold,
                "fpr": det.fpr,
                "calibration_fpr": float((cal > det.threshold).double().mean())
                if cal is not None
                else None,
                "score_scale": det.score_scale,
                "layers": list(det.layers_),
                "components": det.component_names(),
                "combine": det.combine,
                **det.fit_info,
            }
        )
    return out


def save_detector(det: Detector, path: str | os.PathLike[str]) -> Path:
    """Write ``detector.json`` and ``state.pt`` of a fitted detector into folder ``path``.

    Raises:
        NotFittedError: Before fitting.
    """
    model = det._check_fitted()
    if det._mu is None or det._sigma is None or det.calibration_scores is None:
        raise NotFittedError(f"detector {det.name!r} has no fitted combination to save")
    tensors: dict[str, torch.Tensor] = {
        "calibration_scores": det.calibration_scores,
        "mu": det._mu,
        "sigma": det._sigma,
        "threshold": torch.tensor(det.threshold, dtype=torch.float64),
    }
    if det._w is not None and det._b is not None:
        tensors["w"], tensors["b"] = det._w, det._b
    for k, v in det._component_state().items():
        tensors[f"component.{k}"] = v
    for i, n in enumerate(det.layers_):
        if n in det._class_features:
            tensors[f"feature_means{i}"], tensors[f"feature_std{i}"] = det._class_features[n]
    meta = {
        "medrobust_version": __version__,
        "name": det.name,
        "params": det.params(),
        "fpr": det.fpr,
        "threshold": det.threshold,
        "layers": det.layers_,
        "input_shape": det._input_shape,
        "feature_dims": det._feature_dims,
        "model": model.describe(),
        "fit_info": det.fit_info,
    }
    return write_detector_files(path, meta, tensors)


def restore_fitted(
    det: Detector,
    model: ModelAdapter,
    meta: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
) -> None:
    """Give ``det`` the fitted state saved by :func:`save_detector` (the model is checked by
    :func:`~medrobust.detectors.load_detector` first)."""
    dev = model_device(model)
    det.layers_ = [str(n) for n in meta["layers"]]
    det._input_shape = [int(s) for s in meta["input_shape"]]
    det._feature_dims = {str(k): int(v) for k, v in meta["feature_dims"].items()}
    det._mu = tensors["mu"].to(dev)
    det._sigma = tensors["sigma"].to(dev)
    det._w = tensors["w"].to(dev) if "w" in tensors else None
    det._b = tensors["b"].to(dev) if "b" in tensors else None
    det.calibration_scores = tensors["calibration_scores"].to(dev)
    prefix = "component."
    det._load_component_state(
        {k[len(prefix) :]: v.to(dev) for k, v in tensors.items() if k.startswith(prefix)}
    )
    det._class_features = {
        n: (tensors[f"feature_means{i}"].to(dev), tensors[f"feature_std{i}"].to(dev))
        for i, n in enumerate(det.layers_)
        if f"feature_means{i}" in tensors and f"feature_std{i}" in tensors
    }
    det.fit_info = dict(meta.get("fit_info") or {})
    det.model = model
    det.fpr = check_fraction("fpr", meta["fpr"])
    det._calibrate()
    if "threshold" in tensors:  # the saved operating point (also a hand-set one)
        det._threshold = float(tensors["threshold"])
