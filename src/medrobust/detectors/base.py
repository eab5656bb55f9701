"""The detector interface: fit on clean data, score, threshold at a clean false-alarm rate.

A detector turns an input into a scalar score (higher = more likely adversarial). Every detector
here computes a few *component* scores per input from features of the model (per-layer
Mahalanobis distances for UAD, kernel density and MC-dropout uncertainty for KD+BU, per-layer
LID) and combines them into one score:

* ``combine="zsum"`` (unsupervised): each component is z-scored against clean calibration
  scores and the z-scores are summed (no label and no adversarial example is needed);
* ``combine="logistic"`` (the supervised baselines' protocol): a logistic regression is fitted
  on the standardised components of clean and noisy (negatives) versus adversarial (positives)
  versions of the fit images, the adversarial ones crafted by the attack engine against the
  model's own predictions.

The threshold is the ``(1 - fpr)`` quantile of the combined scores of clean calibration images,
so that about ``fpr`` of clean inputs raise a (false) alarm (see
:mod:`~medrobust.detectors.calibration`). Scores are differentiable in the input
(:meth:`Detector.logits_and_score`), which the adaptive attack needs. A fitted detector is saved
as a folder (:mod:`~medrobust.detectors.io`) and loaded with
:func:`~medrobust.detectors.load_detector`.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from medrobust.attacks.engine import eval_mode
from medrobust.detectors._checks import check_budget, check_fitted_shape, check_int, check_layers
from medrobust.detectors.calibration import (
    calibration_split,
    check_fraction,
    standardiser,
    threshold_at_fpr,
)
from medrobust.detectors.features import (
    capture_features,
    class_feature_statistics,
    collect_features,
    default_layers,
    model_device,
    resolve_layer,
)
from medrobust.detectors.io import iter_images
from medrobust.detectors.logistic import fit_detector_combination
from medrobust.detectors.persistence import describe_detector, restore_fitted, save_detector
from medrobust.models.adapter import ModelAdapter
from medrobust.registry import Registry
from medrobust.types import NotFittedError, Task

__all__ = [
    "DETECTORS",
    "Detector",
    "NotFittedError",
    "create_detector",
    "iter_images",
    "list_detectors",
]

logger = logging.getLogger(__name__)

DETECTORS: Registry[Detector] = Registry("detector")
"""Registry of detectors (``create_detector(name, **params)``)."""

_COMBINE = ("zsum", "logistic")


def create_detector(name: str, **params: Any) -> Detector:
    """Build a registered detector (unfitted).

    Args:
        name: A name from :func:`list_detectors` (``"uad"``, ``"kd-bu"``, ``"lid"``).
        **params: The detector's keyword parameters (e.g. ``fpr=0.05``).

    Returns:
        The detector; call :meth:`Detector.fit` next.

    Raises:
        UnknownNameError: For an unknown name (with suggestions).
        TypeError: For a parameter the detector does not take.
        ValueError: For invalid values.
    """
    return DETECTORS.create(name, **params)


def list_detectors(pattern: str = "*", tag: str | None = None) -> list[str]:
    """Sorted names of the registered detectors matching a shell-style pattern (and tag)."""
    return DETECTORS.list(pattern, tag=tag)


class Detector(abc.ABC):
    """Base class of detectors of adversarial inputs (see the module docstring).

    Subclasses set ``name`` and implement :meth:`component_names`, :meth:`_fit_components`,
    :meth:`_components`, :meth:`_component_state`, :meth:`_load_component_state` and
    :meth:`params`.

    Args:
        fpr: Target clean false-positive rate of the threshold, in ``(0, 1)``.
        layers: Layers whose features are used (names as in :func:`resolve_layer`); None picks
            the default multi-layer set of the architecture.
        batch_size: Batch size of feature extraction and scoring.
        seed: Seed of the calibration split and of every random choice of the detector.
        calibration_fraction: Share of the clean fit images held out to calibrate the
            combination and the threshold when no calibration data is given to :meth:`fit`.
        combine: ``"zsum"`` or ``"logistic"`` (see the module docstring).
        fit_attack: Attack preset crafting the positives of ``combine="logistic"``.
        fit_eps: Budget of ``fit_attack``.

    Attributes:
        model: The model the detector was fitted for (None before fitting).
        layers_: The layers in use after fitting.
        calibration_scores: Combined scores of the clean calibration images.
        fit_info: Sizes and time of the fit.
    """

    name: ClassVar[str] = "detector"

    def __init__(
        self,
        *,
        fpr: float = 0.05,
        layers: Sequence[str] | None = None,
        batch_size: int = 64,
        seed: int = 0,
        calibration_fraction: float = 0.3,
        combine: str = "zsum",
        fit_attack: str | None = None,
        fit_eps: float = 4 / 255,
    ) -> None:
        self.fpr = check_fraction("fpr", fpr)
        self.layers = check_layers(layers)
        self.batch_size = check_int("batch_size", batch_size, 1, "an integer >= 1")
        self.seed = check_int("seed", seed, 0, "a non-negative integer")
        self.calibration_fraction = check_fraction("calibration_fraction", calibration_fraction)
        if combine not in _COMBINE:
            raise ValueError(f"combine must be one of {list(_COMBINE)}, got {combine!r}")
        self.combine = combine
        if combine == "logistic" and not fit_attack:
            raise ValueError("combine='logistic' needs fit_attack, e.g. fit_attack='fgsm'")
        if fit_attack is not None:
            from medrobust.attacks.presets import ATTACKS

            ATTACKS.get(fit_attack)  # unknown names fail now, with suggestions
        self.fit_attack = fit_attack
        self.fit_eps = check_budget("fit_eps", fit_eps)
        self.model: ModelAdapter | None = None
        self.layers_: list[str] = []
        self.calibration_scores: torch.Tensor | None = None
        self.fit_info: dict[str, Any] = {}
        self._mu: torch.Tensor | None = None
        self._sigma: torch.Tensor | None = None
        self._w: torch.Tensor | None = None
        self._b: torch.Tensor | None = None
        self._threshold: float | None = None
        self._scale = 1.0
        self._input_shape: list[int] = []
        self._feature_dims: dict[str, int] = {}
        self._class_features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- subclass interface
    @abc.abstractmethod
    def component_names(self) -> list[str]:
        """Names of the component scores (e.g. one per layer)."""

    @abc.abstractmethod
    def _fit_components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> None:
        """Fit the component statistics on clean features ``(N, D_l)`` and logits ``(N, K)``."""

    @abc.abstractmethod
    def _components(self, feats: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Component scores ``(B, M)`` (higher = more anomalous), differentiable in the
        features."""

    @abc.abstractmethod
    def _component_state(self) -> dict[str, torch.Tensor]:
        """The fitted component statistics as tensors."""

    @abc.abstractmethod
    def _load_component_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`_component_state` output."""

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """The factory keyword arguments that rebuild this (unfitted) detector."""

    def _base_params(self) -> dict[str, Any]:
        return {
            "fpr": self.fpr,
            "layers": self.layers,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "calibration_fraction": self.calibration_fraction,
        }

    # ---------------------------------------------------------------- state
    @property
    def fitted(self) -> bool:
        """Whether the detector has been fitted (or loaded)."""
        return self.model is not None and self._threshold is not None

    def _check_fitted(self) -> ModelAdapter:
        if self.model is None or self._threshold is None:
            raise NotFittedError(
                f"detector {self.name!r} is not fitted: call .fit(model, clean_loader) first, or "
                "load a fitted one with medrobust.detectors.load_detector(path, model)"
            )
        return self.model

    @property
    def threshold(self) -> float:
        """The decision threshold: inputs scoring above it are flagged.

        Raises:
            NotFittedError: Before fitting.
        """
        self._check_fitted()
        return float(self._threshold)  # type: ignore[arg-type]  # set whenever fitted

    @property
    def score_scale(self) -> float:
        """Standard deviation of the clean calibration scores (a natural unit of the score).

        Raises:
            NotFittedError: Before fitting.
        """
        self._check_fitted()
        return self._scale

    def set_fpr(self, fpr: float) -> float:
        """Move the threshold to another clean false-positive rate.

        Args:
            fpr: Target rate in ``(0, 1)``.

        Returns:
            The new threshold.

        Raises:
            NotFittedError: Before fitting.
            ValueError: If ``fpr`` is outside ``(0, 1)``.
        """
        self._check_fitted()
        self.fpr = check_fraction("fpr", fpr)
        self._calibrate()
        return self.threshold

    def set_threshold(self, threshold: float) -> None:
        """Use a threshold chosen by hand (e.g. an operating point read off a ROC curve).

        ``fpr`` keeps the target rate of the last calibration; :meth:`describe` reports the
        share of calibration scores above the new threshold as ``calibration_fpr``.

        Args:
            threshold: Inputs scoring above it are flagged (``inf`` flags nothing, ``-inf``
                everything).

        Raises:
            NotFittedError: Before fitting.
            TypeError: If ``threshold`` is not a number.
            ValueError: If it is NaN.
        """
        self._check_fitted()
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
        if math.isnan(threshold):
            raise ValueError("threshold must not be NaN")
        self._threshold = float(threshold)

    def _calibrate(self) -> None:
        scores = self.calibration_scores
        if scores is None or scores.numel() == 0:
            raise NotFittedError(f"detector {self.name!r} has no calibration scores")
        self._threshold, self._scale = threshold_at_fpr(scores, self.fpr)

    # ---------------------------------------------------------------- features
    def check_model(self, model: Any) -> ModelAdapter:
        """The model, checked to be a classifier :class:`~medrobust.models.ModelAdapter`.

        Raises:
            TypeError: If ``model`` is not a ModelAdapter.
            ValueError: If it is not a classifier.
        """
        if not isinstance(model, ModelAdapter):
            raise TypeError(
                f"model must be a medrobust ModelAdapter, got {type(model).__name__}; wrap it with "
                "medrobust.models.ModelAdapter or build it with create_model"
            )
        if model.task is not Task.CLASSIFICATION:
            raise ValueError(
                f"detector {self.name!r} guards classifiers, but the model's task is "
                f"{model.task.value!r}"
            )
        return model

    def _collect(
        self, model: ModelAdapter, data: Any, *, keep_images: bool, what: str
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None]:
        return collect_features(
            model, data, self.layers_, self.batch_size, keep_images=keep_images, what=what
        )

    def _uses_images(self) -> bool:
        """Whether the components need the input images, not only the features of the layers
        (input preprocessing, squeezed inputs); such detectors override
        :meth:`_image_components`."""
        return False

    def _default_layers(self, model: ModelAdapter, example: torch.Tensor) -> list[str]:
        """The layers read when none are named (the architecture's multi-layer set)."""
        return default_layers(model, example)

    def _image_components(
        self, model: ModelAdapter, images: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, K)`` and component scores ``(B, M)`` of a batch, differentiable in
        ``images``; by default the components of the hooked features."""
        with capture_features(model, self.layers_) as cap:
            logits = model(images)
            comp = self._components(cap.features, logits)
        return logits, comp

    def _components_of(
        self,
        model: ModelAdapter,
        feats: Mapping[str, torch.Tensor],
        logits: torch.Tensor,
        images: torch.Tensor | None,
    ) -> torch.Tensor:
        """Component scores ``(N, M)`` of collected data, without gradients: from the images
        (batch by batch) when the detector needs them, else from the features."""
        if not self._uses_images():
            with torch.no_grad():
                return self._components(feats, logits)
        if images is None:
            raise RuntimeError(f"detector {self.name!r} needs the images to score them")
        out = []
        with eval_mode(model):
            for x in iter_images(images, self.batch_size):
                with torch.no_grad():
                    out.append(self._image_components(model, x)[1].detach())
        return torch.cat(out)

    # ---------------------------------------------------------------- fitting
    def fit(self, model: ModelAdapter, clean: Any, *, calibration: Any = None) -> Detector:
        """Fit the detector on clean images (labels, if present, are not used).

        The component statistics are fitted on ``clean``; the combination's standardisation
        and the threshold on a separate calibration set (``calibration``, or a seeded held-out
        share of ``clean``), so the threshold is not set on the images the statistics were
        fitted on.

        Args:
            model: The classifier to guard (a :class:`~medrobust.models.ModelAdapter`).
            clean: Clean images: a data loader, a data set or a ``(N, C, *spatial)`` tensor.
            calibration: Other clean images to standardise the components and set the
                threshold; None holds out ``calibration_fraction`` of ``clean``.

        Returns:
            ``self``, fitted.

        Raises:
            TypeError: If ``model`` is not a ModelAdapter or the data has the wrong form.
            ValueError: If the model is not a classifier, the data is empty or does not match
                the model, a layer does not exist, or too few images are given.
        """
        model = self.check_model(model)
        t0 = time.perf_counter()
        first = next(iter_images(clean, self.batch_size), None)
        if first is None:
            raise ValueError("the clean data is empty; the detector needs clean images to fit")
        example = first.to(model_device(model)).float()
        model.check_input(example, "clean images")
        self.layers_ = [
            resolve_layer(model, n)[0] if n != "penultimate" else n
            for n in (self.layers or self._default_layers(model, example))
        ]
        self.model = model
        self._threshold = None
        self._input_shape = list(example.shape[1:])
        try:
            sizes = self._fit_and_calibrate(model, clean, calibration)
        except BaseException:
            self.model = None
            self._threshold = None
            raise
        self.fit_info = {
            **sizes,
            "calibration_source": "held-out" if calibration is None else "separate",
            "time_s": time.perf_counter() - t0,
        }
        logger.info(
            "fitted detector %s on %d clean images (%d for calibration), threshold %.4g",
            self.name,
            self.fit_info["n_fit"],
            self.fit_info["n_calibration"],
            self.threshold,
        )
        return self

    def _fit_and_calibrate(
        self, model: ModelAdapter, clean: Any, calibration: Any
    ) -> dict[str, int]:
        """Fit the components and the combination, then set the threshold; returns the sizes
        (``n_fit``, ``n_calibration``, ``n_adversarial``)."""
        logistic = self.combine == "logistic"
        keep = logistic or self._uses_images()
        feats, logits, images = self._collect(model, clean, keep_images=keep, what="clean")
        if calibration is None:
            cal_idx, fit_idx = calibration_split(
                logits.shape[0], self.calibration_fraction, self.seed, logits.device
            )
            cal_feats = {k: v[cal_idx] for k, v in feats.items()}
            cal_logits = logits[cal_idx]
            cal_images = None if images is None else images[cal_idx]
            feats = {k: v[fit_idx] for k, v in feats.items()}
            logits = logits[fit_idx]
            if images is not None:
                images = images[fit_idx]
        else:
            cal_feats, cal_logits, cal_images = self._collect(
                model, calibration, keep_images=self._uses_images(), what="calibration"
            )
        self._feature_dims = {k: int(v.shape[1]) for k, v in feats.items()}
        self._class_features = class_feature_statistics(feats, logits)
        with torch.no_grad():
            self._fit_components(feats, logits)
        cal_comp = self._components_of(model, cal_feats, cal_logits, cal_images)
        n_adv = 0
        if logistic and images is not None:
            n_adv = self._fit_logistic(model, feats, logits, images)
        else:
            self._mu, self._sigma = standardiser(cal_comp)
            self._w, self._b = None, None
        with torch.no_grad():
            self.calibration_scores = self._combine(cal_comp).detach()
        self._calibrate()
        return {
            "n_fit": int(logits.shape[0]),
            "n_calibration": int(cal_logits.shape[0]),
            "n_adversarial": n_adv,
        }

    def _fit_logistic(
        self,
        model: ModelAdapter,
        feats: Mapping[str, torch.Tensor],
        logits: torch.Tensor,
        images: torch.Tensor,
    ) -> int:
        """Fit the logistic combination (see
        :func:`~medrobust.detectors.logistic.fit_detector_combination`); returns the number of
        adversarial examples."""
        return fit_detector_combination(self, model, feats, logits, images)

    def _combine(self, comp: torch.Tensor) -> torch.Tensor:
        if self._mu is None or self._sigma is None:
            raise NotFittedError(f"detector {self.name!r} is not fitted")
        z = (comp - self._mu.to(comp)) / self._sigma.to(comp)
        if self._w is not None and self._b is not None:
            return z @ self._w.to(comp) + self._b.to(comp)
        return z.sum(dim=1)

    # ---------------------------------------------------------------- scoring
    def logits_and_score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's logits and the detector score of a batch in one forward pass.

        Differentiable with respect to ``images`` (the adaptive attack uses it); runs the model
        in whatever mode it is in.

        Args:
            images: Inputs inside the model's bounds.

        Returns:
            ``(logits (B, K), scores (B,))``.

        Raises:
            NotFittedError: Before fitting.

        Shape:
            - images: ``(B, C, *spatial)``.
        """
        model = self._check_fitted()
        logits, comp = self._image_components(model, images)
        return logits, self._combine(comp)

    def layer_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The spatially averaged features ``{layer: (B, D_l)}`` the detector reads,
        differentiable in ``images`` (feature-matching attacks use them)."""
        model = self._check_fitted()
        with capture_features(model, self.layers_) as cap:
            model(images)
            return dict(cap.features)

    def feature_statistics(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the class means ``(K, D)`` of the clean fit features (classes: the
        model's predictions; a class never predicted has the mean of all) and their standard
        deviation ``(D,)``; empty for a detector that reads no layer.

        Raises:
            NotFittedError: Before fitting.
        """
        self._check_fitted()
        return dict(self._class_features)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Detector scores (higher = more likely adversarial), without gradients.

        Args:
            images: Inputs inside the model's bounds.

        Returns:
            ``(B,)`` float scores.

        Raises:
            NotFittedError: Before fitting.
            ValueError: If the images do not match the model (rank, channels, bounds).

        Shape:
            - images: ``(B, C, *spatial)``.
        """
        model = self._check_fitted()
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        model.check_input(images)
        check_fitted_shape(self.name, self._input_shape, images)
        out = []
        with torch.no_grad(), eval_mode(model):
            for x in iter_images(images, self.batch_size):
                out.append(self.logits_and_score(x.to(model_device(model)))[1])
        return torch.cat(out)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Whether each input is flagged as adversarial (score above the threshold).

        Returns:
            ``(B,)`` bool.

        Raises:
            NotFittedError: Before fitting.

        Shape:
            - images: ``(B, C, *spatial)``.
        """
        return self.score(images) > self.threshold

    def __repr__(self) -> str:
        state = f"threshold={self._threshold:.4g}" if self.fitted else "unfitted"
        return f"{type(self).__name__}({self.params()}, {state})"

    # ---------------------------------------------------------------- persistence
    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description (name, parameters, threshold, layers, fit sizes);
        see :func:`~medrobust.detectors.persistence.describe_detector`."""
        return describe_detector(self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the fitted detector into folder ``path`` (``detector.json`` + ``state.pt``).

        Both files are written atomically; the model itself is not saved.

        Returns:
            The folder.

        Raises:
            NotFittedError: Before fitting.
        """
        return save_detector(self, path)

    def load_fitted(
        self, model: ModelAdapter, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> None:
        """Take the fitted state saved by :meth:`save` (see
        :func:`~medrobust.detectors.load_detector`, which checks the model first).

        Args:
            model: The model the detector guards.
            meta: The saved description (``layers``, ``input_shape``, ``feature_dims``, ``fpr``,
                ``fit_info``).
            tensors: The saved state (``mu``, ``sigma``, ``calibration_scores``, optional ``w``,
                ``b`` and ``threshold``, and the ``component.*`` statistics).
        """
        restore_fitted(self, model, meta, tensors)
