"""Detectors of adversarial inputs, with one interface: fit on clean data, score, threshold at a
chosen clean false-alarm rate.

Example:
    >>> from medrobust.detectors import create_detector
    >>> det = create_detector("uad", fpr=0.05).fit(model, clean_loader)
    >>> det.score(images)      # (B,) higher = more likely adversarial
    >>> det.predict(images)    # (B,) bool, flagged inputs
    >>> det.save("runs/uad"); det = load_detector("runs/uad", model)

Registered detectors: ``uad`` (unsupervised, the default), ``mahalanobis`` (Lee et al.) and
``feature-squeezing`` (Xu et al.), which need no adversarial example, and ``kd-bu`` and ``lid``
(supervised baselines).
"""

from medrobust.detectors import kdbu as _kdbu  # noqa: F401 (registers "kd-bu")
from medrobust.detectors import lid as _lid  # noqa: F401 (registers "lid")
from medrobust.detectors import mahalanobis as _mahalanobis  # noqa: F401 (registers it)
from medrobust.detectors import squeeze as _squeeze  # noqa: F401 ("feature-squeezing")
from medrobust.detectors import uad as _uad  # noqa: F401 (registers "uad")
from medrobust.detectors.base import (
    DETECTORS,
    Detector,
    NotFittedError,
    create_detector,
    list_detectors,
)
from medrobust.detectors.features import capture_features, default_layers
from medrobust.detectors.gaussian import GaussianStats, layer_statistics
from medrobust.detectors.io import iter_images
from medrobust.detectors.kdbu import KDBU
from medrobust.detectors.lid import LID
from medrobust.detectors.loading import load_detector
from medrobust.detectors.mahalanobis import Mahalanobis
from medrobust.detectors.squeeze import FeatureSqueezing
from medrobust.detectors.uad import UAD

__all__ = [
    "DETECTORS",
    "KDBU",
    "LID",
    "UAD",
    "Detector",
    "FeatureSqueezing",
    "GaussianStats",
    "Mahalanobis",
    "NotFittedError",
    "capture_features",
    "create_detector",
    "default_layers",
    "iter_images",
    "layer_statistics",
    "list_detectors",
    "load_detector",
]
