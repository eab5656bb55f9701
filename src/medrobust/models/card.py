"""Model cards: what a checkpoint holds, how it was trained and how well it did.

A :class:`ModelCard` travels inside every medrobust checkpoint. It names the architecture (so the
network can be rebuilt through the model registry), the input domain (bounds and in-graph
normalisation), the task and classes, the training data and settings, and the validation
metrics. ``to_dict``/``from_dict`` convert it to plain JSON types with strict validation, and
``to_markdown`` renders it for people.

References:
    Mitchell et al., "Model Cards for Model Reporting", FAT* 2019.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import metadata
from typing import Any

from torch import nn

from medrobust.models.adapter import ModelAdapter
from medrobust.models.card_rows import training_check_rows
from medrobust.models.zoo import architecture_of
from medrobust.types import Task

__all__ = ["CARD_VERSION", "DataInfo", "ModelCard", "TrainingInfo", "medrobust_version"]

CARD_VERSION = 1
"""Version of the card's dictionary layout written by :meth:`ModelCard.to_dict`."""


def medrobust_version() -> str:
    """The installed medrobust version, or ``"0+unknown"`` when it is not installed."""
    try:
        return metadata.version("medrobust")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# --------------------------------------------------------------------------- validation helpers


def _plain(value: Any, where: str) -> Any:
    """Return ``value`` as plain JSON types (tuples become lists) or raise TypeError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where} must have string keys, got key {k!r}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise TypeError(
        f"{where} must hold only plain values (None, bool, int, float, str, lists, dicts), "
        f"got {type(value).__name__}"
    )


def _opt_str(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{where} must be a string or None, got {type(value).__name__}")
    return value


def _opt_int(value: Any, where: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where} must be an int or None, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{where} must be >= {minimum}, got {value}")
    return int(value)


def _opt_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{where} must be a number or None, got {type(value).__name__} {value!r}")
    return float(value)


def _opt_floats(value: Any, where: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{where} must be a number or a list of numbers, got {value!r}")
    if isinstance(value, (int, float)):
        return [float(value)]
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(f"{where} must be a number, a non-empty list of numbers or None")
    out = []
    for i, v in enumerate(value):
        f = _opt_float(v, f"{where}[{i}]")
        if f is None:
            raise TypeError(f"{where}[{i}] must be a number, got None")
        out.append(f)
    return out


def _opt_dict(value: Any, where: str) -> Any:
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a dict or None, got {type(value).__name__}")
    return None if value is None else _plain(value, where)


def _check_keys(data: Mapping[str, Any], cls: type, where: str, required: tuple[str, ...]) -> None:
    if not isinstance(data, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(data).__name__}")
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; expected keys: {allowed}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{where} is missing required key(s) {missing}")


_OPTIONAL = ("class_weights", "batchnorm")  # training fields written only when set


# --------------------------------------------------------------------------- dataclasses


@dataclass
class DataInfo:
    """The data a model was trained on.

    Attributes:
        name: Data set name (e.g. ``"busi-phantom"``, ``"breastmnist"``).
        split_sizes: Number of samples per split, e.g. ``{"train": 512, "val": 128}``.
        image_size: Spatial size of the training inputs, e.g. ``[64, 64]``.
        seed: Seed used to generate or split the data.
        description: Free text (source, preprocessing, inclusion criteria).
        intensity: How raw values were mapped into the input bounds, e.g.
            ``{"window": {"kind": "fixed", "spec": "-160,240", "low": -160, "high": 240}}``
            (see :mod:`medrobust.data.windows`); None when not recorded.
        params: The data set parameters the model was trained with (plain values).
        spacing: Voxel (pixel) size in mm of the training inputs' spatial dims, when the data
            set records one (its ``spacing`` attribute); None otherwise.
    """

    name: str | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    image_size: list[int] | None = None
    seed: int | None = None
    description: str | None = None
    intensity: dict[str, Any] | None = None
    params: dict[str, Any] | None = None
    spacing: list[float] | None = None

    def __post_init__(self) -> None:
        self.name = _opt_str(self.name, "data.name")
        self.spacing = _opt_floats(self.spacing, "data.spacing")
        if not isinstance(self.split_sizes, Mapping):
            raise TypeError(
                f"data.split_sizes must be a dict, got {type(self.split_sizes).__name__}"
            )
        sizes: dict[str, int] = {}
        for k, v in self.split_sizes.items():
            if not isinstance(k, str):
                raise TypeError(f"data.split_sizes keys must be strings, got {k!r}")
            n = _opt_int(v, f"data.split_sizes.{k}")
            if n is None:
                raise TypeError(f"data.split_sizes.{k} must be an int, got None")
            sizes[k] = n
        self.split_sizes = sizes
        if self.image_size is not None:
            if not isinstance(self.image_size, (list, tuple)):
                raise TypeError(
                    f"data.image_size must be a list of ints, got {type(self.image_size).__name__}"
                )
            size = [_opt_int(v, f"data.image_size[{i}]", 1) for i, v in enumerate(self.image_size)]
            self.image_size = [int(v) for v in size if v is not None]
            if len(self.image_size) != len(size):
                raise TypeError("data.image_size must not contain None")
        self.seed = _opt_int(self.seed, "data.seed")
        self.description = _opt_str(self.description, "data.description")
        for key in ("intensity", "params"):
            setattr(self, key, _opt_dict(getattr(self, key), f"data.{key}"))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of the fields (``intensity`` and ``params`` only when set, so
        cards written before they existed read back equal)."""
        out: dict[str, Any] = {
            "name": self.name,
            "split_sizes": dict(self.split_sizes),
            "image_size": None if self.image_size is None else list(self.image_size),
            "seed": self.seed,
            "description": self.description,
        }
        for key in ("intensity", "params", "spacing"):
            if getattr(self, key) is not None:
                out[key] = _plain(getattr(self, key), f"data.{key}")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataInfo:
        """Build from :meth:`to_dict` output.

        Raises:
            TypeError: If ``data`` is not a dict or a value has the wrong type.
            ValueError: If there are unknown keys.
        """
        _check_keys(data, cls, "model card 'data'", ())
        return cls(**dict(data))


