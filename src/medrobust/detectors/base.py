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
so that about ``fpr`` of clean inputs raise a (false) alarm. Scores are differentiable in the
input (:meth:`Detector.logits_and_score`), which the adaptive attack needs.

A fitted detector is saved as a folder with ``detector.json`` (name, parameters, threshold,
layers, model description) and ``state.pt`` (tensors only, loadable with ``weights_only=True``).
"""

from __future__ import annotations

import abc
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset

from medrobust._utils.io import atomic_torch_save
from medrobust.attacks.engine import eval_mode
from medrobust.detectors.features import capture_features, default_layers, resolve_layer
from medrobust.detectors.logistic import fit_logistic
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
    "load_detector",
]

logger = logging.getLogger(__name__)

DETECTORS: Registry[Detector] = Registry("detector")
"""Registry of detectors (``create_detector(name, **params)``)."""

FORMAT = "medrobust-detector"
FORMAT_VERSION = 1
_META = "detector.json"
_STATE = "state.pt"
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


def _check_fraction(name: str, value: Any, *, open_high: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    ok = 0.0 < v < 1.0 if open_high else 0.0 < v <= 1.0
    if not (math.isfinite(v) and ok):
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return v


def iter_images(data: Any, batch_size: int = 64) -> Iterator[torch.Tensor]:
    """Image batches from a tensor, a data set, a data loader or any iterable of batches.

    Batches may be dicts with ``"image"`` (labels are ignored), tuples ``(images, ...)`` or
    tensors; a ``(N, C, *spatial)`` tensor is cut into batches of ``batch_size``; a map-style
    data set is batched by a plain :class:`~torch.utils.data.DataLoader`.

    Raises:
        TypeError: For a batch of another kind.
    """
    if isinstance(data, torch.Tensor):
        for i in range(0, data.shape[0], batch_size):
            yield data[i : i + batch_size]
        return
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    if not isinstance(data, Iterable):
        raise TypeError(
            f"expected images as a tensor, a data set or a data loader, got {type(data).__name__}"
        )
    for batch in data:
        if isinstance(batch, Mapping):
            if "image" not in batch:
                raise TypeError(f"a batch dict needs an 'image' key, got keys {sorted(batch)}")
            yield batch["image"]
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            yield batch[0]
        elif isinstance(batch, torch.Tensor):
            yield batch
        else:
            raise TypeError(
                "batches must be dicts with 'image', tuples (images, ...) or tensors, got "
                f"{type(batch).__name__}"
            )


def _device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


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
        self.fpr = _check_fraction("fpr", fpr)
        if layers is not None:
            if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
                raise TypeError(f"layers must be a list of layer names, got {layers!r}")
            if not layers:
                raise ValueError("layers is empty; name at least one layer or pass None")
        self.layers = None if layers is None else list(layers)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.calibration_fraction = _check_fraction("calibration_fraction", calibration_fraction)
        if combine not in _COMBINE:
            raise ValueError(f"combine must be one of {list(_COMBINE)}, got {combine!r}")
        self.combine = combine
        if combine == "logistic" and not fit_attack:
            raise ValueError("combine='logistic' needs fit_attack, e.g. fit_attack='fgsm'")
        if fit_attack is not None:
            from medrobust.attacks.presets import ATTACKS

            ATTACKS.get(fit_attack)  # unknown names fail now, with suggestions
        self.fit_attack = fit_attack
        if (
            isinstance(fit_eps, bool)
            or not isinstance(fit_eps, (int, float))
            or not (math.isfinite(fit_eps) and fit_eps > 0)
        ):
            raise ValueError(f"fit_eps must be a finite number > 0, got {fit_eps!r}")
        self.fit_eps = float(fit_eps)
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
        self.fpr = _check_fraction("fpr", fpr)
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
        q = torch.quantile(scores.double(), 1.0 - self.fpr, interpolation="higher")
        self._threshold = float(q)
        std = float(scores.double().std()) if scores.numel() > 1 else 1.0
        self._scale = std if math.isfinite(std) and std > 1e-8 else 1.0

    # ---------------------------------------------------------------- features
    def _check_model(self, model: Any) -> ModelAdapter:
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
        """Features ``(N, D_l)``, logits ``(N, K)`` and (optionally) images of ``data``."""
        feats: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers_}
        logits: list[torch.Tensor] = []
        images: list[torch.Tensor] = []
        dev = _device(model)
        with torch.no_grad(), eval_mode(model), capture_features(model, self.layers_) as cap:
            for x in iter_images(data, self.batch_size):
                x = x.to(dev).float()
                model.check_input(x, f"{what} images")
                cap.clear()
                logits.append(model(x))
                for n in self.layers_:
                    feats[n].append(cap.features[n])
                if keep_images:
                    images.append(x)
        if not logits:
            raise ValueError(f"the {what} data is empty; the detector needs clean images")
        out = {n: torch.cat(v) for n, v in feats.items()}
        return out, torch.cat(logits), (torch.cat(images) if keep_images else None)

    # ---------------------------------------------------------------- fitting
    def fit(self, model: ModelAdapter, clean: Any, *, calibration: Any = None) -> Detector:
        """Fit the detector on clean images (labels, if present, are not used).

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
        model = self._check_model(model)
        t0 = time.perf_counter()
        first = next(iter_images(clean, self.batch_size), None)
        if first is None:
            raise ValueError("the clean data is empty; the detector needs clean images to fit")
        example = first.to(_device(model)).float()
        model.check_input(example, "clean images")
        self.layers_ = [
            resolve_layer(model, n)[0] if n != "penultimate" else n
            for n in (self.layers or default_layers(model, example))
        ]
        self.model = model
        self._threshold = None
        logistic = self.combine == "logistic"
        try:
            feats, logits, images = self._collect(model, clean, keep_images=logistic, what="clean")
            n = logits.shape[0]
            if calibration is None:
                if n < 4:
                    raise ValueError(
                        f"the detector needs at least 4 clean images to fit and calibrate, got {n}"
                    )
                gen = torch.Generator().manual_seed(self.seed)
                perm = torch.randperm(n, generator=gen).to(logits.device)
                n_cal = min(n - 2, max(2, round(self.calibration_fraction * n)))
                cal_idx, fit_idx = perm[:n_cal], perm[n_cal:]
                cal_feats = {k: v[cal_idx] for k, v in feats.items()}
                cal_logits = logits[cal_idx]
                feats = {k: v[fit_idx] for k, v in feats.items()}
                logits = logits[fit_idx]
                if images is not None:
                    images = images[fit_idx]
            else:
                cal_feats, cal_logits, _ = self._collect(
                    model, calibration, keep_images=False, what="calibration"
                )
            self._input_shape = list(example.shape[1:])
            self._feature_dims = {k: int(v.shape[1]) for k, v in feats.items()}
            with torch.no_grad():
                self._fit_components(feats, logits)
                cal_comp = self._components(cal_feats, cal_logits)
            n_adv = 0
            if logistic and images is not None:
                n_adv = self._fit_logistic(model, feats, logits, images)
            else:
                self._mu = cal_comp.mean(dim=0)
                sd = cal_comp.std(dim=0) if cal_comp.shape[0] > 1 else torch.ones_like(self._mu)
                self._sigma = torch.where(torch.isfinite(sd) & (sd > 1e-8), sd, torch.ones_like(sd))
                self._w, self._b = None, None
            with torch.no_grad():
                self.calibration_scores = self._combine(cal_comp).detach()
            self._calibrate()
        except BaseException:
            self.model = None
            self._threshold = None
            raise
        self.fit_info = {
            "n_fit": int(logits.shape[0]),
            "n_calibration": int(cal_logits.shape[0]),
            "n_adversarial": n_adv,
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

    def _fit_logistic(
        self,
        model: ModelAdapter,
        feats: Mapping[str, torch.Tensor],
        logits: torch.Tensor,
        images: torch.Tensor,
    ) -> int:
        from medrobust.attacks.presets import create_attack

        attack = create_attack(str(self.fit_attack), eps=self.fit_eps, seed=self.seed)
        pred = logits.argmax(dim=1)
        adv: list[torch.Tensor] = []
        for i in range(0, images.shape[0], self.batch_size):
            x, y = images[i : i + self.batch_size], pred[i : i + self.batch_size]
            res = attack(model, x, y)
            adv.append(res.x_adv[res.success])
        x_adv = torch.cat(adv)
        if x_adv.shape[0] < 2:
            raise ValueError(
                f"the fit attack {self.fit_attack!r} at eps={self.fit_eps:.4g} fooled the model on "
                f"{x_adv.shape[0]} clean image(s); the logistic combination needs adversarial "
                "examples: raise fit_eps, or pass fit_attack=None for the unsupervised z-score "
                "combination"
            )
        gen = torch.Generator().manual_seed(self.seed + 1)
        signs = torch.randint(0, 2, images.shape, generator=gen).to(images) * 2 - 1
        bounds = model.bounds
        noisy = bounds.clamp(images + self.fit_eps * signs)
        with torch.no_grad():
            clean_comp = self._components(feats, logits)
            nf, nl, _ = self._collect(model, noisy, keep_images=False, what="noisy")
            af, al, _ = self._collect(model, x_adv, keep_images=False, what="adversarial")
            noisy_comp = self._components(nf, nl)
            adv_comp = self._components(af, al)
        self._mu = clean_comp.mean(dim=0)
        sd = clean_comp.std(dim=0)
        self._sigma = torch.where(torch.isfinite(sd) & (sd > 1e-8), sd, torch.ones_like(sd))
        x = torch.cat([clean_comp, noisy_comp, adv_comp])
        z = (x - self._mu) / self._sigma
        y = torch.cat(
            [
                torch.zeros(clean_comp.shape[0] + noisy_comp.shape[0]),
                torch.ones(adv_comp.shape[0]),
            ]
        )
        w, b = fit_logistic(z.cpu(), y)
        self._w, self._b = w.to(x.device), b.to(x.device)
        return int(adv_comp.shape[0])

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
        with capture_features(model, self.layers_) as cap:
            logits = model(images)
            comp = self._components(cap.features, logits)
        return logits, self._combine(comp)

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
        out = []
        with torch.no_grad(), eval_mode(model):
            for x in iter_images(images, self.batch_size):
                out.append(self.logits_and_score(x.to(_device(model)))[1])
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

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description (name, parameters, threshold, layers, fit sizes)."""
        out: dict[str, Any] = {"name": self.name, "params": self.params(), "fitted": self.fitted}
        if self.fitted:
            out.update(
                {
                    "threshold": self.threshold,
                    "fpr": self.fpr,
                    "calibration_fpr": float(
                        (self.calibration_scores > self.threshold).double().mean()
                    )
                    if self.calibration_scores is not None
                    else None,
                    "score_scale": self._scale,
                    "layers": list(self.layers_),
                    "components": self.component_names(),
                    "combine": self.combine,
                    **self.fit_info,
                }
            )
        return out

    def __repr__(self) -> str:
        state = f"threshold={self._threshold:.4g}" if self.fitted else "unfitted"
        return f"{type(self).__name__}({self.params()}, {state})"

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the fitted detector into folder ``path`` (``detector.json`` + ``state.pt``).

        Both files are written atomically; the model itself is not saved.

        Returns:
            The folder.

        Raises:
            NotFittedError: Before fitting.
        """
        from medrobust._utils.io import write_json_atomic

        model = self._check_fitted()
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        if self._mu is None or self._sigma is None or self.calibration_scores is None:
            raise NotFittedError(f"detector {self.name!r} has no fitted combination to save")
        tensors: dict[str, torch.Tensor] = {
            "calibration_scores": self.calibration_scores.detach().cpu(),
            "mu": self._mu.detach().cpu(),
            "sigma": self._sigma.detach().cpu(),
            "threshold": torch.tensor(self.threshold, dtype=torch.float64),
        }
        if self._w is not None and self._b is not None:
            tensors["w"], tensors["b"] = self._w.detach().cpu(), self._b.detach().cpu()
        for k, v in self._component_state().items():
            tensors[f"component.{k}"] = v.detach().cpu()
        atomic_torch_save(tensors, folder / _STATE)
        from medrobust._version import __version__

        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "medrobust_version": __version__,
            "name": self.name,
            "params": self.params(),
            "fpr": self.fpr,
            "threshold": self.threshold,
            "layers": self.layers_,
            "input_shape": self._input_shape,
            "feature_dims": self._feature_dims,
            "model": model.describe(),
            "fit_info": self.fit_info,
        }
        write_json_atomic(folder / _META, meta)
        return folder

    def _restore(
        self, model: ModelAdapter, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]
    ) -> None:
        model = self._check_model(model)
        saved = meta.get("model") or {}
        now = model.describe()
        for key in ("num_classes", "in_channels", "spatial_dims"):
            if saved.get(key) != now.get(key):
                raise ValueError(
                    f"the detector was fitted for a model with {key}={saved.get(key)!r}, but this "
                    f"model has {key}={now.get(key)!r}"
                )
        dev = _device(model)
        self.layers_ = [str(n) for n in meta["layers"]]
        self._input_shape = [int(s) for s in meta["input_shape"]]
        self._feature_dims = {str(k): int(v) for k, v in meta["feature_dims"].items()}
        probe = torch.full((1, *self._input_shape), model.bounds.low, device=dev)
        with torch.no_grad(), eval_mode(model), capture_features(model, self.layers_) as cap:
            model(probe)
        for name, dim in self._feature_dims.items():
            got = int(cap.features[name].shape[1])
            if got != dim:
                raise ValueError(
                    f"layer {name!r} of this model has {got} features, but the detector was fitted "
                    f"on {dim}: it belongs to another model"
                )
        self._mu = tensors["mu"].to(dev)
        self._sigma = tensors["sigma"].to(dev)
        self._w = tensors["w"].to(dev) if "w" in tensors else None
        self._b = tensors["b"].to(dev) if "b" in tensors else None
        self.calibration_scores = tensors["calibration_scores"].to(dev)
        self._load_component_state(
            {
                k[len("component.") :]: v.to(dev)
                for k, v in tensors.items()
                if k.startswith("component.")
            }
        )
        self.fit_info = dict(meta.get("fit_info") or {})
        self.model = model
        self.fpr = _check_fraction("fpr", meta["fpr"])
        self._calibrate()
        if "threshold" in tensors:  # the saved operating point (also a hand-set one)
            self._threshold = float(tensors["threshold"])


def load_detector(path: str | os.PathLike[str], model: ModelAdapter) -> Detector:
    """Load a detector saved with :meth:`Detector.save` and attach it to ``model``.

    Args:
        path: The folder holding ``detector.json`` and ``state.pt``.
        model: The classifier it was fitted for.

    Returns:
        The fitted detector.

    Raises:
        FileNotFoundError: If the folder or one of its files is missing.
        ValueError: If the files are not a medrobust detector, or the model does not match the
            one the detector was fitted for (classes, channels, feature sizes).
    """
    folder = Path(path)
    meta_path, state_path = folder / _META, folder / _STATE
    for p in (meta_path, state_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p} does not exist; a saved detector is a folder with {_META} and {_STATE}"
            )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a medrobust detector file")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{meta_path} has detector format version {meta.get('version')!r}; this medrobust "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        tensors = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise ValueError(
            f"{state_path} is corrupt or not a weights-only file ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(tensors, dict) or not all(
        isinstance(v, torch.Tensor) for v in tensors.values()
    ):
        raise ValueError(f"{state_path} must hold a dict of tensors")
    detector = create_detector(str(meta["name"]), **dict(meta.get("params") or {}))
    detector._restore(model, meta, tensors)
    return detector
