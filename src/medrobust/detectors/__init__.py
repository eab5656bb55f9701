"""Detectors of adversarial inputs, with one interface: fit on clean data, score, threshold at a
chosen clean false-alarm rate.

Example:
    >>> from medrobust.detectors import create_detector
    >>> det = create_detector("uad", fpr=0.05).fit(model, clean_loader)
    >>> det.score(images)      # (B,) higher = more likely adversarial
    >>> det.predict(images)    # (B,) bool, flagged inputs
    >>> det.save("runs/uad"); det = load_detector("runs/uad", model)

Registered detectors: ``uad`` (unsupervised, the default), ``kd-bu`` and ``lid`` (supervised
baselines).
"""

from medrobust.detectors import kdbu as _kdbu  # noqa: F401 (registers "kd-bu")
from medrobust.detectors import lid as _lid  # noqa: F401 (registers "lid")
from medrobust.detectors import uad as _uad  # noqa: F401 (registers "uad")
from medrobust.detectors.base import (
    DETECTORS,
    Detector,
    NotFittedError,
    create_detector,
    list_detectors,
)
from medrobust.detectors.features import capture_features, default_layers
from medrobust.detectors.io import iter_images
from medrobust.detectors.kdbu import KDBU
from medrobust.detectors.lid import LID
from medrobust.detectors.loading import load_detector
from medrobust.detectors.uad import UAD

__all__ = [
    "DETECTORS",
    "KDBU",
    "LID",
    "UAD",
    "Detector",
    "NotFittedError",
    "capture_features",
    "create_detector",
    "default_layers",
    "iter_images",
    "list_detectors",
    "load_detector",
]