@dataclass
class TrainingInfo:
    """How a model was trained.

    Attributes:
        epochs: Epochs run.
        optimizer: Optimiser name (``"adam"``, ``"sgd"``...).
        lr: Initial learning rate.
        batch_size: Training batch size.
        weight_decay: Weight decay.
        recipe: Name of the training (defence) recipe, e.g. ``"standard"`` or ``"pgd-at"``.
        recipe_params: The recipe's parameters.
        seed: Training seed.
        best_epoch: Epoch (1-based) whose weights were kept.
        wall_time_s: Training wall time in seconds up to the kept epoch (or the whole run).
        class_weights: The cross-entropy's class weights, e.g. ``{"spec": "balanced",
            "weights": [0.62, 2.5], "counts": [40, 10]}``; None when unweighted.
        batchnorm: The BatchNorm check after training (see
            :mod:`medrobust.training.batchnorm`): train-mode and eval-mode scores on training
            images and whether the running statistics were recomputed; None when not checked.
    """

    epochs: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    recipe: str | None = None
    recipe_params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    best_epoch: int | None = None
    wall_time_s: float | None = None
    class_weights: dict[str, Any] | None = None
    batchnorm: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.epochs = _opt_int(self.epochs, "training.epochs")
        self.optimizer = _opt_str(self.optimizer, "training.optimizer")
        self.lr = _opt_float(self.lr, "training.lr")
        self.batch_size = _opt_int(self.batch_size, "training.batch_size", 1)
        self.weight_decay = _opt_float(self.weight_decay, "training.weight_decay")
        self.recipe = _opt_str(self.recipe, "training.recipe")
        if not isinstance(self.recipe_params, Mapping):
            raise TypeError(
                f"training.recipe_params must be a dict, got {type(self.recipe_params).__name__}"
            )
        self.recipe_params = _plain(self.recipe_params, "training.recipe_params")
        self.seed = _opt_int(self.seed, "training.seed")
        self.best_epoch = _opt_int(self.best_epoch, "training.best_epoch")
        self.wall_time_s = _opt_float(self.wall_time_s, "training.wall_time_s")
        for key in _OPTIONAL:
            setattr(self, key, _opt_dict(getattr(self, key), f"training.{key}"))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of the fields (``_OPTIONAL`` ones only when set)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["recipe_params"] = _plain(self.recipe_params, "training.recipe_params")
        return {k: v for k, v in out.items() if v is not None or k not in _OPTIONAL}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingInfo:
        """Build from :meth:`to_dict` output.

        Raises:
            TypeError: If ``data`` is not a dict or a value has the wrong type.
            ValueError: If there are unknown keys.
        """
        _check_keys(data, cls, "model card 'training'", ())
        return cls(**dict(data))


