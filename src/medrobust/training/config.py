"""Typed, validated training settings."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from medrobust.defenses.data import check_labelled_fraction
from medrobust.defenses.recipes import RECIPES

__all__ = ["BATCHNORM_CHECKS", "OPTIMIZERS", "SCHEDULERS", "TrainConfig", "check_class_weights"]

OPTIMIZERS = ("adam", "adamw", "sgd")
"""Optimiser names accepted by :class:`TrainConfig`."""

SCHEDULERS = ("none", "cosine", "multistep")
"""Learning-rate schedules accepted by :class:`TrainConfig` (stepped once per epoch)."""

_MONITOR_RE = re.compile(r"^(val|train)_[a-z0-9_]+$")

# Fields that may change when a run is resumed (they do not change what was already computed).
RESUMABLE_CHANGES = frozenset(
    {"epochs", "patience", "device", "num_workers", "batchnorm_check", "sync_batchnorm"}
)

BATCHNORM_CHECKS = ("recompute", "warn", "off")
"""Values of ``TrainConfig.batchnorm_check`` (see :mod:`medrobust.training.batchnorm`)."""


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value}")
    return out


def _plain(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} keys must be strings, got {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise TypeError(
        f"{where} must hold only plain values (None, bool, int, float, str, lists, dicts), got "
        f"{type(value).__name__}"
    )


def check_class_weights(value: Any) -> str | tuple[float, ...] | None:
    """Validate ``TrainConfig.class_weights``: None, ``"balanced"`` or non-negative numbers.

    Raises:
        TypeError: If ``value`` is neither a string nor a list of numbers.
        ValueError: For another string, a negative or non-finite weight, or all zeros.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() != "balanced":
            raise ValueError(
                f"class_weights must be 'balanced' or a list of numbers (one per class), got "
                f"{value!r}"
            )
        return "balanced"
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(
            f"class_weights must be 'balanced', a non-empty list of numbers or None, got "
            f"{type(value).__name__} {value!r}"
        )
    weights = tuple(_float(f"class_weights[{i}]", w) for i, w in enumerate(value))
    if any(w < 0 for w in weights) or not any(weights):
        raise ValueError(
            f"class_weights must be non-negative and not all zero, got {list(weights)}"
        )
    return weights


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`medrobust.training.fit`; every value is validated on construction.

    Attributes:
        epochs: Number of epochs (>= 1).
        batch_size: Batch size used when ``fit`` builds the loaders from data sets; a given
            ``DataLoader`` must use the same batch size.
        lr: Initial learning rate (> 0).
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.
        momentum: SGD momentum in ``[0, 1)`` (ignored by Adam).
        weight_decay: L2 weight decay (>= 0).
        scheduler: ``"none"``, ``"cosine"`` (cosine decay to 0 over ``epochs``) or
            ``"multistep"`` (multiply by ``gamma`` at each of ``milestones``).
        milestones: Epochs (1-based, increasing) after which ``multistep`` decays the rate.
        gamma: Decay factor of ``multistep`` in ``(0, 1]``.
        seed: Seed of the weight updates, the shuffling and the recipe's randomness.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``..., or ``"auto"`` (CUDA when available).
        monitor: Metric that selects ``best.pt``: ``"val_loss"``, ``"val_accuracy"``,
            ``"val_balanced_accuracy"``, ``"val_sensitivity"``, ``"val_specificity"``,
            ``"val_auc"`` (binary), ``"val_dice"`` (segmentation), ``"train_loss"``, or
            ``"val_<name>"`` for a metric a recipe declares. Names ending in ``loss`` are
            minimised, all others maximised.
        patience: Stop after this many epochs without improvement of ``monitor``; None never
            stops early.
        recipe: Registered training recipe (see :func:`medrobust.defenses.list_recipes`).
        recipe_params: Keyword arguments of the recipe.
        max_grad_norm: Clip the global gradient norm to this value; None disables clipping.
        num_workers: DataLoader worker processes when ``fit`` builds the loaders.
        labelled_fraction: Fraction in ``(0, 1]`` of the training set that keeps its labels
            (stratified, seeded split; see :func:`medrobust.defenses.data.labelled_split`). The
            rest becomes the unlabelled stream of recipes that use one (e.g. ``"ssat"``) and is
            left out by the others. ``1.0`` trains on every label.
        class_weights: Per-class weights of the recipe's cross-entropy: ``"balanced"``
            (inverse class frequency of the training labels, ``n / (K * n_k)``), a list of
            ``K`` non-negative numbers, or None (unweighted). See
            :mod:`medrobust.training.balance`.
        batchnorm_check: After training, compare the eval-mode and train-mode predictions of
            ``best.pt`` on training images and, when the BatchNorm running statistics make
            the eval-mode model fall short, ``"recompute"`` them over the training data (the
            default), only ``"warn"``, or ``"off"`` (no check). See
            :mod:`medrobust.training.batchnorm`.
        sync_batchnorm: In a distributed run (``torchrun``, see
            :mod:`medrobust.training.distributed`), compute batch-norm statistics over the
            global batch with :class:`torch.nn.SyncBatchNorm` (GPUs only); off: each process
            normalises with its own share of the batch, as DDP does by default.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "none"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    seed: int = 0
    device: str = "cpu"
    monitor: str = "val_loss"
    patience: int | None = None
    recipe: str = "standard"
    recipe_params: dict[str, Any] = field(default_factory=dict)
    max_grad_norm: float | None = None
    num_workers: int = 0
    labelled_fraction: float = 1.0
    class_weights: str | tuple[float, ...] | None = None
    batchnorm_check: str = "recompute"
    sync_batchnorm: bool = False

    def __post_init__(self) -> None:
        _int("epochs", self.epochs, 1)
        _int("batch_size", self.batch_size, 1)
        lr = _float("lr", self.lr)
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not isinstance(self.optimizer, str) or self.optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        object.__setattr__(self, "optimizer", self.optimizer.lower())
        momentum = _float("momentum", self.momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if _float("weight_decay", self.weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not isinstance(self.scheduler, str) or self.scheduler.lower() not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {list(SCHEDULERS)}, got {self.scheduler!r}")
        object.__setattr__(self, "scheduler", self.scheduler.lower())
        if not isinstance(self.milestones, (list, tuple)):
            raise TypeError(
                f"milestones must be a list of ints, got {type(self.milestones).__name__}"
            )
        milestones = tuple(_int("milestones", m, 1) for m in self.milestones)
        if list(milestones) != sorted(set(milestones)):
            raise ValueError(f"milestones must be strictly increasing, got {list(milestones)}")
        if self.scheduler == "multistep" and not milestones:
            raise ValueError("scheduler 'multistep' needs milestones, e.g. milestones=(50, 75)")
        object.__setattr__(self, "milestones", milestones)
        gamma = _float("gamma", self.gamma)
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
        _int("seed", self.seed, 0)
        if self.seed >= 2**63:
            raise ValueError(f"seed must be < 2**63, got {self.seed}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string, got {type(self.device).__name__}")
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError as exc:
                raise ValueError(
                    f"device must be 'cpu', 'cuda', 'cuda:<index>' or 'auto', got {self.device!r}"
                ) from exc
        if not isinstance(self.monitor, str) or not _MONITOR_RE.match(self.monitor):
            raise ValueError(
                "monitor must name a metric like 'val_loss', 'val_accuracy', 'val_auc' or "
                f"'val_dice', got {self.monitor!r}"
            )
        if self.monitor.startswith("train_") and self.monitor != "train_loss":
            raise ValueError(
                f"the only training metric that can be monitored is 'train_loss', got "
                f"{self.monitor!r}"
            )
        if self.patience is not None:
            _int("patience", self.patience, 1)
        if not isinstance(self.recipe, str) or not self.recipe.strip():
            raise ValueError(f"recipe must be a registered recipe name, got {self.recipe!r}")
        RECIPES.get(self.recipe)  # raises UnknownNameError with "did you mean"
        if not isinstance(self.recipe_params, Mapping):
            raise TypeError(
                f"recipe_params must be a dict, got {type(self.recipe_params).__name__}"
            )
        object.__setattr__(self, "recipe_params", _plain(self.recipe_params, "recipe_params"))
        if self.max_grad_norm is not None and _float("max_grad_norm", self.max_grad_norm) <= 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        _int("num_workers", self.num_workers, 0)
        object.__setattr__(
            self, "labelled_fraction", check_labelled_fraction(self.labelled_fraction)
        )
        object.__setattr__(self, "class_weights", check_class_weights(self.class_weights))
        self._check_balance_and_batchnorm()

    def _check_balance_and_batchnorm(self) -> None:
        """Class weights given once, and a known ``batchnorm_check``."""
        if self.class_weights is not None and self.recipe_params.get("class_weights"):
            raise ValueError(
                "class weights are given twice (class_weights and recipe_params['class_weights']);"
                " give them once, as class_weights"
            )
        self._check_batchnorm()

    def _check_batchnorm(self) -> None:
        if self.batchnorm_check not in BATCHNORM_CHECKS:
            raise ValueError(
                f"batchnorm_check must be one of {list(BATCHNORM_CHECKS)}, got "
                f"{self.batchnorm_check!r}"
            )
        if not isinstance(self.sync_batchnorm, bool):
            raise ValueError(f"sync_batchnorm must be true or false, got {self.sync_batchnorm!r}")

    @property
    def monitor_mode(self) -> str:
        """``"min"`` for a loss, ``"max"`` for every other monitored metric."""
        return "min" if self.monitor.endswith("loss") else "max"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of all settings."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["milestones"] = list(self.milestones)
        out["recipe_params"] = _plain(self.recipe_params, "recipe_params")
        if isinstance(self.class_weights, tuple):
            out["class_weights"] = list(self.class_weights)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a dictionary (e.g. parsed YAML), rejecting unknown keys.

        Args:
            data: Settings by field name; missing ones take their defaults.

        Returns:
            The validated config.

        Raises:
            TypeError: If ``data`` is not a dict or a value has the wrong type.
            ValueError: If a key is unknown (with a "did you mean") or a value is invalid.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a training config must be a dict, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ValueError(
                f"unknown training setting(s) {', '.join(hints)}; expected: {', '.join(names)}"
            )
        values = dict(data)
        for key in ("milestones", "class_weights"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def resolve_device(self) -> torch.device:
        """The ``torch.device`` to train on.

        Returns:
            ``cuda`` for ``"auto"`` when CUDA is available, else ``cpu``; the named device
            otherwise.

        Raises:
            ValueError: If a CUDA device is requested but not available.
        """
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dev = torch.device(self.device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(
                    f"device {self.device!r} was requested but CUDA is not available; use "
                    "device='cpu' or 'auto'"
                )
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ValueError(
                    f"device {self.device!r} does not exist: {torch.cuda.device_count()} CUDA "
                    "device(s) visible"
                )
        return dev