@dataclass
class ModelCard:
    """Everything needed to rebuild, use and judge a trained model.

    Attributes:
        architecture: Registered model name (see :func:`medrobust.models.list_models`).
        num_classes: Number of classes ``K``.
        in_channels: Input channels ``C``.
        spatial_dims: 2 for images, 3 for volumes.
        architecture_kwargs: Extra architecture parameters given to ``create_model``.
        task: ``"classification"``, ``"segmentation"`` or ``"multitask"``.
        class_names: Names of the ``K`` classes, or None.
        bounds: ``[low, high]`` input range in which attack budgets are measured.
        mean: Per-channel in-graph normalisation mean, or None.
        std: Per-channel in-graph normalisation standard deviation, or None.
        data: The training data (:class:`DataInfo`).
        training: The training settings (:class:`TrainingInfo`).
        metrics: Named metric values (e.g. ``{"val_accuracy": 0.93}``); None for undefined.
        medrobust_version: Version that wrote the card.
        created: ISO-8601 UTC creation time.
        notes: Free text (intended use, limitations).
        weights_sha256: SHA-256 (64 lowercase hex digits) of the saved weights, stamped by
            :func:`~medrobust.models.save_checkpoint` and checked when the checkpoint is read;
            None for a card not (yet) saved with weights. It identifies the weights rather than
            describing the model, so it takes no part in ``==``.
    """

    architecture: str
    num_classes: int
    in_channels: int = 1
    spatial_dims: int = 2
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    task: str = Task.CLASSIFICATION.value
    class_names: list[str] | None = None
    bounds: list[float] = field(default_factory=lambda: [0.0, 1.0])
    mean: list[float] | None = None
    std: list[float] | None = None
    data: DataInfo = field(default_factory=DataInfo)
    training: TrainingInfo = field(default_factory=TrainingInfo)
    metrics: dict[str, float | None] = field(default_factory=dict)
    medrobust_version: str = field(default_factory=medrobust_version)
    created: str = field(default_factory=_now)
    notes: str | None = None
    weights_sha256: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture.strip():
            raise TypeError(f"architecture must be a non-empty string, got {self.architecture!r}")
        for name in ("num_classes", "in_channels", "spatial_dims"):
            value = _opt_int(getattr(self, name), name, 1)
            if value is None:
                raise TypeError(f"{name} must be an int, got None")
            setattr(self, name, value)
        if self.spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {self.spatial_dims}")
        if not isinstance(self.architecture_kwargs, Mapping):
            raise TypeError(
                f"architecture_kwargs must be a dict, got {type(self.architecture_kwargs).__name__}"
            )
        self.architecture_kwargs = _plain(self.architecture_kwargs, "architecture_kwargs")
        try:
            self.task = Task(self.task).value
        except ValueError:
            raise ValueError(
                f"task must be one of {[t.value for t in Task]}, got {self.task!r}"
            ) from None
        if self.class_names is not None:
            if not isinstance(self.class_names, (list, tuple)) or not all(
                isinstance(c, str) for c in self.class_names
            ):
                raise TypeError(f"class_names must be a list of strings, got {self.class_names!r}")
            if len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"class_names has {len(self.class_names)} entries but num_classes is "
                    f"{self.num_classes}"
                )
            self.class_names = list(self.class_names)
        bounds = _opt_floats(self.bounds, "bounds")
        if bounds is None or len(bounds) != 2:
            raise ValueError(f"bounds must be [low, high], got {self.bounds!r}")
        if not (math.isfinite(bounds[0]) and math.isfinite(bounds[1])) or bounds[0] >= bounds[1]:
            raise ValueError(f"bounds must be finite with low < high, got {bounds}")
        self.bounds = bounds
        self.mean = _opt_floats(self.mean, "mean")
        self.std = _opt_floats(self.std, "std")
        for name, vals in (("mean", self.mean), ("std", self.std)):
            if vals is not None and len(vals) not in (1, self.in_channels):
                raise ValueError(
                    f"{name} must have 1 or in_channels={self.in_channels} values, got {vals}"
                )
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if isinstance(self.data, Mapping):
            self.data = DataInfo.from_dict(self.data)
        if not isinstance(self.data, DataInfo):
            raise TypeError(f"data must be a DataInfo or dict, got {type(self.data).__name__}")
        if isinstance(self.training, Mapping):
            self.training = TrainingInfo.from_dict(self.training)
        if not isinstance(self.training, TrainingInfo):
            raise TypeError(
                f"training must be a TrainingInfo or dict, got {type(self.training).__name__}"
            )
        if not isinstance(self.metrics, Mapping):
            raise TypeError(f"metrics must be a dict, got {type(self.metrics).__name__}")
        metrics: dict[str, float | None] = {}
        for k, v in self.metrics.items():
            if not isinstance(k, str):
                raise TypeError(f"metrics keys must be strings, got {k!r}")
            f = _opt_float(v, f"metrics.{k}")
            metrics[k] = None if f is None or not math.isfinite(f) else f
        self.metrics = metrics
        if not isinstance(self.medrobust_version, str):
            raise TypeError("medrobust_version must be a string")
        if not isinstance(self.created, str):
            raise TypeError(f"created must be an ISO-8601 string, got {self.created!r}")
        try:
            _dt.datetime.fromisoformat(self.created)
        except ValueError:
            raise ValueError(f"created must be an ISO-8601 time, got {self.created!r}") from None
        self.notes = _opt_str(self.notes, "notes")
        digest = _opt_str(self.weights_sha256, "weights_sha256")
        if digest is not None and (len(digest) != 64 or set(digest) - set("0123456789abcdef")):
            raise ValueError(
                f"weights_sha256 must be 64 lowercase hexadecimal digits, got {digest!r}"
            )

    @classmethod
    def from_model(cls, model: nn.Module, **fields_: Any) -> ModelCard:
        """A card describing ``model`` (an adapter from :func:`medrobust.models.create_model`).

        Architecture, task, classes, channels, dims, bounds and normalisation come from the
        adapter; ``fields_`` sets or overrides any other field (``data``, ``training``,
        ``metrics``, ``notes``, or ``architecture``/``architecture_kwargs`` for adapters not
        built by the zoo).

        Args:
            model: A :class:`~medrobust.models.ModelAdapter`.
            **fields_: Card fields.

        Returns:
            The card.

        Raises:
            TypeError: If ``model`` is not an adapter or a field is unknown.
            ValueError: If the architecture is unknown and not given.
        """
        if not isinstance(model, ModelAdapter):
            raise TypeError(f"model must be a ModelAdapter, got {type(model).__name__}")
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(fields_) - allowed)
        if unknown:
            raise TypeError(f"unknown model card field(s) {unknown}; expected: {sorted(allowed)}")
        spec = architecture_of(model)
        if spec is None and "architecture" not in fields_:
            raise ValueError(
                "the model was not built by medrobust.models.create_model, so its architecture "
                "is unknown; pass architecture=... and architecture_kwargs=... (the name must be "
                "registered in medrobust.models.MODELS so the checkpoint can be rebuilt)"
            )
        norm = model.normalization
        values: dict[str, Any] = {
            "task": model.task.value,
            "num_classes": model.num_classes,
            "in_channels": model.in_channels,
            "spatial_dims": model.spatial_dims,
            "class_names": model.class_names,
            "bounds": [model.bounds.low, model.bounds.high],
            "mean": norm["mean"],
            "std": norm["std"],
        }
        if spec is not None:
            values["architecture"] = spec.name
            values["architecture_kwargs"] = spec.kwargs
        values.update(fields_)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary (NaN metrics become None), with a ``card_version`` entry."""
        out: dict[str, Any] = {"card_version": CARD_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (DataInfo, TrainingInfo)):
                value = value.to_dict()
            out[f.name] = _plain(value, f.name)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Build a card from :meth:`to_dict` output, validating every key and value.

        Args:
            data: The dictionary.

        Returns:
            The card.

        Raises:
            TypeError: If ``data`` is not a dict or a value has the wrong type.
            ValueError: If keys are unknown or missing, the card version is unsupported, or a
                value is out of range.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"a model card must be a dict, got {type(data).__name__}")
        body = dict(data)
        version = body.pop("card_version", CARD_VERSION)
        if version != CARD_VERSION:
            raise ValueError(
                f"model card version {version!r} is not supported (this medrobust reads version "
                f"{CARD_VERSION}); upgrade medrobust"
            )
        _check_keys(body, cls, "model card", ("architecture", "num_classes"))
        return cls(**body)

    def to_markdown(self) -> str:
        """A human-readable Markdown rendering of the card."""

        def fmt(value: Any) -> str:
            if value is None:
                return "–"
            if isinstance(value, float):
                return f"{value:.4g}"
            if isinstance(value, dict):
                return ", ".join(f"{k}={fmt(v)}" for k, v in value.items()) or "–"
            if isinstance(value, list):
                return "[" + ", ".join(fmt(v) for v in value) + "]"
            return str(value)

        lines = [
            f"# Model card: {self.architecture}",
            "",
            f"Created {self.created} with medrobust {self.medrobust_version}.",
            "",
            "## Model",
            "",
            "| field | value |",
            "|---|---|",
            f"| architecture | `{self.architecture}` |",
            f"| architecture parameters | {fmt(self.architecture_kwargs)} |",
            f"| task | {self.task} |",
            f"| classes | {self.num_classes}"
            + (f" ({', '.join(self.class_names)})" if self.class_names else "")
            + " |",
            f"| input | {self.in_channels} channel(s), {self.spatial_dims}-D |",
            f"| input bounds | [{self.bounds[0]:g}, {self.bounds[1]:g}] |",
            f"| normalisation | mean {fmt(self.mean)}, std {fmt(self.std)} |",
            f"| weights SHA-256 | {fmt(self.weights_sha256)} |",
            "",
            "## Training data",
            "",
            "| field | value |",
            "|---|---|",
            f"| data set | {fmt(self.data.name)} |",
            f"| split sizes | {fmt(self.data.split_sizes)} |",
            f"| image size | {fmt(self.data.image_size)} |",
            f"| seed | {fmt(self.data.seed)} |",
        ]
        if self.data.spacing:
            lines.append(f"| spacing (mm) | {fmt(self.data.spacing)} |")
        if self.data.description:
            lines.append(f"| description | {self.data.description} |")
        window = (self.data.intensity or {}).get("window")
        if isinstance(window, Mapping):
            lines.append(f"| intensity window | {fmt(window.get('spec') or window.get('kind'))} |")
        t = self.training
        lines += [
            "",
            "## Training",
            "",
            "| field | value |",
            "|---|---|",
            f"| recipe | {fmt(t.recipe)} {fmt(t.recipe_params) if t.recipe_params else ''} |",
            f"| epochs | {fmt(t.epochs)} (best epoch {fmt(t.best_epoch)}) |",
            f"| optimiser | {fmt(t.optimizer)}, lr {fmt(t.lr)}, weight decay "
            f"{fmt(t.weight_decay)} |",
            f"| batch size | {fmt(t.batch_size)} |",
            f"| seed | {fmt(t.seed)} |",
            f"| wall time | {fmt(t.wall_time_s)} s |",
            *training_check_rows(t),
            "",
            "## Metrics",
            "",
        ]
        if self.metrics:
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {fmt(v)} |" for k, v in sorted(self.metrics.items())]
        else:
            lines.append("No metrics recorded.")
        if self.notes:
            lines += ["", "## Notes", "", self.notes]
        return "\n".join(lines) + "\n"
